"""The envoy role's package method ends with a pinned, held Envoy or fails before installing:
the pin each platform gets, and the clear preflight failures when it cannot be written. Runs
the role's preflight on the controller with the platform's facts given (no package repository
is reachable here)."""

import pytest
from dhops_testkit.ansible_run import envoy_preflight as preflight


@pytest.mark.parametrize(
    ("os_family", "variables", "pin"),
    [
        ("Debian", {}, "hold"),
        # No repository file of ours to put exclude= into: a dnf versionlock instead.
        ("RedHat", {}, "versionlock"),
        ("RedHat", {"envoy_package_repo_manage": True, "envoy_package_repo_url": "x"}, "exclude"),
        ("RedHat", {"envoy_package_pin": "versionlock"}, "versionlock"),
        ("Debian", {"envoy_package_pin": "none"}, "none"),
    ],
)
def test_every_platform_gets_a_pin_it_can_write(tmp_path, os_family, variables, pin):
    rc, output = preflight(tmp_path, os_family, **variables)
    assert rc == 0, output
    assert f'"msg": "pin={pin}"' in output, output


@pytest.mark.parametrize(
    ("os_family", "variables", "message"),
    [
        # The old silent no-op: exclude= only exists in the repository file the role writes.
        ("RedHat", {"envoy_package_pin": "exclude"}, "needs envoy_package_repo_manage=true"),
        ("RedHat", {"envoy_package_pin": "hold"}, "Allowed here: exclude, versionlock, none"),
        ("Debian", {"envoy_package_pin": "versionlock"}, "Allowed here: hold, none"),
        ("Debian", {"envoy_package_version": ""}, "cannot pin Envoy"),
    ],
)
def test_a_pin_that_cannot_be_written_fails_before_installing(
    tmp_path, os_family, variables, message
):
    rc, output = preflight(tmp_path, os_family, **variables)
    assert rc != 0, output
    assert "Nothing was installed" in output, output
    assert message in " ".join(output.split()), output
