"""A real etcd cluster on loopback: Debian's `etcd-server` (/usr/bin/etcd), 3 members on
ephemeral 127.0.0.1 ports, data dirs in a temporary directory; members can be killed with
SIGKILL and restarted on their data dir (they rejoin); everything is stopped by PID."""

from __future__ import annotations

import shutil
import signal
import subprocess
from pathlib import Path

import requests

from .base import HOST, free_port, missing_prerequisite, stop_process, wait_for
from .tls import Pki

ETCD = "/usr/bin/etcd"


def etcd_binary() -> str | None:
    """The etcd server binary, or None when Debian's etcd-server is not installed."""
    return ETCD if Path(ETCD).exists() else shutil.which("etcd")


def require_etcd(allow_module_level: bool = False) -> None:
    """Tests that start a real etcd: a failure under CI without it, a skip elsewhere."""
    if etcd_binary() is None:
        missing_prerequisite(
            "etcd is not installed: apt-get install -y etcd-server",
            allow_module_level=allow_module_level,
        )


class Member:
    def __init__(self, name: str, workdir: Path, scheme: str = "http") -> None:
        self.name = name
        self.scheme = scheme
        self.client_port = free_port()
        self.peer_port = free_port()
        self.data_dir = workdir / f"{name}.data"
        self.log_path = workdir / f"{name}.log"
        self.proc: subprocess.Popen | None = None

    @property
    def client_url(self) -> str:
        return f"{self.scheme}://{HOST}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://{HOST}:{self.peer_port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def healthy(self, pki: Pki | None = None) -> bool:
        tls = {}
        if pki is not None:
            tls = {"verify": str(pki.ca), "cert": (str(pki.client_cert), str(pki.client_key))}
        try:
            resp = requests.get(f"{self.client_url}/health", timeout=1, **tls)
        except requests.RequestException:
            return False
        return resp.status_code == 200 and resp.json().get("health") == "true"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:] if self.log_path.exists() else ""


class EtcdCluster:
    """`EtcdCluster(tmp_path).start()`; `kill9(i)`, `restart(i)`, `stop()`. With `pki`, the
    client URLs are https and require a client certificate of that CA (peers stay http)."""

    def __init__(self, workdir: Path, members: int = 3, pki: Pki | None = None) -> None:
        binary = etcd_binary()
        if binary is None:
            raise RuntimeError("etcd is not installed: apt-get install -y etcd-server")
        self.binary = binary
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.pki = pki
        scheme = "https" if pki else "http"
        self.members = [Member(f"m{i}", workdir, scheme) for i in range(members)]
        self.token = f"dhops-{self.members[0].client_port}"

    @property
    def endpoints(self) -> list[str]:
        return [m.client_url for m in self.members]

    def _spawn(self, member: Member, state: str) -> None:
        initial = ",".join(f"{m.name}={m.peer_url}" for m in self.members)
        args = [
            self.binary,
            f"--name={member.name}",
            f"--data-dir={member.data_dir}",
            f"--listen-client-urls={member.client_url}",
            f"--advertise-client-urls={member.client_url}",
            f"--listen-peer-urls={member.peer_url}",
            f"--initial-advertise-peer-urls={member.peer_url}",
            f"--initial-cluster={initial}",
            f"--initial-cluster-state={state}",
            f"--initial-cluster-token={self.token}",
            "--heartbeat-interval=50",
            "--election-timeout=500",
            "--log-level=warn",
        ]
        if self.pki:
            args += [
                f"--cert-file={self.pki.server_cert}",
                f"--key-file={self.pki.server_key}",
                f"--trusted-ca-file={self.pki.ca}",
                "--client-cert-auth",
            ]
        with member.log_path.open("ab") as log:
            member.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)

    def start(self, timeout: float = 30) -> EtcdCluster:
        for member in self.members:
            self._spawn(member, "new")
        try:
            for member in self.members:
                self.wait_healthy(member, timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_healthy(self, member: Member, timeout: float = 30) -> None:
        def check() -> bool:
            if not member.running:
                raise RuntimeError(f"etcd {member.name} exited: {member.log()}")
            return member.healthy(self.pki)

        wait_for(check, timeout, f"etcd {member.name} GET /health", interval=0.1)

    def kill9(self, index: int) -> None:
        member = self.members[index]
        if member.proc is not None:
            stop_process(member.proc, signal.SIGKILL)

    def kill9_all(self) -> None:
        for index in range(len(self.members)):
            self.kill9(index)

    def restart(self, index: int, wait: bool = True) -> None:
        """Start a stopped member again on its data dir (it rejoins the cluster)."""
        member = self.members[index]
        assert not member.running, f"etcd {member.name} is still running"
        self._spawn(member, "existing")
        if wait:
            self.wait_healthy(member)

    def restart_all(self) -> None:
        for index, member in enumerate(self.members):
            if not member.running:
                self.restart(index, wait=False)
        for member in self.members:
            self.wait_healthy(member)

    def stop(self) -> None:
        for member in self.members:
            if member.proc is not None:
                stop_process(member.proc)

    def __enter__(self) -> EtcdCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
