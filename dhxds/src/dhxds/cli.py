"""Command line: `dhxds serve`, `dhxds workers list|get|add|remove` and `dhxds nodes`
(over the HTTP API), `dhxds state export|import` (the registry file itself).

Exit codes: 0 ok, 1 the API refused or cannot be reached, 2 bad configuration or token file,
3 `workers add --wait`: stored, but not routable on every Envoy node within the timeout."""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.parse

from . import __version__
from .client import ApiClient, ApiError
from .config import Config, ConfigError, check_files, load_config, read_token, split_listen
from .model import UPSTREAM_PROTOCOLS

DEFAULT_CONFIG = "/etc/dhxds/config.yml"
EXIT_PENDING = 3


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dhxds", description=__doc__)
    parser.add_argument("--version", action="version", version=f"dhxds {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the xDS server and the registration API")
    serve.add_argument(
        "--config", default=DEFAULT_CONFIG, help=f"YAML file (default {DEFAULT_CONFIG})"
    )
    serve.add_argument("--check", action="store_true", help="validate the config and exit")

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", help="read api.listen and api.token_file from this file")
    common.add_argument(
        "--api-url", help="default: $DHXDS_API_URL, else from --config, else http://127.0.0.1:8125"
    )
    common.add_argument(
        "--token-file", help="default: $DHXDS_TOKEN_FILE, else api.token_file of --config"
    )

    workers = sub.add_parser("workers", help="list, add or remove workers").add_subparsers(
        dest="action", required=True
    )
    ls = workers.add_parser("list", parents=[common], help="list registered workers")
    ls.add_argument("--json", action="store_true", help="print JSON instead of a table")
    get = workers.add_parser("get", parents=[common], help="show one worker as JSON")
    get.add_argument("id")
    add = workers.add_parser("add", parents=[common], help="register (or replace) a worker")
    add.add_argument("id")
    add.add_argument("--host", required=True)
    add.add_argument("--port", required=True, type=int)
    add.add_argument("--envoy-prefix", help="default /worker/<id>")
    add.add_argument(
        "--no-strip-prefix", action="store_true", help="forward /worker/<id>/... unchanged"
    )
    add.add_argument("--upstream-protocol", choices=UPSTREAM_PROTOCOLS)
    add.add_argument("--tls", action="store_true", help="connect to the worker with TLS")
    add.add_argument("--tls-sni")
    add.add_argument(
        "--ttl",
        type=int,
        help="worker lease in seconds (2-86400, etcd registry only): the worker goes away by "
        "itself unless added again within this time",
    )
    add.add_argument(
        "--wait",
        action="store_true",
        help="wait until every connected Envoy has ACKed the worker's cluster and route; "
        f"exit {EXIT_PENDING} and list the pending nodes on timeout",
    )
    add.add_argument(
        "--timeout",
        type=float,
        default=5.0,
        help="seconds to wait with --wait (0-60, default 5)",
    )
    rm = workers.add_parser("remove", parents=[common], help="deregister a worker")
    rm.add_argument("id")
    nodes = sub.add_parser(
        "nodes", parents=[common], help="list connected Envoy nodes and their xDS sync state"
    )
    nodes.add_argument("--json", action="store_true", help="print JSON instead of a table")

    state = sub.add_parser(
        "state", help="export or import the stored workers (JSON format dhxds-workers/1)"
    ).add_subparsers(dest="action", required=True)
    for name, text in (
        ("export", "print every stored worker as JSON (a backup)"),
        ("import", "make the stored workers exactly those of a JSON file (a restore)"),
    ):
        action = state.add_parser(name, help=text)
        action.add_argument(
            "--config", default=DEFAULT_CONFIG, help=f"read state.path from it ({DEFAULT_CONFIG})"
        )
        if name == "import":
            action.add_argument("file", help="a dhxds-workers/1 JSON file (from `state export`)")
    return parser


def _state(args: argparse.Namespace) -> int:
    """Works on the registry file directly, also while the daemon runs (it follows the
    change within a second)."""
    import asyncio

    from .backends import open_state
    from .registry import dump_state, read_state_file

    config = load_config(args.config)
    backend = open_state(config)  # sqlite (state.path) or etcd (state.etcd)
    path = getattr(backend, "path", None)
    if args.action == "export" and path is not None and not path.exists():
        raise ConfigError(f"there is no registry database {path} (state.path)")

    async def run() -> int:
        try:
            if args.action == "export":
                _revision, workers = await backend.load()
                sys.stdout.write(dump_state(workers))
                return 0
            workers = read_state_file(args.file)  # every check before anything is written
            _before, old = await backend.load()
            revision = await backend.replace_all(workers)
            added = len(workers.keys() - old.keys())
            removed = len(old.keys() - workers.keys())
            replaced = sum(1 for k in workers.keys() & old.keys() if workers[k] != old[k])
            print(
                f"imported {len(workers)} worker(s) from {args.file} into {backend.location}: "
                f"{added} added, {replaced} replaced, {removed} removed"
                + (f" (revision {revision})" if revision else " (nothing changed)")
            )
            return 0
        finally:
            await backend.close()

    return asyncio.run(run())


