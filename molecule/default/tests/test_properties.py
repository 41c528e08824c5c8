"""The web_api_service property file holds exactly the expected edits, and a backup of the
original next to it."""

import pathlib

testinfra_hosts = ["docker://dh-webapi"]

RESOURCES = "/etc/sysconfig/illumon.d/resources"
HERE = pathlib.Path(__file__).parent


def test_property_file_holds_exactly_the_expected_edits(host):
    expected = (HERE / "expected" / "iris-environment.prop").read_text()
    assert host.file(f"{RESOURCES}/iris-environment.prop").content_string == expected


def test_original_is_kept_as_a_backup(host):
    original = (HERE.parent / "files" / "iris-environment.prop").read_text()
    backups = host.run(f"ls {RESOURCES}").stdout.split()
    backups = [name for name in backups if name.startswith("iris-environment.prop.")]
    assert len(backups) == 1, backups
    assert host.file(f"{RESOURCES}/{backups[0]}").content_string == original


def test_included_defaults_untouched(host):
    original = (HERE.parent / "files" / "iris-defaults.prop").read_text()
    assert host.file(f"{RESOURCES}/iris-defaults.prop").content_string == original
