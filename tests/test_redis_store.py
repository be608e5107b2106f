"""The Redis store's pipelining: calls asked for while another is on its way
share one pipeline, and each still gets its own reply, its own error, or
``StoreUnavailable`` with its batch.  A real redis-server on 127.0.0.1."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import anyio
import pytest

from credit_guard._ids import random_hex
from credit_guard.stores import Hold, Insufficient, StoreUnavailable
from credit_guard.stores.redis import RedisStore

from .redis_server import RedisServer, running_redis

pytestmark = pytest.mark.anyio


def counting_pipelines(store: RedisStore) -> list[int]:
    """The size of every pipeline the store sends, recorded as it sends it."""
    sizes: list[int] = []
    client: Any = store._client
    make = client.pipeline

    def pipeline(*args: Any, **kwargs: Any) -> Any:
        pipe = make(*args, **kwargs)
        execute = pipe.execute

        async def recorded(*a: Any, **k: Any) -> Any:
            sizes.append(len(pipe.command_stack))
            return await execute(*a, **k)

        pipe.execute = recorded
        return pipe

    client.pipeline = pipeline
    return sizes


async def test_concurrent_calls_share_pipelines_and_each_gets_its_own_reply(redis_url: str) -> None:
    store = RedisStore(redis_url)
    sizes = counting_pipelines(store)
    try:
        accounts = [f"pipe-{i}" for i in range(64)]
        for account in accounts:
            await store.grant(account, "1")
        # A different amount per account: a reply given to the wrong caller shows.
        amounts = {account: Decimal(i + 1) / 1000 for i, account in enumerate(accounts)}
        results = await asyncio.gather(*(store.reserve(a, amounts[a]) for a in accounts))
        holds = [hold for hold in results if isinstance(hold, Hold)]
        assert len(holds) == len(results)
        for account, hold in zip(accounts, holds, strict=True):
            assert (hold.account, hold.amount, hold.available) == (account, amounts[account], 1 - amounts[account])
        # Half of them cannot afford a second hold of 0.5 plus the first.
        second = await asyncio.gather(*(store.reserve(a, Decimal("0.97")) for a in accounts))
        for account, result in zip(accounts, second, strict=True):
            assert isinstance(result, Hold) == (amounts[account] <= Decimal("0.03")), account
            if isinstance(result, Insufficient):
                assert result.available == 1 - amounts[account]
        settled = await asyncio.gather(*(store.settle(h, h.amount / 2) for h in holds))
        for hold, settlement in zip(holds, settled, strict=True):
            assert (settlement.hold_id, settlement.charged) == (hold.id, hold.amount / 2)
        for account, result in zip(accounts, second, strict=True):
            if isinstance(result, Hold):
                await store.release(result)
            balance = await store.balance(account)
            assert (balance.held, balance.spent) == (Decimal(0), amounts[account] / 2)
            assert balance.available + balance.held + balance.spent == balance.granted == 1
        assert sizes and max(sizes) > 1, "concurrent calls were not pipelined"
    finally:
        await store.aclose()


class Held:
    """Keeps the store's sender busy, so that the calls asked for meanwhile
    all go in the next pipeline, sent once ``release`` is called."""

    def __init__(self, store: RedisStore) -> None:
        self.store = store
        store._sending = True

    def release(self) -> None:
        self.store._sending = False
        done, self.store._batch_done = self.store._batch_done, None
        assert done is not None, "no call waited"
        done.set()


async def test_a_script_cache_flushed_under_a_batch_is_loaded_again(redis_url: str) -> None:
    store = RedisStore(redis_url)
    sizes = counting_pipelines(store)
    try:
        accounts = [f"flush-{i}" for i in range(32)]
        for account in accounts:
            await store.grant(account, "1")
        await store._client.script_flush()
        held = Held(store)
        holds: list[Any] = []

        async def reserve(account: str) -> None:
            holds.append(await store.reserve(account, Decimal("0.25")))

        async with anyio.create_task_group() as tg:
            for account in accounts:
                tg.start_soon(reserve, account)
            await anyio.sleep(0.05)
            held.release()
        assert len(holds) == 32 and all(isinstance(h, Hold) for h in holds)
        assert sizes == [32]
        for account in accounts:
            balance = await store.balance(account)
            assert (balance.available, balance.held) == (Decimal("0.75"), Decimal("0.25"))
    finally:
        await store.aclose()


async def test_a_lost_server_fails_every_waiting_call_and_none_hangs() -> None:
    with running_redis() as server:
        store = RedisStore(server.url, socket_timeout=1.0)
        try:
            accounts = [f"lost-{i}" for i in range(32)]
            for account in accounts:
                await store.grant(account, "1")
            server.kill()
            with anyio.fail_after(30):
                results = await asyncio.gather(
                    *(store.reserve(a, Decimal("0.1")) for a in accounts), return_exceptions=True
                )
            assert all(isinstance(r, StoreUnavailable) for r in results), results
            # A server back on the same port serves the next calls.
            again = RedisServer(server.port)
            again.start()
            try:
                await store.grant("lost-0", "1")
                assert isinstance(await store.reserve("lost-0", Decimal("0.1")), Hold)
            finally:
                again.kill()
        finally:
            await store.aclose()


async def test_a_sender_cancelled_mid_batch_still_delivers_every_other_reply(redis_url: str) -> None:
    store = RedisStore(redis_url)
    try:
        accounts = [f"sender-{i}" for i in range(32)]
        for account in accounts:
            await store.grant(account, "1")
        held = Held(store)
        replies: dict[str, Any] = {}
        sender = anyio.CancelScope()

        async def first() -> None:
            # Queued first, so it wakes first and sends the batch.
            with sender:
                replies[accounts[0]] = await store.reserve(accounts[0], Decimal("0.1"))

        async def other(account: str) -> None:
            replies[account] = await store.reserve(account, Decimal("0.1"))

        async with anyio.create_task_group() as tg:
            tg.start_soon(first)
            await anyio.sleep(0.01)
            for account in accounts[1:]:
                tg.start_soon(other, account)
            await anyio.sleep(0.05)
            held.release()
            await anyio.sleep(0)
            await anyio.sleep(0)
            sender.cancel()
        assert all(isinstance(replies[a], Hold) for a in accounts[1:]), replies
        # The batch was sent whole: the cancelled caller's hold was made too.
        assert (await store.balance(accounts[0])).held == Decimal("0.1")
    finally:
        await store.aclose()


async def test_callers_cancelled_mid_batch_leave_every_other_reply_whole(redis_url: str) -> None:
    store = RedisStore(redis_url)
    try:
        accounts = [f"cancel-{i}" for i in range(48)]
        for account in accounts:
            await store.grant(account, "1")
        replies: dict[str, Any] = {}

        async def reserve(account: str) -> None:
            replies[account] = await store.reserve(account, Decimal("0.1"))

        for _ in range(5):
            async with anyio.create_task_group() as tg:
                for account in accounts:
                    tg.start_soon(reserve, account)
                await anyio.sleep(0)
                await anyio.sleep(0)
                tg.cancel_scope.cancel()
            # Whatever ran is whole: every account is exactly what its holds say.
            for account in accounts:
                balance = await store.balance(account)
                assert balance.available + balance.held + balance.spent == balance.granted == 1
        # The store still answers every caller afterwards.
        with anyio.fail_after(30):
            holds = await asyncio.gather(*(store.reserve(a, Decimal("0.01")) for a in accounts))
        assert all(isinstance(h, Hold) for h in holds)
    finally:
        await store.aclose()


async def test_a_store_that_waits_for_replicas_sends_each_call_on_its_own(redis_url: str) -> None:
    # WAIT answers for the writes of its own connection: nothing is pipelined.
    store = RedisStore(redis_url, wait_replicas=1, wait_timeout_ms=10)
    sizes = counting_pipelines(store)
    try:
        results = await asyncio.gather(
            *(store.reserve(f"wait-{i}", Decimal("0.1")) for i in range(8)), return_exceptions=True
        )
        # No replica here: each call learns that its own write was not replicated.
        assert all(isinstance(r, StoreUnavailable) and "replicas" in str(r) for r in results), results
        assert sizes == []
    finally:
        await store.aclose()


@pytest.mark.parametrize("ran", [True, False], ids=["after the script", "before it"])
async def test_a_reserve_cancelled_around_its_script_leaves_no_hold(redis_url: str, ran: bool) -> None:
    """Cancelled once its script ran (its reply never received), or before it
    was sent: either way the account holds nothing afterwards, at once."""

    stalled = anyio.Event()

    class Stalling(RedisStore):
        async def _call(self, script: Any, account: str, *extra: object) -> Any:
            if script is self._reserve and not ran:
                stalled.set()
                await anyio.sleep_forever()
            result = await super()._call(script, account, *extra)
            if script is self._reserve:
                stalled.set()
                await anyio.sleep_forever()
            return result

    store = Stalling(redis_url)
    account = f"cancelled-reserve-{random_hex(8)}"
    try:
        await store.grant(account, "1")
        async with anyio.create_task_group() as group:
            group.start_soon(store.reserve, account, Decimal("0.4"))
            await stalled.wait()
            group.cancel_scope.cancel()
        balance = await store.balance(account)
        assert (balance.held, balance.spent, balance.available) == (Decimal(0), Decimal(0), Decimal(1))
    finally:
        await store.aclose()
