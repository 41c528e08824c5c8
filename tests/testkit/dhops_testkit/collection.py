"""Test directories that run only when asked for (their own scripts/test stage)."""

from __future__ import annotations

import os
from pathlib import Path


def collected_only_when_named(directory: Path, env_var: str):
    """A `pytest_ignore_collect` hook: `directory`'s tests are collected when it (or a file in
    it) is named on the command line or `env_var` is 1, so a plain `pytest tests` leaves the
    slow, separately staged suites out instead of skipping them."""

    def named_explicitly(config) -> bool:
        for arg in config.args:
            path = Path(arg.split("::")[0]).resolve()
            if path == directory or directory in path.parents:
                return True
        return False

    def pytest_ignore_collect(collection_path, config):
        if os.environ.get(env_var) == "1" or named_explicitly(config):
            return None
        return True

    return pytest_ignore_collect
