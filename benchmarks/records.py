"""What usage records cost: reserve+settle pairs per second with a record
written in the settle's transaction, next to the same pairs without one.

    python -m benchmarks.records             # SQLite (FULL and NORMAL) and memory
    python -m benchmarks.records --quick     # shorter runs
    python -m benchmarks.records --redis redis://127.0.0.1:6379/0   # also a Redis store

Runs alternate (without, with, without, ...) so that drift on a shared
machine hits both sides alike; each figure is the median of the runs, with the
spread (min-max) beside it.  One process, one task: this is the store's cost
per request, the part of a request's latency that records add.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio

from credit_guard.records import UsageRecord
from credit_guard.stores import Hold, MemoryStore, SQLiteStore

HOLD = Decimal("0.0042")
CHARGE = Decimal("0.0017")


def _record() -> UsageRecord:
    return UsageRecord(
        request_id="req_" + uuid.uuid4().hex[:24],
        key="sk-proj...a1b2",
        model="gpt-4o-mini",
        route="/v1/chat/completions",
        input_tokens=812,
        output_tokens=133,
        cached_tokens=0,
        started_at=time.time(),
    )


async def _pairs(store: Any, account: str, count: int, records: bool) -> float:
    """Pairs per second for ``count`` reserve+settle pairs."""
    start = time.perf_counter()
    for _ in range(count):
        hold = await store.reserve(account, HOLD)
        assert isinstance(hold, Hold)
        if records:
            await store.settle(hold, CHARGE, record=_record())
        else:
            await store.settle(hold, CHARGE)
    return count / (time.perf_counter() - start)


async def measure(store: Any, count: int, rounds: int) -> dict[str, Any]:
    account = "bench_" + uuid.uuid4().hex[:8]
    await store.grant(account, "1000000")
    await _pairs(store, account, max(count // 10, 10), True)  # warm up: schema, caches
    without: list[float] = []
    with_records: list[float] = []
    for _ in range(rounds):
        without.append(await _pairs(store, account, count, False))
        with_records.append(await _pairs(store, account, count, True))
    base, rec = statistics.median(without), statistics.median(with_records)
    return {
        "without": {"median": base, "min": min(without), "max": max(without)},
        "with": {"median": rec, "min": min(with_records), "max": max(with_records)},
        "ratio": rec / base,
    }


def _line(name: str, result: dict[str, Any]) -> str:
    w, r = result["without"], result["with"]
    return (
        f"{name:<22} without {w['median']:>10,.0f} pairs/s ({w['min']:,.0f}-{w['max']:,.0f})   "
        f"with records {r['median']:>10,.0f} pairs/s ({r['min']:,.0f}-{r['max']:,.0f})   "
        f"ratio {result['ratio']:.3f}"
    )


async def run(quick: bool, redis_url: str | None) -> dict[str, Any]:
    rounds = 5 if quick else 9
    results: dict[str, Any] = {}
    memory = MemoryStore()
    results["memory"] = await measure(memory, 2_000 if quick else 20_000, rounds)
    print(_line("memory", results["memory"]), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for sync in ("FULL", "NORMAL"):
            store = SQLiteStore(Path(tmp) / f"{sync}.db", synchronous=sync)
            try:
                name = f"sqlite ({sync})"
                results[name] = await measure(store, 100 if quick else 500, rounds)
                print(_line(name, results[name]), flush=True)
            finally:
                await store.aclose()
    if redis_url:
        from credit_guard.stores import RedisStore

        redis = RedisStore(redis_url)
        try:
            results["redis"] = await measure(redis, 200 if quick else 2_000, rounds)
            print(_line("redis", results["redis"]), flush=True)
        finally:
            await redis.aclose()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.records", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="shorter runs")
    parser.add_argument("--redis", help="also measure a Redis store at this URL")
    args = parser.parse_args()
    anyio.run(run, args.quick, args.redis)


if __name__ == "__main__":
    main()
