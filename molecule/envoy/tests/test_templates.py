"""The configuration templates, rendered by ansible on the controller (render.yml).

v3 renderings are checked by the real Envoy binaries (`envoy --mode validate`). Envoy 1.12
cannot be obtained here, so the v2 template is verified structurally only: it must parse and
have the v2 shape (envoy.http_connection_manager with `config:`, api_type GRPC, ...).
"""

import datetime
import json
import os
import pathlib
import subprocess

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

SCENARIO = pathlib.Path(__file__).resolve().parents[1]
CACHE = pathlib.Path(os.environ.get("DHOPS_CACHE", pathlib.Path.home() / ".cache" / "dhops-envoy"))
ALL_OPTIONS = {
    "envoy_xds_hosts": ["10.0.0.1", "xds-2.example"],
    "envoy_health_check_enabled": True,
    "envoy_grpc_web_enabled": True,
    "envoy_http_redirect_enabled": True,
}


def render_all(directory, variants):
    """Render every {name: variables} with render.yml (one ansible-playbook run)."""
    spec = [{"name": name, "vars": variables} for name, variables in variants.items()]
    extra = {"envoy_role_render_dir": str(directory), "envoy_role_render_variants": spec}
    cmd = ["ansible-playbook", str(SCENARIO / "render.yml"), "-e", json.dumps(extra)]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return {name: (directory / f"{name}.yaml").read_text() for name in variants}


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tls")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    (directory / "cert.pem").write_bytes(cert_pem)
    (directory / "key.pem").write_bytes(key_pem)
    # The mTLS client files where the role deploys them (<envoy_config_dir>/xds-tls/).
    (directory / "xds-tls").mkdir()
    for name, content in {"ca.pem": cert_pem, "cert.pem": cert_pem, "key.pem": key_pem}.items():
        (directory / "xds-tls" / name).write_bytes(content)
    return {
        "envoy_config_dir": str(directory),
        "envoy_tls_cert_path": str(directory / "cert.pem"),
        "envoy_tls_key_path": str(directory / "key.pem"),
        "envoy_access_log_path": str(directory / "access.log"),
    }


# Controller paths: the template only needs them set (the files are under envoy_config_dir).
XDS_MTLS = {
    "envoy_xds_tls_ca_file": "ca.pem",
    "envoy_xds_tls_cert_file": "cert.pem",
    "envoy_xds_tls_key_file": "key.pem",
}
VERSIONS = ["1.36.4", "1.40.0"]
V3_VARIANTS = {
    "tls-all-options": ALL_OPTIONS,
    "plain-http": {"envoy_tls_enabled": False, "envoy_xds_hosts": ["127.0.0.1"]},
    "separate-streams": {"envoy_xds_use_ads": False, "envoy_xds_hosts": ["127.0.0.1"]},
    "xds-mtls-replicas": {"envoy_xds_hosts": ["127.0.0.1", "127.0.0.2"], **XDS_MTLS},
}


@pytest.fixture(scope="module")
def rendered(tmp_path_factory, tls_files):
    variants = {
        "v2-ads": {"envoy_version": "1.12.2", **ALL_OPTIONS},
        "v2-mtls": {"envoy_version": "1.12.2", "envoy_config_dir": "/etc/envoy", **XDS_MTLS},
        "v2-separate": {
            "envoy_version": "1.12.2",
            "envoy_xds_use_ads": False,
            "envoy_tls_enabled": False,
            "envoy_xds_hosts": ["127.0.0.1"],
        },
    }
    for version in VERSIONS:
        for name, variables in V3_VARIANTS.items():
            variants[f"v3-{name}-{version}"] = {"envoy_version": version, **tls_files, **variables}
    directory = tmp_path_factory.mktemp("rendered")
    return directory, render_all(directory, variants)


def hcm_of(listener):
    return listener["filter_chains"][0]["filters"][0]


# ---- v2: structure only (no Envoy 1.12 binary exists here) ----------------------------------


def test_v2_template_has_the_v2_shape_with_ads(rendered):
    text = rendered[1]["v2-ads"]
    config = yaml.safe_load(text)
    assert "@type" not in text and "V3" not in text  # nothing from the v3 API leaks in
    assert config["dynamic_resources"]["ads_config"]["api_type"] == "GRPC"
    grpc = config["dynamic_resources"]["ads_config"]["grpc_services"]
    assert grpc == [{"envoy_grpc": {"cluster_name": "xds_service"}}]
    assert config["dynamic_resources"]["cds_config"]["ads"] == {}
    assert config["admin"]["address"]["socket_address"] == {
        "address": "127.0.0.1",
        "port_value": 8001,
    }

    https, redirect = config["static_resources"]["listeners"]
    assert https["address"]["socket_address"]["port_value"] == 443
    hcm = hcm_of(https)
    assert hcm["name"] == "envoy.http_connection_manager"
    assert "config" in hcm and "typed_config" not in hcm
    assert hcm["config"]["rds"]["route_config_name"] == "rds_config"
    assert hcm["config"]["rds"]["config_source"]["ads"] == {}
    assert hcm["config"]["upgrade_configs"] == [{"upgrade_type": "websocket"}]
    assert hcm["config"]["access_log"][0]["name"] == "envoy.file_access_log"
    filters = [f["name"] for f in hcm["config"]["http_filters"]]
    assert filters == ["envoy.health_check", "envoy.grpc_web", "envoy.router"]
    tls = https["filter_chains"][0]["tls_context"]["common_tls_context"]
    assert tls["alpn_protocols"] == ["h2", "http/1.1"]
    assert tls["tls_certificates"][0]["private_key"]["filename"] == "/etc/envoy/tls/key.pem"
    routes = hcm_of(redirect)["config"]["route_config"]["virtual_hosts"][0]["routes"]
    assert routes[0]["redirect"] == {"https_redirect": True}

    (xds,) = config["static_resources"]["clusters"]
    assert xds["name"] == "xds_service"
    assert xds["http2_protocol_options"] == {}
    endpoints = xds["load_assignment"]["endpoints"][0]["lb_endpoints"]
    assert [e["endpoint"]["address"]["socket_address"] for e in endpoints] == [
        {"address": "10.0.0.1", "port_value": 8124},
        {"address": "xds-2.example", "port_value": 8124},
    ]


