#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: deephaven_property
short_description: Set or remove one key in one scope block of a Deephaven property file
version_added: 0.1.0
description:
  - Edits a Deephaven C(.prop) file (Java properties plus C(includefiles), C(final)/C(finalize)
    and C([scope] { ... }) blocks) the way an operator would by hand, changing only the line
    of the one key and keeping every other byte of the file.
  - With O(scope) the key is set inside the block whose scope text equals O(scope); whitespace
    around C(=), C(,) and C(|) is ignored when comparing. When several blocks match, the last
    assignment of the key in them is edited; a new key goes to the end of the last matching
    block; when there is no matching block, one is appended at the end of the file. Without
    O(scope) or O(scope_path) the key is edited at the top level (new keys go to the end of the
    file).
  - O(scope) only matches blocks at the top level of the file. Use O(scope_path) for a block
    nested inside other blocks.
  - "Finals: a change (or removal) is refused, naming the key, when a C(final key=...) line or a
    C(finalize) pattern (C(*) wildcards) for the key applies to processes that also read the
    edited scope: at the top level, in the edited block, in a block enclosing it or in a block
    nested inside it, anywhere in the file. Deephaven itself only rejects assignments after the
    lock; this module is stricter so that automation never changes a value someone locked.
    Finals in unrelated scopes (for example C([process.name=a]) when editing
    C([service.name=b])) only produce a warning."
  - With O(check_includes=true) the files named on the C(includefiles=) line are read as
    well, relative to the directory of O(path) (absolute names as they are), recursively, and
    their finals are applied by the same rule. An included file that does not exist on disk
    (Deephaven may load it from the classpath or the configuration server) only produces a
    warning, as does one that cannot be parsed.
  - A malformed file (unclosed block, C({) without a scope declaration, C(}) without a block,
    C(includefiles) not on the first statement line, C(final) used as a key, a bad
    C(\\u) escape) makes the module fail without writing anything.
  - Values are written escaped so that Deephaven reads back exactly O(value)
    (C(\\) as C(\\\\), newlines as C(\\n)). Continuation lines of an edited value are joined.
  - On systems where the configuration server (etcd) is authoritative, files under
    C(/etc/sysconfig/illumon.d/resources) are only for reference. There use
    O(backend=dhconfig) - the module runs C(dhconfig properties export <name> --directory
    <tmp>), edits the exported copy by the same rules, and runs C(dhconfig properties import
    <tmp>/<name>) only when something changed (never in check mode). Run it as a user
    allowed to import (C(become_user) C(irisadmin)).
author:
  - dhops.envoy maintainers (@dhops)
options:
  path:
    description:
      - The Deephaven property file to edit.
    type: path
    required: true
    aliases: [dest]
  scope:
    description:
      - Scope text of the top-level block to edit, for example C(service.name=web_api_service).
        Surrounding brackets are optional. Omit for the top level.
      - Mutually exclusive with O(scope_path).
      - An empty or blank O(scope) is refused; omit it to edit the top level.
    type: str
  scope_path:
    description:
      - Scope texts of nested blocks, outermost first, for example
        C([process.name=abcd, testproperty=A]). Missing inner blocks are created inside the
        last existing outer block.
    type: list
    elements: str
  key:
    description:
      - Property name. Must not contain whitespace, C(=), C(:) or C(\\), and must not be
        C(final), C(finalize) or C(includefiles).
      - One of O(key) or O(properties) is required.
    type: str
  value:
    description:
      - Value to set. Required when O(state=present).
      - Booleans are written as C(true)/C(false) (what Java expects), numbers as their text.
      - Must not start with whitespace (Deephaven strips it); trailing whitespace is kept.
    type: raw
  properties:
    description:
      - "Several C(key: value) pairs for the same scope, applied in order in one write (one
        backup, one diff). Each pair follows the rules of O(key) and O(value). With
        O(state=absent) only the keys matter."
      - Mutually exclusive with O(key) and O(value).
    type: dict
  state:
    description:
      - V(present) sets the key in the scope; V(absent) removes every assignment of the key
        made directly in that scope (other scopes are untouched).
    type: str
    choices: [present, absent]
    default: present
  backup:
    description:
      - Keep a timestamped copy of the file before changing it.
    type: bool
    default: false
  create:
    description:
      - Create the file when it does not exist. Otherwise a missing file is an error.
    type: bool
    default: false
  check_includes:
    description:
      - Also look for finals in the files named by C(includefiles).
    type: bool
    default: true
  backend:
    description:
      - V(file) edits O(path) on disk.
      - V(dhconfig) edits the property file named C(basename(path)) in Deephaven's
        configuration server through C(dhconfig properties export/import). Included files are
        exported the same way to look for finals. O(create) is not supported; O(backup) writes
        the exported original to O(dhconfig_backup_dir).
      - Releases before C(dhconfig) shipped C(etcd_prop_file --export/--import), which this
        module does not drive.
    type: str
    choices: [file, dhconfig]
    default: file
  dhconfig_path:
    description:
      - The C(dhconfig) executable, for O(backend=dhconfig).
    type: path
    default: /usr/illumon/latest/bin/dhconfig
  dhconfig_backup_dir:
    description:
      - Directory for the backup copy when O(backend=dhconfig) and O(backup=true). Created
        (mode 0700) when missing.
    type: path
    default: /var/backups/deephaven-properties
