"""What the benchmarks share: stand-in workers that answer their own port, a registry state
file of N workers, RSS from /proc and the load average."""

from __future__ import annotations

import json
from pathlib import Path

from aiohttp import web
from dhops_testkit import HOST, Backends
from dhxds.registry import STATE_FORMAT


class PortEcho(Backends):
    """Backends that answer with the local port they were reached on."""

    def _handler(self, name: str, port: int):
        async def handle(request: web.Request) -> web.Response:
            return web.json_response({"backend": name, "port": port})

        return handle


def write_state(path: Path, count: int, ports: list[int]) -> None:
    workers = [
        {
            "id": f"pre{i}",
            "host": HOST,
            "port": ports[i % len(ports)],
            "envoy_prefix": f"/worker/pre{i}",
            "strip_prefix": True,
            "upstream_protocol": "downstream",
            "tls": False,
        }
        for i in range(count)
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"format": STATE_FORMAT, "workers": workers}))


def rss_mb(pid: int) -> tuple[float, float]:
    """(current RSS, peak RSS) in MB from /proc."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _sep, value = line.partition(":")
        fields[key] = value.strip()
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])
