"""The guard's CPU per request, in process, by stage; and what the count cache
and the bound-first path save.

    python -m benchmarks.stages [--quick]          # prints a JSON object

Everything runs in this process, on one event loop, with no sockets: the
figures are the guard's own cost, without uvicorn's, in CPU time of the process
(all threads: work moved to a worker thread still counts).  Each figure is the median
of alternating rounds against its baseline measured in the same run, with the
spread (min-max of the rounds) beside it.

- ``stages``: a 1 KB chat body, each stage timed alone on the same input
  (route, identity, body, parse, shape, resolve, count, bounds, quote,
  reserve, tap, settle), and the whole request through ``CreditGuard`` minus
  the bare app.  The balance is ample: after an account's first request the
  byte bound is held and the count skipped (``bounds`` is what is paid
  instead).
  ``count`` is timed cold (the count cache emptied before each call: a text
  never seen) and warm; the whole request uses a distinct body every time.
  A full count cache's cost of a new text (the eviction) is timed apart.
- ``large``: a 100 KB prompt with an ample balance, each request a text never
  seen, against tiktoken's ``encode_ordinary`` of the same text (the least an
  exact count costs).
- ``conversation``: a 40-turn conversation, then the same conversation resent
  with one new turn (cache warm from the first), against the first request.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.apps import _trivial  # noqa: E402
from benchmarks.run_all import text_of  # noqa: E402
from credit_guard import CreditGuard, MemoryStore, PriceTable, shapes, tokens  # noqa: E402
from credit_guard.body import parse_json, read_body  # noqa: E402
from credit_guard.quote import make_quote  # noqa: E402
from credit_guard.usage import UsageTap  # noqa: E402

KEY = "sk-bench-stages"
# CPU time of the whole process, every thread included (a body parsed in a
# worker thread counts): what the guard costs the machine, whatever else the
# machine is doing at the same time.
_clock = time.process_time
MODEL = "gpt-4o-mini"
_REPLY = orjson.dumps(
    {
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 1, "total_tokens": 11},
    }
)


def _body(text: str, max_tokens: int = 16) -> bytes:
    return orjson.dumps({"model": MODEL, "messages": [{"role": "user", "content": text}], "max_tokens": max_tokens})


def _scope(body: bytes) -> dict[str, Any]:
    return {
        "type": "http",
        "method": "POST",
        "path": "/v1/chat/completions",
        "raw_path": b"/v1/chat/completions",
        "root_path": "",
        "query_string": b"",
        "headers": [
            (b"content-type", b"application/json"),
            (b"authorization", f"Bearer {KEY}".encode()),
            (b"content-length", str(len(body)).encode()),
        ],
    }


async def _request(app: Any, body: bytes) -> None:
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        raise AssertionError("the app read past the body")

    async def send(message: Any) -> None:
        pass

    await app(_scope(body), receive, send)


def _per_call(fn: Callable[[], object], calls: int) -> float:
    start = _clock()
    for _ in range(calls):
        fn()
    return (_clock() - start) / calls * 1e6


async def _per_call_async(fn: Callable[[], Awaitable[object]], calls: int) -> float:
    start = _clock()
    for _ in range(calls):
        await fn()
    return (_clock() - start) / calls * 1e6


def _summary(values: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values), 2), "min": round(min(values), 2), "max": round(max(values), 2)}


SyncStages = dict[str, Callable[[], object]]
AsyncStages = dict[str, Callable[[], Awaitable[object]]]


async def stage_calls() -> tuple[CreditGuard, SyncStages, AsyncStages]:
    """A guard over the trivial app (memory store, ample balance), and each
    stage of its path for a 1 KB chat body as a call to time alone: the
    synchronous ones, then those to await (each ``settle`` ends a hold the
    ``reserve`` calls opened before it)."""
    table = PriceTable.default()
    store = MemoryStore({"bench": "100000000"})
    guard = CreditGuard(_trivial, store=store, prices=table, accounts={KEY: "bench"})
    await guard.warm()
    text = text_of(1_000)
    body = _body(text)
    obj = parse_json(body)
    ask = shapes.parse("chat", obj)
    price = guard.resolve(ask)
    count = tokens.count_input(ask, price)
    quote = make_quote(ask, price, count.tokens, count.exact)
    encoding = tokens.get_encoding("o200k_base")
    scope = _scope(body)

    async def body_stage() -> object:
        sent = False

        async def receive() -> dict[str, Any]:
            nonlocal sent
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        return await read_body(scope, receive, guard.max_body_bytes)

    # The same harness measures a version without the count cache (a before
    # figure): there every count is cold.
    cache = getattr(tokens, "COUNT_CACHE", None)

    def count_cold() -> object:
        if cache is not None:
            cache.clear()
        return tokens.count_input(ask, price)

    opened: list[Any] = []

    async def reserve() -> object:
        hold = await store.reserve("bench", quote.max_cost)
        opened.append(hold)
        return hold

    async def settle() -> object:
        return await store.settle(opened.pop(), quote.input_cost)

    def tap() -> object:
        usage = UsageTap("chat")
        usage.start({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        usage.body(_REPLY, False)
        return usage.usage

    # A count cache kept full, as on a gateway that has seen more distinct
    # texts than it keeps: every new text evicts the oldest.  (A version
    # without the cache, measured by the same harness, has no such stage.)
    full = tokens.CountCache(min_chars=0) if hasattr(tokens, "CountCache") else None
    inserted = 0
    if full is not None:
        # Filled, then turned over twice: what a long-running gateway's cache sees.
        for inserted in range(3 * full.entries):
            full.count(encoding, f"{inserted:09d} x")

    def count_cache_full() -> object:
        # A hundred at a time, so that every round spans the dict's resizes.
        nonlocal inserted
        assert full is not None
        for _ in range(100):
            inserted += 1
            full.count(encoding, f"{inserted:09d} x")
        return inserted

    sync_stages: SyncStages = {
        "route": lambda: guard.router.classify(scope),
        "parse": lambda: parse_json(body),
        "shape": lambda: shapes.parse("chat", obj),
        "resolve": lambda: guard.resolve(ask),
        "count (cold)": count_cold,
        "count (warm)": lambda: tokens.count_input(ask, price),
        # What an ample balance pays in place of the count: the byte bounds.
        "bounds": lambda: tokens.input_bounds(ask, price),
        "quote": lambda: make_quote(ask, price, count.tokens, count.exact),
        "tap": tap,
    }
    if full is not None:
        sync_stages["count cache, full: 100 new short texts"] = count_cache_full
    async_stages: AsyncStages = {
        "identity": lambda: guard._lookup(KEY),
        "body": body_stage,
        # Each settle ends a hold the reserve stage opened just before.
        "reserve": reserve,
        "settle": settle,
    }
    return guard, sync_stages, async_stages


async def figure_stages(rounds: int, calls: int) -> dict[str, Any]:
    guard, sync_stages, async_stages = await stage_calls()
    text = text_of(1_000)
    body = _body(text)
    encoding = tokens.get_encoding("o200k_base")
    samples: dict[str, list[float]] = {name: [] for name in [*sync_stages, *async_stages]}
    samples["floor: encode_ordinary"] = []
    whole: list[float] = []
    bare: list[float] = []
    serial = 0

    async def guarded() -> None:
        nonlocal serial
        serial += 1
        # A body never seen: the count cache cannot help.
        await _request(guard, _body(f"{serial} {text}"[: len(text)]))

    async def unguarded() -> None:
        nonlocal serial
        serial += 1
        await _request(_trivial, _body(f"{serial} {text}"[: len(text)]))

    for _ in range(rounds):
        for name, fn in sync_stages.items():
            samples[name].append(_per_call(fn, calls))
        for name, afn in async_stages.items():
            samples[name].append(await _per_call_async(afn, calls))
        samples["floor: encode_ordinary"].append(_per_call(lambda: encoding.encode_ordinary(text), calls))
        bare.append(await _per_call_async(unguarded, calls))
        whole.append(await _per_call_async(guarded, calls))
    guard_cost = [w - b for w, b in zip(whole, bare, strict=True)]
    return {
        "body_bytes": len(body),
        "stages_us": {name: _summary(values) for name, values in samples.items()},
        "bare_request_us": _summary(bare),
        "guarded_request_us": _summary(whole),
        "guard_cpu_per_request_us": _summary(guard_cost),
        "target_us": 50,
    }


async def figure_large(rounds: int, calls: int) -> dict[str, Any]:
    store = MemoryStore({"bench": "100000000"})
    guard = CreditGuard(_trivial, store=store, prices=PriceTable.default(), accounts={KEY: "bench"})
    await guard.warm()
    encoding = tokens.get_encoding("o200k_base")
    text = text_of(100_000)
    serial = 0
    guarded: list[float] = []
    bare: list[float] = []
    floor: list[float] = []
    for _ in range(rounds):
        start = _clock()
        for _ in range(calls):
            serial += 1
            await _request(_trivial, _body(f"{serial} {text}"))
        bare.append((_clock() - start) / calls * 1e6)
        start = _clock()
        for _ in range(calls):
            serial += 1
            await _request(guard, _body(f"{serial} {text}"))
        guarded.append((_clock() - start) / calls * 1e6)
        start = _clock()
        for _ in range(calls):
            serial += 1
            encoding.encode_ordinary(f"{serial} {text}")
        floor.append((_clock() - start) / calls * 1e6)
    ratios = [(g - b) / f for g, b, f in zip(guarded, bare, floor, strict=True)]
    return {
        "body_bytes": len(_body(text)),
        "guard_cost_us": _summary([g - b for g, b in zip(guarded, bare, strict=True)]),
        "encode_ordinary_us": _summary(floor),
        "ratio": _summary(ratios),
        "target_ratio": 0.3,
    }


def _conversation(turns: int, tag: int) -> bytes:
    messages: list[dict[str, str]] = [
        {"role": "system", "content": f"[{tag}] You are a careful assistant for a gateway. " * 20}
    ]
    for i in range(turns):
        role = "user" if i % 2 == 0 else "assistant"
        messages.append({"role": role, "content": f"[{tag}] turn {i}: " + text_of(600)})
    return orjson.dumps({"model": MODEL, "messages": messages, "max_tokens": 256})


async def figure_conversation(rounds: int, calls: int) -> dict[str, Any]:
    # The balance is set so that the exact count decides (the bound does not
    # fit ten times over): the figure is the cache's, not the bound's.
    store = MemoryStore({"bench": "0.02"})
    guard = CreditGuard(_trivial, store=store, prices=PriceTable.default(), accounts={KEY: "bench"})
    await guard.warm()
    first: list[float] = []
    resent: list[float] = []
    bare: list[float] = []
    tag = 0
    for _ in range(rounds):
        t_first = t_resent = t_bare = 0.0
        for _ in range(calls):
            tag += 1
            opening, next_turn = _conversation(40, tag), _conversation(41, tag)
            start = _clock()
            await _request(_trivial, opening)
            t_bare += _clock() - start
            start = _clock()
            await _request(guard, opening)
            t_first += _clock() - start
            start = _clock()
            await _request(guard, next_turn)
            t_resent += _clock() - start
        bare_us = t_bare / calls * 1e6
        first.append(t_first / calls * 1e6 - bare_us)
        resent.append(t_resent / calls * 1e6 - bare_us)
        bare.append(bare_us)
    balance = await store.balance("bench")
    return {
        "body_bytes": len(_conversation(41, 0)),
        "first_request_guard_us": _summary(first),
        "resent_with_one_turn_guard_us": _summary(resent),
        "ratio": _summary([r / f for r, f in zip(resent, first, strict=True)]),
        "target_ratio": 0.25,
        "refused": balance.spent == 0,
    }


async def main_async(quick: bool) -> dict[str, Any]:
    rounds = 3 if quick else 7
    return {
        "stages": await figure_stages(rounds, 300 if quick else 2000),
        "large": await figure_large(rounds, 5 if quick else 20),
        "conversation": await figure_conversation(rounds, 3 if quick else 10),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds and calls")
    args = parser.parse_args(argv)
    print(json.dumps(asyncio.run(main_async(args.quick)), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
