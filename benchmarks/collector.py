"""What the guard costs LiteLLM's garbage collector, counted rather than timed:
the collector's passes per request, and the objects moved into its oldest
generation per request, of LiteLLM's proxy app (mock model) called bare and
behind the memory store's guard, in one process.

    python -m benchmarks.collector [--requests 500] [--rounds 12] [--holding N]

CPython's collector runs a young pass once 700 more objects have been made
than freed, a pass of the middle generation every tenth young pass, and a
full pass once the objects its middle passes moved into the oldest
generation since the last full pass exceed a quarter of those there.  Over
LiteLLM's heap (about 0.8 M objects) a full pass takes about 0.4 s, and full
passes are most of its collector's time: each object moved into the oldest
generation costs about 2 µs of it, however soon it is freed after.  An
object of the guard's alive while LiteLLM works for a request (the hold,
the quote...) is alive at LiteLLM's passes, and is moved with LiteLLM's own.

Both sides are driven as uvicorn drives an app: 16 concurrent callers, each
request a task of its own, with figure 9's 1 KB chat body, its answer read in
full.  Batches alternate (bare, memory, ..., then the reverse) after a
warm-up.  ``--holding N`` adds a third side, for scale: the bare app with N
objects of a class of its own made before it is called and freed after.
Needs the ``litellm`` extra.  Prints a JSON object: per side, the mean over
its batches with the standard error of that mean.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.litellm_instructions import one, run_quietly  # noqa: E402
from benchmarks.run_all import chat_body, print_results  # noqa: E402

CALLERS = 16

App = Callable[[Any, Any, Any], Awaitable[None]]


class Census:
    """The collector's passes and the objects its middle-generation passes move
    into the oldest generation, counted by a ``gc.callbacks`` entry while
    ``counting``."""

    def __init__(self) -> None:
        self.counting = False
        self.young_passes = 0
        self.middle_passes = 0
        self.full_passes = 0
        self.moved = 0
        self._oldest = 0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if not self.counting:
            return
        generation = info["generation"]
        if generation == 1:
            # What is in the oldest generation before and after the pass: what
            # it moved there (tuples of strings and numbers it stopped tracking
            # are not moved, so counting what it examined would overstate it).
            oldest = len(gc.get_objects(generation=2))
            if phase == "start":
                self._oldest = oldest
            else:
                self.moved += oldest - self._oldest
                self.middle_passes += 1
        elif phase == "stop":
            if generation == 0:
                self.young_passes += 1
            else:
                self.full_passes += 1

    def reset(self) -> None:
        self.young_passes = self.middle_passes = self.full_passes = self.moved = 0


async def batch(app: App, body: bytes, key: str, requests: int) -> list[int]:
    """``requests`` requests through ``app`` by ``CALLERS`` concurrent callers,
    each request a task of its own (as a server runs them): the statuses."""
    statuses: list[int] = []
    left = iter(range(requests))
    loop = asyncio.get_running_loop()

    async def caller() -> None:
        for _ in left:
            statuses.append(await loop.create_task(one(app, body, key)))

    await asyncio.gather(*(caller() for _ in range(CALLERS)))
    return statuses


def holding(app: App, objects: int) -> App:
    """``app`` with ``objects`` objects of a class of its own made before each
    call and freed after it (with the list holding them and the wrapper's own
    coroutine: two more): what objects alive across the app cost, for scale."""

    class Held:
        __slots__ = ("value",)

    async def held(scope: Any, receive: Any, send: Any) -> None:
        kept = [Held() for _ in range(objects)]
        await app(scope, receive, send)
        del kept

    return held


def summary(batches: list[dict[str, float]]) -> dict[str, Any]:
    """Each figure's mean over the batches, with the standard error of the mean."""
    out: dict[str, Any] = {}
    for name in batches[0]:
        values = [b[name] for b in batches]
        error = statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else 0.0
        out[name] = {"mean": round(statistics.mean(values), 4), "error": round(error, 4)}
    return out


async def measure(sides: dict[str, App], body: bytes, key: str, requests: int, rounds: int) -> dict[str, Any]:
    """Per side, per request: young, middle and full passes, and the objects moved
    into the oldest generation; batches alternate between the sides."""
    census = Census()
    for app in sides.values():  # caches, the count cache, first-call work
        await batch(app, body, key, min(requests, 300))
    per_batch: dict[str, list[dict[str, float]]] = {name: [] for name in sides}
    order = list(sides)
    gc.callbacks.append(census)
    try:
        for round_ in range(rounds):
            for name in order if round_ % 2 == 0 else order[::-1]:
                census.reset()
                census.counting = True
                statuses = await batch(sides[name], body, key, requests)
                census.counting = False
                if set(statuses) != {200}:
                    raise RuntimeError(f"{name}: answered {sorted(set(statuses))}")
                per_batch[name].append(
                    {
                        "moved_to_oldest": census.moved / requests,
                        "young_passes": census.young_passes / requests,
                        "middle_passes": census.middle_passes / requests,
                        "full_passes": census.full_passes / requests,
                    }
                )
    finally:
        gc.callbacks.remove(census)
    results: dict[str, Any] = {name: summary(batches) for name, batches in per_batch.items()}
    bare = results[order[0]]["moved_to_oldest"]["mean"]
    for name in order[1:]:
        results[name]["moved_added_per_request"] = round(results[name]["moved_to_oldest"]["mean"] - bare, 1)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=500, help="requests per batch")
    parser.add_argument("--rounds", type=int, default=12, help="batches per side")
    parser.add_argument("--holding", type=int, help="a third side: the bare app holding this many objects")
    args = parser.parse_args()
    from benchmarks import apps
    from credit_guard import MemoryStore

    started = time.monotonic()

    async def run() -> dict[str, Any]:
        from benchmarks.litellm_instructions import start

        bare = apps._litellm()
        await start(bare)
        sides: dict[str, App] = {
            "bare": bare,
            "memory": apps._guard(bare, MemoryStore({apps.ACCOUNT: apps.BALANCE})),
        }
        if args.holding:
            sides[f"bare holding {args.holding}"] = holding(bare, args.holding)
        return await measure(sides, chat_body(1000), apps.KEY, args.requests, args.rounds)

    print_results(run_quietly(run), started, requests_per_batch=args.requests, batches_per_side=args.rounds)


if __name__ == "__main__":
    main()
