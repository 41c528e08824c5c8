"""Setting and removing one key in one scope: minimal edits, finals, and refusals."""

import os

import pytest
from ansible_collections.dhops.envoy.plugins.module_utils.deephaven_props import (
    EditError,
    PropertyFile,
    PropertyFileError,
)
from ansible_collections.dhops.envoy.plugins.module_utils.deephaven_props_edit import (
    included_finals,
    remove_property,
    set_property,
)

WAS = ["service.name=web_api_service"]
BASE = (
    "# cluster settings\n"
    "includefiles=iris-defaults.prop\n"
    "top.key = top\n"
    "\n"
    "[service.name=web_api_service] {\n"
    "    # web api\n"
    "    Webapi.server.port : 8123\n"
    "}\n"
    "[process.name=other] {\n"
    "  other.key=1\n"
    "}\n"
)


def value_in(text, key, scope=()):
    pf = PropertyFile(text, "t")
    found = pf.occurrences(key, tuple(scope))
    return pf.lines[found[-1]].value if found else None


def added_and_removed(before, after):
    a, b = before.splitlines(keepends=True), after.splitlines(keepends=True)
    return [x for x in b if x not in a], [x for x in a if x not in b]


def test_new_key_goes_into_the_block_and_nothing_else_moves():
    result = set_property(BASE, "t", "envoy.xds.port", "8124", WAS)
    assert result.changed and result.previous is None
    assert result.content == BASE.replace(
        "    Webapi.server.port : 8123\n",
        "    Webapi.server.port : 8123\n    envoy.xds.port=8124\n",
    )
    assert result.line == 8


def test_existing_key_keeps_its_indent_key_text_and_separator():
    result = set_property(BASE, "t", "Webapi.server.port", "9000", WAS)
    assert added_and_removed(BASE, result.content) == (
        ["    Webapi.server.port : 9000\n"],
        ["    Webapi.server.port : 8123\n"],
    )
    assert result.previous == "8123"


def test_same_value_changes_nothing():
    result = set_property(BASE, "t", "Webapi.server.port", "8123", WAS)
    assert not result.changed and result.content == BASE


def test_scope_matches_whatever_the_whitespace():
    result = set_property(BASE, "t", "k", "v", ["[ service.name = web_api_service ]"])
    assert value_in(result.content, "k", WAS) == "v"
    assert result.content.count("[service.name=web_api_service]") == 1


def test_missing_block_is_appended_at_the_end():
    result = set_property(BASE, "t", "a", "1", ["process.name=new|newer, host=h1"])
    assert result.content == BASE + "\n[process.name=new|newer, host=h1] {\n    a=1\n}\n"


def test_file_without_final_newline_and_with_crlf_line_endings():
    text = "x=1\r\n[s=t] {\r\n  y=2\r\n}"
    result = set_property(text, "t", "z", "3", ["s=t"])
    assert result.content == "x=1\r\n[s=t] {\r\n  y=2\r\n  z=3\r\n}"
    result = set_property(text, "t", "top", "4")
    assert result.content == text + "\r\ntop=4\r\n"


def test_empty_block_on_one_line_is_split():
    text = "[s=t] {}\nafter=1\n"
    result = set_property(text, "t", "k", "v", ["s=t"])
    assert result.content == "[s=t] {\n    k=v\n}\nafter=1\n"


def test_nested_scope_path_creates_only_the_missing_inner_block():
    text = "[process.name=abcd] {\n    procval = abcd\n}\n"
    result = set_property(text, "t", "n", "1", ["process.name=abcd", "testproperty=B"])
    assert result.content == (
        "[process.name=abcd] {\n    procval = abcd\n    [testproperty=B] {\n        n=1\n    }\n}\n"
    )


def test_top_level_key_is_edited_in_place_or_appended():
    assert set_property(BASE, "t", "top.key", "new", []).content == BASE.replace(
        "top.key = top", "top.key = new"
    )
    assert set_property(BASE, "t", "brand.new", "1").content == BASE + "brand.new=1\n"


def test_the_last_matching_block_receives_new_keys_and_last_assignment_is_edited():
    text = "[s=t] {\n  k=1\n}\n[s=t] {\n  other=2\n}\n"
    assert set_property(text, "t", "k", "9", ["s=t"]).content == text.replace("k=1", "k=9")
    assert set_property(text, "t", "new", "3", ["s=t"]).content == text.replace(
        "  other=2\n", "  other=2\n  new=3\n"
    )


def test_key_sharing_a_line_with_a_brace_is_edited_in_place():
    text = "[s=t] { k=1\n}\n"
    assert set_property(text, "t", "k", "2", ["s=t"]).content == "[s=t] { k=2\n}\n"
    assert remove_property(text, "t", "k", ["s=t"]).content == "[s=t] {\n}\n"


def test_continued_value_is_replaced_by_one_line():
    text = "[s=t] {\n  list = a,\\\n         b\n  after=1\n}\n"
    result = set_property(text, "t", "list", "c", ["s=t"])
    assert result.content == "[s=t] {\n  list = c\n  after=1\n}\n"


def test_key_without_separator_gets_one():
    assert set_property("flag\n", "t", "flag", "on").content == "flag=on\n"


def test_values_are_escaped_so_deephaven_reads_them_back():
    value = "C:\\data\\ends with backslash\\"
    result = set_property("", "t", "p", value)
    assert result.content == "p=C:\\\\data\\\\ends with backslash\\\\\n"
    assert value_in(result.content, "p") == value
    result = set_property("", "t", "multi", "one\ntwo")
    assert result.content == "multi=one\\ntwo\n" and value_in(result.content, "multi") == "one\ntwo"


