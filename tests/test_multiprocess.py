"""Several processes, one balance: uvicorn workers on SQLite, separate guard
processes on Redis, a Redis outage in the middle of the load, and a worker
killed with SIGKILL while it holds credits."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from credit_guard import PriceTable, make_quote, shapes, tokens
from credit_guard.stores import SQLiteStore

from .redis_server import RedisServer, redis_binary
from .servers import free_port, wait_for_port

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

KEY = "sk-multi-0123456789abcdef"
BODY = {
    "model": "gpt-4o-mini",
    "messages": [{"role": "user", "content": "Count to five."}],
    "max_tokens": 5,
    "stream": True,
}


def worst_case(body: dict[str, Any]) -> Decimal:
    ask = shapes.parse("chat", body)
    price = PriceTable.default().resolve(ask.model)
    count = tokens.count_input(ask, price)
    return make_quote(ask, price, count.tokens, count.exact).max_cost


@contextmanager
def guard_processes(
    store_url: str, count: int = 1, workers: int = 1, hold_ttl: float = 60, bound_margin: str = ""
) -> Iterator[list[int]]:
    ports = [free_port() for _ in range(count)]
    log = open(os.environ.get("GUARD_LOG", os.devnull), "ab")  # noqa: SIM115
    env = {
        **os.environ,
        "CREDIT_GUARD_DEMO": "1",
        "CREDIT_GUARD_STORE": store_url,
        "CREDIT_GUARD_HOLD_TTL": str(hold_ttl),
        "CREDIT_GUARD_BOUND_MARGIN": bound_margin,
    }
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "credit_guard.cli:app_from_env",
                "--factory",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                str(workers),
                "--log-level",
                "warning",
                "--backlog",
                "2048",
                # Admitted streams outlast uvicorn's default 5 s keep-alive; idle
                # pooled connections must not be closed under the client.
                "--timeout-keep-alive",
                "120",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log,
            start_new_session=True,
        )
        for port in ports
    ]
    try:
        for port in ports:
            wait_for_port(port, timeout=60)
        yield ports
    finally:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=15)
        log.close()


async def flood(ports: list[int], count: int, delay_ms: int) -> list[int]:
    """``count`` streamed requests spread over ``ports``; admitted streams last
    ``5 * delay_ms``, long enough for every refusal to come back first."""
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
    headers = {"Authorization": f"Bearer {KEY}", "x-fake-delay-ms": str(delay_ms)}
    async with httpx.AsyncClient(limits=limits, timeout=120) as http:

        async def one(i: int) -> int:
            url = f"http://127.0.0.1:{ports[i % len(ports)]}/v1/chat/completions"
            async with http.stream("POST", url, json=BODY, headers=headers) as response:
                async for _ in response.aiter_raw():
                    pass
                return response.status_code

        return list(await asyncio.gather(*(one(i) for i in range(count))))


async def ledger_explains(store: Any, account: str) -> None:
    balance = await store.balance(account)
    lines = await store.history(account, limit=100_000)
    grants = sum(line["amount"] for line in lines if line["kind"] == "grant")
    charges = sum(line["amount"] for line in lines if line["kind"] == "settle")
    assert grants == balance.granted
    assert charges == balance.spent
    last = lines[-1]
    assert (last["available"], last["held"], last["spent"], last["granted"]) == (
        balance.available,
        balance.held,
        balance.spent,
        balance.granted,
    )


async def settled(store: Any, account: str) -> Any:
    from credit_guard.stores import StoreUnavailable

    balance = None
    for _ in range(300):
        try:
            balance = await store.balance(account)
        except StoreUnavailable:  # a connection the restarted server closed
            await anyio.sleep(0.05)
            continue
        if balance.held == 0:
            return balance
        await anyio.sleep(0.05)
    raise AssertionError(f"holds never ended: {balance}")


async def test_four_sqlite_workers_admit_exactly_fifty_of_1000(tmp_path: Path) -> None:
    """Every request counted (``--bound-margin off``): admission exact to the unit."""
    url = f"sqlite:///{tmp_path / 'multi.db'}"
    store = SQLiteStore(tmp_path / "multi.db")
    try:
        await store.grant("acct", worst_case(BODY) * 50)
        await store.add_key(KEY, "acct")
        with guard_processes(url, workers=4, bound_margin="off") as ports:
            statuses = await flood(ports, 1000, delay_ms=1500)
        assert statuses.count(200) == 50, sorted(set(statuses))
        assert statuses.count(402) == 950
        balance = await settled(store, "acct")
        assert balance.available + balance.held + balance.spent == balance.granted
        assert balance.available >= 0
        await ledger_explains(store, "acct")
        holds = [line for line in await store.history("acct", limit=100_000) if line["kind"] == "hold"]
        assert len(holds) == 50
    finally:
        await store.aclose()


async def test_bound_holds_in_four_workers_never_admit_more_than_the_balance(tmp_path: Path) -> None:
    """The default margin: bound holds on balances each worker last saw, which
    the others spend.  Never more than fifty; near the end, a request can be
    refused while bound holds are in flight (402, never anything else)."""
    url = f"sqlite:///{tmp_path / 'multi.db'}"
    store = SQLiteStore(tmp_path / "multi.db")
    try:
        await store.grant("acct", worst_case(BODY) * 50)
        await store.add_key(KEY, "acct")
        with guard_processes(url, workers=4) as ports:
            # A first request in each worker, so that each has seen the balance.
            assert set(await flood(ports * 4, 8, delay_ms=0)) == {200}
            before = await settled(store, "acct")
            statuses = await flood(ports, 1000, delay_ms=1500)
        assert 0 < statuses.count(200) <= before.available // worst_case(BODY), sorted(set(statuses))
        assert statuses.count(200) + statuses.count(402) == 1000
        balance = await settled(store, "acct")
        assert balance.available + balance.held + balance.spent == balance.granted
        assert balance.available >= 0
        await ledger_explains(store, "acct")
    finally:
        await store.aclose()


async def test_two_redis_guard_processes_admit_exactly_fifty_of_1000() -> None:
    redis_binary()
    from credit_guard.stores import RedisStore

    server = RedisServer()
    server.start()
    store = RedisStore(server.url)
    try:
        await store.grant("acct", worst_case(BODY) * 50)
        await store.add_key(KEY, "acct")
        with guard_processes(server.url, count=2, bound_margin="off") as ports:
            statuses = await flood(ports, 1000, delay_ms=1500)
        assert statuses.count(200) == 50, sorted(set(statuses))
        assert statuses.count(402) == 950
        balance = await settled(store, "acct")
        assert balance.available + balance.held + balance.spent == balance.granted
        await ledger_explains(store, "acct")
    finally:
        await store.aclose()
        server.kill()


async def test_redis_outage_fails_closed_and_service_resumes(tmp_path: Path) -> None:
    redis_binary()
    from credit_guard.stores import RedisStore

    port = free_port()
    command = [
        redis_binary(),
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
        "--dir",
        str(tmp_path),
    ]
    url = f"redis://127.0.0.1:{port}/0"
    redis = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_port(port)
    store = RedisStore(url)
    body = {**BODY, "stream": False}
    headers = {"Authorization": f"Bearer {KEY}"}
    try:
        await store.grant("acct", "1.00")
        await store.add_key(KEY, "acct")
        with guard_processes(url, hold_ttl=2) as ports:
            endpoint = f"http://127.0.0.1:{ports[0]}/v1/chat/completions"
            charged = Decimal(0)
            async with httpx.AsyncClient(timeout=30) as http:
                price = PriceTable.default().resolve("gpt-4o-mini")

                async def round_of(n: int) -> list[httpx.Response]:
                    return list(
                        await asyncio.gather(*(http.post(endpoint, json=body, headers=headers) for _ in range(n)))
                    )

                for response in await round_of(20):
                    assert response.status_code == 200
                    usage = response.json()["usage"]
                    charged += (
                        price.input_price * usage["prompt_tokens"] + price.output_price * usage["completion_tokens"]
                    )

                redis.kill()
                redis.wait(timeout=10)
                down = await round_of(20)
                assert {r.status_code for r in down} == {503}
                assert all(r.json()["error"]["type"] == "credit_store_unavailable" for r in down)

                redis = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                wait_for_port(port)
                back: list[httpx.Response] = []
                for _ in range(50):  # the guard reconnects by itself
                    back = await round_of(5)
                    for response in back:
                        assert response.status_code in (200, 503)
                        if response.status_code == 200:
                            usage = response.json()["usage"]
                            charged += (
                                price.input_price * usage["prompt_tokens"]
                                + price.output_price * usage["completion_tokens"]
                            )
                    if all(r.status_code == 200 for r in back):
                        break
                    await anyio.sleep(0.1)
                assert all(r.status_code == 200 for r in back)
        balance = await settled(store, "acct")
        assert balance.spent == charged
        assert balance.available + balance.held + balance.spent == balance.granted == Decimal("1.00")
    finally:
        await store.aclose()
        redis.kill()
        redis.wait(timeout=10)


async def test_a_worker_killed_mid_request_leaves_holds_that_expire(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'kill.db'}"
    store = SQLiteStore(tmp_path / "kill.db")
    try:
        await store.grant("acct", "1.00")
        await store.add_key(KEY, "acct")
        port = free_port()
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "credit_guard.cli",
                "serve",
                "--demo",
                "--store",
                url,
                "--port",
                str(port),
                "--hold-ttl",
                "30",
                "--demo-balance",
                "1.00",
                "--log-level",
                "warning",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_for_port(port, timeout=60)
            headers = {"Authorization": f"Bearer {KEY}", "x-fake-delay-ms": "300", "x-fake-tokens": "100"}
            async with httpx.AsyncClient(timeout=30) as http:
                async with http.stream(
                    "POST",
                    f"http://127.0.0.1:{port}/v1/chat/completions",
                    json={**BODY, "max_tokens": 100},
                    headers=headers,
                ) as response:
                    assert response.status_code == 200
                    # Keep the iterator referenced: a dropped one is finalized,
                    # which closes the response, and the server would see the
                    # client leave (settling the hold) instead of dying with it.
                    chunks = response.aiter_raw()
                    await chunks.__anext__()
                    held = Decimal(0)
                    for _ in range(100):  # the hold is open while the reply streams
                        held = (await store.balance("acct")).held
                        if held > 0:
                            break
                        await anyio.sleep(0.05)
                    assert held > 0
                    process.send_signal(signal.SIGKILL)
                    process.wait(timeout=10)
                    del chunks
        finally:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=10)
        # Nothing ends the dead worker's hold before its TTL; after it, the hold expires.
        assert (await store.balance("acct")).held > 0
        await store.aclose()
        store = SQLiteStore(tmp_path / "kill.db", clock=lambda: time.time() + 31)
        balance = await store.balance("acct")
        assert balance.held == 0
        assert balance.spent == 0
        assert balance.available == balance.granted == Decimal("1.00")
        assert [line["kind"] for line in await store.history("acct")][-2:] == ["hold", "expire"]
    finally:
        await store.aclose()
