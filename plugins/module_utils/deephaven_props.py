# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Parse and edit Deephaven property files without touching bytes we do not mean to change.

The grammar follows Deephaven's own parser (deephaven-core ParsedProperties.java):
physical lines are left-trimmed and joined when they end in a single backslash, the
joined "logical" line is Java-unescaped, then read as a comment (# or !), an
``includefiles=`` line (first statement only), ``final key=value``, ``finalize k1, k2``
(``*`` wildcards), scope structure (``[a=b|c, d=e]`` then ``{`` on the same or a later
line, ``}`` closes; more text may follow each of them) or ``key=value`` / ``key:value``.

The file is kept as a list of logical lines that each own their exact raw text, so
rendering an unedited file gives back the identical bytes, and an edit only replaces,
inserts or removes whole logical lines.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re

INCLUDE_KEY = "includefiles"
RESERVED_KEYS = ("final", "finalize")
_PHYSICAL_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+\Z")
_SEPARATOR = re.compile(r"[:=]")
_CTRL_ESCAPES = {"t": "\t", "b": "\b", "n": "\n", "f": "\f", "r": "\r"}


# Java's Character.isWhitespace: Unicode spaces except the non-breaking ones.
_NON_BREAKING = "\u00a0\u2007\u202f"


def java_ltrim(text):
    """Deephaven's ltrim (Character.isWhitespace), which keeps non-breaking spaces."""
    i = 0
    while i < len(text) and text[i].isspace() and text[i] not in _NON_BREAKING:
        i += 1
    return text[i:]


def java_trim(text):
    """Java String.trim(): strips every character up to U+0020 at both ends, nothing else."""
    start, end = 0, len(text)
    while start < end and text[start] <= " ":
        start += 1
    while end > start and text[end - 1] <= " ":
        end -= 1
    return text[start:end]


def java_split(text, sep):
    """Java String.split: like str.split, but trailing empty strings are dropped."""
    parts = text.split(sep)
    while len(parts) > 1 and parts[-1] == "":
        parts.pop()
    return parts


class PropertyFileError(Exception):
    """The file does not follow the grammar; nothing may be written."""

    def __init__(self, message, line=None, source=None):
        self.line = line
        self.source = source
        where = ""
        if source:
            where += "%s " % source
        if line is not None:
            where += "line %d" % line
        super(PropertyFileError, self).__init__(
            ("%s: %s" % (where.strip(), message)) if where else message
        )


class EditError(Exception):
    """A requested edit is refused (final key, unsafe line, bad key or value)."""


def java_unescape(text, line=None):
    """Java StringEscapeUtils.unescapeJava, as Deephaven applies it to every logical line."""
    out = []
    i = 0
    n = len(text)
    while i < n:
        c = text[i]
        if c != "\\":
            out.append(c)
            i += 1
            continue
        if i + 1 >= n:  # a lone trailing backslash disappears
            break
        d = text[i + 1]
        if d in "01234567":
            end = i + 2
            if end < n and text[end] in "01234567":
                end += 1
                if end < n and d in "0123" and text[end] in "01234567":
                    end += 1
            out.append(chr(int(text[i + 1 : end], 8)))
            i = end
        elif d == "u":
            j = i + 1
            while j < n and text[j] == "u":
                j += 1
            if j < n and text[j] == "+":
                j += 1
            digits = text[j : j + 4]
            if len(digits) != 4 or not all(ch in "0123456789abcdefABCDEF" for ch in digits):
                raise PropertyFileError("invalid unicode escape '\\%s'" % text[i + 1 : j + 4], line)
            out.append(chr(int(digits, 16)))
            i = j + 4
        elif d in _CTRL_ESCAPES:
            out.append(_CTRL_ESCAPES[d])
            i += 2
        elif d in "\\\"'":
            out.append(d)
            i += 2
        else:  # unknown escape: the backslash is dropped, the character stays
            i += 1
    return "".join(out)


def escape_value(value):
    """Text to write so that Deephaven reads back exactly ``value``."""
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")


def canonical_scope(text):
    """Scope text without the whitespace Deephaven ignores: ``a = b | c`` -> ``a=b|c``."""
    text = text.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    items = []
    for item in java_split(text, ","):
        if "=" not in item:
            raise ValueError("scope item '%s' has no '='" % item.strip())
        name, values = item.split("=", 1)
        name = java_trim(name)
        if not name:
            raise ValueError("scope item '%s' has no name before '='" % item.strip())
        items.append("%s=%s" % (name, "|".join(v.strip() for v in values.split("|"))))
    return ",".join(items)


def key_matches(pattern, key):
    """Deephaven finalize patterns: ``*`` is a wildcard, everything else literal."""
    regex = ".*".join(re.escape(part) for part in pattern.split("*"))
    return re.fullmatch(regex, key) is not None


class LogicalLine:
    """One logical line: its raw text (all physical lines, with endings) and what it means."""

    def __init__(self, raw, first_line, physical):
        self.raw = raw
        self.first_line = first_line  # 1-based number of its first physical line
        self.physical = physical  # list of raw physical lines
        self.text = ""  # joined and unescaped text
        self.events = []  # ("close", block) / ("define", block) / ("open", block)
        self.kind = "blank"  # blank|comment|property|final|finalize|include|structure
        self.key = None
        self.value = None
        self.patterns = []  # finalize patterns
        self.includes = []
        self.scope_path = ()  # scope path the statement applies in
        self.stmt_offset = 0  # offset in text where the statement starts
        self.value_offset = None  # offset in text where the value starts (property/final)

    @property
    def sets_key(self):
        return self.kind in ("property", "final")

    def finalizes(self, key):
        if self.kind == "final":
            return self.key == key
        if self.kind == "finalize":
            return any(key_matches(p, key) for p in self.patterns)
        return False


class Block:
    """A scope block: where it is declared, opened and closed."""

    def __init__(self, scope_text, parent_path, line_index, line_no):
        self.scope_text = scope_text
        self.path = (*parent_path, canonical_scope_or_raw(scope_text))
        self.define_index = line_index
        self.define_line = line_no
        self.close_index = None
        self.close_offset = None  # offset of the closing brace in its logical line text


def canonical_scope_or_raw(text):
    try:
        return canonical_scope(text)
    except ValueError:
        return text


def split_physical(content):
    return _PHYSICAL_LINE.findall(content)


def _strip_ending(line):
    return line.rstrip("\r\n")


def continues(text):
    return text.endswith("\\") and not text.endswith("\\\\")


def read_logical_lines(content):
    """Group physical lines the way Deephaven's line reader does."""
    physical = split_physical(content)
    logical = []
    i = 0
    while i < len(physical):
        start = i
        joined = java_ltrim(_strip_ending(physical[i]))
        i += 1
        while continues(joined) and i < len(physical):
            joined = joined[:-1] + java_ltrim(_strip_ending(physical[i]))
            i += 1
        line = LogicalLine("".join(physical[start:i]), start + 1, physical[start:i])
        line.text = joined
        logical.append(line)
    return logical


class PropertyFile:
    """A parsed property file. ``render()`` returns the exact text it was parsed from."""

    def __init__(self, content, source=None):
        self.source = source
        self.lines = read_logical_lines(content)
        self.blocks = []
        self._parse()

    # ----------------------------------------------------------------- parsing
    def _error(self, message, line):
        raise PropertyFileError(message, line.first_line, self.source)

    def _parse(self):
        stack = []
        expecting_open = None  # block waiting for its "{"
        seen_statement = False
        for index, line in enumerate(self.lines):
            line.text = java_unescape(line.text, line.first_line)
            rest = line.text
            offset = 0
            while True:
                stripped = java_ltrim(rest)
                offset += len(rest) - len(stripped)
                rest = stripped
                if rest == "" or rest[0] in "#!":
                    if line.events:
                        line.kind = "structure"
                    else:
                        line.kind = "comment" if rest else "blank"
                    break
                if expecting_open is not None and not rest.startswith("{"):
                    self._error(
                        "'{' must follow the scope declaration [%s] (line %d), found: %s"
                        % (expecting_open.scope_text, expecting_open.define_line, rest),
                        line,
                    )
                if expecting_open is None and rest.startswith("{"):
                    self._error("'{' without a scope declaration before it", line)
                lowered = rest.lower()
                path = tuple(b.path[-1] for b in stack)
                if lowered.startswith("finalize "):
                    line.kind = "finalize"
                    patterns = java_split(rest[len("finalize ") :], ",")
                    line.patterns = [java_trim(p) for p in patterns]
                    line.scope_path = path
                    line.stmt_offset = offset
                    break
                if lowered.startswith("final "):
                    decl = rest[len("final ") :]
                    pad = len(decl) - len(java_ltrim(decl))
                    self._declaration(line, java_ltrim(decl), offset + len("final ") + pad, path)
                    line.kind = "final"
                    line.stmt_offset = offset
                    break
                if rest.startswith("["):
                    end = rest.find("]")
                    if end < 0:
                        self._error("unterminated scope declaration: %s" % rest, line)
                    scope_text = rest[1:end]
                    for item in java_split(scope_text, ","):
                        if "=" not in item:
                            self._error("scope item '%s' has no '='" % item.strip(), line)
                    parent = stack[-1].path if stack else ()
                    block = Block(scope_text, parent, index, line.first_line)
                    self.blocks.append(block)
                    line.events.append(("define", block))
                    expecting_open = block
                    offset += end + 1
                    rest = rest[end + 1 :]
                    continue
                if rest.startswith("{"):
                    stack.append(expecting_open)
                    line.events.append(("open", expecting_open))
                    expecting_open = None
                    offset += 1
                    rest = rest[1:]
                    continue
                if rest.startswith("}"):
                    if not stack:
                        self._error("'}' without a matching '{'", line)
                    block = stack.pop()
                    block.close_index = index
                    block.close_offset = offset
                    line.events.append(("close", block))
                    offset += 1
                    rest = rest[1:]
                    continue
                self._declaration(line, rest, offset, path)
                line.stmt_offset = offset
                break
            if line.kind == "include" and seen_statement:
                self._error("includefiles must be the first non-comment line", line)
            if line.kind not in ("blank", "comment"):
                seen_statement = True
        if expecting_open is not None:
            raise PropertyFileError(
                "scope declaration [%s] is never opened with '{'" % expecting_open.scope_text,
                expecting_open.define_line,
                self.source,
            )
        if stack:
            raise PropertyFileError(
                "block [%s] opened at line %d is never closed"
                % (stack[-1].scope_text, stack[-1].define_line),
                None,
                self.source,
            )

    def _declaration(self, line, decl, offset, path):
        parts = _SEPARATOR.split(decl, 1)
        key = java_trim(parts[0])
        if len(parts) > 1:
            value = java_ltrim(parts[1])
            line.value_offset = offset + len(decl) - len(value)
        else:
            value = ""
            line.value_offset = None
        if key.lower() in RESERVED_KEYS:
            self._error("'%s' is a reserved word and cannot be a property name" % key, line)
        line.key = key
        line.value = value
        line.scope_path = path
        if key == INCLUDE_KEY:
            line.kind = "include"
            line.includes = [java_trim(f) for f in java_split(value, ",") if java_trim(f)]
        else:
            line.kind = "property"

    # --------------------------------------------------------------- queries
    def render(self):
        return "".join(line.raw for line in self.lines)

    def includes(self):
        for line in self.lines:
            if line.kind == "include":
                return list(line.includes)
        return []

    def newline(self):
        for line in self.lines:
            for phys in line.physical:
                if phys.endswith("\r\n"):
                    return "\r\n"
                if phys.endswith("\n"):
                    return "\n"
                if phys.endswith("\r"):
                    return "\r"
        return "\n"

    def blocks_at(self, path):
        return [b for b in self.blocks if b.path == path]

    def occurrences(self, key, path):
        """Indexes of logical lines that set ``key`` directly in scope ``path``."""
        return [
            i
            for i, line in enumerate(self.lines)
            if line.sets_key and line.key == key and line.scope_path == path
        ]


def comparable(path_a, path_b):
    """True when one scope path encloses the other: a process in the inner one sees both."""
    shorter, longer = sorted((tuple(path_a), tuple(path_b)), key=len)
    return longer[: len(shorter)] == shorter
