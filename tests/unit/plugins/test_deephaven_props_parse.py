"""The Deephaven property-file parser: exact round trips and the grammar of ParsedProperties."""

import pathlib

import pytest
from ansible_collections.dhops.envoy.plugins.module_utils.deephaven_props import (
    PropertyFile,
    PropertyFileError,
    canonical_scope,
    java_unescape,
    key_matches,
)

CORPUS = sorted((pathlib.Path(__file__).parent / "props_corpus").glob("*.prop"))


def parse(text):
    return PropertyFile(text, "test.prop")


def props(pf):
    """(scope path, key, value) of every assignment, in file order."""
    return [(line.scope_path, line.key, line.value) for line in pf.lines if line.sets_key]


@pytest.mark.parametrize("path", CORPUS, ids=[p.name for p in CORPUS])
def test_render_gives_back_the_identical_bytes(path):
    raw = path.read_bytes()
    text = raw.decode("utf-8", "surrogateescape")
    assert PropertyFile(text, str(path)).render().encode("utf-8", "surrogateescape") == raw


def test_corpus_is_not_empty():
    assert len(CORPUS) >= 6


def test_separators_whitespace_and_empty_values():
    pf = parse("a : 1\nb=  two words  \nc=\nd\ne=x=y:z\n")
    assert props(pf) == [
        ((), "a", "1"),
        ((), "b", "two words  "),  # trailing whitespace is part of the value
        ((), "c", ""),
        ((), "d", ""),
        ((), "e", "x=y:z"),  # only the first separator splits
    ]


def test_comments_and_blank_lines_are_not_properties():
    pf = parse("# a=1\n   ! b=2\n\n   \nc=3\n")
    assert props(pf) == [((), "c", "3")]
    assert [line.kind for line in pf.lines] == ["comment", "comment", "blank", "blank", "property"]


def test_continuation_joins_lines_and_trims_the_next_lines_indent():
    pf = parse("k = one \\\n     two \\\n  three\nnext=1\n")
    assert props(pf) == [((), "k", "one two three"), ((), "next", "1")]
    assert pf.lines[0].first_line == 1 and pf.lines[1].first_line == 4


def test_double_backslash_at_end_is_not_a_continuation():
    pf = parse("k=ends with \\\\\nnext=1\n")
    assert props(pf) == [((), "k", "ends with \\"), ((), "next", "1")]


def test_a_comment_ending_in_backslash_swallows_the_next_line():
    pf = parse("# note \\\nhidden=1\nshown=2\n")
    assert props(pf) == [((), "shown", "2")]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("caf\\u00e9", "caf\u00e9"),
        ("\\uu0041", "A"),
        ("\\101", "A"),
        ("\\0", "\0"),
        ("a\\tb\\nc", "a\tb\nc"),
        ("\\\\", "\\"),
        ("\\q", "q"),  # unknown escape: backslash dropped
        ("end\\", "end"),  # lone trailing backslash dropped
        ("\\'\\\"", "'\""),
    ],
)
def test_java_unescape(raw, expected):
    assert java_unescape(raw) == expected


def test_bad_unicode_escape_is_a_grammar_error():
    with pytest.raises(PropertyFileError, match=r"line 2: invalid unicode escape"):
        parse("a=1\nb=\\u12\n")


def test_unescape_happens_before_the_separator_split():
    assert props(parse("a\\u003db=c\n")) == [((), "a", "b=c")]


def test_scopes_nest_and_carry_their_paths():
    text = "[process.name=a|b, host=h] {\n  x=1\n  [testproperty=A] {\n    final y=2\n  }\n}\nz=3\n"
    pf = parse(text)
    outer = ("process.name=a|b,host=h",)
    assert props(pf) == [
        (outer, "x", "1"),
        ((*outer, "testproperty=A"), "y", "2"),
        ((), "z", "3"),
    ]
    assert pf.lines[3].kind == "final"
    assert [b.path for b in pf.blocks] == [outer, (*outer, "testproperty=A")]


def test_brace_may_come_after_comments_and_text_may_follow_braces():
    text = "[a=b]\n# why\n{ k=1\n} [c=d] { }\n"
    pf = parse(text)
    assert props(pf) == [(("a=b",), "k", "1")]
    assert [b.path for b in pf.blocks] == [("a=b",), ("c=d",)]


def test_finalize_lists_patterns():
    pf = parse("FINALIZE a.*.b, c\n")
    assert pf.lines[0].kind == "finalize"
    assert pf.lines[0].patterns == ["a.*.b", "c"]
    assert pf.lines[0].finalizes("a.x.y.b") and pf.lines[0].finalizes("c")
    assert not pf.lines[0].finalizes("a.x.c")


def test_keys_named_like_final_are_ordinary_keys():
    assert props(parse("final.countdown=1\nfinalize.this=2\n")) == [
        ((), "final.countdown", "1"),
        ((), "finalize.this", "2"),
    ]


def test_includefiles_on_first_statement():
    pf = parse("# header\nincludefiles = a.prop, sub/b.prop\nx=1\n")
    assert pf.includes() == ["a.prop", "sub/b.prop"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[a=b] {\nk=1\n", r"block \[a=b\] opened at line 1 is never closed"),
        ("k=1\n}\n", r"line 2: '}' without a matching '{'"),
        ("{\nk=1\n}\n", r"line 1: '\{' without a scope declaration"),
        ("[a=b]\nk=1\n", r"line 2: '\{' must follow the scope declaration \[a=b\]"),
        ("[a=b]\n", r"scope declaration \[a=b\] is never opened"),
        ("[ab] {\n}\n", r"line 1: scope item 'ab' has no '='"),
        ("[a=b {\n}\n", r"line 1: unterminated scope declaration"),
        ("x=1\nincludefiles=a.prop\n", r"line 2: includefiles must be the first"),
        ("final final = 1\n", r"line 1: 'final' is a reserved word"),
        ("finalize=1\n", r"line 1: 'finalize' is a reserved word"),
    ],
)
def test_malformed_files_are_refused_with_the_line(text, message):
    with pytest.raises(PropertyFileError, match=message):
        parse(text)


def test_canonical_scope_ignores_whitespace_and_brackets():
    assert canonical_scope("[ service.name = web_api_service | x ,host=h ]") == (
        "service.name=web_api_service|x,host=h"
    )
    with pytest.raises(ValueError, match="no '='"):
        canonical_scope("service.name")


def test_wildcards_match_whole_keys_only():
    assert key_matches("envoy.*", "envoy.xds.port")
    assert key_matches("*", "anything")
    assert not key_matches("envoy.*", "my.envoy.xds")
    assert not key_matches("a.b", "aXb")  # '.' is literal


def test_whitespace_follows_java_rules():
    # Non-breaking spaces are not whitespace to Java: they stay part of key and value.
    pf = parse("\u00a0nb=\u00a0v\n\tk\t=\tv\t\n")
    assert props(pf) == [((), "\u00a0nb", "\u00a0v"), ((), "k", "v\t")]


def test_trailing_commas_are_ignored_like_java_split():
    pf = parse("[a=b,] {\n  x=1\n}\nfinalize x,\n")
    assert props(pf) == [(("a=b",), "x", "1")]
    assert pf.lines[-1].patterns == ["x"]
