"""What usage records cost: reserve+settle pairs per second with a record
written in the settle's transaction, next to the same pairs without one.

    python -m benchmarks.records             # SQLite (FULL and NORMAL) and memory
    python -m benchmarks.records --quick     # shorter runs
    python -m benchmarks.records --redis redis://127.0.0.1:6379/0   # also a Redis store
    python -m benchmarks.records --scale     # summaries over a year of 10,000 accounts

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


def scale(accounts: int, days: int) -> dict[str, float]:
    """Seconds for summaries over a SQLite file holding ``days`` days of
    rollups and one raw record per account and day, for ``accounts`` accounts
    (filled directly, as a year of traffic would leave them)."""
    import datetime as dt
    import sqlite3

    from credit_guard.records import UsageQuery

    timings: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "year.db"
        anyio.run(_touch, path)
        db = sqlite3.connect(path)
        first = dt.date(2025, 1, 1)
        models = ("gpt-4o", "gpt-4o-mini")
        started = time.perf_counter()
        with db:
            for d in range(days):
                day = first + dt.timedelta(days=d)
                at = dt.datetime(day.year, day.month, day.day, 12, tzinfo=dt.timezone.utc).timestamp()
                db.executemany(
                    "INSERT INTO usage_daily VALUES (?, ?, ?, ?, 3, 900, 300, 0, 90000000, 42000000)",
                    ((f"acct_{a}", day.isoformat(), f"sk-{a}...key", models[a % 2]) for a in range(accounts)),
                )
                db.executemany(
                    "INSERT INTO usage_records (request_id, hold, account, key, model, route, input_tokens,"
                    " output_tokens, cached_tokens, held, charged, outcome, started_at, ended_at)"
                    " VALUES (?, ?, ?, ?, ?, '/v1/chat/completions', 300, 100, 0, 30000000, 14000000, 'settled', ?, ?)",
                    (
                        (f"req_{d}_{a}", f"hold_{d}_{a}", f"acct_{a}", f"sk-{a}...key", models[a % 2], at, at + 1)
                        for a in range(accounts)
                    ),
                )
            # Every account's totals per day and model, as the store keeps them beside.
            db.execute(
                "INSERT INTO usage_daily_models SELECT day, model, SUM(requests), SUM(input_tokens),"
                " SUM(output_tokens), SUM(cached_tokens), SUM(held), SUM(charged) FROM usage_daily"
                " GROUP BY day, model"
            )
        db.close()
        timings["fill"] = time.perf_counter() - started
        print(f"filled {accounts:,} accounts x {days} days in {timings['fill']:.1f} s", flush=True)

        async def queries() -> None:
            store = SQLiteStore(path)
            last = first + dt.timedelta(days=days - 1)
            cases = {
                "one account, a year, by day": (UsageQuery(account="acct_7"), "day"),
                "one account, a year, by model": (UsageQuery(account="acct_7"), "model"),
                "all accounts, 30 days, by day": (UsageQuery(since=last - dt.timedelta(days=29)), "day"),
                "all accounts, 30 days, by model": (UsageQuery(since=last - dt.timedelta(days=29)), "model"),
                "all accounts, one day, by account": (UsageQuery(since=last, until=last), "account"),
                "all accounts, a year, by model": (UsageQuery(), "model"),
                "all accounts, 30 days, by key": (UsageQuery(since=last - dt.timedelta(days=29)), "key"),
                "all accounts, 30 days, one key": (
                    UsageQuery(key="sk-7...key", since=last - dt.timedelta(days=29)),
                    "day",
                ),
            }
            try:
                for name, (query, by) in cases.items():
                    start = time.perf_counter()
                    await store.usage_summary(query, by=by)
                    timings[name] = time.perf_counter() - start
                    print(f"  {name:<36} {timings[name] * 1000:>9.1f} ms", flush=True)
                start = time.perf_counter()
                await store.usage_records(UsageQuery(account="acct_7", since=last - dt.timedelta(days=6)), limit=100)
                timings["one account's records, 7 days"] = time.perf_counter() - start
                seven = timings["one account's records, 7 days"]
                print(f"  {'one account, records, 7 days':<36} {seven * 1000:>9.1f} ms", flush=True)
                start = time.perf_counter()
                await store.usage_records(limit=50)
                timings["newest 50 records"] = time.perf_counter() - start
                print(f"  {'newest 50 records, all accounts':<36} {timings['newest 50 records'] * 1000:>9.1f} ms")
            finally:
                await store.aclose()

        anyio.run(queries)
    return timings


async def _touch(path: Path) -> None:
    store = SQLiteStore(path, synchronous="NORMAL")
    await store.balance("-")  # creates the schema
    await store.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.records", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="shorter runs")
    parser.add_argument("--redis", help="also measure a Redis store at this URL")
    parser.add_argument(
        "--scale",
        action="store_true",
        help="instead: summaries over a year of records for 10,000 accounts in SQLite (about 2 GB of disk)",
    )
    parser.add_argument("--accounts", type=int, default=10_000, help="with --scale (default 10,000)")
    parser.add_argument("--days", type=int, default=365, help="with --scale (default 365)")
    args = parser.parse_args()
    if args.scale:
        scale(args.accounts, args.days)
        return
    anyio.run(run, args.quick, args.redis)


if __name__ == "__main__":
    main()
