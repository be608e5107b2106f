"""Usage records: one per priced request that reached the app, written with the
settle or release that ends its hold, on every store (memory, a real SQLite
file, a real Redis), summed per day / model / key / account from the rollups,
pruned by day, and equal in sum to what the ledger charged."""

from __future__ import annotations

import datetime as dt
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from anyio.from_thread import start_blocking_portal
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from credit_guard import CreditGuard, PriceTable
from credit_guard.fake_llm import create_app
from credit_guard.money import from_units
from credit_guard.records import UsageQuery, UsageRecord, day_of, key_label
from credit_guard.stores import Hold, MemoryStore, SQLiteStore

from .servers import serve
from .test_store_contract import Clock, make_store

pytestmark = pytest.mark.anyio

PRICES = PriceTable.default()
DAY = 86400.0
# 2026-11-20 00:00:00 UTC
T0 = dt.datetime(2026, 11, 20, tzinfo=dt.timezone.utc).timestamp()


@pytest.fixture(params=["memory", "sqlite", "redis"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def env(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[tuple[Any, Clock]]:
    redis_url = request.getfixturevalue("redis_url") if kind == "redis" else None
    clock = Clock()
    clock.now = T0 + 3600
    store = make_store(kind, clock, tmp_path, redis_url)
    try:
        yield store, clock
    finally:
        await store.aclose()


def acct() -> str:
    return "acct_" + uuid.uuid4().hex[:10]


def rec(request_id: str, **fields: Any) -> UsageRecord:
    return UsageRecord(request_id=request_id, **fields)


# -- written by every store ------------------------------------------------------------


async def test_settle_and_release_write_one_record_each_with_the_stores_figures(env: tuple[Any, Clock]) -> None:
    store, clock = env
    account = acct()
    await store.grant(account, "1")
    hold = await store.reserve(account, Decimal("0.3"))
    clock.now += 2.5
    await store.settle(
        hold,
        Decimal("0.1"),
        record=rec(
            "req_a",
            key="sk-abcd...wxyz",
            model="gpt-4o-mini",
            route="/v1/chat/completions",
            input_tokens=12,
            output_tokens=5,
            cached_tokens=3,
            started_at=T0 + 3600,
        ),
    )
    other = await store.reserve(account, Decimal("0.2"))
    await store.release(other, record=rec("req_b", key="sk-abcd...wxyz", model="gpt-4o", outcome="released"))
    # Repeats change nothing and write nothing.
    await store.settle(hold, Decimal("0.1"), record=rec("req_a"))
    await store.release(other, record=rec("req_b"))
    records = await store.usage_records(UsageQuery(account=account))
    assert [r.request_id for r in records] == ["req_b", "req_a"]  # newest first
    b, a = records
    assert (a.account, a.hold, a.key, a.model, a.route) == (
        account,
        hold.id,
        "sk-abcd...wxyz",
        "gpt-4o-mini",
        "/v1/chat/completions",
    )
    assert (a.input_tokens, a.output_tokens, a.cached_tokens) == (12, 5, 3)
    assert (a.held, a.charged, a.outcome) == (Decimal("0.3"), Decimal("0.1"), "settled")
    assert (a.started_at, a.ended_at) == (T0 + 3600, T0 + 3602.5)
    assert (b.held, b.charged, b.outcome) == (Decimal("0.2"), Decimal(0), "released")
    assert isinstance(a.held, Decimal) and isinstance(a.charged, Decimal)


async def test_an_expired_hold_leaves_a_record_and_a_late_settle_another(env: tuple[Any, Clock]) -> None:
    store, clock = env
    account = acct()
    await store.grant(account, "1")
    hold = await store.reserve(account, Decimal("0.4"), ttl=10)
    clock.now += 11
    await store.balance(account)  # the next touch expires it
    clock.now += 5
    late = await store.settle(hold, Decimal("0.25"), record=rec("req_late", model="gpt-4o", outcome="settled"))
    assert late.late
    records = await store.usage_records(UsageQuery(account=account))
    assert [(r.outcome, r.held, r.charged) for r in records] == [
        ("late", Decimal(0), Decimal("0.25")),
        ("expired", Decimal("0.4"), Decimal(0)),
    ]
    assert records[1].request_id == hold.id and records[1].ended_at == clock.now - 5
    summary = await store.usage_summary(UsageQuery(account=account), by="account")
    # The late record charges but is not a second request.
    assert [(row.group, row.requests, row.held, row.charged) for row in summary] == [
        (account, 1, Decimal("0.4"), Decimal("0.25"))
    ]
    assert (await store.balance(account)).spent == Decimal("0.25")


async def test_summaries_group_and_filter_by_day_model_key_and_account(env: tuple[Any, Clock]) -> None:
    store, clock = env
    a1, a2 = acct(), acct()
    for account in (a1, a2):
        await store.grant(account, "10")
    plan = [  # (day offset, account, key, model, charge)
        (0, a1, "k1", "gpt-4o", "0.01"),
        (0, a1, "k2", "gpt-4o-mini", "0.002"),
        (1, a1, "k1", "gpt-4o", "0.03"),
        (1, a2, "k3", "gpt-4o", "0.5"),
        (3, a2, "k3", "gpt-4o-mini", "0.0000000001"),
    ]
    # Days no other test uses: a query over every account on the shared Redis sees only these.
    base = dt.datetime(2030, 3, 1, tzinfo=dt.timezone.utc).timestamp()
    for offset, account, key, model, charge in plan:
        clock.now = base + offset * DAY + 60
        hold = await store.reserve(account, Decimal("1"))
        await store.settle(hold, Decimal(charge), record=rec(uuid.uuid4().hex, key=key, model=model, input_tokens=7))
    mine = UsageQuery(account=a1)
    by_day = await store.usage_summary(mine, by="day")
    assert [(r.group, r.requests, r.charged, r.input_tokens) for r in by_day] == [
        ("2030-03-01", 2, Decimal("0.012"), 14),
        ("2030-03-02", 1, Decimal("0.03"), 7),
    ]
    by_model = await store.usage_summary(UsageQuery(account=a1, model="gpt-4o"), by="model")
    assert [(r.group, r.requests, r.charged) for r in by_model] == [("gpt-4o", 2, Decimal("0.04"))]
    by_key = await store.usage_summary(mine, by="key")
    assert [(r.group, r.charged, r.held) for r in by_key] == [
        ("k1", Decimal("0.04"), Decimal("2")),
        ("k2", Decimal("0.002"), Decimal("1")),
    ]
    everyone = await store.usage_summary(UsageQuery(since=dt.date(2030, 3, 2), until=dt.date(2030, 3, 4)))
    assert [(r.group, r.charged) for r in everyone] == [
        ("2030-03-02", Decimal("0.53")),
        ("2030-03-04", Decimal("0.0000000001")),
    ]
    ours = {a1, a2}
    by_account = [r for r in await store.usage_summary(UsageQuery(key="k3"), by="account") if r.group in ours]
    assert [(r.group, r.requests, r.charged) for r in by_account] == [(a2, 2, Decimal("0.5000000001"))]
    assert await store.usage_records(UsageQuery(account=a1, since=dt.date(2030, 3, 3))) == []
    day_two = await store.usage_records(UsageQuery(account=a1, since=dt.date(2030, 3, 2), until=dt.date(2030, 3, 2)))
    assert [r.charged for r in day_two] == [Decimal("0.03")]
    with pytest.raises(ValueError):
        await store.usage_summary(mine, by="hour")


async def test_prune_drops_records_and_rollups_before_a_day(env: tuple[Any, Clock], kind: str) -> None:
    store, clock = env
    account = acct()
    await store.grant(account, "1")
    for offset in (0, 1, 2):
        clock.now = T0 + offset * DAY + 10
        hold = await store.reserve(account, Decimal("0.1"))
        await store.settle(hold, Decimal("0.01"), record=rec(f"req_{offset}"))
    other = acct()
    await store.grant(other, "1")
    hold = await store.reserve(other, Decimal("0.1"))
    await store.settle(hold, Decimal("0.01"), record=rec("req_other"))
    removed = await store.prune_usage(dt.date(2026, 11, 22), account=account)
    assert removed == 2
    assert [r.request_id for r in await store.usage_records(UsageQuery(account=account))] == ["req_2"]
    assert [r.group for r in await store.usage_summary(UsageQuery(account=account))] == ["2026-11-22"]
    assert await store.prune_usage(dt.date(2026, 11, 22), account=account) == 0
    if kind != "redis":  # a store of its own: every account's totals are these two accounts'
        for by in ("day", "model"):
            everyone = await store.usage_summary(UsageQuery(), by=by)
            each = [r for a in (account, other) for r in await store.usage_summary(UsageQuery(account=a), by=by)]
            assert sum((r.charged for r in everyone), Decimal(0)) == sum((r.charged for r in each), Decimal(0))
            assert sum(r.requests for r in everyone) == sum(r.requests for r in each) == 2
    # Without an account, every account is pruned.
    assert len(await store.usage_records(UsageQuery(account=other))) == 1
    assert await store.prune_usage(dt.date(2026, 11, 23)) >= 2
    assert await store.usage_records(UsageQuery(account=other)) == []
    assert await store.usage_records(UsageQuery(account=account)) == []


async def test_the_memory_store_keeps_a_bounded_number() -> None:
    store = MemoryStore({"a": "1"}, usage_kept=3)
    for i in range(5):
        hold = await store.reserve("a", Decimal("0.01"))
        assert isinstance(hold, Hold)
        await store.settle(hold, Decimal("0.001"), record=rec(f"req_{i}"))
    kept = await store.usage_records(UsageQuery(account="a"))
    assert [r.request_id for r in kept] == ["req_4", "req_3", "req_2"]
    with pytest.raises(ValueError):
        MemoryStore(usage_kept=-1)


# -- restarts --------------------------------------------------------------------------


async def test_sqlite_records_survive_reopening_the_file(tmp_path: Path) -> None:
    path = tmp_path / "credits.db"
    store = SQLiteStore(path)
    await store.grant("a", "1")
    hold = await store.reserve("a", Decimal("0.5"))
    await store.settle(hold, Decimal("0.2"), record=rec("req_1", model="gpt-4o"))
    await store.aclose()
    reopened = SQLiteStore(path)
    try:
        [record] = await reopened.usage_records(UsageQuery(account="a"))
        assert (record.request_id, record.charged, record.model) == ("req_1", Decimal("0.2"), "gpt-4o")
        [row] = await reopened.usage_summary(UsageQuery(account="a"), by="model")
        assert (row.group, row.charged) == ("gpt-4o", Decimal("0.2"))
    finally:
        await reopened.aclose()


async def test_redis_records_are_seen_by_another_store_object(redis_url: str) -> None:
    from credit_guard.stores import RedisStore

    account = acct()
    first = RedisStore(redis_url)
    await first.grant(account, "1")
    hold = await first.reserve(account, Decimal("0.5"))
    await first.settle(hold, Decimal("0.2"), record=rec("req_1", model="gpt-4o"))
    await first.aclose()
    second = RedisStore(redis_url)
    try:
        [record] = await second.usage_records(UsageQuery(account=account))
        assert (record.request_id, record.charged) == ("req_1", Decimal("0.2"))
        everyone = await second.usage_summary(by="account")
        assert any(row.group == account and row.charged == Decimal("0.2") for row in everyone)
    finally:
        await second.aclose()


async def test_sqlite_summaries_read_the_rollup_not_the_raw_records(tmp_path: Path) -> None:
    path = tmp_path / "credits.db"
    store = SQLiteStore(path)
    try:
        await store.grant("a", "1")
        hold = await store.reserve("a", Decimal("0.5"))
        await store.settle(hold, Decimal("0.2"), record=rec("req_1"))
        db = sqlite3.connect(path)
        plans = [
            " ".join(str(row[-1]) for row in db.execute("EXPLAIN QUERY PLAN " + sql, params))
            for sql, params in (
                ("SELECT * FROM usage_records WHERE account = ? AND ended_at >= ? ORDER BY ended_at DESC", ("a", 0)),
                ("SELECT * FROM usage_records WHERE ended_at >= ? AND ended_at < ?", (0, 1)),
                ("SELECT SUM(charged) FROM usage_daily WHERE account = ? AND day >= ? GROUP BY day", ("a", "x")),
                ("SELECT SUM(charged) FROM usage_daily WHERE day >= ? AND day < ? GROUP BY model", ("x", "y")),
            )
        ]
        assert all("USING" in plan and "SCAN usage" not in plan for plan in plans), plans
        db.execute("DELETE FROM usage_records")  # the summary must not need them
        db.commit()
        db.close()
        [row] = await store.usage_summary(UsageQuery(account="a"))
        assert (row.requests, row.charged) == (1, Decimal("0.2"))
    finally:
        await store.aclose()


# -- the sums equal the ledger's charges --------------------------------------------------

OUTCOME = st.tuples(
    st.sampled_from(["settle", "release", "expire", "late", "repeat"]),
    st.integers(min_value=0, max_value=3_000),  # charge in units of 1e-7 dollars
    st.integers(min_value=1, max_value=2_000),  # hold
    st.integers(min_value=0, max_value=2),  # day offset
)


@pytest.mark.parametrize("store_kind", ["memory", "sqlite", "redis"])
def test_records_sum_to_what_the_ledger_charged(
    store_kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    redis_url = request.getfixturevalue("redis_url") if store_kind == "redis" else None

    @settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(st.lists(OUTCOME, min_size=1, max_size=12))
    def run(steps: list[tuple[str, int, int, int]]) -> None:
        with start_blocking_portal() as portal:
            portal.call(check, steps)

    async def check(steps: list[tuple[str, int, int, int]]) -> None:
        clock = Clock()
        store = make_store(store_kind, clock, tmp_path, redis_url)
        account = acct()
        try:
            await store.grant(account, "1")
            holds = 0
            held = Decimal(0)
            for action, charge, amount, offset in steps:
                clock.now = T0 + offset * DAY + holds
                hold = await store.reserve(account, Decimal(amount) / 10_000_000, ttl=30)
                assert isinstance(hold, Hold)
                holds += 1
                held += hold.amount
                cost = Decimal(charge) / 10_000_000
                record = rec(f"req_{holds}", model="m", key="k")
                if action == "settle":
                    await store.settle(hold, cost, record=record)
                elif action == "release":
                    await store.release(hold, record=record)
                elif action == "repeat":
                    await store.settle(hold, cost, record=record)
                    await store.settle(hold, cost + 1, record=record)
                    await store.release(hold, record=record)
                else:
                    clock.now += 31
                    await store.balance(account)
                    if action == "late":
                        await store.settle(hold, cost, record=record)
                    await store.release(hold, record=record)
            clock.now += 3 * DAY
            balance = await store.balance(account)
            records = await store.usage_records(UsageQuery(account=account), limit=1000)
            assert sum((r.charged for r in records), Decimal(0)) == balance.spent
            assert sum((r.held for r in records), Decimal(0)) == held
            assert len([r for r in records if r.outcome != "late"]) == holds
            for by in ("day", "account", "model", "key"):
                rows = await store.usage_summary(UsageQuery(account=account), by=by)
                assert sum((r.charged for r in rows), Decimal(0)) == balance.spent
                assert sum(r.requests for r in rows) == holds
                if store_kind == "sqlite":  # its own file: every account's totals are this account's
                    everyone = await store.usage_summary(UsageQuery(), by=by)
                    assert [(r.group, r.charged, r.requests, r.held) for r in everyone] == [
                        (r.group, r.charged, r.requests, r.held) for r in rows
                    ]
            days = await store.usage_summary(UsageQuery(account=account), by="day")
            for row in days:
                assert row.charged == sum((r.charged for r in records if day_of(r.ended_at) == row.group), Decimal(0))
        finally:
            await store.aclose()

    run()


# -- through the guard ------------------------------------------------------------------


async def test_each_priced_request_that_reached_the_app_leaves_one_record(env: tuple[Any, Clock]) -> None:
    store, clock = env
    clock.now = time.time() + 1  # the store's clock, a little after the guard's
    account = acct()
    api_key = "sk-live-" + uuid.uuid4().hex
    await store.grant(account, "0.01")
    guard = CreditGuard(create_app(), store=store, prices=PRICES, accounts={api_key: account})
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 40}
    auth = {"Authorization": f"Bearer {api_key}"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=guard), base_url="http://t") as http:
        ok = await http.post("/v1/chat/completions", json=body, headers={**auth, "x-request-id": "req_ok1"})
        clock.now += 1
        failed = await http.post("/v1/chat/completions", json=body, headers={**auth, "x-fake-status": "500"})
        clock.now += 1
        over = await http.post(
            "/v1/chat/completions", json={**body, "max_tokens": 5}, headers={**auth, "x-fake-extra-usage": "50"}
        )
        clock.now += 1
        # Priced at the end of the path; the app has no such route and answers 404.
        missing = await http.post("/api/v1/chat/completions", json=body, headers=auth)
        refused = await http.post(
            "/v1/chat/completions", json={**body, "model": "gpt-4o", "max_tokens": 900_000}, headers=auth
        )
        anonymous = await http.post("/v1/chat/completions", json=body)
    assert (ok.status_code, failed.status_code, over.status_code, missing.status_code) == (200, 500, 200, 404)
    assert anonymous.status_code == 401
    assert refused.status_code == 402  # never reached the app: no record
    records = await store.usage_records(UsageQuery(account=account))
    assert [r.outcome for r in records] == ["released", "overrun", "released", "settled"]
    settled = records[3]
    usage = ok.json()["usage"]
    assert settled.request_id == "req_ok1" == ok.headers["x-request-id"]
    assert (settled.input_tokens, settled.output_tokens) == (usage["prompt_tokens"], usage["completion_tokens"])
    assert settled.key == key_label(api_key) and api_key not in repr(records)
    assert settled.model == "gpt-4o-mini" and records[0].route == "/api/v1/chat/completions"
    assert records[1].charged > records[1].held and records[0].charged == 0
    assert settled.ended_at >= settled.started_at > 0
    balance = await store.balance(account)
    assert sum((r.charged for r in records), Decimal(0)) == balance.spent
    assert from_units(0) == balance.held


async def test_the_key_itself_is_never_stored_in_a_record(tmp_path: Path) -> None:
    path = tmp_path / "credits.db"
    store = SQLiteStore(path)
    api_key = "sk-proj-" + uuid.uuid4().hex
    await store.add_key(api_key, "a")
    await store.grant("a", "1")
    guard = CreditGuard(create_app(), store=store, prices=PRICES)
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 10}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=guard), base_url="http://t") as http:
        assert (await http.post("/v1/chat/completions", json=body, headers={"x-api-key": api_key})).status_code == 200
    [record] = await store.usage_records()
    [listed] = await store.list_keys("a")
    assert record.key == listed["prefix"]  # the name `keys list` shows
    await store.aclose()
    stored = b"".join(p.read_bytes() for p in tmp_path.glob("credits.db*"))
    assert record.key.encode() in stored  # the scan sees what the store wrote
    assert api_key[7:-4].encode() not in stored


