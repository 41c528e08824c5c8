"""Pure helpers of the fleet benchmark (bench/run): percentiles, the figures-vs-targets table
and the markdown report. No processes, no clock: unit-tested in tests/unit/bench.
"""

from __future__ import annotations

import math
from collections.abc import Iterable


def percentile(values: Iterable[float], pct: float) -> float:
    """Nearest-rank percentile (the value at rank ceil(pct/100 * n)); NaN for no values."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def summary(values: Iterable[float]) -> dict:
    """count, p50, p90, p99 and max of `values` (milliseconds, say)."""
    data = list(values)
    return {
        "n": len(data),
        "p50": percentile(data, 50),
        "p90": percentile(data, 90),
        "p99": percentile(data, 99),
        "max": max(data) if data else math.nan,
    }


def fmt(value: float | None, unit: str = "", digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if abs(value) >= 1000 and digits <= 1:
        return f"{value:,.0f}{unit}"
    return f"{value:.{digits}f}{unit}"


def verdict(value: float | None, target: float, higher_is_better: bool = False) -> str:
    """'met' / 'missed' / 'n/a' for a figure against a numeric target."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    ok = value >= target if higher_is_better else value <= target
    return "met" if ok else "missed"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A markdown table; '|' inside a cell is escaped."""

    def cells(row: list[str]) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |"

    return [cells(header), "|" + "---|" * len(header), *(cells(r) for r in rows)]


def _latency_row(lat: dict) -> list[str]:
    s = lat["put_to_routed_ms"]
    return [
        f"PUT sent -> first request through Envoy reaching the new worker, "
        f"{lat['workers']:,} workers ({lat.get('layout', 'delta')} layout, "
        f"{s['n']} registrations)",
        f"p99 {fmt(s['p99'], ' ms')} (p50 {fmt(s['p50'], ' ms')}); "
        f"503s: {lat['status_5xx']}; wrong worker: {lat['wrong_worker']}; "
        f"web_api_service while waiting: {lat['web_api']}",
        "p99 <= 50 ms; zero 503s; never a wrong worker",
        "met"
        if verdict(s["p99"], 50) == "met" and lat["status_5xx"] == 0 and lat["wrong_worker"] == 0
        else "missed",
    ]


def _bytes_row(size: dict) -> list[str]:
    share = size["delta_total"] / size["sotw_total"] * 100 if size["sotw_total"] else math.nan
    return [
        f"one change at {size['workers']:,} workers: bytes sent per Envoy (delta layout)",
        f"delta {size['delta_total']:,} B vs state-of-the-world {size['sotw_total']:,} B "
        f"({fmt(share, ' %', 3)}); CDS {size['delta_cds']:,} vs {size['sotw_cds']:,}; "
        f"RDS {size['delta_rds']:,} vs {size['sotw_rds']:,}",
        "<= 1 % of full-state bytes",
        verdict(share, 1.0),
    ]


def _share(part: int, whole: int) -> float:
    return part / whole * 100 if whole else math.nan


def _od_bytes_row(size: dict) -> list[str]:
    reg = _share(size["register_od_total"], size["register_sotw_total"])
    change = _share(size["change_od_total"], size["change_sotw_total"])
    worst = max(reg, change)
    return [
        f"one change at {size['workers']:,} workers: bytes sent per Envoy (on-demand layout)",
        f"a registration it did not ask for: {size['register_od_total']:,} B vs "
        f"state-of-the-world {size['register_sotw_total']:,} B ({fmt(reg, ' %', 3)}); "
        f"a change of the worker it subscribed by name ({size['subscribed']}): "
        f"{size['change_od_total']:,} B (CDS {size['change_od_cds']:,}, RDS "
        f"{size['change_od_rds']:,}) vs state-of-the-world {size['change_sotw_total']:,} B "
        f"({fmt(change, ' %', 3)})",
        "<= 1 % of full-state bytes",
        verdict(worst, 1.0),
    ]


def _fanout_row(fan: dict) -> list[str]:
    s = fan["change_ms"]
    on_demand = fan.get("layout") == "on-demand"
    return [
        f"{fan['streams']} xDS streams ({fan['simulated']} simulated"
        + (" on-demand clients" if on_demand else "")
        + f" + {fan['envoys']} real"
        + (" on-demand" if on_demand else "")
        + f" Envoy), {fan['workers']:,} workers ({fan.get('layout', 'delta')} layout): "
        + (
            "every stream has a change of the one worker all subscribed by name"
            if on_demand
            else "every stream has a change"
        ),
        f"p99 {fmt(s['p99'], ' ms')} (p50 {fmt(s['p50'], ' ms')}, "
        f"{fan['changes']} changes"
        + (
            f"; {fan['missing_samples']} stream x change samples never arrived"
            if fan.get("missing_samples")
            else ""
        )
        + f"); daemon RSS {fmt(fan['daemon_rss_mb'], ' MB', 0)} "
        f"(peak {fmt(fan['daemon_peak_mb'], ' MB', 0)})",
        "p99 <= 1 s; RSS <= 250 MB",
        "met"
        if verdict(s["p99"], 1000) == "met" and verdict(fan["daemon_rss_mb"], 250) == "met"
        else "missed",
    ]


def _burst_row(burst: dict) -> list[str]:
    return [
        f"burst: {burst['count']:,} registrations in {fmt(burst['put_span_s'], ' s', 2)} "
        f"at {burst['workers']:,} workers ({burst.get('layout', 'delta')} layout)",
        f"all routable {fmt(burst['all_routable_after_last_put_ms'], ' ms', 0)} after the "
        f"last PUT returned ({burst['routed']:,} of {burst['count']:,} routed); pushes to the "
        f"Envoy: CDS {burst['envoy_cds_updates']}, RDS "
        f"{burst['envoy_rds_updates']} (daemon: {burst['daemon_pushes']} responses)",
        "all routable <= 2 s after the last PUT; pushes reported",
        verdict(burst["all_routable_after_last_put_ms"], 2000)
        if burst["routed"] == burst["count"]
        else "missed",
    ]


def _throughput_row(thr: dict) -> list[str]:
    return [
        f"throughput through Envoy, last of {thr['workers']:,} workers vs the first "
        f"({thr.get('layout', 'delta')} layout)",
        f"{fmt(thr['ratio'] * 100, ' %', 0)} ({fmt(thr['last_rps'], ' rps', 0)} vs "
        f"{fmt(thr['first_rps'], ' rps', 0)})",
        ">= 90 %",
        verdict(thr["ratio"], 0.9, higher_is_better=True),
    ]


def _sovereign_row(peer: dict, ours: dict, layout: str) -> list[str]:
    theirs = peer["theirs_ms"]["p99"]
    ratio = theirs / ours["p99"] if ours["p99"] else math.nan
    return [
        f"sovereign {peer['version']} side by side (Envoy {peer['envoy']}), "
        f"{peer['count']} new workers on top of {peer['workers']:,} ({layout} layout)",
        f"ours p99 {fmt(ours['p99'], ' ms')} vs sovereign p99 {fmt(theirs, ' ms')}: "
        f"{fmt(ratio, 'x', 1)} lower",
        "our p99 >= 50x lower",
        verdict(ratio, 50, higher_is_better=True),
    ]


def targets_rows(results: dict) -> list[list[str]]:
    """One row per figure of issue 10's Targets table: measure, figure, target, verdict; the
    on-demand layout's row (results["on_demand"]) right under the delta layout's."""
    od = results.get("on_demand", {})
    rows: list[list[str]] = []
    by_size = {lat["workers"]: lat for lat in od.get("latency", [])}
    for lat in results.get("latency", []):
        rows.append(_latency_row(lat))
        if lat["workers"] in by_size:
            rows.append(_latency_row(by_size.pop(lat["workers"])))
    rows += [_latency_row(lat) for lat in by_size.values()]
    if results.get("bytes"):
        rows.append(_bytes_row(results["bytes"]))
    if od.get("bytes"):
        rows.append(_od_bytes_row(od["bytes"]))
    for fan in (results.get("fanout"), od.get("fanout")):
        if fan:
            rows.append(_fanout_row(fan))
    for burst in (results.get("burst"), od.get("burst")):
        if burst:
            rows.append(_burst_row(burst))
    for put in (results.get("put"), od.get("put")):
        if put:
            s = put["put_ms"]
            rows.append(
                [
                    f"PUT latency at {put['workers']:,} workers (durable on return, {s['n']} "
                    f"PUTs, {put.get('layout', 'delta')} layout)",
                    f"p99 {fmt(s['p99'], ' ms', 2)} (p50 {fmt(s['p50'], ' ms', 2)})",
                    "p99 <= 10 ms",
                    verdict(s["p99"], 10),
                ]
            )
    for thr in (results.get("throughput"), od.get("throughput")):
        if thr:
            rows.append(_throughput_row(thr))
    mem = results.get("envoy_memory")
    if mem:
        on, off = mem.get("stats_on"), mem.get("stats_off")
        if on and off:
            rows.append(
                [
                    f"Envoy memory with {mem['workers']:,} worker clusters, "
                    "envoy_worker_cluster_stats true -> false",
                    f"RSS {fmt(on['rss_mb'], ' MiB', 0)} -> {fmt(off['rss_mb'], ' MiB', 0)}; "
                    f"allocated {fmt(on['allocated_mb'], ' MiB', 0)} -> "
                    f"{fmt(off['allocated_mb'], ' MiB', 0)}; ready in "
                    f"{fmt(on['ready_s'], ' s', 1)} -> {fmt(off['ready_s'], ' s', 1)}",
                    "a role option that drops per-cluster stats (was 551 -> 288 MiB, 5 s -> 0.9 s)",
                    "met" if off["rss_mb"] < on["rss_mb"] else "missed",
                ]
            )
    peer = results.get("sovereign")
    if peer:
        if peer.get("error"):
            rows.append(
                [
                    "sovereign side by side, 50 new workers on top of 1,000",
                    f"not measured: {peer['error']}",
                    "our p99 >= 50x lower",
                    "n/a",
                ]
            )
        else:
            layout = peer.get("ours_layout", "delta")
            rows.append(_sovereign_row(peer, peer["ours_ms"], layout))
            if layout != "on-demand" and peer.get("ours_on_demand_ms"):
                rows.append(_sovereign_row(peer, peer["ours_on_demand_ms"], "on-demand"))
    for name, message in results.get("errors", {}).items():
        rows.append([f"section {name}", f"failed: {message}", "-", "n/a"])
    return rows


def _answers(answers: dict) -> str:
    return ", ".join(f"{k}: {v}" for k, v in sorted(answers.items())) or "-"


def _fanout_table(fan: dict) -> list[str]:
    before = "daemon_rss_before_mb" in fan
    rss = [fan.get("daemon_rss_before_mb")] if before else []
    rss += [fan["daemon_rss_connected_mb"], fan["daemon_rss_mb"]]
    return table(
        [
            "changes",
            "samples",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "max ms",
            "real Envoy p99 ms",
            "initial sync of all streams s",
            f"daemon RSS {'before / ' if before else ''}connected / after MB",
            "peak MB",
        ],
        [
            [
                str(fan["changes"]),
                str(fan["change_ms"]["n"]),
                *(fmt(fan["change_ms"][k]) for k in ("p50", "p90", "p99", "max")),
                fmt(fan["envoy_ms"]["p99"]),
                fmt(fan["initial_sync_s"], "", 2),
                " / ".join(fmt(v, "", 0) for v in rss),
                fmt(fan["daemon_peak_mb"], "", 0),
            ]
        ],
    )


def _burst_table(burst: dict) -> list[str]:
    return table(
        [
            "registrations",
            "PUTs spread over s",
            "routed",
            "all routable after last PUT ms",
            "Envoy CDS updates",
            "Envoy RDS updates",
            "daemon responses",
            "sweeper answers",
        ],
        [
            [
                str(burst["count"]),
                fmt(burst["put_span_s"], "", 2),
                str(burst["routed"]),
                fmt(burst["all_routable_after_last_put_ms"], "", 0),
                str(burst["envoy_cds_updates"]),
                str(burst["envoy_rds_updates"]),
                str(burst["daemon_pushes"]),
                _answers(burst["answers"]),
            ]
        ],
    )


def _throughput_table(thr: dict) -> list[str]:
    """The medians, their ratio, and each alternating round's ratio."""
    rounds = ", ".join(fmt(r * 100, " %", 0) for r in thr.get("round_ratios", []))
    return table(
        ["first rps", "last rps", "last / first (median of rounds)", "rounds"],
        [
            [
                fmt(thr["first_rps"], "", 0),
                fmt(thr["last_rps"], "", 0),
                fmt(thr["ratio"] * 100, " %", 0),
                rounds or "-",
            ]
        ],
    )


