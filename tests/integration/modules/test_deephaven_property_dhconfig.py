"""backend=dhconfig: export, edit, import through a stand-in `dhconfig` (Deephaven's own tool is
closed source). The stand-in stores files in a directory and logs each call."""

from pathlib import Path

import pytest
from dhops_testkit.ansible_run import dhconfig_imports, standin_dhconfig

SCOPE = "service.name=web_api_service"
ORIGINAL = "includefiles=iris-defaults.prop\n[service.name=web_api_service] {\n    a=1\n}\n"


@pytest.fixture
def server(tmp_path):
    """(store dir, call log, dhconfig path): a configuration server holding two files."""
    return standin_dhconfig(
        tmp_path,
        {"iris-environment.prop": ORIGINAL, "iris-defaults.prop": "finalize locked.*\n"},
    )


def args(dhconfig, tmp_path, **extra):
    base = {
        "backend": "dhconfig",
        "dhconfig_path": str(dhconfig),
        "dhconfig_backup_dir": str(tmp_path / "backups"),
        "path": "iris-environment.prop",
        "scope": SCOPE,
        "key": "envoy.xds.port",
        "value": "8124",
    }
    base.update(extra)
    return base


def test_edit_is_imported_once_and_only_when_changed(run_module, server, tmp_path):
    store, log, dhconfig = server
    check = run_module("deephaven_property", args(dhconfig, tmp_path), check=True, diff=True)
    assert check.rc == 0 and check.result["changed"] is True
    assert "    envoy.xds.port=8124\n" in check.result["diff"]["after"]
    assert dhconfig_imports(log) == [] and (store / "iris-environment.prop").read_text() == ORIGINAL

    real = run_module("deephaven_property", args(dhconfig, tmp_path, backup=True))
    assert real.rc == 0 and real.result["changed"] is True
    assert (store / "iris-environment.prop").read_text() == ORIGINAL.replace(
        "    a=1\n", "    a=1\n    envoy.xds.port=8124\n"
    )
    assert len(dhconfig_imports(log)) == 1
    assert Path(real.result["backup_file"]).read_text() == ORIGINAL

    again = run_module("deephaven_property", args(dhconfig, tmp_path))
    assert again.rc == 0 and again.result["changed"] is False
    assert len(dhconfig_imports(log)) == 1


def test_finals_in_exported_includes_are_refused(run_module, server, tmp_path):
    store, log, dhconfig = server
    result = run_module("deephaven_property", args(dhconfig, tmp_path, key="locked.key"))
    assert result.rc != 0
    assert "key 'locked.key' is final" in result.result["msg"]
    assert "dhconfig:iris-defaults.prop line 1" in result.result["msg"]
    assert dhconfig_imports(log) == [] and (store / "iris-environment.prop").read_text() == ORIGINAL


def test_export_failure_is_reported(run_module, server, tmp_path):
    _store, log, dhconfig = server
    result = run_module("deephaven_property", args(dhconfig, tmp_path, path="missing.prop"))
    assert result.rc != 0
    assert "cannot export missing.prop" in result.result["msg"]
    assert "not found in the configuration server" in result.result["msg"]
    assert dhconfig_imports(log) == []


def test_missing_dhconfig_is_reported(run_module, tmp_path):
    result = run_module("deephaven_property", args(tmp_path / "nope" / "dhconfig", tmp_path))
    assert result.rc != 0
    assert "dhconfig not found or not executable" in result.result["msg"]
