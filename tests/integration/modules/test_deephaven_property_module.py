"""dhops.envoy.deephaven_property through `ansible`, on real files."""

import os
import stat

SCOPE = "service.name=web_api_service"
ORIGINAL = (
    "includefiles=iris-defaults.prop\n"
    "# Site settings\n"
    "trailing.space=kept   \n"
    "[service.name=web_api_service] {\n"
    "    Webapi.server.port : 8123\n"
    "}\n"
)


def write(path, data: bytes, mode=0o640):
    path.write_bytes(data)
    os.chmod(path, mode)
    return path


def test_set_check_diff_backup_and_idempotence(run_module, tmp_path):
    prop = write(tmp_path / "iris-environment.prop", ORIGINAL.encode())
    args = {
        "path": str(prop),
        "scope": SCOPE,
        "key": "envoy.xds.port",
        "value": 8124,
        "backup": True,
    }

    check = run_module("deephaven_property", args, check=True, diff=True)
    assert check.rc == 0 and check.result["changed"] is True
    assert "+    envoy.xds.port=8124" not in prop.read_text()
    assert check.result["diff"]["after"].endswith("    envoy.xds.port=8124\n}\n")
    assert prop.read_bytes() == ORIGINAL.encode()

    real = run_module("deephaven_property", args)
    assert real.rc == 0 and real.result["changed"] is True
    expected = ORIGINAL.replace("8123\n", "8123\n    envoy.xds.port=8124\n")
    assert prop.read_text() == expected
    assert stat.S_IMODE(prop.stat().st_mode) == 0o640  # the file keeps its mode
    backup = real.result["backup_file"]
    assert open(backup, "rb").read() == ORIGINAL.encode()

    again = run_module("deephaven_property", args)
    assert again.rc == 0 and again.result["changed"] is False
    assert "backup_file" not in again.result
    assert prop.read_text() == expected


def test_properties_dict_in_one_write(run_module, tmp_path):
    prop = write(tmp_path / "p.prop", ORIGINAL.encode())
    props = {
        "envoy.front.proxy.url": "envoy1:8443",
        "envoy.terminate.ssl": True,
        "Webapi.server.port": "9000",
    }
    result = run_module(
        "deephaven_property", {"path": str(prop), "scope": SCOPE, "properties": props}
    )
    assert result.rc == 0 and result.result["changed"] is True
    assert prop.read_text() == (
        "includefiles=iris-defaults.prop\n"
        "# Site settings\n"
        "trailing.space=kept   \n"
        "[service.name=web_api_service] {\n"
        "    Webapi.server.port : 9000\n"
        "    envoy.front.proxy.url=envoy1:8443\n"
        "    envoy.terminate.ssl=true\n"
        "}\n"
    )
    assert [c["changed"] for c in result.result["changes"]] == [True, True, True]


def test_block_is_created_when_missing_and_other_bytes_survive(run_module, tmp_path):
    original = b"latin1.value=caf\xe9\r\nno.newline=1"
    prop = write(tmp_path / "p.prop", original)
    result = run_module(
        "deephaven_property", {"path": str(prop), "scope": SCOPE, "key": "k", "value": "v"}
    )
    assert result.rc == 0, result.result
    assert (
        prop.read_bytes()
        == original + b"\r\n\r\n[service.name=web_api_service] {\r\n    k=v\r\n}\r\n"
    )


def test_final_key_fails_naming_the_key_and_writes_nothing(run_module, tmp_path):
    original = b"[service.name=web_api_service] {\n    final envoy.xds.port = 8124\n}\n"
    prop = write(tmp_path / "p.prop", original)
    result = run_module(
        "deephaven_property",
        {"path": str(prop), "scope": SCOPE, "key": "envoy.xds.port", "value": 9},
    )
    assert result.rc != 0
    assert "key 'envoy.xds.port' is final" in result.result["msg"]
    assert "nothing written" in result.result["msg"]
    assert prop.read_bytes() == original


def test_final_in_an_included_file_next_to_it(run_module, tmp_path):
    (tmp_path / "iris-defaults.prop").write_text("finalize Webapi.*\n")
    prop = write(tmp_path / "iris-environment.prop", ORIGINAL.encode())
    result = run_module(
        "deephaven_property",
        {"path": str(prop), "scope": SCOPE, "key": "Webapi.server.host", "value": "h"},
    )
    assert result.rc != 0
    assert "key 'Webapi.server.host' is final" in result.result["msg"]
    assert "iris-defaults.prop line 1" in result.result["msg"]
    assert prop.read_bytes() == ORIGINAL.encode()


