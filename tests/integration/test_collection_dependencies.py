"""A user with ansible-core only installs the built tarball and its declared dependencies, and
the roles run. No Galaxy is reachable here, so a small Galaxy (v3 API) on 127.0.0.1 serves the
dependency collections, packed from the copies the `ansible` PyPI package ships in the venv:
ansible-galaxy must find them through galaxy.yml's `dependencies` alone."""

import hashlib
import http.server
import io
import json
import os
import pathlib
import re
import subprocess
import sys
import tarfile
import threading
from typing import ClassVar

import pytest
import yaml
from ansible.module_utils.compat.version import LooseVersion
from dhops_testkit.base import missing_prerequisite
from dhops_testkit.tls import self_signed_certificate

ROOT = pathlib.Path(__file__).resolve().parents[2]
SITE_COLLECTIONS = pathlib.Path(sys.prefix).glob("lib/python3*/site-packages/ansible_collections")
# Content whose FQCNs count as used by the collection (tests and molecule are not shipped).
SHIPPED = ("roles", "playbooks", "plugins")
_NAME = r"([a-z][a-z0-9_]*)\.([a-z][a-z0-9_]*)\.[a-z][a-z0-9_]*"
USES = [
    re.compile(rf"^\s*(?:-\s+)?{_NAME}\s*:"),  # a task's module or action
    re.compile(rf"\|\s*{_NAME}"),  # a filter or test
    re.compile(rf"lookup\(\s*['\"]{_NAME}"),  # a lookup
    re.compile(rf"\b(?:name|role):\s*{_NAME}\s*$"),  # include_role, roles:
    re.compile(r"\bansible_collections\.([a-z][a-z0-9_]*)\.([a-z][a-z0-9_]*)\b"),  # imports
]


def run(*cmd, env=None, cwd=None, check=True):
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, check=False)
    if check:
        assert result.returncode == 0, f"{' '.join(cmd)}\n{result.stdout}\n{result.stderr}"
    return result


def declared_dependencies() -> dict:
    return yaml.safe_load((ROOT / "galaxy.yml").read_text())["dependencies"] or {}


def used_collections() -> set[str]:
    """Collections the shipped roles, playbooks and plugins call by FQCN."""
    used = set()
    for top in SHIPPED:
        for path in (ROOT / top).rglob("*"):
            if path.suffix not in {".yml", ".yaml", ".j2", ".py"} or "inventory" in path.parts:
                continue
            # Envoy's own dotted names (envoy.filters.http.router) fill the config templates.
            # Python plugins count by their imports; their YAML docs name Deephaven properties.
            patterns = USES[:3] if "templates" in path.parts else USES
            patterns = USES[-1:] if path.suffix == ".py" else patterns
            for line in path.read_text().splitlines():
                for pattern in patterns:
                    used.update(".".join(m.groups()) for m in pattern.finditer(line))
    return used - {"ansible.builtin", "dhops.envoy"}


def test_every_collection_used_is_declared_with_a_version_range():
    declared = declared_dependencies()
    used = used_collections()
    assert used, "the scan found no collection at all: it is broken"
    missing = sorted(used - set(declared))
    assert not missing, f"used by FQCN but not in galaxy.yml dependencies: {missing}"
    for name, spec in declared.items():
        assert re.fullmatch(r">=\d+\.\d+\.\d+,<\d+\.\d+\.\d+", spec), (name, spec)


def _pack_installed_collection(source: pathlib.Path, out: pathlib.Path) -> pathlib.Path:
    """A collection artifact of an installed collection: MANIFEST.json, FILES.json and the
    files FILES.json lists, as `ansible-galaxy collection build` makes them. The PyPI package
    leaves a few CI files out, so FILES.json (and its checksum in MANIFEST.json) is rewritten
    for the files that are there."""
    manifest = json.loads((source / "MANIFEST.json").read_text())
    files = json.loads((source / "FILES.json").read_text())
    files["files"] = [
        entry
        for entry in files["files"]
        if entry["name"] == "."
        or (
            (source / entry["name"]).exists()
            and (source / entry["name"]).is_file() == (entry["ftype"] == "file")
        )
    ]
    files_json = json.dumps(files).encode()
    manifest["file_manifest_file"]["chksum_sha256"] = hashlib.sha256(files_json).hexdigest()
    manifest_json = json.dumps(manifest).encode()
    info = manifest["collection_info"]
    target = out / f"{info['namespace']}-{info['name']}-{info['version']}.tar.gz"
    with tarfile.open(target, "w:gz", compresslevel=1) as tar:
        for name, data in (("MANIFEST.json", manifest_json), ("FILES.json", files_json)):
            member = tarfile.TarInfo(name)
            member.size, member.mode = len(data), 0o644
            tar.addfile(member, io.BytesIO(data))
        for entry in files["files"]:
            if entry["name"] != ".":
                tar.add(source / entry["name"], arcname=entry["name"], recursive=False)
    return target


