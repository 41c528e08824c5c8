"""The encoded resources of a representative registry, byte for byte, as recorded from the two
hand-synced builders (resources.py / resources_v2.py) before they became one builder over a
dialect table. Regenerate only for an intended change of what Envoy gets:
`python tests/unit/dhxds/test_resources_golden.py` (then review the diff)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from dhxds.model import Upstream, Worker
from dhxds.resources import RegistryState
from dhxds.snapshot import Snapshot, new_encoders
from dhxds.xds_types import FLAVOURS

GOLDEN = Path(__file__).parent / "data" / "resources_golden.json"
API_VERSIONS = ("v2", "v3")


def representative_state() -> RegistryState:
    workers = [
        {"id": "w1", "host": "10.0.0.1", "port": 9001},
        {"id": "w10", "host": "dh-host.example", "port": 9010},
        {"id": "a.b", "host": "10.0.0.2", "port": 9002, "tls": True},
        {"id": "sni", "host": "10.0.0.3", "port": 9003, "tls": True, "tls_sni": "s.example"},
        {"id": "h1", "host": "10.0.0.4", "port": 9004, "upstream_protocol": "http1"},
        {"id": "h2", "host": "fd00::4", "port": 9005, "upstream_protocol": "http2"},
        {"id": "raw", "host": "10.0.0.5", "port": 9006, "strip_prefix": False},
        {"id": "one", "host": "one.example", "port": 9007, "envoy_prefix": "/custom/one"},
        {"id": "gone", "host": "unresolved.example", "port": 9008},
    ]
    built = sorted((Worker.from_dict(w) for w in workers), key=lambda w: w.id)
    addresses = (
        ("dh-host.example", ("10.9.9.9", "10.9.9.10")),
        ("one.example", ("10.9.9.11",)),
    )
    return RegistryState(tuple(built), Upstream("dh-infra.example", 8123), "rds_config", addresses)


def encoded(api: str) -> dict[str, str]:
    flavour = FLAVOURS[api]
    snap = Snapshot(representative_state(), new_encoders())
    out = {}
    for url in (flavour.cluster_type, flavour.route_type):
        for name, res in sorted(snap.resources(url).items()):
            out[f"{url} {name}"] = base64.b64encode(res.payload).decode()
    return out


def test_both_api_versions_encode_as_recorded():
    recorded = json.loads(GOLDEN.read_text())
    for api in API_VERSIONS:
        assert encoded(api) == recorded[api], api


if __name__ == "__main__":
    GOLDEN.write_text(json.dumps({api: encoded(api) for api in API_VERSIONS}, indent=1) + "\n")
