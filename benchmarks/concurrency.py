"""Store throughput as requests pile up: reserve+settle pairs per second with 1
and with 64 concurrent tasks in one process, on each store.

    python -m benchmarks.concurrency [--quick]      # prints a JSON object

SQLite runs at its default ``synchronous=FULL`` twice: with group commit (the
default ``batch_size=64``: changes that wait for the writer share its next
transaction) and with ``batch_size=1`` (every change its own transaction, as
without group commit), alternating rounds in the same run; each figure is the
median of the rounds, with the spread.  Redis runs on a ``redis-server`` started
on 127.0.0.1 when one is on PATH.  Each task uses an account of its own, so the
figure is the store's, not contention on one balance.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.run_all import free_port, wait_for_port  # noqa: E402
from credit_guard.stores import MemoryStore, open_store  # noqa: E402
from credit_guard.stores.sqlite import SQLiteStore  # noqa: E402


async def _pairs_per_second(store: Any, tasks: int, pairs: int, tag: str) -> float:
    accounts = [f"{tag}-{i}" for i in range(tasks)]
    for account in accounts:
        await store.grant(account, "1000000")

    async def worker(account: str) -> None:
        for _ in range(pairs):
            hold = await store.reserve(account, Decimal("0.001"))
            await store.settle(hold, Decimal("0.0004"))

    start = time.perf_counter()
    await asyncio.gather(*(worker(account) for account in accounts))
    return tasks * pairs / (time.perf_counter() - start)


def _summary(values: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values), 1), "min": round(min(values), 1), "max": round(max(values), 1)}


async def main_async(quick: bool) -> dict[str, Any]:
    rounds = 3 if quick else 5
    pairs_one, pairs_many = (150, 10) if quick else (600, 40)
    results: dict[str, Any] = {}
    redis_process = None
    with tempfile.TemporaryDirectory() as tmp:
        makers: dict[str, Any] = {
            "memory": lambda: MemoryStore(),
            "sqlite (group commit)": lambda: SQLiteStore(f"{tmp}/group.db"),
            "sqlite (one transaction per change)": lambda: SQLiteStore(f"{tmp}/single.db", batch_size=1),
        }
        if "batch_size" not in inspect.signature(SQLiteStore).parameters:
            # A version without group commit (a before figure): one SQLite row.
            makers = {
                "memory": makers["memory"],
                "sqlite (one transaction per change)": lambda: SQLiteStore(f"{tmp}/single.db"),
            }
        if shutil.which("redis-server"):
            port = free_port()
            redis_process = subprocess.Popen(
                ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            wait_for_port(port)
            makers["redis"] = lambda: open_store(f"redis://127.0.0.1:{port}/0")
        try:
            samples: dict[str, dict[str, list[float]]] = {name: {"1 task": [], "64 tasks": []} for name in makers}
            serial = 0
            for _ in range(rounds):
                # Alternate the stores within each round, so a slow moment of the
                # machine falls on all of them alike.
                for name, make in makers.items():
                    store = make()
                    serial += 1
                    samples[name]["1 task"].append(await _pairs_per_second(store, 1, pairs_one, f"r{serial}"))
                    serial += 1
                    samples[name]["64 tasks"].append(await _pairs_per_second(store, 64, pairs_many, f"r{serial}"))
                    await store.aclose()
        finally:
            if redis_process is not None:
                redis_process.kill()
                redis_process.wait()
    for name, by_tasks in samples.items():
        row: dict[str, Any] = {label: _summary(values) for label, values in by_tasks.items()}
        ratios = [many / one for one, many in zip(by_tasks["1 task"], by_tasks["64 tasks"], strict=True)]
        row["64 tasks / 1 task"] = _summary(ratios)
        results[name] = row
    if "sqlite (group commit)" in samples:
        group = samples["sqlite (group commit)"]["64 tasks"]
        single = samples["sqlite (one transaction per change)"]["64 tasks"]
        results["sqlite, 64 tasks: group commit / one transaction per change"] = _summary(
            [g / s for g, s in zip(group, single, strict=True)]
        )
    results["target"] = "sqlite (group commit): 64 tasks >= 4x one task"
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds and pairs")
    args = parser.parse_args(argv)
    print(json.dumps(asyncio.run(main_async(args.quick)), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