async def test_a_lookup_can_name_the_key_itself() -> None:
    store = MemoryStore({"a": "1"})

    async def lookup(key: str) -> tuple[str, str] | None:
        return ("a", "team-blue/ci") if key == "sk-team-blue-ci-0001" else None

    guard = CreditGuard(create_app(), store=store, prices=PRICES, accounts=lookup)
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 10}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=guard), base_url="http://t") as http:
        response = await http.post(
            "/v1/chat/completions", json=body, headers={"Authorization": "Bearer sk-team-blue-ci-0001"}
        )
        bad = await http.post("/v1/chat/completions", json=body, headers={"Authorization": "Bearer nope-nope"})
    assert (response.status_code, bad.status_code) == (200, 401)
    [record] = await store.usage_records()
    assert (record.account, record.key) == ("a", "team-blue/ci")


async def test_a_store_of_the_older_contract_still_works() -> None:
    class OldStore:
        """settle/release without records, as stores written before them."""

        def __init__(self) -> None:
            self.inner = MemoryStore({"a": "1"})

        async def reserve(self, account: str, amount: Decimal, *, ttl: float = 300) -> Any:
            return await self.inner.reserve(account, amount, ttl=ttl)

        async def settle(self, hold: Hold, actual: Decimal) -> Any:
            return await self.inner.settle(hold, actual)

        async def release(self, hold: Hold) -> Any:
            return await self.inner.release(hold)

        async def extend(self, hold: Hold, ttl: float) -> bool:
            return await self.inner.extend(hold, ttl)

        async def balance(self, account: str) -> Any:
            return await self.inner.balance(account)

        async def grant(self, account: str, amount: Any) -> Any:
            return await self.inner.grant(account, amount)

        async def account_for_key(self, api_key: str) -> str | None:
            return None

        async def aclose(self) -> None:
            return None

    old = OldStore()
    guard = CreditGuard(create_app(), store=old, prices=PRICES, accounts={"sk-old-key-123": "a"})
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 10}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=guard), base_url="http://t") as http:
        response = await http.post(
            "/v1/chat/completions", json=body, headers={"Authorization": "Bearer sk-old-key-123"}
        )
    assert response.status_code == 200
    balance = await old.balance("a")
    assert balance.spent > 0 and balance.held == 0
    assert await old.inner.usage_records() == []


