"""A small LRU of non-served versions that predict asked for by number."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

from service.learning.served import ServedModel

Key = tuple[int, int]  # (model id, version number)


class VersionCache:
    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._items: OrderedDict[Key, ServedModel] = OrderedDict()
        self._lock = threading.Lock()

    def get_or_load(self, key: Key, load: Callable[[], ServedModel]) -> ServedModel:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        served = load()  # outside the lock: a slow disk read must not stall other lookups
        with self._lock:
            self._items[key] = served
            while len(self._items) > self._capacity:
                self._items.popitem(last=False)
        return served

    def forget(self, model_id: int) -> None:
        with self._lock:
            for key in [k for k in self._items if k[0] == model_id]:
                del self._items[key]
