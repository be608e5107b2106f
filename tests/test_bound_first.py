"""Bound first: a body whose byte upper bound fits the balance with the margin
is held at that bound without being counted, and the guard admits and charges
exactly what the exact path does for the same balance."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction
from typing import Any

import anyio
import httpx
import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from credit_guard import CreditGuard, MemoryStore, shapes, tokens
from credit_guard.admission import SeenBalances
from credit_guard.stores.base import Insufficient, StoreUnavailable

from .test_middleware import AUTH, PRICES

pytestmark = pytest.mark.anyio

# A margin so large that the bound never fits: the exact path, always.
EXACT_ONLY = 10**15

WORDS = ["gateway", "token", "balance", "héllo", "🙂", "<|endoftext|>", "\n", "  ", "ab", "x" * 30]


class Upstream:
    """Answers with usage, without it (the guard then counts), or with usage
    it cannot read (``"unreadable"``: the worst case is charged)."""

    def __init__(self, usage: bool | str) -> None:
        self.usage = usage
        self.calls = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        while (await receive()).get("more_body"):
            pass
        self.calls += 1
        reply: dict[str, Any] = {
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok then"}, "finish_reason": "stop"}]
        }
        if self.usage == "unreadable":
            reply["usage"] = {"total_tokens": 1241}  # totals only: costs the worst case
        elif self.usage:
            reply["usage"] = {"prompt_tokens": 1234, "completion_tokens": 7}
        body = orjson.dumps(reply)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})


def _body(words: list[str], max_tokens: int) -> bytes:
    text = " ".join(words)
    return orjson.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": text}], "max_tokens": max_tokens})


async def _run(body: bytes, balance: Decimal, margin: int, usage: bool | str) -> tuple[int, Any, Any, bool]:
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
    usage=st.sampled_from([True, False, "unreadable"]),
)
async def test_bound_first_admits_and_charges_exactly_what_the_exact_path_does(
    phrase: list[str], repeats: int, max_tokens: int, share: Any, usage: bool | str
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


# -- the balance an account's last hold left: no store read, any body size ------------


class Spy(MemoryStore):
    """A memory store that notes every reserve and release."""

    def __init__(self, *args: Any, fail_release: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.reserved: list[Decimal] = []
        self.released: list[Decimal] = []
        self.fail_release = fail_release

    async def reserve(self, account: str, amount: Decimal, *, ttl: float = 600.0) -> Any:
        self.reserved.append(amount)
        return await super().reserve(account, amount, ttl=ttl)

    async def release(self, hold: Any, *, record: Any = None) -> Any:
        if self.fail_release:
            self.fail_release = False
            raise StoreUnavailable("the store is restarting")
        self.released.append(hold.amount)
        return await super().release(hold, record=record)


def _worst(body: bytes, input_tokens: int) -> Decimal:
    price = PRICES.resolve("gpt-4o")
    output: int = orjson.loads(body)["max_tokens"]
    assert price.input_price is not None and price.output_price is not None
    return price.input_price * input_tokens + price.output_price * output


def _close(held: Decimal, worst: Decimal) -> bool:
    """``held`` is ``worst`` rounded up to the store's unit."""
    return Decimal(0) <= held - worst < Decimal("1e-9")


def _tokens(body: bytes) -> tuple[int, int]:
    ask = shapes.parse("chat", orjson.loads(body))
    price = PRICES.resolve("gpt-4o")
    return tokens.count_input(ask, price).tokens, tokens.input_bounds(ask, price)[1]