def _client(args: argparse.Namespace) -> ApiClient:
    config = load_config(args.config) if args.config else None
    url = args.api_url or os.environ.get("DHXDS_API_URL")
    if not url:
        host, port = split_listen((config or Config()).api_listen, "api.listen")
        host = "127.0.0.1" if host in ("0.0.0.0", "::") else host  # noqa: S104 - a listen address
        url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
    token_file = (
        args.token_file or os.environ.get("DHXDS_TOKEN_FILE") or (config or Config()).token_file
    )
    return ApiClient(url, read_token(token_file))


def _worker_path(worker_id: str) -> str:
    # Quote everything so a bad id reaches the API and gets its clear message.
    return "/v1/workers/" + urllib.parse.quote(worker_id, safe="")


def _workers(args: argparse.Namespace) -> int:
    client = _client(args)
    if args.action == "list":
        workers = client.request("GET", "/v1/workers")["workers"]
        if args.json:
            print(json.dumps(workers, indent=2))
            return 0
        print(f"{'ID':<24} {'UPSTREAM':<28} {'ENVOY_PREFIX':<32} FLAGS")
        for w in workers:
            flags = [w["upstream_protocol"]] + ["tls"] * w["tls"] + ["static"] * w["static"]
            flags += [] if w["strip_prefix"] else ["no-strip"]
            flags += [f"ttl={w['ttl']}s"] if w.get("ttl") else []
            upstream = f"{w['host']}:{w['port']}"
            print(f"{w['id']:<24} {upstream:<28} {w['envoy_prefix']:<32} {','.join(flags)}")
        return 0
    if args.action == "get":
        print(json.dumps(client.request("GET", _worker_path(args.id)), indent=2))
        return 0
    if args.action == "remove":
        client.request("DELETE", _worker_path(args.id))
        print(f"removed {args.id}")
        return 0
    body: dict[str, object] = {"host": args.host, "port": args.port}
    if args.envoy_prefix:
        body["envoy_prefix"] = args.envoy_prefix
    if args.no_strip_prefix:
        body["strip_prefix"] = False
    if args.upstream_protocol:
        body["upstream_protocol"] = args.upstream_protocol
    if args.tls:
        body["tls"] = True
    if args.tls_sni:
        body["tls_sni"] = args.tls_sni
    if args.ttl is not None:
        body["ttl"] = args.ttl
    path = _worker_path(args.id)
    if args.wait:
        path += f"?wait=routable&timeout={args.timeout:g}"
    status, answer = client.call("PUT", path, body, extra_timeout=args.timeout if args.wait else 0)
    worker = answer["worker"] if status == 202 else answer
    print(
        f"registered {worker['id']} -> {worker['host']}:{worker['port']} ({worker['envoy_prefix']})"
    )
    if status == 202:
        pending = answer.get("pending", [])
        print(
            f"dhxds: {worker['id']} is stored but not routable after {args.timeout:g}s; "
            f"{len(pending)} Envoy node(s) have not ACKed its cluster and route: "
            + ", ".join(pending),
            file=sys.stderr,
        )
        return EXIT_PENDING
    if args.wait:
        print(f"{worker['id']} is routable on every connected Envoy")
    return 0


def _nodes(args: argparse.Namespace) -> int:
    nodes = _client(args).request("GET", "/v1/nodes")["nodes"]
    if args.json:
        print(json.dumps(nodes, indent=2))
        return 0
    print(f"{'NODE':<32} {'API':<4} {'TRANSPORT':<9} {'CONNECTED SINCE':<25} ACKED / NACK")
    for node in nodes:
        acked = ", ".join(
            f"{type_url.rsplit('.', 1)[-1]}={version}"
            for type_url, version in sorted(node.get("acked", {}).items())
        )
        nack = node.get("nack")
        state = acked or "-"
        if nack:
            state += f"; NACK of {nack.get('version')}: {nack.get('message')}"
        print(
            f"{node['id']:<32} {node['api']:<4} {node['transport']:<9} "
            f"{node['connected_since']:<25} {state}"
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "serve":
            config = load_config(args.config)
            if args.check:
                check_files(config)
                print(f"{args.config}: OK")
                return 0
            # grpc, aiohttp and the Envoy protos load only for the daemon: the CLI stays quick.
            from .daemon import serve
            from .registry import RegistryError

            try:
                serve(config)
            except (RegistryError, OSError) as exc:
                print(f"dhxds: {exc}", file=sys.stderr)
                return 1
            return 0
        if args.command == "nodes":
            return _nodes(args)
        if args.command == "state":
            from .registry import RegistryError

            try:
                return _state(args)
            except RegistryError as exc:
                print(f"dhxds: {exc}", file=sys.stderr)
                return 1
        if getattr(args, "wait", False) and not 0 <= args.timeout <= 60:
            raise ConfigError(f"--timeout must be from 0 to 60 seconds, not {args.timeout:g}")
        return _workers(args)
    except ConfigError as exc:
        print(f"dhxds: {exc}", file=sys.stderr)
        return 2
    except ApiError as exc:
        print(f"dhxds: {exc}", file=sys.stderr)
        return 1