def _on_demand_details(results: dict) -> list[str]:
    """The on-demand layout's sections (results["on_demand"]) other than the latency rows."""
    od = results.get("on_demand", {})
    out: list[str] = []
    if not any(od.get(k) for k in ("envoy", "bytes", "fanout", "burst", "throughput")):
        return out
    out += [
        "## On-demand layout (envoy_xds_on_demand)",
        "",
        "The envoy role with `envoy_xds_delta: true, envoy_xds_on_demand: true` (delta ADS):",
        "a fixed route table (a Lua cluster specifier names `worker_<id>` from the path or the",
        "`envoy-prefix` header) and only web_api_service up front; Envoy's on_demand filter",
        "fetches a worker's cluster from dhxds (ODCDS) on the first request naming it. A",
        "registration is sent to no Envoy that did not ask for that worker; the route",
        "configuration never changes. At the large size these sections run on a daemon of",
        "their own with only on-demand clients.",
        "",
    ]
    env = od.get("envoy")
    if env:
        out += [
            f"The on-demand Envoy at {env['workers']:,} workers: ready (/ready and the fixed "
            f"routes) in {fmt(env['ready_s'], ' s', 1)}, RSS {fmt(env['rss_mb'], ' MiB', 0)}, "
            f"allocated {fmt(env['allocated_mb'], ' MiB', 0)}, {env['stats_count']:,} stats; "
            f"daemon RSS then {fmt(env['daemon_rss_mb'], ' MB', 0)}.",
            "",
        ]
    size = od.get("bytes")
    if size:
        out += [
            f"### Bytes per Envoy at {size['workers']:,} workers (on-demand)",
            "",
            "A raw delta ADS client whose first request carries node metadata",
            '`{"dhxds_on_demand": true}` (CDS wildcard + RDS `rds_config`, ACKing like Envoy),',
            "next to a state-of-the-world ADS stream on the same daemon. Steps: initial sync;",
            f"one registration nobody asked for; subscribe `{size['subscribed']}` by name",
            "(`resource_names_subscribe`, as Envoy's ODCDS does); one change of that worker",
            "(a new port).",
            "",
            *table(
                [
                    "step",
                    "on-demand CDS B",
                    "on-demand RDS B",
                    "state-of-the-world CDS B",
                    "state-of-the-world RDS B",
                ],
                [
                    [
                        label,
                        f"{size[f'{key}_od_cds']:,}",
                        f"{size[f'{key}_od_rds']:,}",
                        f"{size[f'{key}_sotw_cds']:,}",
                        f"{size[f'{key}_sotw_rds']:,}",
                    ]
                    for key, label in (
                        ("initial", "initial sync"),
                        ("register", "one registration"),
                        ("change", f"change of {size['subscribed']}"),
                    )
                ]
                + [
                    [
                        f"subscribe {size['subscribed']}",
                        f"{size['subscribe_od_cds']:,}",
                        "0",
                        "-",
                        "-",
                    ]
                ],
            ),
            "",
        ]
    fan = od.get("fanout")
    if fan:
        out += [
            f"### {fan['streams']} xDS streams at {fan['workers']:,} workers (on-demand)",
            "",
            f"{fan['simulated']} simulated on-demand clients (bench/xds_fanout.py --on-demand:",
            "node metadata dhxds_on_demand, CDS wildcard + RDS, then `worker_odcommon`",
            "subscribed by name, each response ACKed at once, one separate process) plus the",
            "real on-demand Envoy, which asked for the same worker by a request. Per change (the",
            "worker moved to a new port): PUT sent -> the stream's last response naming the",
            "cluster (simulated), or the first request the new port answers through Envoy",
            f"(real; answers on the way: {_answers(fan.get('envoy_answers', {}))}).",
            "",
            *([f"**{fan['stuck']}.**", ""] if fan.get("stuck") else []),
            *(
                [
                    f"**{fan['reconnects']} simulated stream reconnects** "
                    f"(first: {'; '.join(fan['stream_errors'][:3])}).",
                    "",
                ]
                if fan.get("reconnects")
                else []
            ),
            *_fanout_table(fan),
            "",
        ]
    burst = od.get("burst")
    if burst:
        out += [
            f"### Burst: {burst['count']:,} registrations at {burst['workers']:,} workers "
            "(on-demand)",
            "",
            "As for the delta layout, except that the sweeper asks only for workers whose PUT",
            "has returned (a request for a worker not yet registered waits dhxds' 1 s grace,",
            "then gets 503). Each worker is routable once its first request has fetched its",
            "cluster; Envoy's CDS update counter counts those fetches.",
            "",
            *_burst_table(burst),
            "",
        ]
    thr = od.get("throughput")
    if thr:
        out += [
            f"### Throughput to the first vs the last of {thr['workers']:,} workers (on-demand)",
            "",
            f"`{thr['first']}` vs `{thr['last']}` through the on-demand Envoy (both clusters",
            "fetched by one request before counting; the fixed routes and the Lua specifier",
            "are the same work for any id). Client as for the delta layout.",
            "",
            *_throughput_table(thr),
            "",
        ]
    return out


