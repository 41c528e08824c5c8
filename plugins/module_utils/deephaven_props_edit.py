# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Set or remove one key in one scope of a Deephaven property file (pure: text in, text out).

Finals: a change is refused when a ``final key=...`` or a ``finalize`` pattern for the key
applies to processes that also see the edited scope, that is when the final's scope path
encloses the edited one or lies inside it (top level encloses everything). This holds
wherever the final sits in the file, and in files named by ``includefiles``. Deephaven
itself only rejects assignments after the lock; we are stricter on purpose so that a value
someone locked is never changed by automation. Finals in unrelated scopes
(``[process.name=a]`` vs ``[service.name=b]``) only give a warning: whether one process
matches both depends on JVM properties we cannot know here.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

from ansible_collections.dhops.envoy.plugins.module_utils.deephaven_props import (
    INCLUDE_KEY,
    RESERVED_KEYS,
    EditError,
    PropertyFile,
    PropertyFileError,
    canonical_scope,
    comparable,
    continues,
    escape_value,
    java_ltrim,
)

INDENT = "    "


class Final:
    """A place that locks a key: ``final key=v`` or ``finalize pattern``."""

    def __init__(self, source, line):
        self.source = source
        self.logical = line
        self.line = line.first_line
        self.path = line.scope_path
        self.text = line.text[line.stmt_offset :]

    def describe(self):
        scope = (
            "top level" if not self.path else "scope " + " > ".join("[%s]" % p for p in self.path)
        )
        return "'%s' at %s line %d (%s)" % (self.text.strip(), self.source, self.line, scope)


class EditResult:
    def __init__(self, content, changed, previous, line, warnings):
        self.content = content
        self.changed = changed
        self.previous = previous  # value the key had in the scope before, or None
        self.line = line  # line number of the key after the edit, or None when absent
        self.warnings = warnings


def scope_path(scope=None, scope_path_list=None):
    """Canonical scope path from the module's ``scope`` or ``scope_path`` option."""
    texts = list(scope_path_list or [])
    if scope:
        texts = [scope]
    try:
        return tuple(canonical_scope(t) for t in texts), [_bare(t) for t in texts]
    except ValueError as exc:
        raise EditError("invalid scope: %s" % exc) from None


def _bare(text):
    text = text.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1].strip()
    return text


def validate_key(key):
    if not key or key != key.strip():
        raise EditError("key '%s' must be non-empty without surrounding whitespace" % key)
    if any(ch.isspace() for ch in key):
        raise EditError("key '%s' must not contain whitespace" % key)
    for bad in ("=", ":", "\\"):
        if bad in key:
            raise EditError("key '%s' must not contain '%s'" % (key, bad))
    if key[0] in "#![{}":
        raise EditError("key '%s' must not start with '%s'" % (key, key[0]))
    if key.lower() in RESERVED_KEYS or key == INCLUDE_KEY:
        raise EditError("key '%s' is reserved in Deephaven property files" % key)


def validate_value(value):
    if value != java_ltrim(value):
        raise EditError("value %r starts with whitespace, which Deephaven always strips" % value)


def file_finals(pf, source):
    finals = []
    for line in pf.lines:
        if line.kind in ("final", "finalize"):
            finals.append((line, Final(source, line)))
    return finals


def included_finals(path, pf, read_text):
    """Finals from files named in includefiles (relative to ``path``'s directory), recursively.

    Returns (finals, warnings). ``read_text(path)`` returns the file's text or None if absent.
    """
    finals = []
    warnings = []
    seen = {os.path.abspath(path)}

    def visit(current_path, current_pf):
        base = os.path.dirname(os.path.abspath(current_path))
        for name in current_pf.includes():
            inc = name if os.path.isabs(name) else os.path.join(base, name)
            inc = os.path.abspath(inc)
            if inc in seen:
                continue
            seen.add(inc)
            text = read_text(inc)
            if text is None:
                warnings.append(
                    "included file %s (from %s) not found; finals in it were not checked"
                    % (inc, current_path)
                )
                continue
            try:
                inc_pf = PropertyFile(text, inc)
            except PropertyFileError as exc:
                warnings.append(
                    "included file %s could not be parsed (%s); finals in it were not checked"
                    % (inc, exc)
                )
                continue
            visit(inc, inc_pf)  # its own includes load before it
            for line, final in file_finals(inc_pf, inc):
                finals.append((line, final))

    visit(path, pf)
    return [f for _line, f in finals], warnings