async def test_a_small_body_is_held_at_its_bound_once_the_balance_is_seen() -> None:
    body = _body(["gateway", "balance", "héllo"] * 60, 50)
    assert len(body) < 8 * 1024
    exact, high = _tokens(body)
    assert high > exact
    store = Spy({"acct": "1000"})
    guard = CreditGuard(Upstream(True), store=store, prices=PRICES, accounts={"sk-test-1": "acct"})
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=guard), base_url="http://t") as client:
        for _ in range(3):
            assert (await client.post("/v1/chat/completions", content=body, headers=AUTH)).status_code == 200
    # The first request of the account: nothing seen, a small body is counted
    # rather than the store read.  Then its hold's balance is known.
    assert _close(store.reserved[0], _worst(body, exact))
    assert all(_close(amount, _worst(body, high)) for amount in store.reserved[1:])
    after = await store.balance("acct")
    assert after.held == 0 and after.available + after.spent == after.granted


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    phrase=st.lists(st.sampled_from(WORDS), min_size=1, max_size=40),
    max_tokens=st.integers(1, 4000),
    # The real balance and the one last seen, as multiples of the exact worst
    # case: from unaffordable to ample (the bound is at most a few times the
    # count, so a hundred times over holds it with the margin).
    share=st.one_of(st.sampled_from([0, 1, 2, 5, 20, 100, 1000]), st.fractions(min_value=0, max_value=2000)),
    hint=st.one_of(st.none(), st.sampled_from([0, 1, 20, 1000, 10**6]), st.fractions(min_value=0, max_value=10**6)),
    usage=st.sampled_from([True, False, "unreadable"]),
)
# The cases that matter, whatever else is drawn: an ample balance seen and real
# (the bound is held), seen ample but real thin (re-priced exactly), real but
# unaffordable, and nothing seen.
@example(["gateway"] * 10, 100, 1000, 10**6, False)
@example(["gateway"] * 10, 100, 20, 10**6, False)
@example(["héllo", "🙂"] * 10, 100, Fraction(1, 2), 10**6, True)
@example(["gateway"] * 10, 100, 1000, None, False)
@example(["gateway"] * 10, 100, 1000, 10**6, "unreadable")
async def test_a_stale_balance_admits_and_charges_exactly_what_the_exact_path_does(
    phrase: list[str], max_tokens: int, share: Any, hint: Any, usage: bool | str
) -> None:
    """Whatever the balance last seen says (far above or below the real one),
    a small body is admitted, refused and charged exactly as the count would."""
    body = _body(phrase, max_tokens)
    exact_cost = _exact_cost(body)
    share = Fraction(share)
    balance = (exact_cost * Decimal(share.numerator) / Decimal(share.denominator)).quantize(Decimal("1e-10"))
    results = []
    for margin in (10, EXACT_ONLY):
        store = Spy({"acct": balance})
        upstream = Upstream(usage)
        guard = CreditGuard(upstream, store=store, prices=PRICES, accounts={"sk-test-1": "acct"}, bound_margin=margin)
        if hint is not None:
            hint = Fraction(hint)
            seen = (exact_cost * Decimal(hint.numerator) / Decimal(hint.denominator)).quantize(Decimal("1e-10"))
            guard.seen_balances.saw("acct", Insufficient("acct", Decimal(1), seen, Decimal(0)))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=guard), base_url="http://t") as client:
            response = await client.post("/v1/chat/completions", content=body, headers=AUTH)
        after = await store.balance("acct")
        assert after.available + after.held + after.spent == after.granted
        assert after.held == 0
        error = response.json().get("error") if response.status_code != 200 else None
        if error is not None:
            error.pop("request_id")
        results.append((response.status_code, after, error, upstream.calls))
    assert results[0] == results[1]


async def test_a_bound_hold_on_a_balance_thinner_than_seen_is_replaced_by_the_exact_one() -> None:
    body = _body(["gateway"] * 300, 50)
    exact, high = _tokens(body)
    # The bound fits the real balance, but not ten times over: the hint was stale.
    balance = _worst(body, high) * 3
    held_while_running: list[Decimal] = []
    store = Spy({"acct": balance})

    class Watching(Upstream):
        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            held_while_running.append((await store.balance("acct")).held)
            await super().__call__(scope, receive, send)

    guard = CreditGuard(Watching(True), store=store, prices=PRICES, accounts={"sk-test-1": "acct"})
    guard.seen_balances.saw("acct", Insufficient("acct", Decimal(1), Decimal(10**6), Decimal(0)))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=guard), base_url="http://t") as client:
        assert (await client.post("/v1/chat/completions", content=body, headers=AUTH)).status_code == 200
    bound_hold, exact_hold = store.reserved
    assert bound_hold > exact_hold
    assert store.released == [bound_hold]
    assert held_while_running == [exact_hold]
    assert guard.seen_balances.get("acct") == balance - exact_hold


