"""Load client for the upgrade scenario: a small L7 load balancer in front of the Envoy fleet.

Sends requests one after another through the Envoy listeners, round-robin over the hosts its
health checker considers up. A host is up while its health path (Envoy's health_check filter)
answers 200; admin /healthcheck/fail makes that path answer 503, so the client stops sending
there, as a real load balancer would (fall after 1 failed check, rise after 2 good ones).
A request is retried on another host ONLY when its connection was refused (the host is
restarting); any other error, an unexpected status or a wrong backend counts as failed.

Counts are written as JSON to --counts-file every second and once more on SIGTERM/SIGINT.
"""

import argparse
import http.client
import itertools
import json
import os
import signal
import ssl
import threading
import time
from dataclasses import dataclass, field

HEALTH_INTERVAL_S = 0.2
REQUEST_TIMEOUT_S = 5.0
RISE, FALL = 2, 1
NO_BACKEND_LIMIT_S = 10.0  # a real LB would answer 503 by then
KEPT_FAILURES = 50


@dataclass
class Target:
    host: str
    port: int
    up: bool = False
    passes: int = 0
    fails: int = 0
    went_down: int = 0
    came_up: int = 0
    ok: int = 0
    refused: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def name(self) -> str:
        return f"{self.host}:{self.port}"

    def record_check(self, healthy: bool) -> None:
        with self.lock:
            self.passes, self.fails = (self.passes + 1, 0) if healthy else (0, self.fails + 1)
            if not self.up and self.passes >= RISE:
                self.up, self.came_up = True, self.came_up + 1
            elif self.up and self.fails >= FALL:
                self.up, self.went_down = False, self.went_down + 1

    def mark_down(self) -> None:
        """Passive check: a refused connection takes the host out at once."""
        with self.lock:
            if self.up:
                self.up, self.went_down = False, self.went_down + 1
            self.passes = 0


class LoadClient:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.targets = [Target(*_split(t)) for t in args.target]
        self.routes = [_split_route(r) for r in args.route]
        self.stop = threading.Event()
        self.sent = self.ok = self.failed = self.retried_refused = 0
        self.failures: list[dict] = []
        self.tls = ssl.create_default_context()
        self.tls.check_hostname = False
        self.tls.verify_mode = ssl.CERT_NONE  # the scenario's Envoys use self-signed pairs

    def connection(self, target: Target) -> http.client.HTTPConnection:
        if self.args.scheme == "https":
            return http.client.HTTPSConnection(
                target.host, target.port, timeout=REQUEST_TIMEOUT_S, context=self.tls
            )
        return http.client.HTTPConnection(target.host, target.port, timeout=REQUEST_TIMEOUT_S)

    def get(self, target: Target, path: str) -> tuple[int, bytes]:
        conn = self.connection(target)
        try:
            conn.request("GET", path, headers={"Connection": "close"})
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def health_loop(self, target: Target) -> None:
        while not self.stop.is_set():
            try:
                status = self.get(target, self.args.health_path)[0]
                target.record_check(status == 200)
            except OSError:
                target.record_check(False)
            self.stop.wait(HEALTH_INTERVAL_S)

    def pick(self, ring: itertools.cycle) -> Target | None:
        """The next target that is up, waiting while none is (bounded)."""
        deadline = time.monotonic() + NO_BACKEND_LIMIT_S
        while not self.stop.is_set() and time.monotonic() < deadline:
            for _target in range(len(self.targets)):
                target = next(ring)
                if target.up:
                    return target
            time.sleep(0.05)
        return None

    def send_one(self, ring: itertools.cycle, path: str, backend: str) -> None:
        self.sent += 1
        for _attempt in range(2 * len(self.targets)):
            target = self.pick(ring)
            if target is None:
                if not self.stop.is_set():
                    self.fail(None, path, "no healthy backend")
                else:
                    self.sent -= 1  # stopped while waiting: never sent
                return
            try:
                status, body = self.get(target, path)
            except ConnectionRefusedError:
                target.refused += 1
                target.mark_down()
                self.retried_refused += 1
                continue
            except OSError as error:
                self.fail(target, path, f"{type(error).__name__}: {error}")
                return
            answered_by = _server_name(body)
            if status != 200 or answered_by != backend:
                self.fail(target, path, f"HTTP {status} from {answered_by!r}, wanted {backend!r}")
                return
            target.ok += 1
            self.ok += 1
            return
        self.fail(None, path, "connection refused by every host")

    def fail(self, target: Target | None, path: str, error: str) -> None:
        self.failed += 1
        if len(self.failures) < KEPT_FAILURES:
            self.failures.append(
                {"at": time.time(), "target": target and target.name, "path": path, "error": error}
            )

    def counts(self) -> dict:
        return {
            "sent": self.sent,
            "ok": self.ok,
            "failed": self.failed,
            "retried_refused": self.retried_refused,
            "targets": {
                t.name: {
                    "ok": t.ok,
                    "refused": t.refused,
                    "went_down": t.went_down,
                    "came_up": t.came_up,
                    "up": t.up,
                }
                for t in self.targets
            },
            "failures": self.failures,
        }

    def write_counts(self) -> None:
        tmp = f"{self.args.counts_file}.tmp"
        with open(tmp, "w") as out:
            json.dump(self.counts(), out, indent=1)
        os.replace(tmp, self.args.counts_file)

    def flush_loop(self) -> None:
        while not self.stop.wait(1.0):
            self.write_counts()

    def run(self) -> None:
        threads = [threading.Thread(target=self.health_loop, args=(t,)) for t in self.targets]
        threads.append(threading.Thread(target=self.flush_loop))
        for thread in threads:
            thread.start()
        ring = itertools.cycle(self.targets)
        routes = itertools.cycle(self.routes)
        while not self.stop.is_set():
            self.send_one(ring, *next(routes))
            time.sleep(self.args.pause)
        for thread in threads:
            thread.join()
        self.write_counts()
        summary = {k: v for k, v in self.counts().items() if k != "failures"}
        print(json.dumps(summary), flush=True)


def _split(target: str) -> tuple[str, int]:
    host, _sep, port = target.rpartition(":")
    return host, int(port)


def _split_route(route: str) -> tuple[str, str]:
    path, _sep, backend = route.partition("=")
    return path, backend


def _server_name(body: bytes) -> str | None:
    try:
        return json.loads(body).get("server")
    except (ValueError, AttributeError):
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", action="append", required=True, help="host:port, repeat")
    parser.add_argument(
        "--route",
        action="append",
        required=True,
        help="PATH=BACKEND: send GET PATH, expect the stand-in named BACKEND to answer; repeat",
    )
    parser.add_argument("--health-path", default="/healthz")
    parser.add_argument("--scheme", choices=["http", "https"], default="https")
    parser.add_argument("--pause", type=float, default=0.01, help="seconds between requests")
    parser.add_argument("--counts-file", required=True)
    args = parser.parse_args()
    client = LoadClient(args)
    signal.signal(signal.SIGTERM, lambda *_: client.stop.set())
    signal.signal(signal.SIGINT, lambda *_: client.stop.set())
    client.run()


if __name__ == "__main__":
    main()
