"""The envoy role's configuration templates, rendered by Ansible from the role's own defaults
and vars, are accepted by every Envoy release the harness can fetch.

- v3 (Envoy >= 1.18): `envoy --mode validate` (what the role runs before activating a
  configuration) with every version in scripts/harness/envoy-versions.txt, for variants that
  cover every branch of config_v3.yaml.j2.
- v2 (Envoy 1.12-1.17): no binary can be obtained here, so the same variants are checked
  structurally: parsed strictly into the v2 Bootstrap and HttpConnectionManager messages that
  xds-protos ships, and compared with the v3 rendering (same listeners, filters, clusters).
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest
import yaml
from dhops_testkit.tls import self_signed_certificate

ROOT = pathlib.Path(__file__).resolve().parents[3]
ROLE = ROOT / "roles" / "envoy"
CACHE = pathlib.Path(
    os.environ.get("DHOPS_CACHE") or pathlib.Path.home() / ".cache" / "dhops-envoy"
)
VERSIONS = [
    line.strip()
    for line in (ROOT / "scripts" / "harness" / "envoy-versions.txt").read_text().splitlines()
    if line.strip() and not line.lstrip().startswith("#")
]
V2_VERSION = "1.12.2"  # the version Deephaven shipped with; any 1.12-1.17 renders the same

# Variants: together they take every branch of the templates.
VARIANTS = {
    # What most users deploy: the role's defaults, TLS with their certificate.
    "defaults": {},
    # Every optional feature on, several dhxds hosts (IPv4, IPv6, a name).
    "everything": {
        "envoy_listener_port": 8443,
        "envoy_health_check_enabled": True,
        "envoy_grpc_web_enabled": True,
        "envoy_http_redirect_enabled": True,
        "envoy_http_redirect_port": 8080,
        "envoy_access_log_format": "[%START_TIME%] %REQ(:PATH)% %RESPONSE_CODE%",
        "envoy_xds_hosts": ["127.0.0.1", "::1", "localhost"],
        "envoy_admin_address": "::1",
    },
    # Cleartext, separate CDS/RDS streams, health check without required clusters,
    # redirect to the default HTTPS port (no port_redirect).
    "plain": {
        "envoy_tls_enabled": False,
        "envoy_xds_use_ads": False,
        "envoy_health_check_enabled": True,
        "envoy_health_check_required_clusters": [],
        "envoy_http_redirect_enabled": True,
        "envoy_max_downstream_connections": 0,  # no overload manager (on main after issue 13)
    },
    # Delta ADS with worker clusters on demand (the on_demand filter, ODCDS; v3 >= 1.36).
    "on_demand": {"envoy_xds_delta": True, "envoy_xds_on_demand": True},
}
# What the role refuses for v2 (preflight): no v2 rendering to compare.
V3_ONLY = {"on_demand"}


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> dict[tuple[str, str], pathlib.Path]:
    """{(api, variant): rendered file}: one ansible-playbook run with the template module,
    the role's defaults/main.yml and vars/main.yml, as the role's stage entry point renders."""
    work = tmp_path_factory.mktemp("envoy-config")
    cert, key = self_signed_certificate(work)
    common = {
        "envoy_tls_cert_path": str(cert),
        "envoy_tls_key_path": str(key),
        "envoy_access_log_path": str(work / "access.log"),
        "envoy_xds_hosts": ["127.0.0.1"],
    }
    playbook, out = [], {}
    for api, version in (("v3", VERSIONS[-1]), ("v2", V2_VERSION)):
        for variant, overrides in VARIANTS.items():
            if api == "v2" and variant in V3_ONLY:
                continue
            dest = work / f"{api}-{variant}.yaml"
            out[(api, variant)] = dest
            # Task vars outrank vars_files, so the variant wins over the role's defaults.
            task_vars = {**common, **overrides, "envoy_version": version}
            playbook.append(
                {
                    "name": f"Render {dest.name}",
                    "hosts": "localhost",
                    "connection": "local",
                    "gather_facts": False,
                    "vars_files": [str(ROLE / sub / "main.yml") for sub in ("defaults", "vars")],
                    "tasks": [
                        {
                            "name": "Render the role's template for this Envoy version",
                            "ansible.builtin.template": {
                                "src": str(ROLE / "templates")
                                + "/config_{{ _envoy_api_version }}.yaml.j2",
                                "dest": str(dest),
                                "mode": "0600",
                            },
                            "vars": task_vars,
                        }
                    ],
                }
            )
    (work / "render.yml").write_text(json.dumps(playbook))
    interpreter = f"ansible_python_interpreter={sys.executable}"
    result = subprocess.run(
        ["ansible-playbook", "-i", "localhost,", "-e", interpreter, str(work / "render.yml")],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return out


def _binary(version: str) -> pathlib.Path:
    binary = CACHE / "envoy" / version / "envoy"
    if not binary.exists():
        pytest.fail(f"no Envoy {version} at {binary}: run scripts/harness/envoy-binaries.sh")
    return binary


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("version", VERSIONS)
def test_v3_configuration_validates(rendered, version, variant):
    config = rendered[("v3", variant)]
    # Exactly the role's validate step (tasks/validate.yml).
    result = subprocess.run(
        [_binary(version), "--mode", "validate", "--config-path", config, "--log-level", "warn"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, f"Envoy {version} rejected {config.name}:\n{result.stderr}"


def test_every_variant_renders_its_branches(rendered):
    everything = yaml.safe_load(rendered[("v3", "everything")].read_text())
    plain = yaml.safe_load(rendered[("v3", "plain")].read_text())
    listeners = {lis["name"]: lis for lis in everything["static_resources"]["listeners"]}
    assert set(listeners) == {"https_listener", "http_redirect_listener"}
    filters = [f["name"] for f in _hcm(listeners["https_listener"])["http_filters"]]
    assert filters == [
        "envoy.filters.http.health_check",
        "envoy.filters.http.grpc_web",
        "envoy.filters.http.router",
    ]
    assert "ads_config" in everything["dynamic_resources"]
    assert "ads_config" not in plain["dynamic_resources"]
    assert [lis["name"] for lis in plain["static_resources"]["listeners"]] == [
        "http_listener",
        "http_redirect_listener",
    ]
    assert "transport_socket" not in plain["static_resources"]["listeners"][0]["filter_chains"][0]


def _hcm(listener: dict) -> dict:
    hcm = listener["filter_chains"][0]["filters"][0]
    return hcm.get("typed_config") or hcm["config"]


def _shape(bootstrap: dict) -> dict:
    """What a v2 and a v3 rendering must share: listeners, ports, filters, xDS endpoints."""
    listeners = bootstrap["static_resources"]["listeners"]
    return {
        "listeners": [
            (
                lis["name"],
                lis["address"]["socket_address"]["port_value"],
                [f["name"].rsplit(".", 1)[-1] for f in _hcm(lis)["http_filters"]],
                bool({"transport_socket", "tls_context"} & set(lis["filter_chains"][0])),
            )
            for lis in listeners
        ],
        "xds_endpoints": bootstrap["static_resources"]["clusters"][0]["load_assignment"],
        "ads": "ads_config" in bootstrap["dynamic_resources"],
        "admin": bootstrap["admin"]["address"],
        "node": bootstrap["node"],
    }


@pytest.mark.parametrize("variant", sorted(VARIANTS.keys() - V3_ONLY))
def test_v2_configuration_structure(rendered, variant):
    from envoy.config.bootstrap.v2 import bootstrap_pb2
    from envoy.config.filter.network.http_connection_manager.v2 import (
        http_connection_manager_pb2,
    )
    from google.protobuf import json_format

    v2 = yaml.safe_load(rendered[("v2", variant)].read_text())
    assert ".v3." not in json.dumps(v2)
    # Strict parse: an unknown or misspelt field anywhere outside the filters' `config`
    # structs fails here, as Envoy 1.12 would fail on it.
    json_format.ParseDict(v2, bootstrap_pb2.Bootstrap())
    for listener in v2["static_resources"]["listeners"]:
        json_format.ParseDict(_hcm(listener), http_connection_manager_pb2.HttpConnectionManager())
    v3 = yaml.safe_load(rendered[("v3", variant)].read_text())
    assert _shape(v2) == _shape(v3)
