"""Credit stores: the contract and its backends.

``MemoryStore`` (in process), ``SQLiteStore`` (one file, several processes: the
embedded default) and ``RedisStore`` (many gateway replicas; needs the ``redis``
extra).  ``open_store(url)`` opens one from a URL.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .base import Balance, CreditStore, Hold, Insufficient, Settlement, StoreUnavailable
from .memory import MemoryStore
from .sqlite import SQLiteStore

if TYPE_CHECKING:
    from .redis import RedisStore

__all__ = [
    "Balance",
    "CreditStore",
    "Hold",
    "Insufficient",
    "MemoryStore",
    "RedisStore",
    "SQLiteStore",
    "Settlement",
    "StoreUnavailable",
    "open_store",
]


def __getattr__(name: str) -> Any:
    # redis-py is an optional extra: import it only when RedisStore is asked for.
    if name == "RedisStore":
        from .redis import RedisStore

        return RedisStore
    raise AttributeError(name)


def open_store(url: str, **options: Any) -> CreditStore:
    """A store from a URL: ``memory://``, ``sqlite:///relative.db``,
    ``sqlite:////absolute/path.db`` or ``redis://host:port/db`` (``rediss://``
    too).  Raises ``ValueError`` for anything else."""
    if url == "memory://" or url == "memory":
        return MemoryStore()
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///") :]
        if not path:
            raise ValueError("sqlite:/// needs a file path, e.g. sqlite:///credits.db")
        return SQLiteStore(path, **options)
    if url.startswith(("redis://", "rediss://", "unix://")):
        from .redis import RedisStore

        return RedisStore(url, **options)
    raise ValueError(f"unknown store URL {url!r}: use memory://, sqlite:///path or redis://host:port/db")