class _Plan:
    def __init__(self, pf, source, key, path, texts, external_finals):
        self.pf = pf
        self.source = source
        self.key = key
        self.path = path
        self.texts = texts
        self.external_finals = external_finals
        self.warnings = []
        self.nl = pf.newline()

    def check_final(self):
        """Refuse if a final or finalize for the key applies to this scope."""
        finals = list(self.external_finals) + [f for _line, f in file_finals(self.pf, self.source)]
        blocking = []
        for final in finals:
            if not final.logical.finalizes(self.key):
                continue
            if comparable(final.path, self.path):
                blocking.append(final)
            else:
                self.warnings.append(
                    "key '%s' is final in another scope: %s; processes matching both scopes "
                    "will fail" % (self.key, final.describe())
                )
        if blocking:
            raise EditError(
                "key '%s' is final and cannot be changed in %s: finalized by %s"
                % (self.key, self.scope_label(), blocking[0].describe())
            )

    def scope_label(self):
        if not self.path:
            return "the top level of %s" % self.source
        return "scope %s of %s" % (" > ".join("[%s]" % t for t in self.texts), self.source)

    def warn_later_overrides(self, position):
        for line in self.pf.lines[position + 1 :]:
            if line.sets_key and line.key == self.key and line.scope_path != self.path:
                if comparable(line.scope_path, self.path) and len(line.scope_path) <= len(
                    self.path
                ):
                    self.warnings.append(
                        "key '%s' is set again later at %s line %d (%s); that later value wins"
                        % (
                            self.key,
                            self.source,
                            line.first_line,
                            "top level" if not line.scope_path else "outer scope",
                        )
                    )


def _ending(physical):
    for end in ("\r\n", "\n", "\r"):
        if physical.endswith(end):
            return end
    return ""


def _raw_prefix(line, offset):
    """Raw text of ``line`` up to logical ``offset``; None when escapes/continuations interfere."""
    content = line.physical[0].rstrip("\r\n")
    body = java_ltrim(content)
    lead = content[: len(content) - len(body)]
    if "\\" in body[:offset] or body[:offset] != line.text[:offset]:
        return None
    return lead + body[:offset]


def _line_indent(physical):
    content = physical.rstrip("\r\n")
    return content[: len(content) - len(java_ltrim(content))]


def set_property(content, source, key, value, scope_texts=None, external_finals=()):
    """Set ``key`` to ``value`` in scope path ``scope_texts`` (scope texts, outermost first)."""
    validate_key(key)
    validate_value(value)
    path, texts = scope_path(scope_path_list=scope_texts)
    pf = PropertyFile(content, source)
    plan = _Plan(pf, source, key, path, texts, list(external_finals))
    raws = [line.raw for line in pf.lines]
    occ = pf.occurrences(key, path)
    if occ:
        index = occ[-1]
        line = pf.lines[index]
        previous = line.value
        plan.warn_later_overrides(index)
        if previous == value:
            return EditResult(content, False, previous, line.first_line, plan.warnings)
        plan.check_final()
        raws[index] = _rewritten(line, value, key)
        position = index
    else:
        previous = None
        position, new_raws = _insertion(pf, raws, path, texts, key, value, plan.nl)
        plan.check_final()
        plan.warn_later_overrides(position - 1)
        raws = new_raws
    new_content = "".join(raws)
    after = PropertyFile(new_content, source)
    found = after.occurrences(key, path)
    if not found or after.lines[found[-1]].value != value:
        raise EditError(
            "internal error: the edit of key '%s' did not verify; nothing written" % key
        )
    return EditResult(new_content, True, previous, after.lines[found[-1]].first_line, plan.warnings)


