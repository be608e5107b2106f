"""Metrics and log lines: what the guard says about itself."""

from __future__ import annotations

import logging
from decimal import Decimal

import httpx
import pytest
from prometheus_client import CollectorRegistry

from credit_guard import CreditGuard, MemoryStore
from credit_guard.fake_llm import create_app
from credit_guard.metrics import PrometheusMetrics

from .test_middleware import PRICES

pytestmark = pytest.mark.anyio

KEY = "sk-metrics-secret-key"


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


async def test_counters_follow_rejections_holds_settlements_and_overruns(
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry = CollectorRegistry()
    store = MemoryStore({"acct": "0.01"})
    app = CreditGuard(
        create_app(default_tokens=5),
        prices=PRICES,
        store=store,
        accounts={KEY: "acct"},
        metrics=PrometheusMetrics(registry),
        low_balance_threshold="0.5",
    )
    auth = {"Authorization": f"Bearer {KEY}", "X-Request-ID": "req_metrics_1"}
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 10}
    caplog.set_level(logging.INFO, logger="credit_guard")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
        ok = await http.post("/v1/chat/completions", json=body, headers=auth)
        over = await http.post("/v1/chat/completions", json=body, headers={**auth, "x-fake-extra-usage": "1000"})
        refused = await http.post("/v1/chat/completions", json={**body, "max_tokens": 16000}, headers=auth)
        unpriced = await http.post("/v1/chat/completions", json={**body, "model": "nope"}, headers=auth)
    assert (ok.status_code, over.status_code, refused.status_code, unpriced.status_code) == (
        200,
        200,
        402,
        400,
    )
    assert ok.headers["x-credits-low"] == "true"
    assert Decimal(ok.headers["x-credits-remaining"]) < Decimal("0.01")
    assert sample(registry, "credit_guard_holds_opened_total", model="gpt-4o-mini") == 2
    assert sample(registry, "credit_guard_holds_finished_total", model="gpt-4o-mini", status="settled") == 2
    assert sample(registry, "credit_guard_overruns_total", model="gpt-4o-mini") == 1
    assert sample(registry, "credit_guard_rejections_total", model="gpt-4o-mini", reason="insufficient_balance") == 1
    assert sample(registry, "credit_guard_rejections_total", model="nope", reason="model_not_priced") == 1
    assert sample(registry, "credit_guard_shortfall_dollars_count") == 1
    spent = (await store.balance("acct")).spent
    assert sample(registry, "credit_guard_settled_dollars_total", model="gpt-4o-mini") == pytest.approx(float(spent))
    rejections = [r for r in caplog.records if "credit_guard.rejected" in r.getMessage()]
    assert len(rejections) == 1
    assert "req_metrics_1" in rejections[0].getMessage()
    assert any("credit_guard.overrun" in r.getMessage() for r in caplog.records)
    for record in caplog.records:
        assert KEY not in record.getMessage()