# -- the command ---------------------------------------------------------------------------


def _cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    from credit_guard.cli import main

    capsys.readouterr()
    code = main(args)
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def traffic_db(tmp_path: Path) -> tuple[str, list[str]]:
    """A SQLite store with real traffic through the guard: two accounts, two
    keys on the first, two models."""
    import anyio

    path = tmp_path / "credits.db"
    keys = ["sk-one-" + uuid.uuid4().hex, "sk-two-" + uuid.uuid4().hex, "sk-three-" + uuid.uuid4().hex]

    async def setup() -> None:
        store = SQLiteStore(path)
        for key, account in zip(keys, ["acct_a", "acct_a", "acct_b"], strict=True):
            await store.add_key(key, account)
        await store.grant("acct_a", "1")
        await store.grant("acct_b", "1")
        guard = CreditGuard(create_app(), store=store, prices=PRICES)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=guard), base_url="http://t") as http:
            for key, model, tokens in (
                (keys[0], "gpt-4o-mini", 10),
                (keys[0], "gpt-4o", 20),
                (keys[1], "gpt-4o", 30),
                (keys[2], "gpt-4o-mini", 40),
            ):
                body = {"model": model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": tokens}
                response = await http.post("/v1/chat/completions", json=body, headers={"x-api-key": key})
                assert response.status_code == 200
        await store.aclose()

    anyio.run(setup)
    return f"sqlite:///{path}", keys


def test_usage_prints_a_table_with_a_total(
    traffic_db: tuple[str, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    url, _ = traffic_db
    code, out, _ = _cli(["usage", "--store", url], capsys)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["day", "requests", "input_tokens", "output_tokens", "cached_tokens", "held", "charged"]
    assert lines[2].split()[:2] == [day_of(time.time()), "4"]
    assert lines[-1].split()[:2] == ["total", "4"]


def test_usage_csv_and_json_sum_to_the_ledger(
    traffic_db: tuple[str, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    import csv
    import io
    import json

    url, keys = traffic_db
    code, out, _ = _cli(["usage", "--by", "account", "--format", "csv", "--store", url], capsys)
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [(r["account"], r["requests"]) for r in rows] == [("acct_a", "3"), ("acct_b", "1")]
    for row in rows:
        _, balance, _ = _cli(["credits", "balance", row["account"], "--store", url], capsys)
        assert Decimal(row["charged"]) == Decimal(json.loads(balance, parse_float=Decimal)["spent"]) > 0
    code, out, _ = _cli(["usage", "--account", "acct_a", "--by", "key", "--format", "json", "--store", url], capsys)
    by_key = [json.loads(line, parse_float=Decimal) for line in out.splitlines()]
    assert sorted(row["key"] for row in by_key) == sorted(key_label(k) for k in keys[:2])
    assert keys[0] not in out and keys[1] not in out
    code, out, _ = _cli(
        ["usage", "--account", "acct_a", "--model", "gpt-4o", "--by", "model", "--format", "json", "--store", url],
        capsys,
    )
    [row] = [json.loads(line) for line in out.splitlines()]
    assert (row["model"], row["requests"]) == ("gpt-4o", 2)
    code, out, _ = _cli(["usage", "records", "--key", key_label(keys[2]), "--format", "json", "--store", url], capsys)
    [record] = [json.loads(line) for line in out.splitlines()]
    assert (record["account"], record["model"], record["outcome"]) == ("acct_b", "gpt-4o-mini", "settled")
    assert record["ended_at"].endswith("Z")


def test_usage_ranges_prune_and_bad_input(
    traffic_db: tuple[str, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    url, _ = traffic_db
    today = dt.datetime.now(dt.timezone.utc).date()
    tomorrow = (today + dt.timedelta(days=1)).isoformat()
    code, out, _ = _cli(["usage", "--since", tomorrow, "--format", "json", "--store", url], capsys)
    assert (code, out) == (0, "")
    code, out, _ = _cli(["usage", "--until", today.isoformat(), "--format", "json", "--store", url], capsys)
    assert json.loads(out)["requests"] == 4
    assert _cli(["usage", "prune", "--store", url], capsys)[0] == 2
    assert _cli(["usage", "--since", "26/11/2026", "--store", url], capsys)[0] == 2
    assert _cli(["usage", "--before", today.isoformat(), "--store", url], capsys)[0] == 2
    code, out, _ = _cli(["usage", "prune", "--before", today.isoformat(), "--store", url], capsys)
    assert (code, json.loads(out)["pruned"]) == (0, 0)
    code, out, _ = _cli(["usage", "prune", "--before", tomorrow, "--store", url], capsys)
    assert (code, json.loads(out)["pruned"]) == (0, 4)
    code, out, _ = _cli(["usage", "--store", url], capsys)
    assert code == 0 and "(no usage in this range)" in out


async def test_odd_names_come_back_exactly_from_every_store(env: tuple[Any, Clock]) -> None:
    store, _ = env
    account = acct()
    await store.grant(account, "1")
    odd_model = 'gpt-"4o"\n<script>alert(1)</script> ☃ ["-","-"]'
    odd_key = 'team|"blue"\\ci'
    hold = await store.reserve(account, Decimal("0.1"))
    await store.settle(hold, Decimal("0.05"), record=rec("req_odd", key=odd_key, model=odd_model, route='/v1/x?y="z"'))
    [record] = await store.usage_records(UsageQuery(account=account, model=odd_model, key=odd_key))
    assert (record.model, record.key, record.route) == (odd_model, odd_key, '/v1/x?y="z"')
    [row] = await store.usage_summary(UsageQuery(account=account, key=odd_key), by="model")
    assert (row.group, row.charged) == (odd_model, Decimal("0.05"))
    with pytest.raises(ValueError):
        rec("req_bad", outcome='settled","charged":"999')


async def test_a_client_that_leaves_mid_stream_leaves_a_client_left_record(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "credits.db")
    await store.grant("a", "1")
    guard = CreditGuard(create_app(), store=store, prices=PRICES, accounts={"sk-leaving-client-1": "a"})
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 200, "stream": True}
    headers = {"Authorization": "Bearer sk-leaving-client-1", "x-fake-delay-ms": "50", "x-fake-tokens": "200"}
    try:
        with serve(guard) as base:
            async with httpx.AsyncClient(base_url=base) as http:
                async with http.stream("POST", "/v1/chat/completions", json=body, headers=headers) as response:
                    assert response.status_code == 200
                    async for _ in response.aiter_bytes():
                        break  # the first event: then leave
        # The server has shut down: the request it was serving has ended its hold.
        [record] = await store.usage_records(UsageQuery(account="a"))
        assert record.outcome == "client_left"
        assert 0 < record.charged < record.held
        assert record.input_tokens > 0 and record.output_tokens < 200
        assert record.charged == (await store.balance("a")).spent
    finally:
        await store.aclose()
