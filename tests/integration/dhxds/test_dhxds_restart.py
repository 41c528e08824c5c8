"""kill -9 of the daemon: Envoy keeps serving; after a restart no acknowledged worker is lost."""

from __future__ import annotations

import pytest
from dhops_testkit import ENVOY_MAIN, wait_for


@pytest.mark.parametrize("mode", ["ads", "separate"])
def test_kill9_and_restart_loses_nothing(backends, daemon, start_envoy, mode):
    ports = {name: backends.start(name) for name in ("w1", "w2", "w3")}
    daemon.put_worker("w1", ports["w1"])
    envoy = start_envoy(ENVOY_MAIN, mode)
    daemon.put_worker("w2", ports["w2"])
    wait_for(lambda: envoy.backend_of("/worker/w2/") == "w2", 60, "w2 routable")

    daemon.kill9()
    # Envoy keeps its last configuration while the control plane is gone.
    wait_for(lambda: not envoy.connected(), 60, "Envoy to notice")
    for _request in range(20):
        assert envoy.backend_of("/worker/w1/a") == "w1"
        assert envoy.backend_of("/worker/w2/b") == "w2"
        assert envoy.backend_of("/elsewhere") == "web_api_service"

    # Every acknowledged write is in the database the killed daemon left behind.
    _revision, stored = daemon.stored()
    assert {k: v["port"] for k, v in stored.items()} == {"w1": ports["w1"], "w2": ports["w2"]}

    daemon.start()
    listed = daemon.call("GET", "/v1/workers").json()["workers"]
    assert [(w["id"], w["port"]) for w in listed] == [("w1", ports["w1"]), ("w2", ports["w2"])]
    wait_for(envoy.connected, 90, "Envoy to reconnect")
    assert envoy.backend_of("/worker/w1/a") == "w1"

    # The restarted daemon keeps serving changes to the reconnected Envoy.
    daemon.put_worker("w3", ports["w3"])
    wait_for(lambda: envoy.backend_of("/worker/w3/") == "w3", 60, "w3 routable after restart")
    assert envoy.backend_of("/worker/w2/b") == "w2"
    assert envoy.stat("cluster_manager.cds.update_rejected") == 0
