"""Which workers use which host name (not an address), followed from registry state to state."""

from __future__ import annotations

from collections.abc import KeysView

from .model import Worker
from .resources import RegistryState, is_ip


class HostNames:
    """The host names (not addresses) the workers of a registry state use, followed from state
    to state in O(changed) when the state says what changed (RegistryState.changed)."""

    def __init__(self) -> None:
        self._token: object = None
        self._host_of: dict[str, str] = {}  # worker id -> its host name
        self._users: dict[str, set[str]] = {}  # host name -> ids of the workers using it

    def of(self, state: RegistryState) -> KeysView[str]:
        if state.token is not self._token:
            if state.changed is not None and state.parent is self._token:
                for worker_id, worker in state.changed.items():
                    self._set(worker_id, worker)
            else:
                self._host_of.clear()
                self._users.clear()
                for worker in state.workers:
                    self._set(worker.id, worker)
            self._token = state.token
        return self._users.keys()

    def users(self, name: str) -> set[str]:
        """Ids of the workers using host name `name` (in the last state given to `of`)."""
        return self._users.get(name, set())

    def _set(self, worker_id: str, worker: Worker | None) -> None:
        old = self._host_of.pop(worker_id, None)
        if old is not None:
            users = self._users[old]
            users.discard(worker_id)
            if not users:
                del self._users[old]
        if worker is not None and not is_ip(worker.host):
            self._host_of[worker_id] = worker.host
            self._users.setdefault(worker.host, set()).add(worker_id)
