"""Fixtures for dhxds integration tests: real daemon, real Envoy, real backends on 127.0.0.1."""

from __future__ import annotations

import pytest
import yaml
from dhops_testkit import ENVOY_MAIN, Backends, Daemon, Envoy


@pytest.fixture
def backends():
    servers = Backends()
    yield servers
    servers.close()


@pytest.fixture
def web_api_port(backends) -> int:
    return backends.start("web_api_service")


@pytest.fixture
def daemon(tmp_path, web_api_port):
    proc = Daemon(tmp_path, web_api_port).start()
    yield proc
    proc.stop()


@pytest.fixture
def start_envoy(tmp_path, daemon):
    """Factory: start_envoy(version, mode, **envoy role variables) -> a running Envoy fed by
    `daemon`."""
    started: list[Envoy] = []

    def start(version: str = ENVOY_MAIN, mode: str = "ads", edit=None, **role_vars) -> Envoy:
        """`edit(bootstrap dict)` changes the rendered configuration before Envoy starts."""
        envoy = Envoy(version, tmp_path, daemon.xds_port, mode, **role_vars)
        if edit is not None:
            config = yaml.safe_load(envoy.config_path.read_text())
            edit(config)
            envoy.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        started.append(envoy)
        return envoy.start()

    yield start
    for envoy in started:
        envoy.stop()
