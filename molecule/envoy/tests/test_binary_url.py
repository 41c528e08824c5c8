"""Install from a URL: fetched once to the controller (checked against the mandatory sha256),
then copied to the host. The URL is served from 127.0.0.1 on a port picked at run time."""

import functools
import hashlib
import http.server
import os
import pathlib
import threading

import pytest

CACHE = pathlib.Path(os.environ.get("DHOPS_CACHE", pathlib.Path.home() / ".cache" / "dhops-envoy"))
VERSION = "1.36.4"  # installed by prepare: staging it again must not touch what runs


@pytest.fixture
def binary_server():
    """HTTP server for the cached Envoy binaries; yields (base_url, list of request paths)."""
    requests = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            requests.append(self.path)

    handler = functools.partial(Handler, directory=str(CACHE / "envoy"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", requests
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_url_download_is_checked_fetched_once_and_copied(host, run_role, binary_server, tmp_path):
    base, requests = binary_server
    url = f"{base}/{VERSION}/envoy"
    sha256 = (CACHE / "envoy" / VERSION / "envoy.sha256").read_text().split()[0]

    wrong = run_role(
        "stage",
        {
            "envoy_version": VERSION,
            "envoy_binary_url": url,
            "envoy_binary_sha256": "0" * 64,
            "envoy_binary_local_path": str(tmp_path / "wrong" / "envoy"),
        },
    )
    assert wrong.returncode != 0
    assert "did not match" in wrong.stdout + wrong.stderr
    assert not (tmp_path / "wrong" / "envoy").exists()

    pid = host.check_output("systemctl show -p MainPID --value envoy")
    requests.clear()
    local = tmp_path / "fetched" / "envoy"
    good = run_role(
        "stage",
        {
            "envoy_version": VERSION,
            "envoy_binary_url": url,
            "envoy_binary_sha256": sha256,
            "envoy_binary_local_path": str(local),
        },
    )
    assert good.returncode == 0, good.stdout + good.stderr
    assert requests == [f"/{VERSION}/envoy"]  # one download, on the controller
    assert hashlib.sha256(local.read_bytes()).hexdigest() == sha256
    assert host.file(f"/opt/envoy/{VERSION}/bin/envoy").sha256sum == sha256
    assert host.check_output("systemctl show -p MainPID --value envoy") == pid
