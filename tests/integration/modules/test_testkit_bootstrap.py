"""The test harness renders the envoy role's bootstrap exactly as Ansible's template module
does, so every integration test runs Envoy with what the role deploys."""

import pytest
from dhops_testkit import ROOT
from dhops_testkit.ansible_run import ansible_template
from dhops_testkit.roles import render_role_template, template_variables

CASES = {
    "tls-ads": {"envoy_tls_enabled": True},
    "v3-before-1.26-no-connection-monitor": {"envoy_version": "1.25.9", "envoy_tls_enabled": False},
    "separate-streams-grpc-web-health": {
        "envoy_tls_enabled": False,
        "envoy_xds_use_ads": False,
        "envoy_grpc_web_enabled": True,
        "envoy_health_check_enabled": True,
        "envoy_http_redirect_enabled": True,
        "envoy_access_log_format": "%START_TIME% %RESPONSE_CODE%",
    },
}
INVENTORY = {"envoy_node_id": "edge-1", "envoy_xds_hosts": ["127.0.0.1", "::1"]}


@pytest.mark.parametrize("template", ["config_v3.yaml.j2", "config_v2.yaml.j2"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_harness_renders_like_ansible(tmp_path, template, case):
    overrides = {**INVENTORY, **CASES[case]}
    if template == "config_v2.yaml.j2":
        overrides["envoy_version"] = "1.12.2"
    ours = render_role_template("envoy", template, overrides)
    variables = template_variables("envoy", template, overrides)
    dest = tmp_path / "rendered.yaml"
    src = ROOT / "roles" / "envoy" / "templates" / template
    outcome = ansible_template(tmp_path, src, dest, variables)
    assert outcome.rc == 0, outcome.result
    theirs = dest.read_text()
    # Line 1 is {{ ansible_managed }}, which Ansible fills in itself.
    assert ours.splitlines()[1:] == theirs.splitlines()[1:]
    assert "{{" not in ours and "{%" not in ours
