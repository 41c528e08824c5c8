"""Readiness notification over a real unix datagram socket, as systemd provides it."""

from __future__ import annotations

import socket

from dhxds import sd_notify


def test_notify_sends_to_notify_socket(tmp_path, monkeypatch):
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(str(path))
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        assert sd_notify.notify("READY=1\nSTATUS=serving")
        assert server.recv(1024) == b"READY=1\nSTATUS=serving"


def test_notify_without_systemd_is_a_no_op(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sd_notify.notify("READY=1") is False
