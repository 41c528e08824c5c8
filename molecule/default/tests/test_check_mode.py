"""`ansible-playbook site.yml --check --diff` on the converged stack: no change and no failure;
with one changed variable, exactly the task that variable feeds reports a change. (The dry
run on fresh hosts is in prepare.yml, before converge.)"""

import os
import pathlib
import re
import subprocess

import pytest

CONVERGE = pathlib.Path(__file__).resolve().parents[1] / "converge.yml"
RECAP = re.compile(r"^(\S+)\s+: ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)")


def site_check(*args: str) -> tuple[subprocess.CompletedProcess, dict, list]:
    """Run site.yml with --check --diff; (process, recap per host, changed (task, host) pairs)."""
    ephemeral = os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY")
    if not ephemeral:
        pytest.fail("run through molecule (MOLECULE_EPHEMERAL_DIRECTORY unset)")
    done = subprocess.run(
        [
            "ansible-playbook",
            "-i",
            f"{ephemeral}/inventory",
            str(CONVERGE),
            "--check",
            "--diff",
            *args,
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_NOCOLOR": "1"},
        check=False,
    )
    recap, changed, task = {}, [], None
    for line in done.stdout.splitlines():
        if line.startswith("TASK ["):
            task = line[len("TASK [") :].split("]")[0]
        elif line.startswith("changed: ["):
            changed.append((task, line[len("changed: [") :].split("]")[0]))
        elif match := RECAP.match(line):
            host, _ok, change, unreachable, failed = match.groups()
            recap[host] = {
                "changed": int(change),
                "unreachable": int(unreachable),
                "failed": int(failed),
            }
    return done, recap, changed


def test_check_mode_on_the_converged_stack_changes_nothing_and_fails_nothing():
    done, recap, changed = site_check()
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert set(recap) >= {"dh-envoy", "dh-xds", "dh-webapi"}, output
    for host, counts in recap.items():
        assert counts == {"changed": 0, "unreachable": 0, "failed": 0}, (host, changed, output)


def test_check_mode_reports_exactly_the_change_of_one_variable():
    done, recap, changed = site_check("-e", "envoy_node_cluster=renamed-cluster")
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    render = "dhops.envoy.envoy : Stage | Render the configuration to the staged path"
    assert changed == [(render, "dh-envoy")], output
    assert recap["dh-envoy"]["changed"] == 1 and recap["dh-envoy"]["failed"] == 0, output
    assert all(c["changed"] == 0 for h, c in recap.items() if h != "dh-envoy"), output
    assert '+  cluster: "renamed-cluster"' in done.stdout, output
    assert '-  cluster: "deephaven-envoy"' in done.stdout, output
