"""Group commit on the SQLite store: concurrent changes share a transaction,
each still all-or-nothing, and none returns before it is committed."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import pytest

from credit_guard.stores.base import Hold, Insufficient, StoreUnavailable
from credit_guard.stores.sqlite import SQLiteStore

pytestmark = pytest.mark.anyio


def _batches(store: SQLiteStore) -> list[int]:
    sizes: list[int] = []
    commit = store._commit

    def recording(batch: list[Any]) -> None:
        sizes.append(len(batch))
        commit(batch)

    store._commit = recording  # type: ignore[method-assign]
    return sizes


def _figures(path: Path, account: str) -> tuple[int, int, int]:
    with sqlite3.connect(path) as db:
        row = db.execute("SELECT granted, spent, held FROM accounts WHERE id = ?", (account,)).fetchone()
    return int(row[0]), int(row[1]), int(row[2])


async def test_concurrent_changes_share_transactions_and_admit_exactly(tmp_path: Path) -> None:
    path = tmp_path / "credits.db"
    store = SQLiteStore(path)
    await store.grant("acct", "10")
    sizes = _batches(store)
    results: list[Hold | Insufficient] = []

    async def one() -> None:
        results.append(await store.reserve("acct", Decimal("1")))

    async with anyio.create_task_group() as group:
        for _ in range(200):
            group.start_soon(one)
    holds = [r for r in results if isinstance(r, Hold)]
    assert len(holds) == 10 and len(results) == 200
    assert max(sizes) > 1  # changes shared a transaction
    assert sum(sizes) == 200
    async with anyio.create_task_group() as group:
        for hold in holds[:5]:
            group.start_soon(store.settle, hold, Decimal("0.25"))
        for hold in holds[5:]:
            group.start_soon(store.release, hold)
    balance = await store.balance("acct")
    assert balance.spent == Decimal("1.25") and balance.held == 0
    assert balance.available + balance.held + balance.spent == balance.granted
    await store.aclose()
    # What was returned is what another connection reads from the file.
    granted, spent, held = _figures(path, "acct")
    assert (granted, spent, held) == (10 * 10**10, int(Decimal("1.25") * 10**10), 0)


async def test_a_failing_change_fails_alone(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "credits.db")
    await store.grant("acct", "1")
    sizes = _batches(store)
    outcomes: dict[str, object] = {}

    async def grant(name: str, amount: str) -> None:
        try:
            outcomes[name] = await store.grant("acct", amount)
        except ValueError as exc:
            outcomes[name] = exc

    async with anyio.create_task_group() as group:
        for i in range(20):
            group.start_soon(grant, f"ok{i}", "1")
        group.start_soon(grant, "bad", "-1000")  # more than is available: refused
    assert isinstance(outcomes.pop("bad"), ValueError)
    assert all(not isinstance(v, Exception) for v in outcomes.values())
    assert max(sizes) > 1
    balance = await store.balance("acct")
    assert balance.granted == Decimal("21")
    history = await store.history("acct", limit=100)
    assert len([line for line in history if line["kind"] == "grant"]) == 21
    await store.aclose()


async def test_a_failed_transaction_fails_every_change_in_it_and_applies_none(tmp_path: Path) -> None:
    path = tmp_path / "credits.db"
    store = SQLiteStore(path, busy_timeout=0.2)
    await store.grant("acct", "5")
    # Another process holds the write lock past the busy timeout.
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    outcomes: list[object] = []

    async def reserve() -> None:
        try:
            outcomes.append(await store.reserve("acct", Decimal("1")))
        except StoreUnavailable as exc:
            outcomes.append(exc)

    async with anyio.create_task_group() as group:
        for _ in range(10):
            group.start_soon(reserve)
    blocker.execute("ROLLBACK")
    blocker.close()
    assert len(outcomes) == 10 and all(isinstance(o, StoreUnavailable) for o in outcomes)
    balance = await store.balance("acct")
    assert balance.held == 0 and balance.available == Decimal("5")
    # And the store works again once the lock is gone.
    assert isinstance(await store.reserve("acct", Decimal("1")), Hold)
    await store.aclose()


async def test_a_cancelled_caller_whose_change_was_not_taken_changes_nothing(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "credits.db")
    await store.grant("acct", "5")
    release = anyio.Event()
    commit = store._commit
    first = True

    def slow(batch: list[Any]) -> None:
        nonlocal first
        if first:
            first = False
            anyio.from_thread.run_sync(release.set)
            import time

            time.sleep(0.3)  # the writer is busy while the other caller gives up
        commit(batch)

    store._commit = slow  # type: ignore[method-assign]
    async with anyio.create_task_group() as group:
        group.start_soon(store.reserve, "acct", Decimal("1"))
        await release.wait()
        with anyio.move_on_after(0.05):
            await store.reserve("acct", Decimal("2"))
    balance = await store.balance("acct")
    assert balance.held == Decimal("1")  # the cancelled hold of 2 was never made
    await store.aclose()


async def _two_gated_batches(
    tmp_path: Path,
) -> tuple[SQLiteStore, list[threading.Event], list[threading.Event], list[int]]:
    """A store with $5 on ``acct`` whose first two batches each wait in the
    writer thread, once started (``started[i]`` is set), until ``go[i]`` is
    set; ``sizes`` gets every batch's size."""
    store = SQLiteStore(tmp_path / "credits.db")
    await store.grant("acct", "5")
    commit = store._commit
    started = [threading.Event(), threading.Event()]
    go = [threading.Event(), threading.Event()]
    sizes: list[int] = []

    def gated(batch: list[Any]) -> None:
        turn = len(sizes)
        sizes.append(len(batch))
        if turn < 2:
            started[turn].set()
            go[turn].wait(10)
        commit(batch)

    store._commit = gated  # type: ignore[method-assign]
    return store, started, go, sizes


