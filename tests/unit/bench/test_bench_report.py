"""The fleet benchmark's pure parts (bench/report.py): percentiles, verdicts, the markdown."""

from __future__ import annotations

import math
import sys

import pytest
from dhops_testkit import ROOT

sys.path.insert(0, str(ROOT / "bench"))
import report


def test_percentile_is_nearest_rank():
    values = list(range(1, 101))  # 1..100
    assert report.percentile(values, 50) == 50
    assert report.percentile(values, 99) == 99
    assert report.percentile(values, 100) == 100
    assert report.percentile([7.0], 99) == 7.0
    assert report.percentile([3, 1, 2], 0) == 1
    assert math.isnan(report.percentile([], 50))


def test_p99_of_few_samples_is_the_maximum():
    assert report.percentile([5, 1, 9, 3], 99) == 9


def test_summary():
    s = report.summary([4.0, 1.0, 3.0, 2.0])
    assert s == {"n": 4, "p50": 2.0, "p90": 4.0, "p99": 4.0, "max": 4.0}
    assert report.summary([])["n"] == 0


@pytest.mark.parametrize(
    ("value", "target", "higher", "expected"),
    [
        (49.9, 50, False, "met"),
        (50.1, 50, False, "missed"),
        (0.95, 0.9, True, "met"),
        (0.5, 0.9, True, "missed"),
        (math.nan, 1, False, "n/a"),
        (None, 1, False, "n/a"),
    ],
)
def test_verdict(value, target, higher, expected):
    assert report.verdict(value, target, higher_is_better=higher) == expected


def test_table_escapes_pipes():
    lines = report.table(["a", "b"], [["x|y", "2"]])
    assert lines == ["| a | b |", "|---|---|", "| x\\|y | 2 |"]


def _meta(**fields):
    return {
        "command": "bench/run",
        "quick": False,
        "started": "t",
        "machine": "m",
        "wall_s": 1.0,
        "load_start": "1",
        "load_end": "1",
        "commit": "c",
        "envoy": "1.40.0",
        **fields,
    }


def _latency(workers, p99, five_xx=0, wrong=0):
    s = {"n": 50, "p50": p99 / 2, "p90": p99, "p99": p99, "max": p99}
    return {
        "workers": workers,
        "put_to_routed_ms": s,
        "put_ms": s,
        "answers": {"new": 50, "web_api": 10, "HTTP 503": five_xx},
        "status_5xx": five_xx,
        "wrong_worker": wrong,
        "web_api": 10,
    }


def test_markdown_puts_each_figure_next_to_its_target():
    results = {
        "meta": _meta(load_start="5.00 4.00 3.00", load_end="6.00 5.00 4.00"),
        "latency": [_latency(1000, 20.0), _latency(10000, 80.0, five_xx=1)],
        "bytes": {
            "workers": 10000,
            "sotw_cds": 2_800_000,
            "sotw_rds": 2_400_000,
            "delta_cds": 400,
            "delta_rds": 2_400_000,
            "sotw_total": 5_200_000,
            "delta_total": 2_400_400,
            "initial_sotw_cds": 2_800_000,
            "initial_sotw_rds": 2_400_000,
        },
        "throughput": {
            "workers": 10000,
            "first": "a",
            "last": "b",
            "ordered_routes": 0,
            "first_rps": 1000.0,
            "last_rps": 950.0,
            "ratio": 0.95,
        },
        "sovereign": {
            "version": "0.32.12",
            "envoy": "1.40.0",
            "workers": 1000,
            "count": 50,
            "ours_ms": {"n": 50, "p50": 10.0, "p99": 20.0, "max": 20.0},
            "theirs_ms": {"n": 50, "p50": 1000.0, "p99": 1200.0, "max": 1200.0},
            "answers": {"new": 50},
            "setting": "refresh 1 s",
        },
    }
    text = report.markdown(results)
    assert "Load average at start: **5.00 4.00 3.00**; at the end: **6.00 5.00 4.00**" in text
    rows = [line for line in text.splitlines() if line.startswith("| PUT sent")]
    assert rows[0].endswith("| met |")
    assert "503s: 1" in rows[1] and rows[1].endswith("| missed |")
    assert "RDS is still sent whole" in text
    bytes_row = next(line for line in text.splitlines() if "bytes sent per Envoy" in line)
    assert bytes_row.endswith("| missed |")  # 46 % of full state: RDS dominates
    assert "| 95 % (950 rps vs 1,000 rps) | >= 90 % | met |" in text
    assert "60.0x lower | our p99 >= 50x lower | met |" in text


