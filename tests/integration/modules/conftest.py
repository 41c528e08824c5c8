"""Fixtures: run modules and the role through real ansible, and a real dhxds daemon."""

from __future__ import annotations

import pytest
from dhops_testkit import Daemon
from dhops_testkit.ansible_run import ansible_module, ansible_playbook


@pytest.fixture
def run_module(tmp_path):
    """run_module('deephaven_property', {...}, check=False, diff=False) -> Outcome."""

    def run(module, args, check=False, diff=False):
        return ansible_module(tmp_path, module, args, check=check, diff=diff)

    return run


@pytest.fixture
def run_playbook(tmp_path):
    """run_playbook(playbook_path, inventory_path, *extra_args) -> Outcome."""

    def run(playbook, inventory, *extra):
        return ansible_playbook(tmp_path, playbook, inventory, *extra)

    return run


@pytest.fixture
def dhxds(tmp_path):
    daemon = Daemon(tmp_path / "dhxds").start()
    yield daemon
    daemon.stop()