async def _until(event: threading.Event) -> None:
    with anyio.fail_after(10):
        while not event.is_set():
            await anyio.sleep(0.005)


async def test_a_caller_cancelled_while_its_hold_is_committed_leaves_no_hold(tmp_path: Path) -> None:
    """Three reserves: the first commits alone, the next two together, driven
    by the second.  The third is cancelled while the writer commits its hold:
    it never receives it, so the store releases it at once (not after its TTL)."""
    store, started, go, sizes = await _two_gated_batches(tmp_path)
    received: dict[str, object] = {}

    async def reserve(name: str, amount: str, scope: anyio.CancelScope) -> None:
        with scope:
            received[name] = await store.reserve("acct", Decimal(amount))

    async def waiting(changes: int) -> None:
        with anyio.fail_after(10):
            while len(store._pending) < changes:
                await anyio.sleep(0.005)

    third = anyio.CancelScope()
    async with anyio.create_task_group() as group:
        group.start_soon(reserve, "first", "1", anyio.CancelScope())
        await _until(started[0])
        group.start_soon(reserve, "second", "0.5", anyio.CancelScope())
        await waiting(1)
        group.start_soon(reserve, "third", "0.25", third)
        await waiting(2)
        go[0].set()
        await _until(started[1])  # the second drives both waiting changes
        third.cancel()
        await anyio.sleep(0.02)  # its cancellation reaches it while the writer is busy
        go[1].set()
    assert sizes[:2] == [1, 2]
    assert isinstance(received["first"], Hold) and isinstance(received["second"], Hold)
    assert "third" not in received
    balance = await store.balance("acct")
    assert balance.held == Decimal("1.5")  # the third's 0.25 was released
    assert balance.available + balance.held + balance.spent == balance.granted
    await store.aclose()


