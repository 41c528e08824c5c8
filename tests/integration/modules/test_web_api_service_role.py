"""dhops.envoy.web_api_service through `ansible-playbook` on localhost, with a real file."""

import textwrap

import pytest
from dhops_testkit.ansible_run import dhconfig_imports, standin_dhconfig

ORIGINAL = "# Deephaven site settings\nintraday.server=localhost\n"
BLOCK = (
    "\n[service.name=web_api_service] {\n"
    "    envoy.front.proxy.url=envoy1.example.com:8443\n"
    "    Webapi.server.host=dh1.example.com\n"
    "    envoy.xds.port=8124\n"
    "    envoy.terminate.ssl=false\n"
    "}\n"
)


@pytest.fixture
def site(tmp_path):
    """An inventory with an envoy host and this machine as web_api_service, and a playbook."""
    prop = tmp_path / "iris-environment.prop"
    prop.write_text(ORIGINAL)
    restarts = tmp_path / "restarts.log"
    inventory = tmp_path / "inventory.ini"
    inventory.write_text(
        textwrap.dedent(
            """\
            [envoy]
            envoy1.example.com envoy_listener_port=8443 envoy_tls_enabled=false

            [web_api_service]
            dh1.example.com ansible_connection=local
            """
        )
    )
    playbook = tmp_path / "site.yml"
    playbook.write_text(
        textwrap.dedent(
            f"""\
            - name: Configure web_api_service
              hosts: web_api_service
              gather_facts: false
              vars:
                ansible_python_interpreter: "{{{{ ansible_playbook_python }}}}"
              roles:
                - role: dhops.envoy.web_api_service
                  web_api_service_property_file: {prop}
                  web_api_service_restart_command: [sh, -c, "echo restarted >> {restarts}"]
            """
        )
    )
    return prop, restarts, inventory, playbook


HOST = "dh1.example.com"


def test_first_run_sets_the_block_and_restarts_once(run_playbook, site):
    prop, restarts, inventory, playbook = site
    first = run_playbook(playbook, inventory)
    assert first.rc == 0, first.stderr
    assert prop.read_text() == ORIGINAL + BLOCK
    assert restarts.read_text() == "restarted\n"

    second = run_playbook(playbook, inventory)
    assert second.rc == 0
    assert second.stats(HOST)["changed"] == 0
    assert restarts.read_text() == "restarted\n"  # no change, no restart


def test_check_mode_changes_nothing_and_shows_the_diff(run_playbook, site):
    prop, restarts, inventory, playbook = site
    check = run_playbook(playbook, inventory, "--check", "--diff")
    assert check.rc == 0
    task = check.task("Set web_api_service properties for Envoy", HOST)
    assert task["changed"] is True
    assert "envoy.front.proxy.url=envoy1.example.com:8443" in task["diff"]["after"]
    assert prop.read_text() == ORIGINAL
    assert not restarts.exists()


def test_overrides_and_extra_properties(run_playbook, site):
    prop, _restarts, inventory, playbook = site
    result = run_playbook(
        playbook,
        inventory,
        "-e",
        '{"web_api_service_envoy_front_proxy_url": "dh.example.com:443",'
        ' "web_api_service_terminate_ssl": true, "web_api_service_xds_port": 9124,'
        ' "web_api_service_extra_properties": {"envoy.custom": "x"}}',
    )
    assert result.rc == 0, result.stderr
    text = prop.read_text()
    assert "    envoy.front.proxy.url=dh.example.com:443\n" in text
    assert "    envoy.terminate.ssl=true\n" in text
    assert "    envoy.xds.port=9124\n" in text
    assert "    envoy.custom=x\n" in text


def test_missing_property_file_fails_clearly(run_playbook, site):
    prop, _restarts, inventory, playbook = site
    prop.unlink()
    result = run_playbook(playbook, inventory)
    assert result.rc != 0
    failed = result.task("Fail when the Deephaven property file is missing", HOST)
    assert (
        "does not exist" in failed["msg"]
        and "web_api_service_create_property_file" in failed["msg"]
    )
    assert not prop.exists()


def test_final_key_fails_the_play_and_leaves_the_file(run_playbook, site):
    prop, restarts, inventory, playbook = site
    original = ORIGINAL + "finalize envoy.front.proxy.url\n"
    prop.write_text(original)
    result = run_playbook(playbook, inventory)
    assert result.rc != 0
    failed = result.task("Set web_api_service properties for Envoy", HOST)
    assert "key 'envoy.front.proxy.url' is final" in failed["msg"]
    assert prop.read_text() == original
    assert not restarts.exists()


def test_no_envoy_host_and_no_override_is_refused(run_playbook, site, tmp_path):
    prop, _restarts, _inventory, playbook = site
    inventory = tmp_path / "no-envoy.ini"
    inventory.write_text("[web_api_service]\ndh1.example.com ansible_connection=local\n")
    result = run_playbook(playbook, inventory)
    assert result.rc != 0
    failed = result.task("Check the web_api_service settings", HOST)
    assert "set web_api_service_envoy_front_proxy_url" in failed["msg"]
    assert prop.read_text() == ORIGINAL


def test_dhconfig_backend_imports_into_the_configuration_server(run_playbook, site, tmp_path):
    prop, restarts, inventory, playbook = site
    prop.unlink()  # with dhconfig the file on disk is not used
    store, log, dhconfig = standin_dhconfig(
        tmp_path / "server", {"iris-environment.prop": ORIGINAL}
    )
    extra = (
        "-e",
        f'{{"web_api_service_backend": "dhconfig", "web_api_service_dhconfig_path": "{dhconfig}"}}',
    )
    first = run_playbook(playbook, inventory, *extra)
    assert first.rc == 0, first.stderr
    assert (store / "iris-environment.prop").read_text() == ORIGINAL + BLOCK
    assert len(dhconfig_imports(log)) == 1
    assert restarts.read_text() == "restarted\n"
    second = run_playbook(playbook, inventory, *extra)
    assert second.rc == 0 and second.stats(HOST)["changed"] == 0
    assert len(dhconfig_imports(log)) == 1
    assert not prop.exists()