attributes:
  check_mode:
    support: full
    description: Reports whether the file would change, and the diff, without writing it.
  diff_mode:
    support: full
    description: Shows the whole file before and after.
notes:
  - Reads and writes the file as UTF-8; bytes that are not valid UTF-8 are kept as they are.
  - The file is replaced atomically, keeping its owner, group and mode. When O(path) is a
    symlink, the file it points to is edited and the link stays.
  - A later assignment of the same key at the top level or in an enclosing block wins over the
    edited one in Deephaven; the module warns when it sees one.
seealso:
  - name: Deephaven properties file format
    description: The grammar this module follows.
    link: https://deephaven.io/enterprise/docs/sys-admin/configuration/deephaven-properties-files
"""

EXAMPLES = r"""
- name: Point web_api_service at the Envoy front proxy
  dhops.envoy.deephaven_property:
    path: /etc/sysconfig/illumon.d/resources/iris-environment.prop
    scope: service.name=web_api_service
    key: envoy.front.proxy.url
    value: envoy.example.com:8443
    backup: true

- name: Terminate TLS in Envoy (booleans are written as true/false)
  dhops.envoy.deephaven_property:
    path: /etc/sysconfig/illumon.d/resources/iris-environment.prop
    scope: service.name=web_api_service
    key: envoy.terminate.ssl
    value: true

- name: Set several keys in one write
  dhops.envoy.deephaven_property:
    path: /etc/sysconfig/illumon.d/resources/iris-environment.prop
    scope: service.name=web_api_service
    properties:
      envoy.front.proxy.url: envoy.example.com:8443
      envoy.xds.port: 8124

- name: Edit the copy held by the configuration server (etcd-era installs)
  become: true
  become_user: irisadmin
  dhops.envoy.deephaven_property:
    backend: dhconfig
    path: iris-environment.prop
    scope: service.name=web_api_service
    key: envoy.xds.port
    value: 8124

- name: Remove a top-level key
  dhops.envoy.deephaven_property:
    path: /etc/sysconfig/illumon.d/resources/iris-environment.prop
    key: old.setting
    state: absent

- name: Set a key in a nested block
  dhops.envoy.deephaven_property:
    path: /etc/sysconfig/illumon.d/resources/iris-environment.prop
    scope_path:
      - process.name=query_server
      - host=worker1
    key: RemoteQueryDispatcher.maxHeap
    value: 64000
"""

RETURN = r"""
path:
  description: The file that was edited.
  returned: always
  type: str
  sample: /etc/sysconfig/illumon.d/resources/iris-environment.prop
key:
  description: The property name (the last one with O(properties)).
  returned: always
  type: str
  sample: envoy.front.proxy.url
scope_path:
  description: The scope texts of the edited block, outermost first; empty for the top level.
  returned: always
  type: list
  elements: str
  sample: [service.name=web_api_service]
value:
  description: The value as written to the file (before escaping); null when O(state=absent).
  returned: always
  type: str
  sample: envoy.example.com:8443
previous_value:
  description: The value the key had in that scope before; null when it was not set there.
  returned: always
  type: str
  sample: old-envoy:8443
line:
  description: Line number of the key after the edit; null when absent.
  returned: always
  type: int
  sample: 42
changes:
  description: One entry per key, in order, with what happened to it.
  returned: always
  type: list
  elements: dict
  sample: [{"key": "envoy.xds.port", "value": "8124", "previous_value": null,
            "changed": true, "line": 12}]
