"""Workers registered, replaced and removed while Envoy runs, without touching Envoy."""

from __future__ import annotations

import pytest
from dhops_testkit import ENVOY_MAIN, Daemon, Envoy, wait_for


@pytest.mark.parametrize("mode", ["ads", "separate"])
def test_register_replace_and_remove_while_envoy_runs(backends, daemon, start_envoy, mode):
    daemon.put_worker("w1", backends.start("w1"))
    envoy = start_envoy(ENVOY_MAIN, mode)
    wait_for(lambda: envoy.backend_of("/worker/w1/") == "w1", 60, "w1")

    # A new worker becomes routable; no request on the way sees a 503 (cluster before route).
    resp = daemon.call("PUT", "/v1/workers/w2", {"host": "127.0.0.1", "port": backends.start("w2")})
    assert resp.status_code == 201
    answers = envoy.answers_until("/worker/w2/x", until="w2")
    assert set(answers) <= {"web_api_service", "w2"}, answers

    # Replacing moves traffic to the new upstream.
    resp = daemon.call(
        "PUT", "/v1/workers/w2", {"host": "127.0.0.1", "port": backends.start("w2b")}
    )
    assert resp.status_code == 200
    answers = envoy.answers_until("/worker/w2/x", until="w2b")
    assert set(answers) <= {"w2", "w2b"}, answers

    # Deleting removes the route (routes before clusters: never a 503 on the way).
    assert daemon.call("DELETE", "/v1/workers/w2").status_code == 204
    answers = envoy.answers_until("/worker/w2/x", until="web_api_service")
    assert set(answers) <= {"w2b", "web_api_service"}, answers
    wait_for(lambda: "worker_w2" not in envoy.clusters(), 60, "w2's cluster removed")
    assert envoy.clusters() == {"xds_service", "web_api_service", "worker_w1"}
    assert envoy.backend_of("/worker/w1/") == "w1"
    assert envoy.stat("cluster_manager.cds.update_rejected") == 0


def test_static_workers_from_the_config_are_routed_and_read_only(tmp_path, backends, web_api_port):
    static = {"id": "s1", "host": "127.0.0.1", "port": backends.start("s1")}
    daemon = Daemon(tmp_path, web_api_port, {"static_workers": [static]}).start()
    envoy = Envoy(ENVOY_MAIN, tmp_path, daemon.xds_port, "ads")
    try:
        envoy.start()
        wait_for(lambda: envoy.backend_of("/worker/s1/") == "s1", 60, "static worker s1")
        listed = daemon.call("GET", "/v1/workers").json()["workers"]
        assert [(w["id"], w["static"]) for w in listed] == [("s1", True)]
        resp = daemon.call("DELETE", "/v1/workers/s1")
        assert resp.status_code == 409
        assert "defined in the config file" in resp.json()["error"]
        assert envoy.backend_of("/worker/s1/") == "s1"
    finally:
        envoy.stop()
        daemon.stop()
