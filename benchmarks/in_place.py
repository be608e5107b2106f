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
Two references beside them say what a cheaper guard could save:

- ``floor request``: a layer that does only the arithmetic of a hold (reads
  the body, parses it, holds a byte bound of integer units in a dict,
  replays the body, reads the response's usage, settles) and none of the
  guard's checks; ``floor cost per request`` is its cost less bare's.
- ``money as Decimal`` / ``money as integer units``: the amounts of one
  request (worst case, hold, balance left, actual cost, charge, release, the
  remaining-credits header) as the guard's path computes them, in
  ``Decimal`` dollars through ``money``'s conversions, and the same figures
  from prices kept as whole integers of 1e-20 dollars.  Both give the same
  units.

Needs the ``litellm`` extra.  Prints a JSON object.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import stages  # noqa: E402
from benchmarks.apps import _trivial  # noqa: E402
from benchmarks.litellm_instructions import run_quietly  # noqa: E402
from benchmarks.run_all import print_results, text_of  # noqa: E402
from credit_guard import shapes  # noqa: E402
from credit_guard.body import replay  # noqa: E402
from credit_guard.money import from_units, json_text, units_ceil  # noqa: E402
from credit_guard.prices import Rates  # noqa: E402

Call = Callable[[], Awaitable[object]]
ASGIApp = Callable[[Any, Any, Any], Awaitable[None]]

# Integer prices: whole 1e-20 dollars per token, and that many per store unit (1e-10 dollars).
_PRICE_PLACES = 20
_PER_UNIT: int = 10 ** (_PRICE_PLACES - 10)


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
    price = guard.resolve(shapes.parse("chat", orjson.loads(body)))
    rates = price.rates()
    floor = floor_layer(
        _trivial,
        {f"Bearer {stages.KEY}".encode(): "bench"},
        {price.name: (price_units(rates.input), price_units(rates.output))},
        {"bench": 10**18},
    )
    timed["floor request"] = (lambda: stages._request(floor, body), True)
    # The reply's usage (10 in, 1 out), a bound of the body's length, 16 out.
    as_decimal, as_integers = money_calls(rates, (len(body), 16, 1), (10, 1), 10**18, guard.bound_margin or 1)
    timed["money as Decimal"] = (as_decimal, False)
    timed["money as integer units"] = (as_integers, False)
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
    for label, layered in (("guard cost per request", "guarded request"), ("floor cost per request", "floor request")):
        cost = {
            way: [g - b for g, b in zip(samples[layered][way], samples["bare request"][way], strict=True)]
            for way in ("in_place", "warm")
        }
        results[label] = {"in_place_us": _spread(cost["in_place"]), "warm_us": _spread(cost["warm"])}
    return results


def price_units(rate: Decimal) -> int:
    """A per-token price in whole 1e-20 dollars; ``ValueError`` where it is finer."""
    scaled = rate.scaleb(_PRICE_PLACES)
    if scaled != scaled.to_integral_value():
        raise ValueError(f"{rate} is finer than 1e-{_PRICE_PLACES} dollars")
    return int(scaled)


def _ceil_units(amount: int) -> int:
    """Store units (rounded up) for an amount in 1e-20 dollars."""
    return -(-amount // _PER_UNIT)


def units_text(units: int) -> str:
    """``money.json_text`` of ``units`` store units, from the integer."""
    sign = "-" if units < 0 else ""
    whole, fraction = divmod(abs(units), _PER_UNIT)
    if not fraction:
        return f"{sign}{whole}" if whole else "0"
    return f"{sign}{whole}.{fraction:010d}".rstrip("0")


def money_calls(
    rates: Rates, tokens: tuple[int, int, int], used: tuple[int, int], balance: int, margin: int
) -> tuple[Callable[[], tuple[int, int, bool, str]], Callable[[], tuple[int, int, bool, str]]]:
    """One request's amounts, as ``Decimal`` dollars the way the guard's
    path computes them, and as integers: ``tokens`` (input, output cap,
    choices) priced at ``rates``, held against ``balance`` units with the
    bound-first ``margin``, and settled on ``used`` (input, output) tokens.
    Each returns (units held, units charged, within the margin, the
    remaining-credits header's text)."""
    input_tokens, max_out, choices = tokens
    used_in, used_out = used
    p_in, p_max_out, p_out = (price_units(r) for r in (rates.input, rates.max_output, rates.output))

    def as_decimal() -> tuple[int, int, bool, str]:
        held = units_ceil(rates.input * input_tokens + rates.max_output * max_out * choices)
        amount, left = from_units(held), from_units(balance - held)  # the hold's two amounts
        within = amount * margin <= left + amount
        charge = units_ceil(rates.input * used_in + rates.output * used_out)
        from_units(charge), from_units(held - charge)  # the settlement's charged and released
        return held, charge, within, json_text(from_units(balance - charge))

    def as_integers() -> tuple[int, int, bool, str]:
        held = _ceil_units(p_in * input_tokens + p_max_out * max_out * choices)
        within = held * margin <= balance
        charge = _ceil_units(p_in * used_in + p_out * used_out)
        return held, charge, within, units_text(balance - charge)

    return as_decimal, as_integers


def floor_layer(
    app: ASGIApp, keys: dict[bytes, str], prices: dict[str, tuple[int, int]], balances: dict[str, int]
) -> ASGIApp:
    """The arithmetic of a hold and nothing else, for reference: the caller's
    account by its ``authorization`` header (``keys``), the body read and
    parsed, a byte bound of input tokens and the request's ``max_tokens``
    held in integer units against ``balances`` at the model's ``prices``
    (input, output per token in 1e-20 dollars), the body replayed, and the
    hold settled on the response's ``usage``.  None of the guard's checks."""

    async def layer(scope: Any, receive: Any, send: Any) -> None:
        authorization = b""
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value
        account = keys[authorization]
        pieces = []
        while True:
            message = await receive()
            pieces.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = b"".join(pieces)
        request = orjson.loads(body)
        p_in, p_out = prices[request["model"]]
        held = _ceil_units(p_in * len(body) + p_out * request["max_tokens"])
        balances[account] -= held
        answer: list[bytes] = []

        async def tapped(message: Any) -> None:
            if message["type"] == "http.response.body":
                answer.append(message.get("body", b""))
            await send(message)

        try:
            await app(scope, replay(tuple(pieces), receive), tapped)
        finally:
            usage = orjson.loads(b"".join(answer))["usage"]
            cost = _ceil_units(p_in * usage["prompt_tokens"] + p_out * usage["completion_tokens"])
            balances[account] += held - cost

    return layer


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
