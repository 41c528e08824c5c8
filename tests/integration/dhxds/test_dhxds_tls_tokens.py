"""Security options of the daemon with real processes: mutual TLS between a real Envoy and
dhxds (xds.tls), and API token rotation without a restart (api.token_file with several
tokens, re-read when it changes)."""

from __future__ import annotations

import subprocess
import sys

import grpc
import pytest
import yaml
from dhops_testkit import ENVOY_MAIN, HOST, TOKEN, Daemon, Envoy
from dhops_testkit.base import wait_for
from dhops_testkit.etcd import EtcdCluster, require_etcd
from dhops_testkit.tls import Pki, make_pki


@pytest.fixture
def pki(tmp_path) -> Pki:
    """A test CA; a server certificate for 127.0.0.1 and a client certificate, both signed
    by it (the CA is the client CA of xds.tls as well as the one Envoy trusts)."""
    return make_pki(tmp_path / "pki")


def with_xds_client_tls(envoy: Envoy, pki: Pki, client_cert: bool = True) -> Envoy:
    """Give the bootstrap's xds_service cluster an UpstreamTlsContext (what the envoy role's
    envoy_xds_tls_* variables render): trust the CA, present the client certificate."""
    config = yaml.safe_load(envoy.config_path.read_text())
    [cluster] = [c for c in config["static_resources"]["clusters"] if c["name"] == "xds_service"]
    context = {
        "alpn_protocols": ["h2"],
        "validation_context": {"trusted_ca": {"filename": str(pki.ca)}},
    }
    if client_cert:
        context["tls_certificates"] = [
            {
                "certificate_chain": {"filename": str(pki.client_cert)},
                "private_key": {"filename": str(pki.client_key)},
            }
        ]
    cluster["transport_socket"] = {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3."
            "UpstreamTlsContext",
            "sni": "localhost",
            "common_tls_context": context,
        },
    }
    envoy.config_path.write_text(yaml.safe_dump(config))
    return envoy


def mtls_daemon(workdir, pki: Pki, web_api_port: int, **extra) -> Daemon:
    """A daemon whose xDS listener requires client certificates signed by the test CA."""
    daemon = Daemon(workdir, web_api_port, extra=extra)
    config = yaml.safe_load(daemon.config_path.read_text())
    config["xds"]["tls"] = {
        "cert_file": str(pki.server_cert),
        "key_file": str(pki.server_key),
        "client_ca_file": str(pki.ca),
    }
    daemon.config_path.write_text(yaml.safe_dump(config))
    return daemon


def test_mtls_envoy_with_a_client_certificate_gets_routes_one_without_is_refused(
    tmp_path, pki, backends, web_api_port
):
    daemon = mtls_daemon(tmp_path / "d", pki, web_api_port).start()
    envoys = []
    try:
        assert "(mutual TLS)" in daemon.log()
        daemon.put_worker("w1", backends.start("w1"))
        good = with_xds_client_tls(Envoy(ENVOY_MAIN, tmp_path, daemon.xds_port, "ads"), pki)
        envoys.append(good.start())
        wait_for(lambda: good.backend_of("/worker/w1/") == "w1", 30, "w1 through the mTLS Envoy")
        assert good.connected()
        # Without a client certificate: the TLS handshake fails, no route ever arrives.
        bad = with_xds_client_tls(
            Envoy(
                ENVOY_MAIN, tmp_path, daemon.xds_port, "ads", envoy_xds_initial_fetch_timeout="1s"
            ),
            pki,
            client_cert=False,
        )
        envoys.append(bad.start())
        wait_for(
            lambda: (
                bad.stat("cluster.xds_service.ssl.connection_error")
                + bad.stat("cluster.xds_service.upstream_cx_connect_fail")
                + bad.stat("cluster.xds_service.upstream_cx_destroy_remote")
                > 1
            ),
            30,
            "failed TLS connections from the Envoy without a client certificate",
        )
        assert not bad.connected()
        assert "worker_w1" not in bad.clusters()
        assert bad.backend_of("/worker/w1/") == "web_api_service" or bad.get(
            "/worker/w1/"
        ).status_code in (404, 503)
        # A plaintext gRPC client is refused too (the listener speaks TLS only).
        channel = grpc.insecure_channel(f"{HOST}:{daemon.xds_port}")
        with pytest.raises(grpc.FutureTimeoutError):
            grpc.channel_ready_future(channel).result(timeout=3)
        channel.close()
        # The good Envoy is still served (a registration reaches it).
        daemon.put_worker("w2", backends.start("w2"))
        wait_for(lambda: good.backend_of("/worker/w2/") == "w2", 30, "w2 through the mTLS Envoy")
    finally:
        for envoy in envoys:
            envoy.stop()
        daemon.stop()


