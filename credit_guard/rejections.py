"""``RejectionLog``: the requests refused for want of credits (the 402s).

A light, in-process record: the most recent refusals (bounded) and a count per
account since the process started.  Nothing is written to the store, so a 402
costs no write.  Each worker process keeps its own log.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from .records import iso

__all__ = ["Rejection", "RejectionLog"]


@dataclass(frozen=True, slots=True)
class Rejection:
    request_id: str
    account: str
    key: str
    model: str
    reason: str
    required: Decimal
    available: Decimal
    at: float


class RejectionLog:
    """The last ``kept`` refusals, and per-account counts."""

    def __init__(self, kept: int = 1000) -> None:
        if kept < 0:
            raise ValueError("kept must not be negative")
        self._recent: deque[Rejection] = deque(maxlen=kept)
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()

    def add(
        self, request_id: str, account: str, key: str, model: str, reason: str, required: Decimal, available: Decimal
    ) -> None:
        entry = Rejection(request_id, account, key, model, reason, required, available, time.time())
        with self._lock:
            self._recent.append(entry)
            self._counts[account] = self._counts.get(account, 0) + 1

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def recent(self, account: str | None = None, limit: int = 100) -> list[Rejection]:
        """Newest first."""
        with self._lock:
            entries = list(self._recent)
        found = [e for e in reversed(entries) if account is None or e.account == account]
        return found[:limit]

    def as_json(self, account: str | None = None, limit: int = 100) -> dict[str, Any]:
        counts = self.counts()
        if account is not None:
            counts = {account: counts.get(account, 0)}
        return {
            "object": "list",
            "counts": [{"account": a, "rejected": n} for a, n in sorted(counts.items())],
            "data": [
                {
                    "request_id": e.request_id,
                    "account": e.account,
                    "key": e.key,
                    "model": e.model,
                    "reason": e.reason,
                    "required": e.required,
                    "available": e.available,
                    "at": iso(e.at),
                }
                for e in self.recent(account, limit)
            ],
        }
