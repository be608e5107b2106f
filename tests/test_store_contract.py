"""One contract, three stores: memory, SQLite and a real Redis.

Every test here runs against each store; the state machine at the end drives
reserve / settle / release / extend / grant / expiry in random order and checks
``available + held + spent == granted``, and every figure against a model,
after every step."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from anyio.from_thread import start_blocking_portal
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from credit_guard.money import from_units
from credit_guard.stores import Hold, Insufficient, MemoryStore, SQLiteStore

STORES = ["memory", "sqlite", "redis"]


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def make_store(kind: str, clock: Clock, tmp: Path, redis_url: str | None) -> Any:
    if kind == "memory":
        return MemoryStore(clock=clock)
    if kind == "sqlite":
        return SQLiteStore(tmp / f"{uuid.uuid4().hex}.db", clock=clock, synchronous="NORMAL")
    from credit_guard.stores import RedisStore

    assert redis_url is not None
    return RedisStore(redis_url, clock=clock)


@pytest.fixture(params=STORES)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def env(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[tuple[Any, Clock, str]]:
    redis_url = request.getfixturevalue("redis_url") if kind == "redis" else None
    clock = Clock()
    store = make_store(kind, clock, tmp_path, redis_url)
    try:
        yield store, clock, "acct_" + uuid.uuid4().hex[:8]
    finally:
        await store.aclose()


pytestmark = pytest.mark.anyio


async def invariant_holds(store: Any, account: str) -> None:
    b = await store.balance(account)
    assert b.available + b.held + b.spent == b.granted


async def test_reserve_settle_release(env: tuple[Any, Clock, str]) -> None:
    store, _, account = env
    await store.grant(account, "1.00")
    hold = await store.reserve(account, Decimal("0.3"))
    assert isinstance(hold, Hold)
    assert hold.amount == Decimal("0.3")
    assert hold.available == Decimal("0.7")
    refused = await store.reserve(account, Decimal("0.8"))
    assert isinstance(refused, Insufficient)
    assert (refused.available, refused.held) == (Decimal("0.7"), Decimal("0.3"))
    settled = await store.settle(hold, Decimal("0.1"))
    assert (settled.status, settled.charged, settled.released, settled.overrun) == (
        "settled",
        Decimal("0.1"),
        Decimal("0.2"),
        Decimal(0),
    )
    b = await store.balance(account)
    assert (b.available, b.held, b.spent, b.granted) == (Decimal("0.9"), 0, Decimal("0.1"), Decimal("1"))
    other = await store.reserve(account, Decimal("0.5"))
    released = await store.release(other)
    assert (released.status, released.charged, released.released) == ("released", 0, Decimal("0.5"))
    await invariant_holds(store, account)


async def test_holds_round_up_and_amounts_stay_exact(env: tuple[Any, Clock, str]) -> None:
    store, _, account = env
    await store.grant(account, "0.0000000003")
    hold = await store.reserve(account, Decimal("0.00000000010000001"))  # just over one unit
    assert hold.amount == Decimal("2E-10")
    assert isinstance(await store.reserve(account, Decimal("2E-10")), Insufficient)
    await store.settle(hold, Decimal("0.00000000000001"))  # rounds up to one unit
    b = await store.balance(account)
    assert (b.spent, b.available) == (Decimal("1E-10"), Decimal("2E-10"))


async def test_settle_and_release_are_idempotent(env: tuple[Any, Clock, str]) -> None:
    store, _, account = env
    await store.grant(account, "1")
    hold = await store.reserve(account, Decimal("0.5"))
    first = await store.settle(hold, Decimal("0.2"))
    again = await store.settle(hold, Decimal("0.4"))
    released = await store.release(hold)
    assert again.repeat and released.repeat and not first.repeat
    assert again.charged == Decimal("0.2")
    b = await store.balance(account)
    assert b.spent == Decimal("0.2") and b.held == 0


async def test_overrun_is_charged_in_full(env: tuple[Any, Clock, str]) -> None:
    store, _, account = env
    await store.grant(account, "1")
    hold = await store.reserve(account, Decimal("0.5"))
    result = await store.settle(hold, Decimal("1.5"))
    assert (result.charged, result.overrun, result.released) == (Decimal("1.5"), Decimal("1.0"), 0)
    b = await store.balance(account)
    assert b.available == Decimal("-0.5")
    assert isinstance(await store.reserve(account, Decimal("0.0000000001")), Insufficient)
    await invariant_holds(store, account)


async def test_holds_expire_and_a_late_settle_still_charges(env: tuple[Any, Clock, str]) -> None:
    store, clock, account = env
    await store.grant(account, "1")
    hold = await store.reserve(account, Decimal("0.6"), ttl=30)
    clock.now += 29
    assert (await store.balance(account)).held == Decimal("0.6")
    assert await store.extend(hold, 30)
    clock.now += 29
    assert (await store.balance(account)).held == Decimal("0.6")
    clock.now += 2
    b = await store.balance(account)
    assert (b.available, b.held) == (Decimal("1"), 0)
    assert not await store.extend(hold, 30)
    assert (await store.release(hold)).status == "expired"
    late = await store.settle(hold, Decimal("0.25"))
    assert late.late and late.charged == Decimal("0.25")
    assert (await store.balance(account)).spent == Decimal("0.25")
    await invariant_holds(store, account)


async def test_every_end_repeated_gives_its_first_answer_whole(env: tuple[Any, Clock, str]) -> None:
    """A settle or release repeated answers what the first one did, every figure
    and flag, whatever the end was: released, settled within the hold, settled
    above it, settled late (after expiring), down to one unit and up to the
    largest amount a store keeps."""
    store, clock, account = env
    await store.grant(account, "1000000")
    largest = from_units(2**63 - 1)
    await store.grant("rich", largest)
    ends = []
    released = await store.reserve(account, Decimal("0.5"))
    ends.append((released, await store.release(released)))
    within = await store.reserve(account, Decimal("0.5"))
    ends.append((within, await store.settle(within, Decimal("0.2"))))
    above = await store.reserve(account, from_units(1))
    ends.append((above, await store.settle(above, Decimal("3.0000000001"))))
    whole = await store.reserve("rich", largest)
    ends.append((whole, await store.settle(whole, largest)))
    late = await store.reserve(account, Decimal("0.6"), ttl=30)
    clock.now += 31
    assert (await store.balance(account)).held == 0
    ends.append((late, await store.settle(late, Decimal("0.25"))))
    assert ends[-1][1].late and ends[-1][1].overrun == Decimal("0.25")
    for hold, first in ends:
        assert isinstance(hold, Hold) and not first.repeat
        for again in (await store.settle(hold, Decimal("7")), await store.release(hold)):
            assert again.repeat, hold
            assert (again.hold_id, again.status, again.charged, again.released, again.overrun, again.late) == (
                first.hold_id,
                first.status,
                first.charged,
                first.released,
                first.overrun,
                first.late,
            ), hold
    await invariant_holds(store, account)


async def test_grants_create_accounts_and_take_back(env: tuple[Any, Clock, str]) -> None:
    store, _, account = env
    zero = await store.balance(account)
    assert (zero.available, zero.granted) == (0, 0)
    assert isinstance(await store.reserve(account, Decimal("0.01")), Insufficient)
    await store.grant(account, "2.50")
    after = await store.grant(account, "-1.00")
    assert after.granted == Decimal("1.5")
    with pytest.raises(ValueError):
        await store.grant(account, "-5")
    with pytest.raises(TypeError):
        await store.grant(account, 0.1)
    with pytest.raises(ValueError):
        await store.grant(account, "0.00000000001")  # finer than a unit


async def test_keys_are_looked_up_by_digest(env: tuple[Any, Clock, str]) -> None:
    store, _, account = env
    await store.add_key("sk-test-key-0123456789", account)
    assert await store.account_for_key("sk-test-key-0123456789") == account
    assert await store.account_for_key("sk-test-key-0123456780") is None


async def test_accounts_exist_once_granted_or_given_a_key(env: tuple[Any, Clock, str]) -> None:
    store, _, account = env
    keyed = account + "_keyed"
    assert not await store.account_exists(account)
    await store.balance(account)  # reading an unknown account does not create it
    assert not await store.account_exists(account)
    assert account not in await store.accounts()
    await store.grant(account, "0.5")
    await store.add_key("sk-accounts-" + uuid.uuid4().hex, keyed)
    assert await store.account_exists(account) and await store.account_exists(keyed)
    assert not await store.account_exists(account + "_never")
    listed = await store.accounts()
    assert {account, keyed} <= set(listed) and listed == sorted(listed)
    assert account + "_never" not in listed


async def test_1000_concurrent_reserves_admit_exactly_ten(env: tuple[Any, Clock, str]) -> None:
    store, _, account = env
    await store.grant(account, "0.10")
    results = await asyncio.gather(*(store.reserve(account, Decimal("0.01")) for _ in range(1000)))
    holds = [r for r in results if isinstance(r, Hold)]
    assert len(holds) == 10
    b = await store.balance(account)
    assert (b.available, b.held) == (0, Decimal("0.10"))
    await asyncio.gather(*(store.settle(h, Decimal("0.004")) for h in holds))
    b = await store.balance(account)
    assert (b.available, b.held, b.spent) == (Decimal("0.06"), 0, Decimal("0.04"))


# -- the invariant, under random interleavings ----------------------------------------


class StoreMachine(RuleBasedStateMachine):
    """Drives one store; a plain model says what every figure must be."""

    make: Callable[[Clock], Any]

    def __init__(self) -> None:
        super().__init__()
        self.portal_cm = start_blocking_portal()
        self.portal = self.portal_cm.__enter__()
        self.clock = Clock()
        self.store = self.portal.call(self._make)
        self.account = "acct_" + uuid.uuid4().hex[:8]
        self.granted = self.spent = 0
        self.live: dict[str, tuple[Hold, int, float]] = {}
        self.expired: dict[str, Hold] = {}
        self.finished: list[Hold] = []

    async def _make(self) -> Any:
        return type(self).make(self.clock)

    def run(self, coro: Any, *args: Any, **kwargs: Any) -> Any:
        return self.portal.call(lambda: coro(*args, **kwargs))

    def _expire_model(self) -> None:
        for hold_id, (hold, _, expires) in list(self.live.items()):
            if expires <= self.clock.now:
                del self.live[hold_id]
                self.expired[hold_id] = hold

    @property
    def held(self) -> int:
        return sum(units for _, units, _ in self.live.values())

    @initialize(units=st.integers(0, 10**6))
    def start(self, units: int) -> None:
        self.run(self.store.grant, self.account, from_units(units))
        self.granted = units

    @rule(units=st.integers(0, 4 * 10**5), ttl=st.integers(1, 100))
    def reserve(self, units: int, ttl: int) -> None:
        self._expire_model()
        result = self.run(self.store.reserve, self.account, from_units(units), ttl=ttl)
        if units <= self.granted - self.spent - self.held:
            assert isinstance(result, Hold)
            self.live[result.id] = (result, units, self.clock.now + ttl)
        else:
            assert isinstance(result, Insufficient)

    @rule(data=st.data(), charge=st.integers(0, 6 * 10**5))
    def settle(self, data: st.DataObject, charge: int) -> None:
        self._expire_model()
        pool = [h for h, _, _ in self.live.values()] + list(self.expired.values()) + self.finished
        if not pool:
            return
        hold = data.draw(st.sampled_from(pool))
        result = self.run(self.store.settle, hold, from_units(charge))
        if hold.id in self.live:
            del self.live[hold.id]
            self.spent += charge
            self.finished.append(hold)
            assert result.charged == from_units(charge) and not result.repeat
        elif hold.id in self.expired:
            del self.expired[hold.id]
            self.spent += charge
            self.finished.append(hold)
            assert result.late
        else:
            assert result.repeat

    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        self._expire_model()
        pool = [h for h, _, _ in self.live.values()] + list(self.expired.values()) + self.finished
        if not pool:
            return
        hold = data.draw(st.sampled_from(pool))
        result = self.run(self.store.release, hold)
        if hold.id in self.live:
            del self.live[hold.id]
            self.finished.append(hold)
            assert result.status == "released"
        elif hold.id in self.expired:
            assert result.status == "expired"
        else:
            assert result.repeat

    @rule(data=st.data(), ttl=st.integers(1, 100))
    def extend(self, data: st.DataObject, ttl: int) -> None:
        self._expire_model()
        if not self.live:
            return
        hold_id = data.draw(st.sampled_from(list(self.live)))  # insertion order: deterministic
        assert self.run(self.store.extend, self.live[hold_id][0], ttl)
        hold, units, _ = self.live[hold_id]
        self.live[hold_id] = (hold, units, self.clock.now + ttl)

    @rule(seconds=st.integers(1, 120))
    def time_passes(self, seconds: int) -> None:
        self.clock.now += seconds

    @rule(units=st.integers(-(10**5), 10**6))
    def grant(self, units: int) -> None:
        self._expire_model()
        if units < 0 and self.granted - self.spent - self.held + units < 0:
            with pytest.raises(ValueError):
                self.run(self.store.grant, self.account, from_units(units))
            return
        self.run(self.store.grant, self.account, from_units(units))
        self.granted += units

    @invariant()
    def figures_match_the_model(self) -> None:
        self._expire_model()
        b = self.run(self.store.balance, self.account)
        assert b.available + b.held + b.spent == b.granted
        assert (b.granted, b.spent, b.held) == (
            from_units(self.granted),
            from_units(self.spent),
            from_units(self.held),
        )

    def teardown(self) -> None:
        try:
            self.portal.call(self.store.aclose)
        finally:
            self.portal_cm.__exit__(None, None, None)


def _machine(make: Callable[[Clock], Any]) -> type[StoreMachine]:
    return type("Machine", (StoreMachine,), {"make": staticmethod(make)})


MACHINE_SETTINGS = settings(max_examples=25, stateful_step_count=30, deadline=None)


@pytest.mark.parametrize("kind", STORES)
def test_invariant_under_random_operations(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    redis_url = request.getfixturevalue("redis_url") if kind == "redis" else None
    machine = _machine(lambda clock: make_store(kind, clock, tmp_path, redis_url))
    machine.TestCase.settings = MACHINE_SETTINGS
    machine.TestCase().runTest()


async def test_thousands_of_holds_expire_exactly_when_due_in_memory() -> None:
    """The memory store finds overdue holds at the top of a heap (its entries
    for ended or extended holds left behind, then rebuilt): across thousands of
    holds, extends, settles and releases, what it holds is exactly what a model
    of every hold's expiry says, after every step."""
    import random

    rng = random.Random(20261126)
    clock = Clock()
    store = MemoryStore({"a": "1000000", "b": "1000000"}, clock=clock)
    live: dict[str, tuple[Hold, int, float]] = {}  # hold id -> (hold, units, expires at)
    spent = 0
    for step in range(6000):
        action = rng.random()
        if action < 0.45 or not live:
            units = rng.randint(1, 1000)
            ttl = rng.choice([1, 5, 30, 300])
            hold = await store.reserve(rng.choice("ab"), from_units(units), ttl=ttl)
            assert isinstance(hold, Hold)
            live[hold.id] = (hold, units, clock.now + ttl)
        elif action < 0.6:
            hold, units, expires = live[rng.choice(sorted(live))]
            ttl = rng.choice([1, 30, 300])
            extended = await store.extend(hold, ttl)
            assert extended == (expires > clock.now)
            if extended:
                live[hold.id] = (hold, units, clock.now + ttl)
        elif action < 0.9:
            hold, units, expires = live.pop(rng.choice(sorted(live)))
            if expires > clock.now:  # not yet expired: ended now
                charge = rng.randint(0, units)
                if rng.random() < 0.5:
                    await store.settle(hold, from_units(charge))
                    spent += charge
                else:
                    await store.release(hold)
        else:
            clock.now += rng.choice([0.5, 2, 10, 60])
        for hold_id in [h for h, (_, _, expires) in live.items() if expires <= clock.now]:
            del live[hold_id]  # expired: back to available, settled never
        if step % 50 == 0 or action >= 0.9:
            held = (await store.balance("a")).held + (await store.balance("b")).held
            assert held == from_units(sum(units for _, units, _ in live.values())), step
    a, b = await store.balance("a"), await store.balance("b")
    assert a.spent + b.spent == from_units(spent)
    assert a.available + a.held + a.spent == a.granted and b.available + b.held + b.spent == b.granted
    assert len(store._due) <= 2 * max(len(store._live), 1024) + 1024  # the heap does not keep every hold ever made