async def test_a_bound_hold_that_cannot_be_released_expires_and_the_ledger_holds() -> None:
    body = _body(["gateway"] * 300, 50)
    now = [1_000_000.0]
    store = Spy({"acct": _worst(body, _tokens(body)[1]) * 3}, clock=lambda: now[0], fail_release=True)
    guard = CreditGuard(Upstream(True), store=store, prices=PRICES, accounts={"sk-test-1": "acct"})
    guard.seen_balances.saw("acct", Insufficient("acct", Decimal(1), Decimal(10**6), Decimal(0)))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=guard), base_url="http://t") as client:
        assert (await client.post("/v1/chat/completions", content=body, headers=AUTH)).status_code == 200
    during = await store.balance("acct")
    assert during.held == store.reserved[0]  # the bound hold, left to expire
    now[0] += guard.hold_ttl + 1
    after = await store.balance("acct")
    assert after.held == 0
    assert after.available + after.held + after.spent == after.granted


def test_seen_balances_keep_the_most_recent_accounts() -> None:
    seen = SeenBalances(accounts=2)
    for name in ("a", "b", "a", "c"):
        seen.saw(name, Insufficient(name, Decimal(1), Decimal(5), Decimal(0)))
    assert seen.get("b") is None and seen.get("a") == 5 and seen.get("c") == 5
    seen.saw("a", None)  # the store did not answer: nothing is known
    assert seen.get("a") is None


# -- a request that ends while its bound hold is replaced: no hold outlives it ------


class Stalling(Spy):
    """A memory store whose ``stall``-th reserve or first release (``"reserve"``
    or ``"release"``) never returns, or whose second reserve finds it down."""

    def __init__(self, *args: Any, stall: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stall = stall
        self.stalled = anyio.Event()

    async def reserve(self, account: str, amount: Decimal, *, ttl: float = 600.0) -> Any:
        if self.reserved and self.stall in ("reserve", "down"):
            stall, self.stall = self.stall, ""
            if stall == "down":
                raise StoreUnavailable("the store is restarting")
            self.stalled.set()
            await anyio.sleep_forever()
        return await super().reserve(account, amount, ttl=ttl)

    async def release(self, hold: Any, *, record: Any = None) -> Any:
        if self.stall == "release":
            self.stall = ""
            self.stalled.set()
            await anyio.sleep_forever()
        return await super().release(hold, record=record)


def _thin_balance_seen_ample(stall: str) -> tuple[bytes, Stalling, CreditGuard, Upstream]:
    """A bound hold that the balance it leaves says is too large: the guard
    replaces it with the exact count's (``_hold_exactly``)."""
    body = _body(["gateway"] * 300, 50)
    store = Stalling({"acct": _worst(body, _tokens(body)[1]) * 3}, stall=stall)
    upstream = Upstream(True)
    guard = CreditGuard(upstream, store=store, prices=PRICES, accounts={"sk-test-1": "acct"})
    guard.seen_balances.saw("acct", Insufficient("acct", Decimal(1), Decimal(10**6), Decimal(0)))
    return body, store, guard, upstream


@pytest.mark.parametrize("stall", ["reserve", "release"])
async def test_a_request_cancelled_while_its_bound_hold_is_replaced_leaves_no_hold(stall: str) -> None:
    """Cancelled while the exact hold is made, or while the bound one is
    released after it: every hold it made is released at once, none is left
    to expire (the store's clock never moves here)."""
    body, store, guard, upstream = _thin_balance_seen_ample(stall)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=guard), base_url="http://t") as client:
        async with anyio.create_task_group() as requests:
            requests.start_soon(lambda: client.post("/v1/chat/completions", content=body, headers=AUTH))
            await store.stalled.wait()
            requests.cancel_scope.cancel()
    after = await store.balance("acct")
    assert len(store.reserved) == (1 if stall == "reserve" else 2)
    assert after.held == 0 and after.spent == 0
    assert after.available == after.granted
    assert upstream.calls == 0


async def test_a_store_that_goes_down_while_the_bound_hold_is_replaced_releases_it() -> None:
    """Failing closed, the request is refused (503) and the bound hold it
    already had ends with it."""
    body, store, guard, upstream = _thin_balance_seen_ample("down")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=guard), base_url="http://t") as client:
        response = await client.post("/v1/chat/completions", content=body, headers=AUTH)
    assert response.status_code == 503
    assert response.json()["error"]["type"] == "credit_store_unavailable"
    assert store.released == store.reserved  # the one bound hold
    after = await store.balance("acct")
    assert after.held == 0 and after.available == after.granted
    assert upstream.calls == 0