def test_append_after_a_dangling_continuation_keeps_the_new_key_separate():
    text = "last=value \\"
    result = set_property(text, "t", "k", "v")
    assert value_in(result.content, "k") == "v"
    assert value_in(result.content, "last") == "value "


def test_remove_takes_every_assignment_in_that_scope_only():
    text = "k=top\n[s=t] {\n  k=1\n  k=2\n}\n[s=u] {\n  k=3\n}\n"
    result = remove_property(text, "t", "k", ["s=t"])
    assert result.content == "k=top\n[s=t] {\n}\n[s=u] {\n  k=3\n}\n"
    assert result.previous == "2"
    assert not remove_property(result.content, "t", "k", ["s=t"]).changed


# --- finals ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "scope", "where"),
    [
        ("[s=t] {\n  final k = 1\n}\n", ["s=t"], "line 2"),
        ("finalize k\n[s=t] {\n}\n", ["s=t"], "line 1 (top level)"),
        ("[s=t] {\n  k=1\n}\nfinalize k\n", ["s=t"], "line 4"),  # stricter than Deephaven
        ("finalize envoy.*\n", ["s=t"], "'finalize envoy.*'"),
        ("[s=t] {\n  [host=h] {\n    final k=1\n  }\n}\n", ["s=t"], "[s=t] > [host=h]"),
        ("[s=t] {\n  final k=1\n}\n", [], "line 2"),  # top level reaches into every block
        ("final k=1\n", [], "line 1"),
    ],
)
def test_final_keys_are_refused_with_the_key_named(text, scope, where):
    key = "envoy.front.proxy.url" if "envoy.*" in text else "k"
    with pytest.raises(EditError, match=f"key '{key}' is final") as err:
        set_property(text, "t", key, "2", scope)
    assert where in str(err.value)


@pytest.mark.parametrize(
    ("text", "scope"),
    [
        ("[s=t] {\n  final k = 1\n}\n", ["s=t"]),
        ("[s=t] {\n  k=1\n}\nfinalize k\n", ["s=t"]),
        ("k=1\nfinalize k\n", []),
    ],
)
def test_final_keys_are_not_removed(text, scope):
    with pytest.raises(EditError, match="key 'k' is final"):
        remove_property(text, "t", "k", scope)


def test_removing_a_key_absent_from_the_scope_is_fine_even_if_final_elsewhere():
    assert not remove_property("finalize k\n[s=t] {\n}\n", "t", "k", ["s=t"]).changed


def test_final_key_that_already_has_the_value_is_not_an_error():
    result = set_property("[s=t] {\n  final k = 1\n}\n", "t", "k", "1", ["s=t"])
    assert not result.changed


def test_final_in_an_unrelated_scope_is_only_a_warning():
    text = "[process.name=x] {\n  final k=1\n}\n"
    result = set_property(text, "t", "k", "2", ["service.name=web_api_service"])
    assert result.changed
    assert any("final in another scope" in w for w in result.warnings)


def test_finals_from_included_files_relative_to_the_file(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "defaults.prop").write_text("includefiles=sub/deep.prop\nfinalize Webapi.*\n")
    (tmp_path / "sub" / "deep.prop").write_text("[s=t] {\n  final deep.key=1\n}\n")
    main = tmp_path / "main.prop"
    text = "includefiles=defaults.prop, missing.prop\n"

    def read(path):
        return open(path).read() if os.path.isfile(path) else None

    finals, warnings = included_finals(str(main), PropertyFile(text, str(main)), read)
    assert [f.text for f in finals] == ["final deep.key=1", "finalize Webapi.*"]
    assert warnings and "missing.prop" in warnings[0]
    with pytest.raises(EditError, match=r"key 'Webapi.server.host' is final.*defaults.prop line 2"):
        set_property(text, str(main), "Webapi.server.host", "h", WAS, finals)
    with pytest.raises(EditError, match=r"key 'deep.key' is final.*deep.prop line 2"):
        set_property(text, str(main), "deep.key", "2", ["s=t"], finals)
    assert set_property(text, str(main), "free.key", "1", WAS, finals).changed


def test_include_cycles_terminate(tmp_path):
    (tmp_path / "a.prop").write_text("includefiles=b.prop\nfinalize a\n")
    (tmp_path / "b.prop").write_text("includefiles=a.prop\nfinalize b\n")
    path = str(tmp_path / "a.prop")
    finals, _includes = included_finals(
        path, PropertyFile(open(path).read(), path), lambda p: open(p).read()
    )
    assert [f.text for f in finals] == ["finalize b"]


def test_later_outer_assignment_is_reported():
    text = "[s=t] {\n  k=1\n}\nk=2\n"
    result = set_property(text, "t", "k", "3", ["s=t"])
    assert any("set again later" in w and "line 4" in w for w in result.warnings)


# --- refusals ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("", "non-empty"),
        ("a b", "whitespace"),
        ("a=b", "'='"),
        ("a:b", "':'"),
        ("#a", "start with '#'"),
        ("[a", "start with '\\['"),
        ("final", "reserved"),
        ("includefiles", "reserved"),
    ],
)
def test_bad_keys_are_refused(key, message):
    with pytest.raises(EditError, match=message):
        set_property("", "t", key, "v")


def test_values_with_leading_whitespace_are_refused():
    with pytest.raises(EditError, match="starts with whitespace"):
        set_property("", "t", "k", "  v")


def test_bad_scope_is_refused():
    with pytest.raises(EditError, match="invalid scope"):
        set_property("", "t", "k", "v", ["no-equals-sign"])


def test_malformed_file_is_refused_before_any_edit():
    with pytest.raises(PropertyFileError, match="never closed"):
        set_property("[s=t] {\n  k=1\n", "t", "k", "2", ["s=t"])
