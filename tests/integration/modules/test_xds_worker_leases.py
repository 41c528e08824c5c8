"""dhops.envoy.xds_worker's `ttl` (worker leases) and a token file with several tokens,
through `ansible` against real dhxds daemons (SQLite, and etcd with a real 1-member cluster)."""

from __future__ import annotations

import pytest
from dhops_testkit import HOST, TOKEN, Daemon
from dhops_testkit.etcd import EtcdCluster, require_etcd


def args(daemon, **extra):
    base = {"api_url": daemon.url, "token": TOKEN, "id": "w1", "host": HOST, "port": 18101}
    base.update(extra)
    return base


def test_ttl_with_the_sqlite_registry_fails_with_the_daemons_reason(run_module, dhxds):
    check = run_module("xds_worker", args(dhxds, ttl=30), check=True)
    assert check.rc == 0 and check.result["changed"] is True and dhxds.worker("w1") is None
    result = run_module("xds_worker", args(dhxds, ttl=30))
    assert result.rc != 0 and "HTTP 400" in result.result["msg"]
    assert "ttl (a worker lease) needs state.backend etcd" in result.result["msg"]
    assert dhxds.worker("w1") is None
    early = run_module("xds_worker", args(dhxds, ttl=1))
    assert early.rc != 0 and early.result["msg"] == "ttl 1 is outside 2-86400 seconds"


def test_a_token_file_with_several_tokens_sends_the_last(run_module, dhxds, tmp_path):
    tokens = tmp_path / "rotating-token"
    tokens.write_text(f"# rotation in progress\nold-token-being-retired\n\n{TOKEN}\n")
    params = args(dhxds, token_file=str(tokens))
    del params["token"]
    result = run_module("xds_worker", params)
    assert result.rc == 0 and result.result["changed"] is True, result.result


@pytest.fixture
def etcd_daemon(tmp_path):
    require_etcd()
    cluster = EtcdCluster(tmp_path / "etcd", members=1).start()
    state = {"backend": "etcd", "etcd": {"endpoints": cluster.endpoints}}
    daemon = Daemon(tmp_path / "dhxds-etcd", extra={"state": state})
    try:
        yield daemon.start()
    finally:
        daemon.stop()
        cluster.stop()


def test_ttl_with_etcd_is_stored_and_every_run_renews_it(run_module, etcd_daemon):
    first = run_module("xds_worker", args(etcd_daemon, ttl=60, wait="none"))
    assert first.rc == 0 and first.result["changed"] is True, first.result
    assert etcd_daemon.worker("w1")["ttl"] == 60
    again = run_module("xds_worker", args(etcd_daemon, ttl=60, wait="none"))
    assert again.rc == 0 and again.result["changed"] is False
    assert again.result["msg"] == "worker w1 unchanged"
    assert "lease of worker" not in etcd_daemon.log()  # a renewal, not a failure
    check = run_module("xds_worker", args(etcd_daemon, ttl=120, wait="none"), check=True)
    assert check.result["changed"] is True and etcd_daemon.worker("w1")["ttl"] == 60
    dropped = run_module("xds_worker", args(etcd_daemon, wait="none"))
    assert dropped.result["changed"] is True and "ttl" not in etcd_daemon.worker("w1")
