"""playbooks/upgrade.yml on a three-host fleet behind a load balancer (load_client.py).

The tests run in file order and each leaves the fleet in the state the next one starts from:
converge installs 1.36.4 -> refusals change nothing -> 1.36.4 -> 1.40.0 under load -> back
towards 1.36.4 under load with a build that crashes on upg-envoy-2 (rollback, rollout stops).
"""

import urllib3
from conftest import HOSTS, broken_binary

OLD, NEW = "1.36.4", "1.40.0"
urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)  # self-signed listeners


def said(result) -> str:
    """Everything the playbook printed, whitespace-normalised (messages wrap in the output)."""
    return " ".join((result.stdout + result.stderr).split())


def outcomes(summary: dict) -> dict[str, tuple[str, str, str]]:
    return {
        h["host"]: (h["version_before"], h["version_after"], h["outcome"]) for h in summary["hosts"]
    }


def test_fleet_starts_on_the_old_version(fleet):
    assert fleet.versions() == dict.fromkeys(HOSTS, OLD)
    assert all(fleet.health(name) == 200 for name in HOSTS)


def test_refuses_when_a_host_of_the_group_is_unreachable(fleet, upgrade):
    """Also with --limit: the host outside the limit still counts."""
    pids, configs = fleet.main_pids(), fleet.config_sums()
    ghost = {"upg-envoy-ghost": {"ansible_connection": "community.docker.docker"}}

    result, _log = upgrade(NEW, extra_hosts=ghost, args=["--limit", "upg-envoy-1"])

    assert result.returncode != 0
    refusal = "Refusing to upgrade: upg-envoy-ghost of group 'envoy' cannot be reached"
    assert refusal in said(result)
    assert "upgrade_allow_unreachable=true" in said(result)
    assert fleet.main_pids() == pids
    assert fleet.config_sums() == configs
    assert fleet.versions() == dict.fromkeys(HOSTS, OLD)


def test_a_build_that_fails_validation_stops_before_any_restart(fleet, upgrade, tmp_path):
    pids, configs = fleet.main_pids(), fleet.config_sums()
    broken = broken_binary(tmp_path / "broken", NEW, validate_with=None)

    result, _log = upgrade(NEW, host_vars={"upg-envoy-2": {"envoy_binary_local_path": broken}})

    assert result.returncode != 0
    assert f"Staging Envoy {NEW} failed on upg-envoy-2" in said(result)
    assert "simulated broken Envoy build" in said(result)
    assert "No Envoy was restarted" in said(result)
    assert fleet.main_pids() == pids
    assert fleet.config_sums() == configs
    assert fleet.versions() == dict.fromkeys(HOSTS, OLD)


def test_rolling_upgrade_under_load_fails_no_request(fleet, upgrade, load):
    with load() as counts:
        result, summary = upgrade(NEW)

    assert result.returncode == 0
    assert counts["failed"] == 0, counts["failures"]
    assert fleet.versions() == dict.fromkeys(HOSTS, NEW)
    assert outcomes(summary) == dict.fromkeys(HOSTS, (OLD, NEW, "upgraded"))
    for name in HOSTS:
        assert f"{name}: {OLD} -> {NEW}, upgraded" in said(result)
    # The load balancer really spread the load and saw every host leave rotation and return.
    for target in counts["targets"].values():
        assert target["ok"] > 0
        assert target["went_down"] >= 1
        assert target["up"]
    assert all(h["seconds_out_of_rotation"] > 0 for h in summary["hosts"])


def test_a_failed_gate_rolls_the_host_back_and_stops_the_rollout(fleet, upgrade, load, tmp_path):
    """Back to 1.36.4, but upg-envoy-2 gets a '1.36.4' that validates (with the real 1.40.0
    binary on the host) and then cannot start: its gate fails, it returns to 1.40.0 and to
    rotation, and upg-envoy-3 is never touched. The same playbook moves a fleet either way."""
    broken = broken_binary(tmp_path / "crashing", OLD, validate_with=f"/opt/envoy/{NEW}/bin/envoy")
    pid_of_third = fleet.main_pids()["upg-envoy-3"]
    crashing_on_second = {"upg-envoy-2": {"envoy_binary_local_path": broken}}

    with load() as counts:
        result, summary = upgrade(OLD, host_vars=crashing_on_second)

    assert result.returncode != 0
    assert counts["failed"] == 0, counts["failures"]
    assert outcomes(summary) == {
        "upg-envoy-1": (NEW, OLD, "upgraded"),
        "upg-envoy-2": (NEW, NEW, "rolled_back"),
        "upg-envoy-3": (NEW, NEW, "not_attempted"),
    }
    assert fleet.versions() == {"upg-envoy-1": OLD, "upg-envoy-2": NEW, "upg-envoy-3": NEW}
    assert fleet.main_pids()["upg-envoy-3"] == pid_of_third  # the rollout stopped before it
    assert all(fleet.health(name) == 200 for name in HOSTS)  # the rolled-back host serves again
    assert "UPGRADE FAILED on upg-envoy-2" in said(result)
    assert f"upg-envoy-2: {NEW} -> {NEW}, rolled_back" in said(result)
    assert f"The rollout to Envoy {OLD} stopped: upg-envoy-2 rolled_back" in said(result)