def test_markdown_says_why_sovereign_was_not_measured():
    results = {
        "meta": _meta(command="bench/run --quick", quick=True),
        "sovereign": {"error": "no network", "workers": 1000, "count": 50},
    }
    text = report.markdown(results)
    assert "not measured: no network" in text
    assert "Not measured: no network" in text


def test_baseline_column_matches_figures_by_measure():
    now = {"meta": _meta(commit="new"), "latency": [_latency(1000, 20.0)]}
    before = {
        "meta": _meta(commit="old"),
        "latency": [_latency(1000, 150.0), _latency(10000, 900.0)],
    }
    lines = report.targets_table(now, before)
    assert lines[0].endswith("| before (old, t) |")
    assert len(lines) == 3  # only measures of this run
    assert "p99 150.0 ms" in lines[2] and lines[2].endswith("(missed) |")


def test_a_failed_section_is_reported_not_hidden():
    text = report.markdown({"meta": _meta(), "errors": {"fanout": "RuntimeError: stuck"}})
    assert "| section fanout | failed: RuntimeError: stuck | - | n/a |" in text


def _od_results():
    lat = {**_latency(1000, 12.0), "layout": "on-demand"}
    return {
        "meta": _meta(),
        "latency": [_latency(1000, 150.0)],
        "on_demand": {
            "latency": [lat, {**_latency(10000, 30.0), "layout": "on-demand"}],
            "bytes": {
                "workers": 10000,
                "layout": "on-demand",
                "subscribed": "worker_pre5",
                **{
                    f"{step}_{who}_{kind}": value
                    for step, values in (
                        ("initial", (383, 1878, 2_900_000, 7_100_000)),
                        ("register", (0, 0, 2_900_000, 7_100_000)),
                        ("change", (385, 0, 2_900_000, 0)),
                    )
                    for (who, kind), value in zip(
                        (("od", "cds"), ("od", "rds"), ("sotw", "cds"), ("sotw", "rds")),
                        values,
                        strict=True,
                    )
                },
                "initial_od_total": 2261,
                "initial_sotw_total": 10_000_000,
                "register_od_total": 0,
                "register_sotw_total": 10_000_000,
                "change_od_total": 385,
                "change_sotw_total": 2_900_000,
                "subscribe_od_cds": 387,
                "subscribe_od_total": 387,
            },
        },
        "sovereign": {
            "version": "0.32.12",
            "envoy": "1.40.0",
            "workers": 1000,
            "count": 50,
            "ours_layout": "delta",
            "ours_ms": {"n": 50, "p50": 80.0, "p99": 150.0, "max": 150.0},
            "ours_on_demand_ms": {"n": 50, "p50": 10.0, "p99": 12.0, "max": 12.0},
            "theirs_ms": {"n": 50, "p50": 1000.0, "p99": 1200.0, "max": 1200.0},
            "answers": {"new": 50},
            "setting": "refresh 1 s",
        },
    }


def test_on_demand_rows_sit_under_the_delta_rows_with_the_layout_named():
    rows = report.targets_rows(_od_results())
    measures = [r[0] for r in rows]
    assert measures[0].endswith("1,000 workers (delta layout, 50 registrations)")
    assert measures[1].endswith("1,000 workers (on-demand layout, 50 registrations)")
    assert measures[2].endswith("10,000 workers (on-demand layout, 50 registrations)")
    assert [r[3] for r in rows[:3]] == ["missed", "met", "met"]
    od_bytes = next(r for r in rows if "bytes sent per Envoy (on-demand layout)" in r[0])
    assert "a registration it did not ask for: 0 B" in od_bytes[1]
    assert "385 B" in od_bytes[1] and od_bytes[3] == "met"
    sov = [r for r in rows if r[0].startswith("sovereign")]
    assert sov[0][0].endswith("(delta layout)") and sov[0][3] == "missed"  # 8x
    assert sov[1][0].endswith("(on-demand layout)") and "100.0x lower" in sov[1][1]
    assert sov[1][3] == "met"


def test_on_demand_details_render():
    text = report.markdown(_od_results())
    assert "## On-demand layout (envoy_xds_on_demand)" in text
    assert "| one registration | 0 | 0 | 2,900,000 | 7,100,000 |" in text
    assert "| dhxds, on-demand layout | 50 | 10.0 | 12.0 | 12.0 | - |" in text
