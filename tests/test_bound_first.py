"""Bound first: a body whose byte upper bound fits the balance with the margin
is held at that bound without being counted, and the guard admits and charges
exactly what the exact path does for the same balance."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from credit_guard import CreditGuard, MemoryStore, shapes, tokens

from .test_middleware import AUTH, PRICES

pytestmark = pytest.mark.anyio

# A margin so large that the bound never fits: the exact path, always.
EXACT_ONLY = 10**15

WORDS = ["gateway", "token", "balance", "héllo", "🙂", "<|endoftext|>", "\n", "  ", "ab", "x" * 30]


class Upstream:
    """Answers with usage, or without it (the guard then counts)."""

    def __init__(self, usage: bool) -> None:
        self.usage = usage
        self.calls = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        while (await receive()).get("more_body"):
            pass
        self.calls += 1
        reply: dict[str, Any] = {
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok then"}, "finish_reason": "stop"}]
        }
        if self.usage:
            reply["usage"] = {"prompt_tokens": 1234, "completion_tokens": 7}
        body = orjson.dumps(reply)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})


def _body(words: list[str], max_tokens: int) -> bytes:
    text = " ".join(words)
    return orjson.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": text}], "max_tokens": max_tokens})


async def _run(body: bytes, balance: Decimal, margin: int, usage: bool) -> tuple[int, Any, Any, bool]:
    store = MemoryStore({"acct": balance})
    upstream = Upstream(usage)
    guard = CreditGuard(upstream, store=store, prices=PRICES, accounts={"sk-test-1": "acct"}, bound_margin=margin)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=guard), base_url="http://t") as client:
        response = await client.post("/v1/chat/completions", content=body, headers=AUTH)
    after = await store.balance("acct")
    assert after.available + after.held + after.spent == after.granted
    assert after.held == 0
    return response.status_code, after, response.json(), upstream.calls == 1


def _exact_cost(body: bytes) -> Decimal:
    ask = shapes.parse("chat", orjson.loads(body))
    price = PRICES.resolve("gpt-4o")
    count = tokens.count_input(ask, price)
    return price.input_price * count.tokens + price.output_price * ask.output_tokens  # type: ignore[operator]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(
    phrase=st.lists(st.sampled_from(WORDS), min_size=3, max_size=30),
    repeats=st.integers(1, 6000),
    max_tokens=st.integers(1, 4000),
    share=st.fractions(min_value=0, max_value=200),
    usage=st.booleans(),
)
async def test_bound_first_admits_and_charges_exactly_what_the_exact_path_does(
    phrase: list[str], repeats: int, max_tokens: int, share: Any, usage: bool
) -> None:
    words = (phrase * (1 + 9000 // len(" ".join(phrase))))[: max(len(phrase), repeats)]
    words = words * (1 + 9000 // len(" ".join(words)))
    body = _body(words, max_tokens)
    assert len(body) >= 8 * 1024
    # Balances around the exact worst case, from far below it to far above it.
    balance = (_exact_cost(body) * Decimal(share.numerator) / Decimal(share.denominator)).quantize(Decimal("1e-10"))
    fast = await _run(body, balance, 10, usage)
    exact = await _run(body, balance, EXACT_ONLY, usage)
    assert fast[0] == exact[0]  # never more admitted, never fewer
    assert fast[1] == exact[1]  # the same charge to the unit
    assert fast[3] == exact[3]
    if fast[0] == 402:
        assert fast[2] == {**exact[2], "error": {**exact[2]["error"], "request_id": fast[2]["error"]["request_id"]}}


async def test_an_ample_balance_skips_the_count_and_the_charge_is_exact() -> None:
    body = _body(["gateway"] * 5000, 100)
    tokens.COUNT_CACHE.clear()
    status, after, _, reached = await _run(body, Decimal("1000"), 10, usage=False)
    assert status == 200 and reached
    ask = shapes.parse("chat", orjson.loads(body))
    exact_input = tokens.count_input(ask, PRICES.resolve("gpt-4o")).tokens
    # No usage from the upstream: charged on the exact count, not on the bound.
    output = len(tokens.get_encoding("o200k_base").encode_ordinary("ok then"))
    price = PRICES.resolve("gpt-4o")
    assert after.spent == price.input_price * exact_input + price.output_price * output


async def test_an_ample_balance_holds_the_bound_and_a_thin_one_holds_the_exact_count() -> None:
    body = _body(["gateway"] * 5000, 100)
    ask = shapes.parse("chat", orjson.loads(body))
    price = PRICES.resolve("gpt-4o")
    low, high = tokens.input_bounds(ask, price)
    exact = tokens.count_input(ask, price).tokens
    assert high > exact
    seen: list[Decimal] = []

    class Spy(MemoryStore):
        async def reserve(self, account: str, amount: Decimal, *, ttl: float = 600.0) -> Any:
            seen.append(amount)
            return await super().reserve(account, amount, ttl=ttl)

    for balance, expected in (("1000", high), ("0.25", exact)):
        store = Spy({"acct": balance})
        guard = CreditGuard(Upstream(True), store=store, prices=PRICES, accounts={"sk-test-1": "acct"})
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=guard), base_url="http://t") as client:
            response = await client.post("/v1/chat/completions", content=body, headers=AUTH)
        assert response.status_code == 200
        worst = price.input_price * expected + price.output_price * 100
        assert seen[-1] >= worst and seen[-1] - worst < Decimal("1e-9")


def test_bound_margin_is_validated() -> None:
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError):
            CreditGuard(Upstream(True), store=MemoryStore(), prices=PRICES, bound_margin=bad)  # type: ignore[arg-type]
