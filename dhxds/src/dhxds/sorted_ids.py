"""Worker ids kept in order across changes, so the registry's view is not re-sorted per change."""

from __future__ import annotations

import bisect
from collections.abc import Iterable, KeysView


class SortedIds:
    """The ids of a dict, in order; `update` costs set operations in C plus O(log n) per
    added or removed id."""

    def __init__(self) -> None:
        self.ids: list[str] = []
        self._known: set[str] = set()

    def update(self, keys: KeysView[str] | Iterable[str]) -> list[str]:
        keys = keys if isinstance(keys, KeysView) else set(keys)
        removed = self._known - keys
        added = keys - self._known
        for key in removed:
            del self.ids[bisect.bisect_left(self.ids, key)]
        for key in added:
            bisect.insort(self.ids, key)
        self._known -= removed
        self._known |= added
        return self.ids
