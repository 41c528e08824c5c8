"""sovereign (PyPI; a Python control plane that Envoy polls over REST) side by side with dhxds:
the same Envoy version, the same stand-in workers, the same probe, in the same run.

sovereign gets its best usable setting: its source (a JSON file of workers, the registry
equivalent of a PUT is an atomic rewrite of that file) re-read every second (its smallest
`source_config.refresh_rate`, an integer of seconds), Python templates (no Jinja/YAML
parsing per request), node matching off, one web worker, and Envoy polling CDS and RDS
every `REFRESH_DELAY` (REST has no push). The venv is created on first use under
~/.cache/dhops-envoy/sovereign-<version> with a pinned version.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import requests
from common import PortEcho
from dhops_testkit import CACHE, ENVOY_MAIN, HOST, envoy_binary, free_port, stop_process, wait_for
from report import summary

VERSION = "0.32.12"
VENV = CACHE / f"sovereign-{VERSION}"
PYTHON = {"protocol": "python", "serialization": "raw"}  # a template: a .py file with call()
REFRESH_DELAY = "0.2s"  # Envoy's REST poll interval for CDS and for RDS

CLUSTERS = """
def call(instances, **_kw):
    def cluster(name, port):
        return {
            "@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster",
            "name": name,
            "connect_timeout": "5s",
            "type": "STATIC",
            "load_assignment": {
                "cluster_name": name,
                "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {
                    "socket_address": {"address": "127.0.0.1", "port_value": port}}}}]}],
            },
        }

    for item in instances:
        yield cluster("worker_" + item["id"] if item["id"] != "web_api_service" else item["id"],
                      item["port"])
"""

ROUTES = """
def call(instances, **_kw):
    routes = []
    for item in instances:
        if item["id"] == "web_api_service":
            continue
        routes.append({
            "match": {"prefix": "/worker/" + item["id"] + "/"},
            "route": {"cluster": "worker_" + item["id"], "prefix_rewrite": "/"},
        })
    routes.append({"match": {"prefix": "/"}, "route": {"cluster": "web_api_service"}})
    yield {
        "@type": "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
        "name": "rds_config",
        "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": routes}],
    }
"""

BOOTSTRAP = """
node: {{id: sovereign-envoy, cluster: front-proxy}}
admin:
  address: {{socket_address: {{address: 127.0.0.1, port_value: {admin}}}}}
stats_config:
  stats_matcher: {{exclusion_list: {{patterns: [{{prefix: "cluster.worker_"}}]}}}}
dynamic_resources:
  cds_config: &rest
    resource_api_version: V3
    api_config_source:
      api_type: REST
      transport_api_version: V3
      cluster_names: [sovereign]
      refresh_delay: {refresh}
      request_timeout: 5s
static_resources:
  listeners:
    - name: http
      address: {{socket_address: {{address: 127.0.0.1, port_value: {listen}}}}}
      filter_chains:
        - filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                stat_prefix: ingress_http
                rds: {{route_config_name: rds_config, config_source: *rest}}
                http_filters:
                  - name: envoy.filters.http.router
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
    - name: sovereign
      connect_timeout: 1s
      type: STATIC
      load_assignment:
        cluster_name: sovereign
        endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {sov}}}}}}}}}]}}]
"""  # noqa: E501 (one Envoy type URL per line)


def ensure_venv() -> Path:
    """sovereign's own venv (its dependencies pin FastAPI/pydantic versions of their own)."""
    python = VENV / "bin" / "python"
    if not (VENV / "bin" / "sovereign").exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", f"sovereign=={VERSION}"], check=True
        )
    return VENV / "bin" / "sovereign"


def write_instances(path: Path, instances: list[dict]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(instances))
    os.replace(tmp, path)