def details(results: dict) -> list[str]:
    """The sections under the targets table: how each figure was taken, and its raw numbers."""
    out: list[str] = []
    od = results.get("on_demand", {})
    lat = [*results.get("latency", []), *od.get("latency", [])]
    if lat:
        out += [
            "## Registration to first routed request",
            "",
            "A new worker gets its own backend port (an HTTP server answering its name and",
            "port). Clock starts before `PUT /v1/workers/<id>` is sent; it stops at the first",
            "request through Envoy (one keep-alive connection, ~1 ms between requests) that the",
            "new worker answers. Every answer on the way is counted: `web_api` (route not there",
            "yet, allowed), `wrong` (another worker: never allowed), `HTTP 5xx`.",
            "Layouts: `delta` (the Envoy holds every worker cluster and route; a registration",
            "is pushed to it), `on-demand` (fixed routes; the first probe naming the worker",
            "makes the Envoy fetch its cluster from dhxds, ODCDS over delta ADS).",
            "",
            *table(
                [
                    "layout",
                    "workers",
                    "n",
                    "p50 ms",
                    "p90 ms",
                    "p99 ms",
                    "max ms",
                    "PUT p50 / p99 ms",
                    "answers while waiting",
                ],
                [
                    [
                        r.get("layout", "delta"),
                        f"{r['workers']:,}",
                        str(r["put_to_routed_ms"]["n"]),
                        fmt(r["put_to_routed_ms"]["p50"]),
                        fmt(r["put_to_routed_ms"]["p90"]),
                        fmt(r["put_to_routed_ms"]["p99"]),
                        fmt(r["put_to_routed_ms"]["max"]),
                        f"{fmt(r['put_ms']['p50'])} / {fmt(r['put_ms']['p99'])}",
                        _answers(r["answers"]),
                    ]
                    for r in lat
                ],
            ),
            "",
        ]
    size = results.get("bytes")
    if size:
        out += [
            f"## Bytes per Envoy for one change at {size['workers']:,} workers",
            "",
            "Two ADS streams on the same daemon, each ACKing like Envoy: a state-of-the-world",
            "one and a delta one. One worker is added; bytes are the serialised",
            "DiscoveryResponse / DeltaDiscoveryResponse messages the stream received for it.",
            "The initial (full) sync is shown for scale.",
            "",
            *table(
                ["stream", "CDS bytes", "RDS bytes", "total", "initial CDS", "initial RDS"],
                [
                    [
                        "state of the world",
                        f"{size['sotw_cds']:,}",
                        f"{size['sotw_rds']:,}",
                        f"{size['sotw_total']:,}",
                        f"{size['initial_sotw_cds']:,}",
                        f"{size['initial_sotw_rds']:,}",
                    ],
                    [
                        "delta",
                        f"{size['delta_cds']:,}",
                        f"{size['delta_rds']:,}",
                        f"{size['delta_total']:,}",
                        f"{size.get('initial_delta_cds', 0):,}",
                        f"{size.get('initial_delta_rds', 0):,}",
                    ],
                ],
            ),
            "",
        ]
        if size["sotw_rds"] and size["delta_rds"] >= 0.5 * size["sotw_rds"]:
            out += [
                "**RDS is still sent whole on the delta stream**: the route configuration is one",
                "resource, so a delta update of it is the whole RouteConfiguration. Delta xDS only",
                "shrinks CDS; the share above is dominated by RDS.",
                "",
            ]
    fan = results.get("fanout")
    if fan:
        out += [
            f"## {fan['streams']} xDS streams at {fan['workers']:,} workers",
            "",
            f"{fan['simulated']} simulated Envoys (bench/xds_fanout.py: delta ADS, CDS wildcard",
            "+ RDS `rds_config`, each response ACKed at once, in one separate process, 10",
            "streams per gRPC connection) plus the real Envoy. Per change and stream: PUT sent ->",
            "the stream's last response naming the new cluster (simulated), or the first request",
            "the new worker answers through Envoy (real).",
            "",
            *([f"**{fan['stuck']}.**", ""] if fan.get("stuck") else []),
            *(
                [
                    f"**{fan['reconnects']} times a simulated stream ended** (first: "
                    f"{'; '.join(fan['stream_errors'][:3])}) and its simulated Envoy opened it "
                    "again after 0.5 s. Which side ended them is not recorded; the daemon's 30 s "
                    "keepalive ping going unanswered by the CPU-starved client process is the "
                    "likely cause.",
                    "",
                ]
                if fan.get("reconnects")
                else []
            ),
            *_fanout_table(fan),
            "",
        ]
    burst = results.get("burst")
    if burst:
        out += [
            f"## Burst: {burst['count']:,} registrations at {burst['workers']:,} workers",
            "",
            "PUTs are started on a fixed schedule over the window (up to 64 in flight; `PUTs",
            "spread over` is until the last one returned, longer when the daemon cannot take",
            "them that fast); a",
            "sweeper requests every not-yet-routable new worker through Envoy (8 in flight)",
            "until each answered from its own port. Pushes: Envoy's own cds / rds",
            "update_success counters over the burst (one Envoy connected), and the daemon's",
            "dhxds_pushes_total.",
            "",
            *_burst_table(burst),
            "",
        ]
    thr = results.get("throughput")
    if thr:
        out += [
            "## Throughput to the first vs the last worker",
            "",
            (
                f"Envoy's route table is an ordered list of {thr['ordered_routes']:,} worker "
                f"routes: `{thr['first']}` is matched first, `{thr['last']}` last."
                if thr["ordered_routes"]
                else "Envoy's routes are a matcher (no ordered list): "
                f"`{thr['first']}` vs `{thr['last']}`, the first and the last worker by id."
            ),
            "8 keep-alive connections from one Python (aiohttp) client, rounds alternated;",
            "the client is the limit when the route lookup is cheap, so the ratio is what counts.",
            "",
            *_throughput_table(thr),
            "",
        ]
    mem = results.get("envoy_memory")
    if mem:
        rows = []
        for key, label in (("stats_on", "true (default)"), ("stats_off", "false")):
            m = mem.get(key)
            if m:
                rows.append(
                    [
                        label,
                        fmt(m["rss_mb"], "", 0),
                        fmt(m["allocated_mb"], "", 0),
                        fmt(m["heap_mb"], "", 0),
                        f"{m['stats_count']:,}",
                        fmt(m["ready_s"], "", 1),
                    ]
                )
        out += [
            f"## Envoy memory with {mem['workers']:,} worker clusters",
            "",
            "The envoy role's option `envoy_worker_cluster_stats: false` renders",
            "`stats_config.stats_matcher` excluding the `cluster.worker_` prefix; the Envoy here",
            "runs the role's own template with it true, then false. Ready = process start ->",
            "/ready and every worker cluster active.",
            "",
            *table(
                [
                    "envoy_worker_cluster_stats",
                    "RSS MiB",
                    "admin /memory allocated MiB",
                    "heap MiB",
                    "stats",
                    "ready s",
                ],
                rows,
            ),
            "",
        ]
    puts = [p for p in (results.get("put"), results.get("on_demand", {}).get("put")) if p]
    if puts:
        out += [
            f"## PUT latency at {puts[0]['workers']:,} workers",
            "",
            "Sequential `PUT /v1/workers/<id>` on one keep-alive connection to the real daemon",
            "(SQLite registry, synchronous=FULL: committed before the answer) while one Envoy",
            "of the layout is attached.",
            "",
            *table(
                ["layout", "PUTs", "p50 ms", "p90 ms", "p99 ms", "max ms"],
                [
                    [
                        put.get("layout", "delta"),
                        str(put["put_ms"]["n"]),
                        *(fmt(put["put_ms"][k], "", 2) for k in ("p50", "p90", "p99", "max")),
                    ]
                    for put in puts
                ],
            ),
            "",
        ]
    peer = results.get("sovereign")
    if peer:
        out += ["## sovereign side by side", ""]
        if peer.get("error"):
            out += [f"Not measured: {peer['error']}", ""]
        else:
            out += [
                f"sovereign {peer['version']} in its own venv, {peer['setting']}; the same",
                f"Envoy {peer['envoy']}, the same stand-in workers and probe. A registration is",
                "an atomic rewrite of its JSON source file (its registry). Ours: the",
                f"{peer['workers']:,}-worker row of the first table (same run).",
                "",
                *table(
                    ["control plane", "n", "p50 ms", "p99 ms", "max ms", "answers while waiting"],
                    [
                        [
                            f"dhxds, {peer.get('ours_layout', 'delta')} layout",
                            str(peer["ours_ms"]["n"]),
                            fmt(peer["ours_ms"]["p50"]),
                            fmt(peer["ours_ms"]["p99"]),
                            fmt(peer["ours_ms"]["max"]),
                            _answers(peer.get("ours_answers", {})),
                        ],
                        *(
                            [
                                [
                                    "dhxds, on-demand layout",
                                    str(peer["ours_on_demand_ms"]["n"]),
                                    fmt(peer["ours_on_demand_ms"]["p50"]),
                                    fmt(peer["ours_on_demand_ms"]["p99"]),
                                    fmt(peer["ours_on_demand_ms"]["max"]),
                                    _answers(peer.get("ours_on_demand_answers", {})),
                                ]
                            ]
                            if peer.get("ours_on_demand_ms")
                            and peer.get("ours_layout") != "on-demand"
                            else []
                        ),
                        [
                            "sovereign",
                            str(peer["theirs_ms"]["n"]),
                            fmt(peer["theirs_ms"]["p50"]),
                            fmt(peer["theirs_ms"]["p99"]),
                            fmt(peer["theirs_ms"]["max"]),
                            _answers(peer["answers"]),
                        ],
                    ],
                ),
                "",
            ]
    out += _on_demand_details(results)
    return out