def test_v2_template_separate_streams_like_the_seed(rendered):
    config = yaml.safe_load(rendered[1]["v2-separate"])
    assert "ads_config" not in config["dynamic_resources"]
    cds = config["dynamic_resources"]["cds_config"]["api_config_source"]
    assert cds == {
        "api_type": "GRPC",
        "grpc_services": [{"envoy_grpc": {"cluster_name": "xds_service"}}],
    }
    (listener,) = config["static_resources"]["listeners"]
    assert "tls_context" not in listener["filter_chains"][0]
    assert listener["name"] == "http_listener"
    rds = hcm_of(listener)["config"]["rds"]["config_source"]["api_config_source"]
    assert rds == cds


# ---- v3: validated by real Envoy ---------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("variant", sorted(V3_VARIANTS))
def test_v3_template_validates_with_real_envoy(rendered, version, variant):
    binary = CACHE / "envoy" / version / "envoy"
    if not binary.exists():
        pytest.fail(f"{binary} missing: run scripts/harness/envoy-binaries.sh")
    directory, texts = rendered
    text = texts[f"v3-{variant}-{version}"]
    dest = directory / f"v3-{variant}-{version}.yaml"
    result = subprocess.run(
        [str(binary), "--mode", "validate", "--config-path", str(dest), "--log-level", "warn"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr + text
    config = yaml.safe_load(text)
    listener = config["static_resources"]["listeners"][0]
    hcm = hcm_of(listener)["typed_config"]
    assert hcm["rds"]["route_config_name"] == "rds_config"
    assert hcm["rds"]["config_source"]["resource_api_version"] == "V3"
    if variant == "plain-http":
        assert listener["name"] == "http_listener"
        assert "transport_socket" not in listener["filter_chains"][0]
    else:
        assert listener["filter_chains"][0]["transport_socket"]["name"] == (
            "envoy.transport_sockets.tls"
        )
    if variant == "separate-streams":
        assert "ads_config" not in config["dynamic_resources"]
        source = config["dynamic_resources"]["cds_config"]["api_config_source"]
        assert source["transport_api_version"] == "V3"
    else:
        assert config["dynamic_resources"]["ads_config"]["transport_api_version"] == "V3"
        assert config["dynamic_resources"]["cds_config"] == {
            "ads": {},
            "resource_api_version": "V3",
            "initial_fetch_timeout": "15s",
        }


def test_v3_mtls_to_dhxds_is_an_upstream_tls_context_on_xds_service(rendered):
    """Validated by real Envoy above; here: every replica is an endpoint, TLS with the pair."""
    for version in VERSIONS:
        config = yaml.safe_load(rendered[1][f"v3-xds-mtls-replicas-{version}"])
        (xds,) = config["static_resources"]["clusters"]
        endpoints = xds["load_assignment"]["endpoints"][0]["lb_endpoints"]
        addresses = [e["endpoint"]["address"]["socket_address"]["address"] for e in endpoints]
        assert addresses == ["127.0.0.1", "127.0.0.2"]
        tls = xds["transport_socket"]["typed_config"]
        assert tls["@type"].endswith("tls.v3.UpstreamTlsContext")
        context = tls["common_tls_context"]
        assert context["alpn_protocols"] == ["h2"]
        (pair,) = context["tls_certificates"]
        assert pair["private_key"]["filename"].endswith("/xds-tls/key.pem")
        assert context["validation_context"]["trusted_ca"]["filename"].endswith("/xds-tls/ca.pem")
    plain = yaml.safe_load(rendered[1][f"v3-tls-all-options-{VERSIONS[0]}"])
    assert "transport_socket" not in plain["static_resources"]["clusters"][0]


def test_v2_mtls_to_dhxds_is_a_tls_context_on_xds_service(rendered):
    config = yaml.safe_load(rendered[1]["v2-mtls"])
    (xds,) = config["static_resources"]["clusters"]
    context = xds["tls_context"]["common_tls_context"]
    assert context["tls_certificates"] == [
        {
            "certificate_chain": {"filename": "/etc/envoy/xds-tls/cert.pem"},
            "private_key": {"filename": "/etc/envoy/xds-tls/key.pem"},
        }
    ]
    ca = {"filename": "/etc/envoy/xds-tls/ca.pem"}
    assert context["validation_context"] == {"trusted_ca": ca}
    assert "@type" not in rendered[1]["v2-mtls"]
