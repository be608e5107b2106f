"""What the guard reports about itself: the hooks, and a no-op default.

The middleware calls these hooks; ``NullMetrics`` ignores them.  A Prometheus
implementation lives beside it for deployments that install the ``metrics``
extra.
"""

from __future__ import annotations

from decimal import Decimal

__all__ = ["Metrics", "NullMetrics"]


class Metrics:
    """Hook points.  Every method must be cheap and must not raise."""

    def rejected(self, model: str, reason: str, shortfall: Decimal | None) -> None:
        """A request was refused (``reason``: a 402 reason or an error type)."""

    def hold_opened(self, model: str, amount: Decimal) -> None:
        """A hold was made."""

    def hold_finished(self, model: str, status: str, charged: Decimal, overrun: Decimal) -> None:
        """A hold ended: ``status`` is settled, released or expired."""

    def holds_expired(self, count: int) -> None:
        """``count`` holds expired without being settled or released."""

    def store_error(self, operation: str) -> None:
        """The store failed during ``operation``."""


class NullMetrics(Metrics):
    """Reports nothing."""