def compare(workdir: Path, workers: int, count: int, ours: dict | None) -> dict:
    """sovereign: `count` new workers on top of `workers`, each PUT-equivalent -> first
    request through its Envoy that reaches the new worker; next to our figure of this run."""
    out: dict = {"version": VERSION, "envoy": ENVOY_MAIN, "workers": workers, "count": count}
    if ours is None:
        return {**out, "error": "no dhxds latency at this size in this run (section skipped)"}
    out["ours_ms"] = ours["put_to_routed_ms"]
    out["ours_answers"] = ours["answers"]
    try:
        exe = ensure_venv()
    except (OSError, subprocess.CalledProcessError) as exc:
        return {**out, "error": f"could not install sovereign {VERSION}: {exc}"}
    work = workdir / "sovereign"
    work.mkdir(parents=True, exist_ok=True)
    backends = PortEcho()
    sov = envoy = None
    try:
        pool = [backends.start(f"pool{i}") for i in range(20)]
        instances = [{"id": "web_api_service", "port": backends.start("web_api_service")}]
        instances += [{"id": f"pre{i}", "port": pool[i % 20]} for i in range(workers)]
        source = work / "instances.json"
        write_instances(source, instances)
        (work / "sov_clusters.py").write_text(CLUSTERS)
        (work / "sov_routes.py").write_text(ROUTES)
        config = {
            "sources": [{"type": "file", "config": {"path": f"file+json://{source}"}}],
            "source_config": {"refresh_rate": 1},
            "matching": {"enabled": False},
            "templates": {
                "default": [
                    {"type": "clusters", "spec": PYTHON | {"path": str(work / "sov_clusters.py")}},
                    {"type": "routes", "spec": PYTHON | {"path": str(work / "sov_routes.py")}},
                ]
            },
        }
        (work / "sovereign.yaml").write_text(json.dumps(config))
        sov_port = free_port()
        env = {
            **os.environ,
            "SOVEREIGN_CONFIG": f"file://{work / 'sovereign.yaml'}",
            "SOVEREIGN_HOST": HOST,
            "SOVEREIGN_PORT": str(sov_port),
            "SOVEREIGN_WORKERS": "1",
            "SOVEREIGN_ENABLE_ACCESS_LOGS": "False",
        }
        sov_log = (work / "sovereign.log").open("ab")
        sov = subprocess.Popen(
            [str(exe)], env=env, stdout=sov_log, stderr=subprocess.STDOUT, cwd=work
        )
        deadline = time.monotonic() + 90
        while True:
            if sov.poll() is not None:
                raise RuntimeError(f"sovereign exited with {sov.returncode}")
            try:
                if requests.get(f"http://{HOST}:{sov_port}/healthcheck", timeout=2).ok:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("sovereign /healthcheck not up within 90 s")
            time.sleep(0.2)
        admin, listen = free_port(), free_port()
        bootstrap = work / "envoy.yaml"
        bootstrap.write_text(
            BOOTSTRAP.format(admin=admin, listen=listen, sov=sov_port, refresh=REFRESH_DELAY)
        )
        envoy_log = (work / "envoy.log").open("ab")
        envoy = subprocess.Popen(
            [
                str(envoy_binary(ENVOY_MAIN)),
                "-c",
                str(bootstrap),
                "--disable-hot-restart",
                "--concurrency",
                "1",
                "--drain-time-s",
                "1",
                "-l",
                "warning",
            ],
            stdout=envoy_log,
            stderr=subprocess.STDOUT,
        )
        url = f"http://{HOST}:{listen}"
        wait_for(
            lambda: (
                requests.get(f"{url}/worker/pre{workers - 1}/x", timeout=2).json()["backend"]
                == f"pool{(workers - 1) % 20}"
            ),
            120,
            "sovereign's Envoy routing the pre-registered workers",
        )
        session = requests.Session()
        answers: Counter[str] = Counter()
        latencies = []
        for i in range(count):
            worker_id = f"sov{i}"
            port = backends.start(worker_id)
            instances.append({"id": worker_id, "port": port})
            t0 = time.perf_counter()
            write_instances(source, instances)
            deadline = t0 + 60
            while True:
                resp = session.get(f"{url}/worker/{worker_id}/probe", timeout=5)
                now = time.perf_counter()
                if resp.status_code != 200:
                    kind = f"HTTP {resp.status_code}"
                else:
                    body = resp.json()
                    kind = (
                        "new"
                        if body["port"] == port
                        else ("web_api" if body["backend"] == "web_api_service" else "wrong")
                    )
                answers[kind] += 1
                if kind == "new":
                    latencies.append((now - t0) * 1000)
                    break
                if now > deadline:
                    raise RuntimeError(f"sovereign: {worker_id} not routable after 60 s")
                time.sleep(0.001)
        return {
            **out,
            "theirs_ms": summary(latencies),
            "answers": dict(answers),
            "setting": f"source refresh_rate 1 s, Envoy REST refresh_delay {REFRESH_DELAY}, "
            "Python templates, 1 web worker",
        }
    except Exception as exc:  # report why, keep the rest of the run
        log_tail = (
            (work / "sovereign.log").read_text(errors="replace")[-1500:]
            if (work / "sovereign.log").exists()
            else ""
        )
        return {**out, "error": f"{type(exc).__name__}: {exc}", "log": log_tail}
    finally:
        if envoy is not None:
            stop_process(envoy)
        if sov is not None:
            stop_process(sov)
        backends.close()