def _walked(root: object) -> int:
    """How many references a full collection follows from ``root``: every
    object the collector tracks that ``root`` reaches (types, functions and
    modules, shared with the rest of the heap, are not followed)."""
    import gc
    import types

    shared = (type, types.FunctionType, types.BuiltinFunctionType, types.MethodType, types.ModuleType)
    seen: set[int] = set()
    stack = [root]
    followed = 0
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, shared) or not gc.is_tracked(obj):
            continue
        seen.add(id(obj))
        referents = gc.get_referents(obj)
        followed += len(referents)
        stack.extend(referents)
    return followed


async def test_the_memory_store_keeps_its_accounts_out_of_the_collectors_walk() -> None:
    """An account's figures are ints in dicts of atoms, which the garbage
    collector does not track: what a full collection follows from the store
    is the same with 5,000 accounts as with 100 (an object per account would
    be walked by every full collection of the host's heap)."""
    import gc

    clock = Clock()
    store = MemoryStore({"a": "1"}, clock=clock)
    walks: list[int] = []
    for count in (100, 5000):
        for i in range(count):
            account = f"acct_{i}"
            await store.grant(account, "1")
            hold = await store.reserve(account, from_units(10), ttl=30)
            assert isinstance(hold, Hold)
            if i % 2:
                await store.settle(hold, from_units(7))  # else left to expire
        clock.now += 60
        await store.expire()
        gc.collect()
        walks.append(_walked(store))
    assert walks[1] == walks[0] < 200, walks
    assert len(await store.accounts()) == 5001
    # In both rounds: granted twice, then settled twice, or expired twice.
    odd, even, late = [await store.balance(f"acct_{i}") for i in (99, 98, 4999)]
    assert (odd.spent, odd.held, odd.granted) == (from_units(14), 0, 2)
    assert (even.spent, even.held, even.available) == (0, 0, 2)
    assert (late.spent, late.available + late.spent) == (from_units(7), late.granted)


