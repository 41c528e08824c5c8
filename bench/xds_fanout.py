"""Many simulated Envoys in one process: delta ADS streams that subscribe to CDS (wildcard)
and RDS (`rds_config`) and ACK every response at once, as Envoy does. A helper process of
bench/fleet_bench.py (its own process, so its CPU does not share a GIL with the bench).

    python bench/xds_fanout.py --port P --streams 499 --watch worker_a,worker_b --out f.json

With --on-demand the streams are on-demand clients (rule 8 of dhxds' protocol): node metadata
{"dhxds_on_demand": true}, CDS wildcard (which then holds web_api_service only) + RDS, and once
that initial sync is in, each subscribes by name to the clusters of --subscribe (ODCDS, as
Envoy's on_demand filter does); the stream is synced once those arrived too.

Prints `synced <n>` as streams get their initial CDS and RDS, `ready` when all have,
`all <name>` when every stream has received a response naming cluster <name>. Reads
commands on stdin: `status` (prints how many streams have which initial types),
`expect <n>` (announce `all` once n streams have a name), `arm <tag> <name>` (from now on,
note the first response per stream naming cluster <name> under <tag>, announce `all <tag>`;
answers `armed <tag>`: for changes of a cluster the streams already hold); on EOF writes
{name or tag: [[type, stream, monotonic seconds], ...]} (the first response of each type that
named it, per stream) to --out and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import defaultdict

import grpc
from envoy.service.discovery.v3 import discovery_pb2

DELTA_ADS = "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources"
CDS = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
RDS = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
STREAMS_PER_CHANNEL = 10


class Fanout:
    def __init__(self, streams: int, watch: list[str], subscribe: list[str] | None = None) -> None:
        self.streams = streams
        self.subscribe = subscribe or []  # on demand: names asked for after the initial sync
        self.watch = [(name, name.encode()) for name in watch]
        self.synced: set[int] = set()
        self.initial: dict[int, set[str]] = defaultdict(set)
        self.seen: dict[str, dict[tuple[str, int], float]] = {n: {} for n in watch}
        self.announced: set[str] = set()
        self.responses = 0
        self.errors: list[str] = []
        self.target = streams  # streams expected to see each change (lowered by `expect`)

    def on_response(self, stream: int, raw: bytes) -> discovery_pb2.DeltaDiscoveryRequest:
        now = time.monotonic()
        self.responses += 1
        resp = discovery_pb2.DeltaDiscoveryResponse.FromString(raw)
        kind = "cds" if resp.type_url == CDS else "rds"
        for name, needle in self.watch:
            if needle in raw and (kind, stream) not in self.seen[name]:
                self.seen[name][(kind, stream)] = now
                streams = {s for (_k, s) in self.seen[name]}
                if name not in self.announced and len(streams) >= self.target:
                    self.announced.add(name)
                    print(f"all {name}", flush=True)
        if stream not in self.synced:
            self.initial[stream].add(kind)
            if kind == "cds" and self.subscribe and all(n.encode() in raw for n in self.subscribe):
                self.initial[stream].add("named")
            if len(self.initial[stream]) == (3 if self.subscribe else 2):
                self.synced.add(stream)
                if len(self.synced) % 50 == 0 or len(self.synced) == self.streams:
                    print(f"synced {len(self.synced)}", flush=True)
                if len(self.synced) == self.streams:
                    print("ready", flush=True)
        return discovery_pb2.DeltaDiscoveryRequest(
            type_url=resp.type_url, response_nonce=resp.nonce
        )

    async def stream(self, channel: grpc.aio.Channel, index: int, on_demand: bool) -> None:
        """One simulated Envoy: like Envoy, it opens the stream again (after 0.5 s, Envoy's
        base back-off) when the control plane ends it, and counts that."""
        node = {"id": f"fanout-{index}", "cluster": "front-proxy"}
        if on_demand:
            node["metadata"] = {"dhxds_on_demand": True}
        while True:
            call = channel.stream_stream(
                DELTA_ADS,
                request_serializer=discovery_pb2.DeltaDiscoveryRequest.SerializeToString,
                response_deserializer=None,
            )()
            try:
                await call.write(discovery_pb2.DeltaDiscoveryRequest(node=node, type_url=CDS))
                await call.write(
                    discovery_pb2.DeltaDiscoveryRequest(
                        type_url=RDS, resource_names_subscribe=["rds_config"]
                    )
                )
                asked = False
                async for raw in call:
                    await call.write(self.on_response(index, raw))
                    if self.subscribe and not asked and {"cds", "rds"} <= self.initial[index]:
                        asked = True  # ODCDS: the names, once the wildcard CDS and RDS are in
                        await call.write(
                            discovery_pb2.DeltaDiscoveryRequest(
                                type_url=CDS, resource_names_subscribe=self.subscribe
                            )
                        )
                detail = "stream ended by the server"
            except grpc.aio.AioRpcError as exc:
                detail = f"{exc.code()} {exc.details()}"
            self.errors.append(f"stream {index}: {detail}")
            print(f"error stream {index}: {detail}; reconnecting", file=sys.stderr, flush=True)
            await asyncio.sleep(0.5)

    def status(self) -> str:
        kinds = [",".join(sorted(self.initial.get(i, ()))) or "none" for i in range(self.streams)]
        counts = {k: kinds.count(k) for k in sorted(set(kinds))}
        return f"status synced={len(self.synced)} initial={counts} reconnects={len(self.errors)}"

    def arm(self, tag: str, name: str) -> None:
        """Note responses naming `name` from now on, under `tag` (a change of a cluster the
        streams hold already)."""
        self.seen[tag] = {}
        self.announced.discard(tag)
        self.watch.append((tag, name.encode()))


async def main_async(args: argparse.Namespace) -> None:
    fan = Fanout(
        args.streams,
        [w for w in args.watch.split(",") if w],
        [w for w in args.subscribe.split(",") if w],
    )
    options = [("grpc.max_receive_message_length", 256 * 1024 * 1024)]
    channels = [
        grpc.aio.insecure_channel(f"127.0.0.1:{args.port}", options=options)
        for _channel in range((args.streams + STREAMS_PER_CHANNEL - 1) // STREAMS_PER_CHANNEL)
    ]
    tasks = [
        asyncio.create_task(fan.stream(channels[i // STREAMS_PER_CHANNEL], i, args.on_demand))
        for i in range(args.streams)
    ]
    loop = asyncio.get_running_loop()
    while True:  # commands from the bench, until it closes our stdin
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            break
        if line.strip() == "status":
            print(fan.status(), flush=True)
        elif line.startswith("expect "):
            fan.target = int(line.split()[1])
        elif line.startswith("arm "):
            _arm, tag, name = line.split()
            fan.arm(tag, name)
            print(f"armed {tag}", flush=True)
    out = {name: [[k, s, t] for (k, s), t in seen.items()] for name, seen in fan.seen.items()}
    with open(args.out, "w") as handle:
        json.dump(
            {
                "seen": out,
                "responses": fan.responses,
                "synced": len(fan.synced),
                "reconnects": len(fan.errors),
                "errors": fan.errors[:20],
            },
            handle,
        )
    for task in tasks:
        task.cancel()
    for channel in channels:
        await channel.close(None)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--streams", type=int, required=True)
    parser.add_argument("--watch", default="")
    parser.add_argument("--on-demand", action="store_true", help="on-demand clients (ODCDS)")
    parser.add_argument("--subscribe", default="", help="on demand: cluster names to ask for")
    parser.add_argument("--out", required=True)
    asyncio.run(main_async(parser.parse_args()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
