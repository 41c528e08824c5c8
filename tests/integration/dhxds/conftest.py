"""Fixtures for dhxds integration tests: real daemon, real Envoy, real backends on 127.0.0.1."""

from __future__ import annotations

import pytest
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

    def start(version: str = ENVOY_MAIN, mode: str = "ads", **role_vars) -> Envoy:
        envoy = Envoy(version, tmp_path, daemon.xds_port, mode, **role_vars)
        started.append(envoy)
        return envoy.start()

    yield start
    for envoy in started:
        envoy.stop()
