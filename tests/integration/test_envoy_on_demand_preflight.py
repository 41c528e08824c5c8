"""envoy_xds_on_demand needs delta ADS on Envoy >= 1.36: anything else is refused in the
role's preflight, naming what is missing, before anything on the host changes."""

import pytest
from dhops_testkit.ansible_run import envoy_preflight as preflight

ON_DEMAND = {"envoy_xds_on_demand": True, "envoy_version": "1.40.0"}


def test_on_demand_with_delta_ads_passes(tmp_path):
    rc, output = preflight(tmp_path, "Debian", **ON_DEMAND, envoy_xds_delta=True)
    assert rc == 0, output


@pytest.mark.parametrize(
    "variables",
    [
        {"envoy_xds_delta": False},
        {"envoy_xds_delta": True, "envoy_xds_use_ads": False},
        {"envoy_xds_delta": True, "envoy_version": "1.35.0"},
    ],
)
def test_on_demand_without_what_it_needs_is_refused(tmp_path, variables):
    rc, output = preflight(tmp_path, "Debian", **{**ON_DEMAND, **variables})
    assert rc != 0
    assert (
        "envoy_xds_on_demand needs envoy_xds_delta, envoy_xds_use_ads and Envoy >= 1.36" in output
    )