class _Galaxy(http.server.BaseHTTPRequestHandler):
    """The part of Galaxy's v3 API that `ansible-galaxy collection install` reads."""

    artifacts: ClassVar[dict] = {}  # (namespace, name) -> {version: (path, sha256, deps)}
    requests: ClassVar[list] = []

    def log_message(self, *args):  # keep pytest output clean
        pass

    def _json(self, body, status=200):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        type(self).requests.append(path)
        if path == "/api/":
            return self._json({"available_versions": {"v3": "v3/"}})
        if path.startswith("/download/"):
            for versions in self.artifacts.values():
                for artifact, *_rest in versions.values():
                    if artifact.name == path.rsplit("/", 1)[1]:
                        data = artifact.read_bytes()
                        self.send_response(200)
                        self.send_header("Content-Length", str(len(data)))
                        self.end_headers()
                        self.wfile.write(data)
                        return None
            return self._json({"errors": [{"detail": "not found"}]}, 404)
        match = re.fullmatch(
            r"/api/v3/collections/([^/]+)/([^/]+)/(?:versions/(?:([^/]+)/)?)?", path
        )
        versions = self.artifacts.get(match.groups()[:2]) if match else None
        if not versions:
            return self._json({"errors": [{"detail": "not found"}]}, 404)
        namespace, name, version = match.groups()
        stamp = "2026-01-01T00:00:00Z"
        if path.endswith(f"/{name}/"):
            return self._json(
                {"namespace": namespace, "name": name, "updated_at": stamp, "created_at": stamp}
            )
        if version is None:
            listed = [{"version": v} for v in versions]
            return self._json(
                {"meta": {"count": len(listed)}, "data": listed, "links": {"next": None}}
            )
        if version not in versions:
            return self._json({"errors": [{"detail": "not found"}]}, 404)
        artifact, sha256, dependencies = versions[version]
        return self._json(
            {
                "namespace": {"name": namespace},
                "collection": {"name": name},
                "version": version,
                "href": path,
                "download_url": f"/download/{artifact.name}",
                "artifact": {"sha256": sha256, "filename": artifact.name},
                "metadata": {"dependencies": dependencies},
                "signatures": [],
            }
        )