def test_everything_on_tls_etcd_client_certificates_and_xds_mtls(
    tmp_path, pki, backends, web_api_port
):
    """The secured HA setup end to end: dhxds reaches a TLS etcd (--client-cert-auth) with a
    client certificate, and a real Envoy reaches dhxds with one (xds.tls)."""
    require_etcd()
    etcd = EtcdCluster(tmp_path / "etcd", members=1, pki=pki).start()
    state = {
        "backend": "etcd",
        "etcd": {
            "endpoints": etcd.endpoints,
            "ca_file": str(pki.ca),
            "cert_file": str(pki.client_cert),
            "key_file": str(pki.client_key),
        },
    }
    daemon = mtls_daemon(tmp_path / "d", pki, web_api_port, state=state)
    envoy = None
    try:
        daemon.start()
        assert etcd.endpoints[0].startswith("https://")
        daemon.put_worker("w1", backends.start("w1"))
        envoy = with_xds_client_tls(Envoy(ENVOY_MAIN, tmp_path, daemon.xds_port, "ads"), pki)
        envoy.start()
        wait_for(lambda: envoy.backend_of("/worker/w1/") == "w1", 30, "w1 through Envoy")
        assert daemon.call("GET", "/healthz", token=None).json()["status"] == "ok"
    finally:
        if envoy is not None:
            envoy.stop()
        daemon.stop()
        etcd.stop()


def test_bad_xds_tls_config_is_one_line_and_starts_nothing(tmp_path, pki):
    daemon = Daemon(
        tmp_path / "d",
        extra={"xds": {"listen": f"{HOST}:1", "tls": {"cert_file": str(pki.server_cert)}}},
    )
    for args in (["--check"], []):
        result = subprocess.run(
            [sys.executable, "-m", "dhxds", "serve", "--config", str(daemon.config_path), *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 2, result
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "xds.tls needs key_file, client_ca_file" in lines[0], lines
    missing = dict(
        cert_file=str(pki.server_cert), key_file=str(pki.server_key), client_ca_file="/nope.pem"
    )
    daemon = Daemon(tmp_path / "e", extra={"xds": {"listen": f"{HOST}:1", "tls": missing}})
    result = subprocess.run(
        [sys.executable, "-m", "dhxds", "serve", "--config", str(daemon.config_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "dhxds: cannot read xds.tls.client_ca_file /nope.pem: No such file or directory"
    )
    assert not daemon.state_path.parent.exists()  # nothing was created


def test_token_rotation_without_restart(daemon):
    new = "rotated-token-2"
    assert daemon.call("GET", "/v1/workers").status_code == 200
    assert daemon.call("GET", "/v1/workers", token=new).status_code == 401
    pid = daemon.proc.pid
    # Rollover: both tokens valid.
    daemon.token_file.write_text(f"# old, remove after the clients moved\n{TOKEN}\n{new}\n")
    wait_for(
        lambda: daemon.call("GET", "/v1/workers", token=new).status_code == 200,
        20,
        "the new token accepted",
        interval=0.2,
    )
    assert daemon.call("GET", "/v1/workers").status_code == 200
    daemon.put_worker("w1", 9)
    resp = daemon.call("PUT", "/v1/workers/w2", {"host": HOST, "port": 10}, token=new)
    assert resp.status_code == 201
    # The old token removed: refused, the new one keeps working; the same process throughout.
    daemon.token_file.write_text(f"{new}\n")
    wait_for(
        lambda: daemon.call("GET", "/v1/workers").status_code == 401,
        20,
        "the old token refused",
        interval=0.2,
    )
    assert daemon.call("GET", "/v1/workers", token=new).status_code == 200
    assert daemon.proc.pid == pid and daemon.proc.poll() is None
    log = daemon.log_path.read_text()
    assert TOKEN not in log and new not in log
    assert "api.token_file" in log and "re-read: 1 token(s)" in log