def test_missing_include_is_a_warning(run_module, tmp_path):
    prop = write(tmp_path / "p.prop", ORIGINAL.encode())
    result = run_module(
        "deephaven_property", {"path": str(prop), "scope": SCOPE, "key": "k", "value": "v"}
    )
    assert result.rc == 0
    assert any("iris-defaults.prop" in w and "not found" in w for w in result.result["warnings"])


def test_malformed_file_fails_and_writes_nothing(run_module, tmp_path):
    original = b"a=1\n[service.name=web_api_service] {\n  b=2\n"
    prop = write(tmp_path / "p.prop", original)
    result = run_module(
        "deephaven_property", {"path": str(prop), "scope": SCOPE, "key": "b", "value": "3"}
    )
    assert result.rc != 0
    assert "malformed Deephaven property file" in result.result["msg"]
    assert "[service.name=web_api_service] opened at line 2 is never closed" in result.result["msg"]
    assert prop.read_bytes() == original


def test_missing_file_fails_unless_create(run_module, tmp_path):
    prop = tmp_path / "new.prop"
    missing = run_module("deephaven_property", {"path": str(prop), "key": "k", "value": "v"})
    assert missing.rc != 0 and "does not exist" in missing.result["msg"]
    assert not prop.exists()
    created = run_module(
        "deephaven_property", {"path": str(prop), "key": "k", "value": "v", "create": True}
    )
    assert created.rc == 0 and prop.read_text() == "k=v\n"


def test_absent_removes_only_in_that_scope(run_module, tmp_path):
    original = "k=top\n[service.name=web_api_service] {\n  k=1\n}\n[process.name=x] {\n  k=2\n}\n"
    prop = write(tmp_path / "p.prop", original.encode())
    args = {"path": str(prop), "scope": SCOPE, "key": "k", "state": "absent"}
    result = run_module("deephaven_property", args, diff=True)
    assert result.rc == 0 and result.result["changed"] is True
    assert result.result["previous_value"] == "1"
    assert prop.read_text() == original.replace("  k=1\n", "")
    assert run_module("deephaven_property", args).result["changed"] is False


def test_bad_arguments_fail_clearly(run_module, tmp_path):
    prop = write(tmp_path / "p.prop", b"")
    bad_key = run_module("deephaven_property", {"path": str(prop), "key": "a b", "value": "v"})
    assert bad_key.rc != 0 and "must not contain whitespace" in bad_key.result["msg"]
    no_value = run_module("deephaven_property", {"path": str(prop), "key": "k"})
    assert no_value.rc != 0 and "needs a value" in no_value.result["msg"]
    both = run_module(
        "deephaven_property",
        {"path": str(prop), "key": "k", "value": "v", "scope": SCOPE, "scope_path": [SCOPE]},
    )
    assert both.rc != 0 and "mutually exclusive" in both.result["msg"]
    assert prop.read_bytes() == b""


def test_symlinked_file_is_edited_through_the_link(run_module, tmp_path):
    versioned = tmp_path / "illumon.d.1.2024" / "resources"
    versioned.mkdir(parents=True)
    target = write(versioned / "iris-environment.prop", ORIGINAL.encode())
    link = tmp_path / "iris-environment.prop"
    link.symlink_to(target)
    result = run_module(
        "deephaven_property",
        {"path": str(link), "scope": SCOPE, "key": "k", "value": "v", "backup": True},
    )
    assert result.rc == 0, result.result
    assert link.is_symlink() and link.resolve() == target
    assert "    k=v\n}" in target.read_text()
    assert open(result.result["backup_file"], "rb").read() == ORIGINAL.encode()


def test_an_empty_scope_is_refused_and_nothing_changes(run_module, tmp_path):
    """scope: "" used to edit the top level silently; omitting scope is how to ask for that."""
    prop = write(tmp_path / "p.prop", ORIGINAL.encode())
    for bad in ({"scope": ""}, {"scope": "  "}, {"scope_path": [SCOPE, ""]}):
        result = run_module(
            "deephaven_property", {"path": str(prop), "key": "a.b", "value": 1, **bad}
        )
        assert result.rc != 0 and "must not" in result.result["msg"], result.result
    assert prop.read_bytes() == ORIGINAL.encode()