def targets_table(results: dict, baseline: dict | None = None) -> list[str]:
    """The targets table; with `baseline` (an earlier run's results) a column of its figures,
    matched by measure."""
    rows = targets_rows(results)
    if baseline is None:
        return table(["measure", "figure", "target", "verdict"], rows)
    before = {r[0]: r for r in targets_rows(baseline)}
    label = f"before ({baseline['meta']['commit']}, {baseline['meta']['started']})"
    merged = []
    for measure, figure, target, result in rows:
        old = before.get(measure)
        merged.append([measure, figure, target, result, f"{old[1]} ({old[3]})" if old else "-"])
    return table(["measure", "figure", "target", "verdict", label], merged)


def markdown(results: dict, baseline: dict | None = None) -> str:
    meta = results["meta"]
    lines = [
        "# dhxds fleet benchmark (issue 10)",
        "",
        f"Generated by `{meta['command']}` on {meta['started']} "
        f"({'quick smoke run' if meta['quick'] else 'full run'}), {meta['machine']}; "
        f"wall time {fmt(meta['wall_s'], ' s', 0)}.",
        f"Load average at start: **{meta['load_start']}**; at the end: **{meta['load_end']}** "
        "(2 cores shared with other agents' work: figures are comparable as ratios within one "
        "run, not as absolutes across runs). Numbers only; no test asserts a timing.",
        f"Daemon: dhxds at commit {meta['commit']}; Envoy {meta['envoy']} (the envoy role's "
        "own bootstrap, delta ADS, `envoy_worker_cluster_stats: false` unless said otherwise).",
        *(
            [
                f"The last column is the same command on commit {baseline['meta']['commit']} "
                f"({baseline['meta']['started']}, load average {baseline['meta']['load_start']} "
                f"-> {baseline['meta']['load_end']}), for comparison."
            ]
            if baseline
            else []
        ),
        "",
        *(f"Note: {note}" for note in meta.get("notes", [])),
        "",
        "## Figures next to the targets of issue 10",
        "",
        *targets_table(results, baseline),
        "",
        *details(results),
    ]
    return "\n".join(lines).rstrip() + "\n"
