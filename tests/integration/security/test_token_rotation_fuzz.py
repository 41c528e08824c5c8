"""API token rotation (COORDINATION contract: api.token_file holds one or more tokens, re-read
when it changes) under fuzzing, on a real daemon, without a restart.

Phases: the file holds OLD; then OLD and NEW (with a comment and a blank line); then NEW.
In each phase generated requests (every worker operation, valid and invalid, from
/openapi.json) are sent with OLD, NEW and a wrong token: a token of the phase is never
refused with a 401, any other always is and changes nothing, and nothing answers 5xx.
Meanwhile a client that moves from OLD to NEW during the rollover, as an operator's clients
would, reads the workers in a loop and must never get a 401 (no downtime). A token file
that becomes empty keeps the tokens read before (and /healthz says why). No token reaches
the log.
"""

from __future__ import annotations

import os
import secrets
import threading
from collections import Counter
from pathlib import Path

import requests
import schemathesis
from dhops_testkit import HOST, Daemon, wait_for
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

OLD = "old-" + secrets.token_hex(12)
NEW = "new-" + secrets.token_hex(12)
WRONG = NEW + "x"
EXAMPLES = int(200 * float(os.environ.get("DHOPS_FUZZ_SCALE", "1"))) or 1


def _write(path: Path, text: str, atomic: bool) -> None:
    if atomic:  # as Ansible's copy does: a new file renamed over the old one
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(path)
    else:  # rewritten in place (an editor, `echo >>`)
        with path.open("w") as handle:
            handle.write(text)


class Mover(threading.Thread):
    """A client reading the workers in a loop with the token it is told to use."""

    def __init__(self, daemon: Daemon, token: str) -> None:
        super().__init__(daemon=True)
        self.url = f"{daemon.api}/v1/workers"
        self.token = token
        self.answers: Counter = Counter()
        self.refused: list[tuple[str, int]] = []
        self.halt = threading.Event()

    def run(self) -> None:
        with requests.Session() as session:
            while not self.halt.is_set():
                token = self.token
                resp = session.get(
                    self.url, headers={"Authorization": f"Bearer {token}"}, timeout=10
                )
                self.answers[resp.status_code] += 1
                if resp.status_code != 200:
                    self.refused.append((token[:4], resp.status_code))


def _accepts(daemon: Daemon, token: str) -> bool:
    return daemon.call("GET", "/v1/workers", token=token).status_code == 200


def test_token_rotation_under_fuzzing(tmp_path):
    daemon = Daemon(tmp_path / "dhxds")
    daemon.token_file.write_text(OLD + "\n")
    daemon.start()
    mover = Mover(daemon, OLD)
    sent: Counter = Counter()
    try:
        schema = schemathesis.openapi.from_url(f"{daemon.api}/openapi.json")
        operations = [schema["/v1/workers/{id}"][m] for m in ("PUT", "GET", "DELETE")]
        cases = st.one_of(
            [
                op.as_strategy(mode)
                for op in operations
                for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
            ]
        )
        mover.start()

        def fuzz(phase: str, valid: set[str]) -> None:
            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                database=None,
                derandomize=True,
                suppress_health_check=list(HealthCheck),
            )
            @given(case=cases, token=st.sampled_from([OLD, NEW, WRONG]))
            def run(case, token):
                if isinstance(case.body, dict) and "host" in case.body:
                    case.body = {**case.body, "host": HOST}  # no DNS: loopback only
                case.headers = {"Authorization": f"Bearer {token}"}
                before = daemon.call("GET", "/v1/workers", token=NEW if NEW in valid else OLD)
                resp = case.call(base_url=daemon.api, timeout=30)
                sent[phase] += 1
                assert resp.status_code < 500, resp.text
                if token in valid:
                    assert resp.status_code != 401, f"{phase}: {token[:4]} refused: {resp.text}"
                else:
                    assert resp.status_code == 401, f"{phase}: {token[:4]} accepted"
                if 400 <= resp.status_code < 500:
                    after = daemon.call("GET", "/v1/workers", token=NEW if NEW in valid else OLD)
                    assert after.text == before.text, f"{phase}: a rejected request changed it"

            run()

        fuzz("old", {OLD})
        # Rollover: both tokens, written in place; clients move to NEW once it is accepted.
        _write(daemon.token_file, f"# rollover\n{OLD}\n\n{NEW}\n", atomic=False)
        wait_for(lambda: _accepts(daemon, NEW), 30, "the daemon to accept the new token")
        assert _accepts(daemon, OLD)
        fuzz("both", {OLD, NEW})
        mover.token = NEW
        # An empty file (a half-done edit) keeps the tokens read before.
        _write(daemon.token_file, "", atomic=False)
        health = wait_for(
            lambda: (
                (h := requests.get(f"{daemon.api}/healthz", timeout=10)).json().get("reason") and h
            ),
            30,
            "/healthz to report the empty token file",
        )
        assert health.json()["status"] == "degraded", health.text
        assert _accepts(daemon, OLD) and _accepts(daemon, NEW)
        # The old line removed (a new file renamed over it, as Ansible writes it).
        _write(daemon.token_file, f"{NEW}\n", atomic=True)
        wait_for(lambda: not _accepts(daemon, OLD), 30, "the daemon to refuse the old token")
        fuzz("new", {NEW})
        health = requests.get(f"{daemon.api}/healthz", timeout=10).json()
        assert health["status"] == "ok", health
    finally:
        mover.halt.set()
        if mover.is_alive():
            mover.join(15)
        daemon.stop()
    print(f"rotation fuzz: {dict(sent)} requests; mover: {dict(mover.answers)}")
    assert not mover.refused, f"the moving client was refused: {mover.refused[:5]}"
    assert mover.answers[200] > 0
    assert sum(sent.values()) >= 3 * EXAMPLES
    log = daemon.log_path.read_text(errors="replace")
    assert "re-read" in log  # the rotation was noticed
    assert not [t for t in (OLD, NEW, WRONG) if t in log], "a token is in the daemon's log"