backup_file:
  description: The backup copy, when O(backup=true) and the file changed.
  returned: changed and backup requested
  type: str
  sample: /etc/sysconfig/illumon.d/resources/iris-environment.prop.12345.2026-01-01@10:00:00~
msg:
  description: What happened, in words.
  returned: always
  type: str
  sample: set envoy.front.proxy.url in [service.name=web_api_service]
"""

# Ansible modules keep their imports below the documentation blocks.
import os  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible.module_utils.common.text.converters import to_native  # noqa: E402
from ansible_collections.dhops.envoy.plugins.module_utils.deephaven_dhconfig import (  # noqa: E402
    DhconfigError,
    DhconfigStore,
)
from ansible_collections.dhops.envoy.plugins.module_utils.deephaven_props import (  # noqa: E402
    EditError,
    PropertyFile,
    PropertyFileError,
)
from ansible_collections.dhops.envoy.plugins.module_utils.deephaven_props_edit import (  # noqa: E402
    included_finals,
    remove_property,
    set_property,
)

ENCODING = "utf-8"
ERRORS = "surrogateescape"


def read_text(path):
    """File text, or None when it does not exist."""
    if not os.path.isfile(path):
        return None
    with open(path, "rb") as handle:
        return handle.read().decode(ENCODING, ERRORS)


def write_text(module, path, text):
    # Replace the file a symlink points to, never the link itself (Deephaven's illumon.d and
    # version-specific directories are full of links).
    path = os.path.realpath(path)
    directory = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(prefix=".deephaven_property.", dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(text.encode(ENCODING, ERRORS))
        module.atomic_move(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def shown(text):
    """Text for results and diffs: undecodable bytes become U+FFFD (JSON cannot carry them)."""
    if text is None:
        return None
    return text.encode(ENCODING, ERRORS).decode(ENCODING, "replace")


def as_property_text(module, key, value):
    """Deephaven values are strings; write booleans the way Java spells them."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    module.fail_json(
        msg="value for key '%s' must be a string, number or boolean, got %s"
        % (key, type(value).__name__)
    )


def requested_pairs(module):
    params = module.params
    if params["properties"] is not None:
        if not params["properties"]:
            module.fail_json(msg="properties must name at least one key")
        pairs = list(params["properties"].items())
    else:
        pairs = [(params["key"], params["value"])]
    if params["state"] == "present":
        for key, value in pairs:
            if value is None:
                module.fail_json(msg="key '%s' needs a value when state=present" % key)
    return [(key, as_property_text(module, key, value)) for key, value in pairs]


def apply_edits(module, path, original, read_fn, pairs, texts, label=str):
    """Apply every pair in order to the text; fail (nothing written) on any refusal.

    ``label`` rewrites file names in messages (dhconfig work copies -> server names).
    """
    present = module.params["state"] == "present"
    content = original
    changes = []
    warnings = []
    try:
        external = []
        if module.params["check_includes"]:
            external, warnings = included_finals(path, PropertyFile(content, path), read_fn)
        for key, value in pairs:
            if present:
                result = set_property(content, path, key, value, texts, external)
            else:
                result = remove_property(content, path, key, texts, external)
            content = result.content
            warnings.extend(result.warnings)
            changes.append(
                dict(
                    key=key,
                    value=value if present else None,
                    previous_value=shown(result.previous),
                    changed=result.changed,
                    line=result.line,
                )
            )
    except PropertyFileError as exc:
        module.fail_json(
            msg="malformed Deephaven property file, nothing written: %s"
            % shown(label(to_native(exc)))
        )
    except EditError as exc:
        module.fail_json(msg="%s (nothing written)" % shown(label(to_native(exc))))
    return content, changes, [label(w) for w in warnings]


def summary(module, pairs, texts, changes, changed):
    present = module.params["state"] == "present"
    where = " > ".join("[%s]" % t for t in texts) if texts else "the top level"
    touched = ", ".join(c["key"] for c in changes if c["changed"])
    if not changed:
        done = "set" if present else "absent"
        return "%s already %s in %s" % (", ".join(k for k, _v in pairs), done, where)
    if present:
        return "set %s in %s" % (touched, where)
    return "removed %s from %s" % (touched, where)