async def test_a_caller_cancelled_as_its_batch_ends_leaves_no_hold(tmp_path: Path) -> None:
    """A caller whose change the writer has just committed, cancelled by
    asyncio itself (``Task.cancel``, as ``asyncio.wait_for`` does) after the
    batch's end woke it and before it resumed: it gets the cancellation, not
    its hold, which the store releases at once.  Three reserves: the first
    commits alone, the next two together, driven by the second; the third is
    cancelled as that batch ends."""
    import asyncio

    store, started, go, sizes = await _two_gated_batches(tmp_path)
    received: dict[str, object] = {}

    async def reserve(name: str, amount: str) -> None:
        received[name] = await store.reserve("acct", Decimal(amount))

    first = asyncio.create_task(reserve("first", "1"))
    await _until(started[0])
    second = asyncio.create_task(reserve("second", "0.5"))
    third = asyncio.create_task(reserve("third", "0.25"))
    with anyio.fail_after(10):
        while len(store._pending) < 2:
            await anyio.sleep(0.005)
    go[0].set()
    await _until(started[1])  # the second drives both; the third waits for the end

    class Ending:
        """The batch's end, which also cancels the third caller once it has
        woken it (its wake-up is already on its way)."""

        def __init__(self, event: anyio.Event) -> None:
            self.event = event

        def set(self) -> None:
            self.event.set()
            third.cancel()

        async def wait(self) -> None:
            await self.event.wait()

    store._batch_done = Ending(store._batch_done)  # type: ignore[assignment]
    go[1].set()
    await asyncio.wait([first, second, third], timeout=10)
    assert sizes[:2] == [1, 2]
    assert isinstance(received["first"], Hold) and isinstance(received["second"], Hold)
    assert third.cancelled() and "third" not in received
    balance = await store.balance("acct")
    assert balance.held == Decimal("1.5")  # the third's 0.25 was released
    assert balance.available + balance.held + balance.spent == balance.granted
    await store.aclose()


def test_batch_size_is_validated(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        SQLiteStore(tmp_path / "x.db", batch_size=0)


async def test_batch_size_one_gives_each_change_its_own_transaction(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "credits.db", batch_size=1)
    await store.grant("acct", "100")
    sizes = _batches(store)
    async with anyio.create_task_group() as group:
        for _ in range(30):
            group.start_soon(store.reserve, "acct", Decimal("1"))
    assert sizes == [1] * 30
    await store.aclose()


_WORKER = textwrap.dedent(
    """
    import sys
    from decimal import Decimal
    import anyio
    from credit_guard.stores.sqlite import SQLiteStore
    from credit_guard.stores.base import Hold

    async def main() -> None:
        store = SQLiteStore(sys.argv[1])
        await store.grant("acct", "1000000")
        print("ready", flush=True)

        async def worker() -> None:
            while True:
                hold = await store.reserve("acct", Decimal("1"))
                assert isinstance(hold, Hold)
                print(hold.id, flush=True)

        async with anyio.create_task_group() as group:
            for _ in range(32):
                group.start_soon(worker)

    anyio.run(main)
    """
)


def test_every_change_a_killed_process_returned_is_on_disk(tmp_path: Path) -> None:
    path = tmp_path / "credits.db"
    process = subprocess.Popen(
        [sys.executable, "-c", _WORKER, str(path)],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == b"ready"
    returned: list[str] = []
    for line in process.stdout:
        returned.append(line.strip().decode())
        if len(returned) >= 300:
            break
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=20)
    process.stdout.close()
    with sqlite3.connect(path) as db:
        stored = {row[0] for row in db.execute("SELECT id FROM holds")}
        granted, spent, held = db.execute("SELECT granted, spent, held FROM accounts WHERE id = 'acct'").fetchone()
        live = db.execute("SELECT COALESCE(SUM(units), 0) FROM holds WHERE status = 'held'").fetchone()[0]
    assert set(returned) <= stored
    assert held == live and spent == 0 and granted == 1_000_000 * 10**10
