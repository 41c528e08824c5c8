"""`bench/run --quick` works end to end (a smoke run with small sizes: real dhxds, real Envoy,
simulated streams): it writes the markdown and JSON reports with every section. Behaviour
only; the figures themselves are never asserted. sovereign is left out here (it installs a
venv of its own from PyPI on first use); `bench/run --quick` runs it too.
"""

from __future__ import annotations

import json
import subprocess
import sys

from dhops_testkit import ROOT

SECTIONS = "latency,memory,throughput,bytes,put,burst,fanout"


def test_quick_run_writes_every_section(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "fleet_bench.py"),
            "--quick",
            "--no-dated",
            "--only",
            SECTIONS,
            "--output-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads((tmp_path / "fleet-bench.json").read_text())
    for key in ("envoy_memory", "throughput", "bytes", "put", "burst", "fanout"):
        assert key in data, key
    assert [r["workers"] for r in data["latency"]] == [100, 1000]
    for row in data["latency"]:
        assert row["wrong_worker"] == 0, row["answers"]  # never another worker's answer
    assert data["burst"]["routed"] == data["burst"]["count"]
    assert data["bytes"]["delta_cds"] < data["bytes"]["sotw_cds"]
    text = (tmp_path / "fleet-bench.md").read_text()
    assert "Load average at start" in text
    assert "| measure | figure | target | verdict |" in text
