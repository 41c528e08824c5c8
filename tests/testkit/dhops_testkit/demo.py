"""`scripts/demo --deephaven`: a real Deephaven Community Core worker behind the deployed stack.

Starts one embedded worker on the host (127.0.0.1, detached, PID file in --state-dir),
registers it with the deployed dhxds (`?wait=routable`), waits until Envoy routes it, runs a
pydeephaven query through Envoy (TLS, `envoy-prefix` header) and prints the result and the
worker's web IDE URL through Envoy. Exits non-zero, saying why, when any step fails.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

import requests

from .base import HOST, wait_for
from .deephaven import DeephavenWorker, session


def _stop_previous(pid_file: Path) -> None:
    """A worker left by an earlier demo run (ours: its PID file), stopped by its PID."""
    try:
        pid = int(pid_file.read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return
    if b"dhops_testkit.deephaven_worker" not in cmdline:
        return  # that PID is something else by now
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    for _attempt in range(60):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.5)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envoy", default="https://127.0.0.1:8443")
    parser.add_argument("--ca", required=True, type=Path, help="Envoy's certificate (PEM)")
    parser.add_argument("--api", default="http://127.0.0.1:8125", help="dhxds registration API")
    parser.add_argument("--token-file", required=True, type=Path)
    parser.add_argument("--state-dir", required=True, type=Path)
    parser.add_argument("--id", default="dh1")
    parser.add_argument("--port", type=int, default=18110)
    parser.add_argument("--heap", default="512m")
    args = parser.parse_args()

    args.state_dir.mkdir(parents=True, exist_ok=True)
    pid_file = args.state_dir / f"deephaven-{args.id}.pid"
    _stop_previous(pid_file)
    worker = DeephavenWorker(args.id, args.state_dir, args.heap, args.port)
    worker.start(detach=True)
    pid_file.write_text(f"{worker.proc.pid}\n")
    print(f"[demo] Deephaven Core worker {args.id} starting on {HOST}:{args.port} ...", flush=True)
    worker.wait_ready()
    print(f"[demo] worker ready after {worker.ready_after:.0f} s (log: {worker.log_path})")

    token = args.token_file.read_text().strip()
    resp = requests.put(
        f"{args.api}/v1/workers/{args.id}?wait=routable&timeout=30",
        json={"host": HOST, "port": args.port},
        headers={"Authorization": f"Bearer {token}"},
        timeout=40,
    )
    if resp.status_code not in (200, 201, 202):
        print(f"[demo] registering {args.id} failed: {resp.status_code} {resp.text}")
        return 1
    prefix = f"/worker/{args.id}"
    wait_for(
        lambda: (
            requests.get(
                f"{args.envoy}{prefix}/jsapi/dh-core.js", verify=str(args.ca), timeout=10
            ).status_code
            == 200
        ),
        60,
        f"Envoy to route {prefix}",
        0.5,
    )

    port = int(args.envoy.rsplit(":", 1)[1])
    query = (
        "from deephaven import empty_table\n"
        f"demo = empty_table(5).update(['Worker = `{args.id}`', 'N = i', 'Square = N * N'])"
    )
    with session(port, args.ca, prefix) as sess:
        sess.run_script(query)
        result = sess.open_table("demo").to_arrow().to_pandas()

    print(
        "\nA pydeephaven query ran on the real Deephaven worker through Envoy (TLS, header "
        f"envoy-prefix: {prefix}):\n"
        f"  Session(host='127.0.0.1', port={port}, use_tls=True, "
        f"extra_headers={{b'envoy-prefix': b'{prefix}'}})\n"
        f"  run_script({query.splitlines()[1]!r})\n"
    )
    print(result.to_string(index=False))
    print(
        f"\nThe worker's web IDE through Envoy:\n  {args.envoy}{prefix}/ide/?envoyPrefix={prefix}"
        f"\nStop the worker: kill $(cat {pid_file})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
