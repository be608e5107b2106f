"""Random ids (request ids, hold ids) from the operating system's generator,
drawn in batches: one ``os.urandom`` call serves 256 ids instead of one
system call per id.

Each batch is an immutable ``bytes`` with its own counter; ``next`` on an
``itertools.count`` is atomic under the GIL, so two threads never take the
same slot, and a thread that finds the batch spent draws a new one (two
threads doing so at once only waste one).  A forked child starts from a batch
of its own, never from its parent's: the two would hand out the same ids.
"""

from __future__ import annotations

import itertools
import os

__all__ = ["random_hex"]

_SLOT = 16  # bytes per id at most
_SLOTS = 256

_batch: tuple[bytes, itertools.count[int]] = (b"", itertools.count())


def random_hex(size: int) -> str:
    """``size`` (at most 16) random bytes as lowercase hex: the same as
    ``os.urandom(size).hex()``."""
    global _batch
    while True:
        data, taken = _batch
        start = next(taken) * _SLOT
        if start < len(data):
            return data[start : start + size].hex()
        _batch = (os.urandom(_SLOT * _SLOTS), itertools.count())


def _fresh() -> None:
    global _batch
    _batch = (b"", itertools.count())


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_fresh)
