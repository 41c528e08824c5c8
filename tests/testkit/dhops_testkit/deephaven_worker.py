"""One embedded Deephaven Community Core server (PyPI deephaven-server) for tests and the demo:
anonymous auth, loopback only, a small heap, and a table `whoami` that names the worker.

    python -m dhops_testkit.deephaven_worker --name w1 --port 10001 --workdir DIR [--heap 512m]

Prints READY once it serves; runs until it gets SIGTERM (or SIGINT).
"""

from __future__ import annotations

import argparse
import signal
import threading
from pathlib import Path

NAME_PROPERTY = "dhops.worker.name"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", required=True)
    parser.add_argument("--port", required=True, type=int)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--workdir", required=True, type=Path)
    parser.add_argument("--heap", default="512m")
    args = parser.parse_args()
    for sub in ("data", "cache", "config"):
        (args.workdir / sub).mkdir(parents=True, exist_ok=True)

    from deephaven_server import Server

    server = Server(
        host=args.host,
        port=args.port,
        jvm_args=[
            f"-Xmx{args.heap}",
            "-DAuthHandlers=io.deephaven.auth.AnonymousAuthenticationHandler",
            # Its name in the unauthenticated ConfigService/GetAuthenticationConstants answer,
            # so a test can tell the workers apart over gRPC-web and websockets too.
            f"-D{NAME_PROPERTY}={args.name}",
            f"-Dauthentication.client.configuration.list=AuthHandlers,{NAME_PROPERTY}",
            f"-Ddeephaven.dataDir={args.workdir / 'data'}",
            f"-Ddeephaven.cacheDir={args.workdir / 'cache'}",
            f"-Ddeephaven.configDir={args.workdir / 'config'}",
        ],
    )
    server.start()

    from deephaven import empty_table

    import __main__  # the script session's scope: what clients see by name

    __main__.whoami = empty_table(1).update([f"Worker = `{args.name}`"])

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print(f"READY {args.name} on {args.host}:{args.port}", flush=True)
    stop.wait()


if __name__ == "__main__":
    main()
