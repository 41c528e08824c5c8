"""Two dhxds replicas on one etcd registry behind two Envoys (ADS, both replicas listed):
a registration through either replica is routed by every Envoy, both replicas serve the same
versions, and losing a replica loses no request and no registration."""

import threading

import grpc
import pytest
import requests
from conftest import (
    ADS,
    ENVOYS,
    REPLICAS,
    api,
    backend_of,
    connected_replica,
    credentials,
    log_of,
    put_worker,
    wait_for,
    xds_versions,
)

OTHER = {"A": "B", "B": "A"}


def test_replicas_run_in_etcd_mode_with_the_etcd_client(hosts):
    for container, _address in REPLICAS.values():
        host = hosts[container]
        assert host.service("dhxds").is_running, log_of(host, "dhxds")
        config = host.file("/etc/dhxds/config.yml").content_string
        assert "backend: etcd" in config
        for member in ("127.0.0.11", "127.0.0.12", "127.0.0.13"):
            assert f"http://{member}:2379" in config
        assert host.run("/opt/dhxds/venv/bin/python -c 'import aetcd'").rc == 0
        assert "client_ca_file: /etc/dhxds/xds-client-ca.pem" in config
        key = host.file("/etc/dhxds/xds-server.key")
        assert (key.user, key.group, key.mode) == ("root", "dhxds", 0o640)


def test_envoys_use_ads_and_list_both_replicas(hosts):
    for envoy in ENVOYS:
        config = hosts[envoy].file("/etc/envoy/config.yaml").content_string
        assert "ads_config:" in config
        on_demand = envoy == "ha-2"  # molecule.yml: ha-2 takes worker clusters on demand
        assert ("envoy.filters.http.on_demand" in config) is on_demand
        assert ("dhxds_on_demand: true" in config) is on_demand
        assert "UpstreamTlsContext" in config
        key = hosts[envoy].file("/etc/envoy/xds-tls/key.pem")
        assert (key.user, key.group, key.mode) == ("root", "envoy", 0o640)
        for _container, address in REPLICAS.values():
            assert f'address: "{address}", port_value: 8124' in config


def test_a_worker_registered_through_one_replica_is_routed_by_an_envoy_on_the_other(token):
    for envoy, worker in zip(ENVOYS, ("wa", "wb"), strict=True):
        replica = wait_for(lambda e=envoy: connected_replica(token, e), 30, f"{envoy} connected")
        response = put_worker(OTHER[replica], token, worker)
        assert response.status_code in (200, 201), response.text
        seen = wait_for(
            lambda e=envoy, w=worker: backend_of(e, f"/worker/{w}/") == w,
            30,
            f"{worker}, registered through replica {OTHER[replica]}, routed by Envoy {envoy} "
            f"connected to replica {replica}",
        )
        assert seen
        for other_envoy in ENVOYS:  # and by every other Envoy
            wait_for(
                lambda e=other_envoy, w=worker: backend_of(e, f"/worker/{w}/") == w, 30, worker
            )


def test_both_replicas_serve_the_same_versions():
    versions = wait_for(
        lambda: (a := xds_versions("A")) == xds_versions("B") and a, 30, "the same versions"
    )
    assert all(versions), versions


def test_the_xds_port_requires_a_client_certificate():
    """mTLS: Envoy reaches the replicas with its client certificate (the tests above went
    through it); a client without one is refused during the handshake."""
    for _container, address in REPLICAS.values():
        with grpc.secure_channel(f"{address}:8124", credentials(client=False)) as channel:
            call = channel.stream_stream(ADS)
            with pytest.raises(grpc.RpcError) as refused:
                next(call(iter([b""]), timeout=10))
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


def test_both_tokens_of_a_rotation_are_accepted_by_every_replica(hosts):
    lines = hosts["ha-1"].file("/etc/dhxds/api-token").content_string.split()
    assert lines == [
        "ha-current-token-0123456789abcdefghijklmnop",
        "ha-previous-token-0123456789abcdefghijkl",
    ]
    for replica in REPLICAS:
        for token, status in [(lines[0], 200), (lines[1], 200), ("not-a-token", 401)]:
            response = requests.get(
                f"{api(replica)}/v1/workers",
                headers={"Authorization": f"Bearer {token}"},
                timeout=5,
            )
            assert response.status_code == status, (replica, token, response.text)


def test_losing_a_replica_loses_no_request_and_no_registration(hosts, token):
    """Stop the replica Envoy ha-1 uses: requests through both Envoys keep reaching workers,
    the Envoys reconnect to the survivor, and a registration through it becomes routable."""
    victim = wait_for(lambda: connected_replica(token, "ha-1"), 30, "ha-1 connected")
    survivor = OTHER[victim]
    victim_host = hosts[REPLICAS[victim][0]]
    sent, failed = {e: 0 for e in ENVOYS}, {e: [] for e in ENVOYS}
    stop = threading.Event()

    def load(envoy: str) -> None:
        while not stop.is_set():
            sent[envoy] += 1
            answer = backend_of(envoy, "/worker/wa/")
            if answer != "wa":
                failed[envoy].append(answer)

    threads = [threading.Thread(target=load, args=(e,)) for e in ENVOYS]
    for thread in threads:
        thread.start()
    try:
        assert victim_host.run("systemctl stop dhxds").rc == 0
        for envoy in ENVOYS:
            wait_for(
                lambda e=envoy: connected_replica(token, e) == survivor,
                60,
                f"{envoy} on {survivor}",
            )
        response = put_worker(survivor, token, "wc")
        assert response.status_code in (200, 201), response.text
        for envoy in ENVOYS:
            wait_for(
                lambda e=envoy: backend_of(e, "/worker/wc/") == "wc", 30, f"wc through {envoy}"
            )
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        victim_host.run("systemctl start dhxds")
    print(f"stopped replica {victim}; requests per Envoy sent {sent}, failed {failed}")
    assert all(sent[e] > 0 for e in ENVOYS)
    assert failed == {e: [] for e in ENVOYS}
    # The restarted replica catches up from etcd and serves the same versions again.
    wait_for(lambda: (a := xds_versions("A")) == xds_versions("B") and a, 60, "versions agree")
