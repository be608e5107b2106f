"""A bounded map the garbage collector never walks.

A gateway keeps a long past in memory: finished holds for idempotent
repeats, usage records, token counts, balances last seen.  Kept in ordinary
containers (an ``OrderedDict``, a ``deque``, a dict of tuples), every entry
is visited by every full collection of the host's heap, whoever made it:
with 100,000 finished holds that is 7 ms or more per collection, tens of
milliseconds once the CPU's caches are cold, paid by whatever request is in
flight when it comes.

``Kept`` holds its entries in three plain dicts whose keys and values are
atoms (``str``, ``bytes``, ``int``, ``float``, ``Decimal``, ``bool``,
``None``: objects the collector does not track).  CPython stops tracking such
a dict at its next full collection and never tracks it again while only
atoms go in, so from then on a collection does not look inside it at all.
Nothing breaks where an atom rule is broken (a tuple put in makes the dict
tracked again): it only costs the walk again.

Order is kept by a sequence number per entry, so the oldest is found without
scanning the slots a plain dict leaves where entries were deleted.
"""

from __future__ import annotations

import gc
from collections.abc import Hashable
from typing import Any, Generic, TypeVar

__all__ = ["Fifo", "Kept", "Log", "tracked"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Kept(Generic[K, V]):
    """Keys to values in the order they were put, the oldest first; a key
    put again becomes the newest.  Keys and values must be atoms (see the
    module's docstring)."""

    __slots__ = ("_values", "_seq_of", "_order", "_first", "_next")

    def __init__(self) -> None:
        self._values: dict[K, V] = {}
        self._seq_of: dict[K, int] = {}
        self._order: dict[int, K] = {}
        self._first = 0  # no entry has a smaller sequence number
        self._next = 0

    def __len__(self) -> int:
        return len(self._values)

    def get(self, key: K) -> V | None:
        return self._values.get(key)

    def put(self, key: K, value: V) -> None:
        """``key`` to ``value``, now the newest entry."""
        seq_of = self._seq_of
        old = seq_of.get(key)
        if old is not None:
            if old == self._next - 1:  # the newest already: most puts of a busy key
                self._values[key] = value
                return
            del self._order[old]
        seq = self._next
        self._next = seq + 1
        self._order[seq] = key
        seq_of[key] = seq
        self._values[key] = value

    def pop(self, key: K) -> V | None:
        """Remove ``key``; its value, or ``None`` where it was not kept."""
        seq = self._seq_of.pop(key, None)
        if seq is None:
            return None
        del self._order[seq]
        return self._values.pop(key)

    def pop_oldest(self) -> tuple[K, V]:
        """Remove the oldest entry and return it; ``KeyError`` where empty."""
        if not self._values:
            raise KeyError("pop_oldest from an empty Kept")
        order = self._order
        seq = self._first
        while seq not in order:  # entries since removed or put again
            seq += 1
        self._first = seq + 1
        key = order.pop(seq)
        del self._seq_of[key]
        return key, self._values.pop(key)

    def items(self) -> list[tuple[K, V]]:
        """The entries, the oldest first."""
        values = self._values
        return [(key, values[key]) for key in self._order.values()]


class Fifo(Generic[K, V]):
    """Keys to values, each key added once, at most ``limit`` of them: the
    oldest goes first.  Keys and values must be atoms."""

    __slots__ = ("_values", "_order", "_first", "_next", "limit")

    def __init__(self, limit: int) -> None:
        self._values: dict[K, V] = {}
        self._order: dict[int, K] = {}
        self._first = 0
        self._next = 0
        self.limit = limit

    def __len__(self) -> int:
        return len(self._values)

    def get(self, key: K) -> V | None:
        return self._values.get(key)

    def add(self, key: K, value: V) -> None:
        """``key`` (not kept yet) to ``value``; the oldest dropped past the limit."""
        seq = self._next
        self._next = seq + 1
        self._order[seq] = key
        values = self._values
        values[key] = value
        if len(values) > self.limit:
            first = self._first
            del values[self._order.pop(first)]
            self._first = first + 1


class Log(Generic[V]):
    """Values appended in order, at most ``limit`` of them: the oldest goes
    first.  Values must be atoms."""

    __slots__ = ("_values", "_first", "_next", "limit")

    def __init__(self, limit: int) -> None:
        self._values: dict[int, V] = {}
        self._first = 0
        self._next = 0
        self.limit = limit

    def __len__(self) -> int:
        return len(self._values)

    def append(self, value: V) -> None:
        seq = self._next
        self._next = seq + 1
        values = self._values
        values[seq] = value
        if len(values) > self.limit:
            first = self._first
            while first not in values:  # removed since
                first += 1
            del values[first]
            self._first = first + 1

    def items(self) -> list[tuple[int, V]]:
        """(number, value) of each, the oldest first."""
        return list(self._values.items())

    def remove(self, seq: int) -> None:
        del self._values[seq]


def tracked(kept: Kept[Any, Any] | Fifo[Any, Any] | Log[Any]) -> bool:
    """Whether the collector walks any of ``kept``'s dicts (it stops at the
    first full collection after only atoms have gone in)."""
    fields = (getattr(kept, name) for name in kept.__slots__)
    return any(gc.is_tracked(field) for field in fields if isinstance(field, dict))
