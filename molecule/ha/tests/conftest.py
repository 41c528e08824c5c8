"""The HA stack seen from the controller (host networking): two dhxds replicas sharing one
etcd registry, two Envoys whose xds_service cluster lists both replicas."""

import os
import pathlib
import subprocess
import time

import grpc
import pytest
import requests
import testinfra

# Replica name -> (container, address): the API on <address>:8125, xDS on <address>:8124.
REPLICAS = {"A": ("ha-1", "127.0.0.11"), "B": ("ha-2", "127.0.0.12")}
# Envoy node id (its inventory name) -> its listener.
ENVOYS = {"ha-1": "http://127.0.0.11:8080", "ha-2": "http://127.0.0.12:8080"}
WORKER_HOST = "127.0.0.13"
WORKER_PORTS = {"wa": 18201, "wb": 18202, "wc": 18203}
TOKEN_FILE = "/etc/dhxds/api-token"
ADS = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"
CDS = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
RDS = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"


@pytest.fixture(scope="session")
def hosts():
    return {name: testinfra.get_host(f"docker://{name}") for name in ("ha-1", "ha-2", "ha-3")}


@pytest.fixture(scope="session")
def token(hosts) -> str:
    """The current token: the first line of the token file (later lines: previous tokens)."""
    return hosts["ha-1"].file(TOKEN_FILE).content_string.splitlines()[0].strip()


def api(replica: str) -> str:
    return f"http://{REPLICAS[replica][1]}:8125"


def put_worker(replica: str, token: str, worker_id: str) -> requests.Response:
    body = {"host": WORKER_HOST, "port": WORKER_PORTS[worker_id]}
    headers = {"Authorization": f"Bearer {token}"}
    return requests.put(
        f"{api(replica)}/v1/workers/{worker_id}", json=body, headers=headers, timeout=15
    )


def connected_replica(token: str, node_id: str) -> str | None:
    """The replica whose /v1/nodes lists this Envoy (None while it is connected to neither)."""
    for replica in REPLICAS:
        try:
            nodes = requests.get(
                f"{api(replica)}/v1/nodes", headers={"Authorization": f"Bearer {token}"}, timeout=5
            ).json()["nodes"]
        except (requests.RequestException, ValueError, KeyError):
            continue
        if any(node["id"] == node_id for node in nodes):
            return replica
    return None


def backend_of(envoy: str, path: str) -> str | None:
    """The stand-in that answered `path` through this Envoy, or None."""
    try:
        response = requests.get(ENVOYS[envoy] + path, timeout=5)
        return response.json().get("server") if response.status_code == 200 else None
    except (requests.RequestException, ValueError):
        return None


def wait_for(predicate, timeout: float, what: str):
    """Poll (bounded) until predicate() is truthy; its value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(0.25)


def pki(name: str) -> bytes:
    """A file of the test PKI (pki.yml): ca.pem, server.pem/key, client.pem/key."""
    return (pathlib.Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "pki" / name).read_bytes()


def credentials(client: bool) -> grpc.ChannelCredentials:
    """TLS to a replica's xDS port, with the Envoys' client certificate or without one."""
    pair = {"private_key": pki("client.key"), "certificate_chain": pki("client.pem")}
    return grpc.ssl_channel_credentials(root_certificates=pki("ca.pem"), **(pair if client else {}))


def xds_versions(replica: str) -> tuple[str, str]:
    """(CDS version, RDS version) a new ADS client gets from this replica right now. It ACKs
    the clusters as Envoy would: the routes follow only then."""
    import queue

    from envoy.service.discovery.v3 import discovery_pb2

    node = {"id": f"probe-{os.getpid()}", "cluster": "ha-verify"}
    out: queue.Queue = queue.Queue()
    out.put(discovery_pb2.DiscoveryRequest(node=node, type_url=CDS))
    out.put(discovery_pb2.DiscoveryRequest(node=node, type_url=RDS, resource_names=["rds_config"]))
    versions: dict[str, str] = {}
    with grpc.secure_channel(f"{REPLICAS[replica][1]}:8124", credentials(client=True)) as channel:
        call = channel.stream_stream(
            ADS,
            request_serializer=discovery_pb2.DiscoveryRequest.SerializeToString,
            response_deserializer=discovery_pb2.DiscoveryResponse.FromString,
        )
        stream = call(iter(out.get, None), timeout=15)
        try:
            for response in stream:
                versions[response.type_url] = response.version_info
                if len(versions) == 2:
                    break
                out.put(
                    discovery_pb2.DiscoveryRequest(
                        version_info=response.version_info,
                        response_nonce=response.nonce,
                        type_url=response.type_url,
                        resource_names=["rds_config"] if response.type_url == RDS else [],
                    )
                )
        finally:
            out.put(None)
            stream.cancel()
    return versions[CDS], versions[RDS]


def run_playbook(playbook: str, *extra: str) -> subprocess.CompletedProcess:
    """ansible-playbook against this scenario's inventory, as an operator would run it."""
    inventory = os.path.join(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"], "inventory")
    command = ["ansible-playbook", "--inventory", inventory, playbook, *extra]
    return subprocess.run(command, capture_output=True, text=True, check=False, timeout=300)


def log_of(host, unit: str) -> str:
    return host.run(f"journalctl -u {unit} -n 30 --no-pager").stdout
