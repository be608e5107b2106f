"""Figure 7's stages in place: each stage of the guard's path for a 1 KB chat
body timed alone right after a request through LiteLLM's proxy app (mock
model, untimed), as the guard runs in front of it, and timed again warm
(one call after another, as figure 7 times it).

    python -m benchmarks.in_place [--calls 150] [--rounds 5]

In front of LiteLLM the guard's code and data are cold on every request:
LiteLLM works for milliseconds between two of the guard's steps, through
far more code than a core's caches and branch predictors hold.  A stage's
in-place time over its warm time is what that costs it.  Stages timed alone
each pay their own cold start, so their sum is more than the whole
request's; the whole request (guarded, less bare, over the trivial app) is
timed the same way.  Each figure is the median over the rounds of the
median of ``--calls`` single calls, wall-clock (one thread), with the spread.
Needs the ``litellm`` extra.  Prints a JSON object.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import stages  # noqa: E402
from benchmarks.apps import _trivial  # noqa: E402
from benchmarks.litellm_instructions import run_quietly  # noqa: E402
from benchmarks.run_all import print_results, text_of  # noqa: E402

Call = Callable[[], Awaitable[object]]


async def _median_us(call: Callable[[], Any], awaited: bool, between: Call | None, calls: int) -> float:
    """The median of ``calls`` single calls of ``call``, each after ``between``;
    an ``awaited`` call's result is awaited inside the timing (a synchronous
    stage is timed as it is called, with no coroutine around it)."""
    clock = time.perf_counter_ns
    times = []
    for _ in range(calls):
        if between is not None:
            await between()
        start = clock()
        if awaited:
            await call()
        else:
            call()
        times.append(clock() - start)
    return statistics.median(times) / 1000


async def measure(between: Call, calls: int, rounds: int) -> dict[str, Any]:
    """Each stage in place (after ``between``) and warm, in µs, with the ratio;
    and the whole request's guard cost the same two ways."""
    guard, sync_stages, async_stages = await stages.stage_calls()
    body = stages._body(text_of(1_000))
    # Each call, and whether what it returns is to be awaited.
    timed: dict[str, tuple[Callable[[], Any], bool]] = {name: (call, False) for name, call in sync_stages.items()}
    timed.update((name, (call, True)) for name, call in async_stages.items())
    timed["bare request"] = (lambda: stages._request(_trivial, body), True)
    timed["guarded request"] = (lambda: stages._request(guard, body), True)
    for call, awaited in timed.values():  # first-call work, caches
        await _median_us(call, awaited, None, 1)
    samples: dict[str, dict[str, list[float]]] = {name: {"in_place": [], "warm": []} for name in timed}
    for _ in range(rounds):
        for name, (call, awaited) in timed.items():
            samples[name]["in_place"].append(await _median_us(call, awaited, between, calls))
            samples[name]["warm"].append(await _median_us(call, awaited, None, calls))
    results: dict[str, Any] = {}
    for name, both in samples.items():
        in_place, warm = (statistics.median(both[way]) for way in ("in_place", "warm"))
        results[name] = {
            "in_place_us": _spread(both["in_place"]),
            "warm_us": _spread(both["warm"]),
            "in_place_over_warm": round(in_place / warm, 2) if warm else None,
        }
    guard_cost = {
        way: [g - b for g, b in zip(samples["guarded request"][way], samples["bare request"][way], strict=True)]
        for way in ("in_place", "warm")
    }
    results["guard cost per request"] = {
        "in_place_us": _spread(guard_cost["in_place"]),
        "warm_us": _spread(guard_cost["warm"]),
    }
    return results


def _spread(values: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values), 2), "min": round(min(values), 2), "max": round(max(values), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=150, help="single calls per stage, way and round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    started = time.monotonic()

    async def run() -> dict[str, Any]:
        from benchmarks import apps
        from benchmarks.litellm_instructions import one, start
        from benchmarks.run_all import chat_body

        lite = apps._litellm()
        await start(lite)
        chat = chat_body(1000)

        async def litellm_request() -> object:
            return await one(lite, chat, apps.KEY)

        for _ in range(50):
            await litellm_request()
        return await measure(litellm_request, args.calls, args.rounds)

    print_results(run_quietly(run), started, calls=args.calls, rounds=args.rounds)


if __name__ == "__main__":
    main()
