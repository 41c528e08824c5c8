# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Property files held by Deephaven's configuration server (etcd), through ``dhconfig``.

On etcd-era installs the files under illumon.d/resources are only for reference; the
documented edit workflow is ``dhconfig properties export NAME --directory DIR``, edit,
``dhconfig properties import DIR/NAME``. This wraps exactly those two calls.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

ENCODING = "utf-8"
ERRORS = "surrogateescape"


class DhconfigError(Exception):
    pass


class DhconfigStore:
    """Export/import named property files with ``dhconfig`` into a private work directory."""

    def __init__(self, module, dhconfig_path, workdir):
        self.module = module
        self.dhconfig = dhconfig_path
        self.workdir = workdir

    def _run(self, args):
        if not os.access(self.dhconfig, os.X_OK):
            raise DhconfigError("dhconfig not found or not executable at %s" % self.dhconfig)
        rc, out, err = self.module.run_command([self.dhconfig, *args])
        if rc != 0:
            detail = (err or out or "").strip() or "no output"
            raise DhconfigError(
                "'dhconfig %s' failed with exit code %d: %s" % (" ".join(args), rc, detail)
            )

    def local_path(self, name):
        return os.path.join(self.workdir, name)

    def export(self, name):
        """Text of property file ``name`` from the configuration server."""
        if os.path.basename(name) != name or name in ("", ".", ".."):
            raise DhconfigError("'%s' is not a property file name (no directories)" % name)
        self._run(["properties", "export", name, "--directory", self.workdir])
        path = self.local_path(name)
        if not os.path.isfile(path):
            raise DhconfigError("dhconfig exported nothing for %s into %s" % (name, self.workdir))
        with open(path, "rb") as handle:
            return handle.read().decode(ENCODING, ERRORS)

    def export_or_none(self, path):
        """For included files: exported text, or None when dhconfig cannot export it."""
        if os.path.dirname(path) != self.workdir:
            return None
        try:
            return self.export(os.path.basename(path))
        except DhconfigError:
            return None

    def import_text(self, name, text):
        path = self.local_path(name)
        with open(path, "wb") as handle:
            handle.write(text.encode(ENCODING, ERRORS))
        self._run(["properties", "import", path])