def edit_file(module, pairs, texts):
    """backend=file: the file on disk is the source of truth."""
    path = module.params["path"]
    if os.path.isdir(path):
        module.fail_json(msg="%s is a directory, not a Deephaven property file" % path)
    original = read_text(path)
    if original is None:
        if not module.params["create"]:
            module.fail_json(
                msg="Deephaven property file %s does not exist (set create=true to create it)"
                % path
            )
        if not os.path.isdir(os.path.dirname(os.path.abspath(path))):
            module.fail_json(msg="cannot create %s: its directory does not exist" % path)
        original = ""
    content, changes, warnings = apply_edits(module, path, original, read_text, pairs, texts)
    backup_file = None
    if content != original and not module.check_mode:
        if module.params["backup"] and os.path.exists(path):
            backup_file = module.backup_local(os.path.realpath(path))
        write_text(module, path, content)
    return original, content, changes, warnings, backup_file


def edit_dhconfig(module, pairs, texts):
    """backend=dhconfig: export from the configuration server, edit, import if changed."""
    name = os.path.basename(module.params["path"])
    workdir = tempfile.mkdtemp(prefix="deephaven_property.")
    store = DhconfigStore(module, module.params["dhconfig_path"], workdir)

    def local(text):  # messages name the file as the configuration server knows it
        return text.replace(workdir + os.sep, "dhconfig:")

    try:
        try:
            original = store.export(name)
        except DhconfigError as exc:
            module.fail_json(msg="cannot export %s: %s" % (name, exc))
        path = store.local_path(name)
        content, changes, warnings = apply_edits(
            module, path, original, store.export_or_none, pairs, texts, label=local
        )
        backup_file = None
        if content != original and not module.check_mode:
            if module.params["backup"]:
                backup_file = keep_backup(module, name, original)
            try:
                store.import_text(name, content)
            except DhconfigError as exc:
                module.fail_json(msg="cannot import %s: %s" % (name, exc), backup_file=backup_file)
        return original, content, changes, warnings, backup_file
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def keep_backup(module, name, text):
    directory = module.params["dhconfig_backup_dir"]
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
    except OSError as exc:
        module.fail_json(msg="cannot create dhconfig_backup_dir %s: %s" % (directory, exc))
    stamp = time.strftime("%Y-%m-%d@%H:%M:%S")
    backup = os.path.join(directory, "%s.%d.%s~" % (name, os.getpid(), stamp))
    with open(backup, "wb") as handle:
        handle.write(text.encode(ENCODING, ERRORS))
    return backup


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", required=True, aliases=["dest"]),
            scope=dict(type="str"),
            scope_path=dict(type="list", elements="str"),
            key=dict(type="str", no_log=False),
            value=dict(type="raw"),
            properties=dict(type="dict"),
            state=dict(type="str", choices=["present", "absent"], default="present"),
            backup=dict(type="bool", default=False),
            create=dict(type="bool", default=False),
            check_includes=dict(type="bool", default=True),
            backend=dict(type="str", choices=["file", "dhconfig"], default="file"),
            dhconfig_path=dict(type="path", default="/usr/illumon/latest/bin/dhconfig"),
            dhconfig_backup_dir=dict(type="path", default="/var/backups/deephaven-properties"),
        ),
        mutually_exclusive=[
            ("scope", "scope_path"),
            ("key", "properties"),
            ("value", "properties"),
        ],
        required_one_of=[("key", "properties")],
        supports_check_mode=True,
    )
    params = module.params
    if params["scope"] is not None and not params["scope"].strip():
        module.fail_json(msg="scope must not be empty: omit scope to edit the top level")
    if any(not text.strip() for text in params["scope_path"] or []):
        module.fail_json(msg="scope_path must not contain an empty scope text")
    pairs = requested_pairs(module)
    texts = [params["scope"]] if params["scope"] else list(params["scope_path"] or [])
    if params["backend"] == "dhconfig":
        if params["create"]:
            module.fail_json(msg="create=true is not supported with backend=dhconfig")
        original, content, changes, warnings, backup_file = edit_dhconfig(module, pairs, texts)
    else:
        original, content, changes, warnings, backup_file = edit_file(module, pairs, texts)

    for warning in warnings:
        module.warn(shown(warning))
    changed = content != original
    last = changes[-1]
    out = dict(
        changed=changed,
        path=params["path"],
        key=last["key"],
        scope_path=texts,
        value=last["value"],
        previous_value=last["previous_value"],
        line=last["line"],
        changes=changes,
        msg=summary(module, pairs, texts, changes, changed),
        diff=dict(
            before_header=params["path"],
            after_header=params["path"],
            before=shown(original),
            after=shown(content),
        ),
    )
    if backup_file:
        out["backup_file"] = backup_file
    module.exit_json(**out)


if __name__ == "__main__":
    main()
