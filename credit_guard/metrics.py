"""What the guard reports about itself: the hooks, and a no-op default.

The middleware calls these hooks; ``NullMetrics`` ignores them.  A Prometheus
implementation lives beside it for deployments that install the ``metrics``
extra.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

__all__ = ["Metrics", "NullMetrics", "PrometheusMetrics", "with_metrics_endpoint"]


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

    def usage_unreadable(self, model: str, reason: str) -> None:
        """A response's usage could not be read (``reason``: malformed, absurd,
        too_large, content_type, content_encoding...) and the hold was charged."""


class NullMetrics(Metrics):
    """Reports nothing."""


class PrometheusMetrics(Metrics):
    """The hooks as Prometheus metrics (needs the ``metrics`` extra:
    prometheus-client).  Amounts are exported in dollars; a float is the only
    number Prometheus has, so these figures are for dashboards, never for
    billing: the store and its ledger are the record.

    ``registry`` defaults to prometheus-client's global one; ``prefix`` names
    every metric.
    """

    def __init__(self, registry: Any = None, *, prefix: str = "credit_guard") -> None:
        try:
            from prometheus_client import REGISTRY, Counter, Histogram
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError("PrometheusMetrics needs prometheus-client: pip install 'credit-guard[metrics]'") from exc
        registry = registry if registry is not None else REGISTRY
        self.rejections = Counter(
            f"{prefix}_rejections_total",
            "Requests refused by the guard, by model and reason.",
            ["model", "reason"],
            registry=registry,
        )
        self.shortfall = Histogram(
            f"{prefix}_shortfall_dollars",
            "How much a refused request was short, in dollars.",
            buckets=(0.0001, 0.001, 0.01, 0.1, 1.0, 10.0, 100.0),
            registry=registry,
        )
        self.holds_opened = Counter(
            f"{prefix}_holds_opened_total", "Holds made, by model.", ["model"], registry=registry
        )
        self.holds_finished = Counter(
            f"{prefix}_holds_finished_total",
            "Holds ended, by model and status (settled, released, expired).",
            ["model", "status"],
            registry=registry,
        )
        self.expired = Counter(
            f"{prefix}_holds_expired_total",
            "Holds that expired before they were finished.",
            registry=registry,
        )
        self.spend = Counter(
            f"{prefix}_settled_dollars_total",
            "Dollars charged by settlements, by model.",
            ["model"],
            registry=registry,
        )
        self.overruns = Counter(
            f"{prefix}_overruns_total",
            "Settlements whose actual cost exceeded the hold, by model.",
            ["model"],
            registry=registry,
        )
        self.overrun_dollars = Counter(
            f"{prefix}_overrun_dollars_total",
            "Dollars charged above holds, by model.",
            ["model"],
            registry=registry,
        )
        self.store_errors = Counter(
            f"{prefix}_store_errors_total",
            "Credit store failures, by operation.",
            ["operation"],
            registry=registry,
        )
        self.unreadable = Counter(
            f"{prefix}_usage_unreadable_total",
            "Responses whose usage could not be read (the hold was charged), by model and reason.",
            ["model", "reason"],
            registry=registry,
        )

    def rejected(self, model: str, reason: str, shortfall: Decimal | None) -> None:
        self.rejections.labels(model=model, reason=reason).inc()
        if shortfall is not None and shortfall > 0:
            self.shortfall.observe(float(shortfall))

    def hold_opened(self, model: str, amount: Decimal) -> None:
        self.holds_opened.labels(model=model).inc()

    def hold_finished(self, model: str, status: str, charged: Decimal, overrun: Decimal) -> None:
        self.holds_finished.labels(model=model, status=status).inc()
        if charged > 0:
            self.spend.labels(model=model).inc(float(charged))
        if overrun > 0:
            self.overruns.labels(model=model).inc()
            self.overrun_dollars.labels(model=model).inc(float(overrun))

    def holds_expired(self, count: int) -> None:
        self.expired.inc(count)

    def store_error(self, operation: str) -> None:
        self.store_errors.labels(operation=operation).inc()

    def usage_unreadable(self, model: str, reason: str) -> None:
        self.unreadable.labels(model=model, reason=reason).inc()


def with_metrics_endpoint(app: Any, path: str = "/metrics", registry: Any = None) -> Any:
    """``app`` with Prometheus's text exposition answered at ``GET path``
    (``registry`` defaults to prometheus-client's global one).  The endpoint
    sits in front of ``app``, and of a guard that ``app`` may be: a scraper
    needs no API key.  It shows counts by model and reason, never an account
    or a key."""
    from prometheus_client import REGISTRY, make_asgi_app

    exposition = make_asgi_app(registry if registry is not None else REGISTRY)
    path = path.rstrip("/") or "/"

    async def dispatch(scope: Any, receive: Any, send: Any) -> None:
        if (
            scope["type"] == "http"
            and scope.get("path", "").rstrip("/") == path
            and scope.get("method") in ("GET", "HEAD")
        ):
            await exposition(scope, receive, send)
            return
        await app(scope, receive, send)

    return dispatch
