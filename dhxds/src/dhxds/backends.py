"""The registry backend the config selects (`state.backend`)."""

from __future__ import annotations

from .config import Config
from .registry import RegistryBackend, open_backend


def open_state(config: Config) -> RegistryBackend:
    """sqlite: `state.path` (the embedded default); etcd: `state.etcd` (dhxds[etcd])."""
    if config.state_backend == "etcd":
        from .etcd_backend import EtcdBackend

        assert config.etcd is not None  # parse_config guarantees it
        return EtcdBackend(config.etcd)
    return open_backend(config.state_path)