async def test_what_the_memory_store_keeps_of_its_past_is_not_walked_by_the_collector() -> None:
    """Thousands of finished holds, records and expired holds are kept, packed
    in dicts of atoms which the garbage collector stops walking: what a full
    collection follows from the store does not grow with its past (walked,
    100,000 finished holds cost 7 ms and more a collection, on a gateway under
    load)."""
    import gc

    from credit_guard._kept import tracked
    from credit_guard.records import UsageRecord

    clock = Clock()
    store = MemoryStore({"a": "1000"}, clock=clock)
    walks: list[int] = []
    for rounds in (300, 2700):
        for i in range(len(walks) * 300, len(walks) * 300 + rounds):
            hold = await store.reserve("a", from_units(10), ttl=30)
            assert isinstance(hold, Hold)
            record = UsageRecord(f"req_{i}", key="sk-...", model="gpt-4o", route="/v1/chat/completions", input_tokens=3)
            if i % 3 == 0:
                await store.settle(hold, from_units(7), record=record)
            elif i % 3 == 1:
                await store.release(hold, record=record)
            # else left to expire
        clock.now += 60
        await store.expire()
        gc.collect()
        walks.append(_walked(store))
    assert len(store._finished) + len(store._records) + len(store._expired) > 5000
    assert not (tracked(store._finished) or tracked(store._records) or tracked(store._expired))
    assert walks[1] == walks[0] < 200, walks
    # Read back whole, as they were written.
    records = await store.usage_records(limit=10_000)
    assert len(records) == 3000
    assert sum(r.outcome == "expired" for r in records) == 1000
    first = next(r for r in records if r.request_id == "req_0")
    assert (first.key, first.model, first.input_tokens, first.charged) == ("sk-...", "gpt-4o", 3, from_units(7))
    # A finished hold ended again gets its first answer, marked a repeat.
    settled = await store.reserve("a", from_units(10))
    assert isinstance(settled, Hold)
    once = await store.settle(settled, from_units(4))
    again = await store.settle(settled, from_units(9))
    assert (again.status, again.charged, again.released, again.repeat) == (
        "settled",
        from_units(4),
        from_units(6),
        True,
    )
    assert once.repeat is False


async def test_records_of_any_text_or_type_are_kept_and_read_back_as_written() -> None:
    """What the memory store packs comes back exact: a lone surrogate, a
    started-at that is not a round number, a caller's own string type (which
    marshal cannot write: kept as it is, only walked by the collector)."""
    from credit_guard.records import UsageRecord

    class Label(str):
        pass

    store = MemoryStore({"a": "1000"})
    written = [
        UsageRecord("req_0", key="sk-\ud800...", model="gpt-4o\udfff", started_at=1764140000.1234567),
        UsageRecord("req_1", key=Label("sk-own..."), model="gpt-4o", input_tokens=2**70),
    ]
    for record in written:
        hold = await store.reserve("a", from_units(10))
        assert isinstance(hold, Hold)
        await store.settle(hold, from_units(7), record=record)
    read = {r.request_id: r for r in await store.usage_records(limit=10)}
    for record in written:
        got = read[record.request_id]
        assert (got.key, got.model, got.started_at, got.input_tokens) == (
            record.key,
            record.model,
            record.started_at,
            record.input_tokens,
        )
        assert got.charged == from_units(7)
    assert type(read["req_1"].key) is Label