def remove_property(content, source, key, scope_texts=None, external_finals=()):
    """Remove every assignment of ``key`` made directly in scope path ``scope_texts``."""
    validate_key(key)
    path, texts = scope_path(scope_path_list=scope_texts)
    pf = PropertyFile(content, source)
    plan = _Plan(pf, source, key, path, texts, list(external_finals))
    occ = pf.occurrences(key, path)
    if not occ:
        return EditResult(content, False, None, None, plan.warnings)
    previous = pf.lines[occ[-1]].value
    plan.check_final()
    raws = [line.raw for line in pf.lines]
    for index in reversed(occ):
        line = pf.lines[index]
        if not line.events:
            raws[index] = ""
            continue
        prefix = _raw_prefix(line, line.stmt_offset)
        if prefix is None or len(line.physical) > 1:
            raise EditError(
                "cannot remove key '%s' at %s line %d safely: it shares the line with a scope "
                "brace and the line uses escapes or continuations" % (key, source, line.first_line)
            )
        raws[index] = prefix.rstrip() + _ending(line.physical[-1])
    new_content = "".join(raws)
    after = PropertyFile(new_content, source)
    if after.occurrences(key, path):
        raise EditError(
            "internal error: the removal of key '%s' did not verify; nothing written" % key
        )
    return EditResult(new_content, True, previous, None, plan.warnings)


def _rewritten(line, value, key):
    """New raw text for a property line, keeping indentation, key text and separator."""
    ending = _ending(line.physical[-1])
    if line.value_offset is None:
        if len(line.physical) > 1 or "\\" in line.physical[0]:
            raise EditError(
                "cannot rewrite key '%s' at line %d safely (continuation or escapes)"
                % (key, line.first_line)
            )
        return line.physical[0].rstrip("\r\n").rstrip() + "=" + escape_value(value) + ending
    prefix = _raw_prefix(line, line.value_offset)
    if prefix is None:
        raise EditError(
            "cannot rewrite key '%s' at line %d safely: escapes or a continuation come before "
            "its value" % (key, line.first_line)
        )
    return prefix + escape_value(value) + ending


def _new_block_lines(texts, key, value, indent, nl):
    lines = []
    for depth, text in enumerate(texts):
        lines.append("%s[%s] {%s" % (indent + INDENT * depth, text, nl))
    lines.append("%s%s=%s%s" % (indent + INDENT * len(texts), key, escape_value(value), nl))
    for depth in reversed(range(len(texts))):
        lines.append("%s}%s" % (indent + INDENT * depth, nl))
    return lines


def _block_indent(pf, block):
    for line in pf.lines[block.close_index - 1 : block.define_index : -1]:
        if line.scope_path == block.path and line.kind in ("property", "final", "finalize"):
            if not line.events:
                return _line_indent(line.physical[0])
    close_line = pf.lines[block.close_index]
    return _line_indent(close_line.physical[0]) + INDENT


def _insertion(pf, raws, path, texts, key, value, nl):
    """Return (logical position of the insert, new raw list)."""
    raws = list(raws)
    if not path:
        return len(raws), _append_at_end(pf, raws, "%s=%s%s" % (key, escape_value(value), nl), nl)
    # Deepest existing block on the path (the last one declared with that path).
    for depth in range(len(path), 0, -1):
        blocks = list(pf.blocks_at(path[:depth]))
        if not blocks:
            continue
        block = blocks[-1]
        indent = _block_indent(pf, block)
        new_lines = _new_block_lines(texts[depth:], key, value, indent, nl)
        index = block.close_index
        close_line = pf.lines[index]
        if block.close_offset == 0:
            raws[index:index] = new_lines
            return index, raws
        prefix = _raw_prefix(close_line, block.close_offset)
        if prefix is None or len(close_line.physical) > 1:
            raise EditError(
                "cannot insert key '%s' into block [%s] at line %d: put its closing '}' on a line "
                "of its own" % (key, block.scope_text, close_line.first_line)
            )
        outer = _line_indent(close_line.physical[0])
        content = close_line.physical[0].rstrip("\r\n")
        rest = content[len(prefix) :]
        ending = _ending(close_line.physical[0])
        raws[index] = prefix.rstrip() + nl + "".join(new_lines) + outer + java_ltrim(rest) + ending
        return index, raws
    block_lines = _new_block_lines(texts, key, value, "", nl)
    position = len(raws)
    raws = _append_at_end(pf, raws, "".join(block_lines), nl, separate=True)
    return position, raws


def _append_at_end(pf, raws, text, nl, separate=False):
    if raws:
        last = pf.lines[-1]
        if not _ending(last.physical[-1]):
            raws[-1] = raws[-1] + nl
        if continues(java_ltrim(last.physical[-1].rstrip("\r\n"))):
            raws.append(nl)  # a blank line ends a dangling continuation
        elif separate and last.kind != "blank":
            raws.append(nl)
    raws.append(text)
    return raws
