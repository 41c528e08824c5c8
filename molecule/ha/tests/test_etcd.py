"""The lab etcd cluster of dhops.envoy.etcd: three healthy members from Debian's package."""

import pathlib
import re

import pytest
from conftest import run_playbook

testinfra_hosts = ["docker://ha-1", "docker://ha-2", "docker://ha-3"]
ETCDCTL = "ETCDCTL_API=3 etcdctl --endpoints http://{}:2379"


def address(host) -> str:
    return {"ha-1": "127.0.0.11", "ha-2": "127.0.0.12", "ha-3": "127.0.0.13"}[host.backend.name]


def test_member_runs_under_the_hardened_package_unit(host):
    service = host.service("etcd")
    assert service.is_running and service.is_enabled
    props = service.systemd_properties
    assert props["User"] == "etcd"
    assert props["NoNewPrivileges"] == "yes"
    assert props["ProtectSystem"] == "strict"
    assert props["Restart"] == "on-failure"
    assert "/var/lib/etcd" in props["ReadWritePaths"]
    settings = host.file("/etc/default/etcd").content_string
    assert f"ETCD_LISTEN_CLIENT_URLS=http://{address(host)}:2379" in settings
    assert host.file("/var/lib/etcd/dhops/member").is_directory


def test_every_member_of_the_cluster_is_healthy(host):
    health = host.run(ETCDCTL.format(address(host)) + " endpoint health --cluster")
    assert health.rc == 0, health.stdout + health.stderr
    members = host.run(ETCDCTL.format(address(host)) + " member list")
    assert members.rc == 0
    names = sorted(line.split(", ")[2] for line in members.stdout.splitlines() if line)
    assert names == ["ha-1", "ha-2", "ha-3"]


@pytest.mark.parametrize("key", ["ETCD_INITIAL_CLUSTER="])
def test_initial_cluster_comes_from_the_group(host, key):
    line = next(
        line
        for line in host.file("/etc/default/etcd").content_string.splitlines()
        if line.startswith(key)
    )
    assert line == (
        "ETCD_INITIAL_CLUSTER=ha-1=http://127.0.0.11:2380,ha-2=http://127.0.0.12:2380,"
        "ha-3=http://127.0.0.13:2380"
    )


def test_a_second_run_of_the_role_changes_nothing():
    result = run_playbook(str(pathlib.Path(__file__).parent / "etcd.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    recap = re.findall(r"^(ha-\d)\s+:.*changed=(\d+)", result.stdout, re.MULTILINE)
    assert sorted(recap) == [("ha-1", "0"), ("ha-2", "0"), ("ha-3", "0")], result.stdout
