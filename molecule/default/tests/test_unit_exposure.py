"""The deployed units are hardened: `systemd-analyze security` rates each at most 2.5 while
the stack is serving (a request passes through Envoy to the web_api_service first)."""

import re

import pytest
from conftest import reached

MAX_EXPOSURE = 2.5


def exposure(host, unit: str) -> float:
    out = host.check_output(f"systemd-analyze security --no-pager {unit}")
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+)", out)
    assert match, out
    return float(match.group(1))


@pytest.mark.parametrize(
    ("fixture", "unit"), [("envoy_host", "envoy.service"), ("xds_host", "dhxds.service")]
)
def test_unit_exposure_while_serving(request, front_door, fixture, unit):
    host = request.getfixturevalue(fixture)
    assert host.service(unit.removesuffix(".service")).is_running
    assert reached(front_door, "/ide/") == "web_api_service"  # serving, under this unit
    level = exposure(host, unit)
    assert level <= MAX_EXPOSURE, host.run(f"systemd-analyze security --no-pager {unit}").stdout