@pytest.fixture(scope="module")
def galaxy(tmp_path_factory):
    """A local Galaxy serving every declared dependency, packed from the venv's `ansible`."""
    (site,) = list(SITE_COLLECTIONS) or [None]
    if site is None:
        reason = "the `ansible` package (with its collections) is not installed in this venv"
        missing_prerequisite(reason)
    out = tmp_path_factory.mktemp("galaxy")
    artifacts = {}
    for fqcn, spec in declared_dependencies().items():
        source = site.joinpath(*fqcn.split("."))
        manifest = json.loads((source / "MANIFEST.json").read_text())["collection_info"]
        low, high = (part.lstrip("<>=") for part in spec.split(","))
        version = manifest["version"]
        assert LooseVersion(low) <= LooseVersion(version) < LooseVersion(high), (
            f"galaxy.yml asks {fqcn} {spec}, but the version tested here is {version}"
        )
        artifact = _pack_installed_collection(source, out)
        sha256 = hashlib.sha256(artifact.read_bytes()).hexdigest()
        artifacts[tuple(fqcn.split("."))] = {version: (artifact, sha256, manifest["dependencies"])}
    handler = type("Galaxy", (_Galaxy,), {"artifacts": artifacts, "requests": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/api/", handler
    server.shutdown()
    thread.join()


def core_only_env(collections_path: pathlib.Path, home: pathlib.Path) -> dict:
    """ansible-core as a fresh user has it: no collections from the `ansible` package in
    site-packages, none from ~/.ansible, only what was installed into collections_path."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("ANSIBLE_", "MOLECULE_")) and key != "DHOPS_REPO_ROOT"
    }
    env.update(
        HOME=str(home),
        ANSIBLE_COLLECTIONS_PATH=str(collections_path),
        ANSIBLE_COLLECTIONS_SCAN_SYS_PATH="false",
        ANSIBLE_GALAXY_CACHE_DIR=str(home / "galaxy-cache"),
        ANSIBLE_LOCAL_TEMP=str(home / "tmp"),
        ANSIBLE_NOCOLOR="1",
    )
    return env


@pytest.fixture(scope="module")
def installed(galaxy, tmp_path_factory):
    server, handler = galaxy
    build = tmp_path_factory.mktemp("build")
    run("ansible-galaxy", "collection", "build", "--output-path", str(build), str(ROOT))
    (tarball,) = build.glob("dhops-envoy-*.tar.gz")
    home = tmp_path_factory.mktemp("home")
    dest = tmp_path_factory.mktemp("collections")
    assert not any(dest.iterdir()), "the install path must start empty"
    env = core_only_env(dest, home)
    # ansible-core alone really does not know community.crypto here.
    module = "community.crypto.x509_certificate_info"
    bare = run("ansible-doc", "-t", "module", module, env=env, check=False)
    assert "not found" in (bare.stdout + bare.stderr).lower() or bare.returncode != 0, bare.stdout
    # Only the dhops.envoy tarball is named: the rest must come from its declared dependencies.
    done = run(
        "ansible-galaxy",
        "collection",
        "install",
        "--no-cache",
        "-p",
        str(dest),
        "--server",
        server,
        str(tarball),
        env=env,
    )
    return dest, env, done.stdout, handler


def test_install_pulls_in_the_declared_dependencies(installed):
    dest, env, output, handler = installed
    found = {
        f"{p.parent.name}.{p.name}"
        for p in (dest / "ansible_collections").glob("*/*")
        if p.is_dir()
    }
    assert found == {"dhops.envoy", *declared_dependencies()}, output
    for fqcn in declared_dependencies():
        namespace, name = fqcn.split(".")
        asked = f"/api/v3/collections/{namespace}/{name}/versions/"
        assert asked in handler.requests, handler.requests
    listed = run(
        "ansible-galaxy", "collection", "list", "-p", str(dest), "--format", "json", env=env
    )
    collections = json.loads(listed.stdout)[str(dest / "ansible_collections")]
    assert set(collections) == found


PLAYBOOK = """
- name: Roles of the installed collection, with ansible-core alone
  hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: The envoy role's preflight (community.crypto reads the certificate and key)
      ansible.builtin.include_role:
        name: dhops.envoy.envoy
        tasks_from: preflight
      vars:
        envoy_xds_hosts: [127.0.0.1]

    - name: The web_api_service role on a property file
      ansible.builtin.include_role:
        name: dhops.envoy.web_api_service
      vars:
        web_api_service_envoy_front_proxy_url: envoy.example.com:443
        web_api_service_backup: false
"""


@pytest.mark.parametrize("other_key", [False, True], ids=["matching-pair", "mismatched-pair"])
def test_roles_run_from_the_installed_collection(installed, tmp_path, other_key):
    env = installed[1]
    cert, key = (str(p) for p in self_signed_certificate(tmp_path, other_key=other_key))
    prop = tmp_path / "iris-environment.prop"
    prop.write_text("# Deephaven\nfoo=bar\n")
    playbook = tmp_path / "play.yml"
    playbook.write_text(PLAYBOOK)
    extra = {
        "envoy_tls_cert_src": cert,
        "envoy_tls_key_src": key,
        "web_api_service_property_file": str(prop),
    }
    done = run(
        "ansible-playbook",
        "-i",
        "localhost,",
        str(playbook),
        "-e",
        json.dumps(extra),
        env={**env, "ANSIBLE_PYTHON_INTERPRETER": sys.executable},
        cwd=tmp_path,
        check=False,
    )
    output = done.stdout + done.stderr
    assert "couldn't resolve module/action" not in output, output
    if other_key:
        # The checks really ran: community.crypto compared the public keys.
        assert done.returncode != 0, output
        assert "does not belong to the certificate" in output, output
        assert "envoy.xds.port" not in prop.read_text()
    else:
        assert done.returncode == 0, output
        text = prop.read_text()
        assert text.startswith("# Deephaven\nfoo=bar\n")
        assert "envoy.front.proxy.url=envoy.example.com:443" in text
