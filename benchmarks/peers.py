"""Figure 2: input-token counting, credit_guard against its peers, in one process.

    python benchmarks/peers.py [--budget SECONDS]      # prints one JSON object

``benchmarks/run_all.py`` runs this file in the peers' own virtualenv (made from
``benchmarks/requirements.txt`` with ``--system-site-packages``, so credit_guard is
importable there too), with ``TIKTOKEN_CACHE_DIR`` pointing at a cache filled
from the encodings credit_guard ships and ``LITELLM_LOCAL_MODEL_COST_MAP=True``:
nothing here touches the network.  A peer that cannot be imported is reported as
missing, never fatal.

Each counter is timed on the same request shapes.  The judge of who is right is
the OpenAI cookbook ("How to count tokens with tiktoken"): its published API
figures where it gives one, and its reference function ``num_tokens_from_messages``
(re-implemented below, 3 tokens per message, 1 per name, 3 to prime the reply)
for plain messages where it does not.  credit_guard is timed twice: "cold", with
its cache of short texts emptied before every call (every request new), and
"warm", the same request again (a repeated system prompt hits that cache).  The
ratio in the table uses the cold figure.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

MODELS = ("gpt-4o", "gpt-4")
ENCODINGS = {"gpt-4o": "o200k_base", "gpt-4": "cl100k_base"}
_TOKENCOST_NAMES = {"gpt-4": "gpt-4-0613"}

WORDS = (
    "the quick brown fox jumps over the lazy dog while a gateway counts every token "
    "of the prompt before the model sees it and holds the worst case against a balance"
).split()


def text_of(size: int) -> str:
    out: list[str] = []
    length = 0
    i = 0
    while length < size:
        word = WORDS[(i * 7) % len(WORDS)]
        out.append(word)
        length += len(word) + 1
        i += 1
    return " ".join(out)[:size]


# The OpenAI cookbook's examples, verbatim.
COOKBOOK = [
    {
        "role": "system",
        "content": "You are a helpful, pattern-following assistant that translates corporate jargon "
        "into plain English.",
    },
    {"role": "system", "name": "example_user", "content": "New synergies will help drive top-line growth."},
    {"role": "system", "name": "example_assistant", "content": "Things working well together will increase revenue."},
    {
        "role": "system",
        "name": "example_user",
        "content": "Let's circle back when we have more bandwidth to touch base on opportunities for "
        "increased leverage.",
    },
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Let's talk later when we're less busy about how to do better.",
    },
    {
        "role": "user",
        "content": "This late pivot means we don't have time to boil the ocean for the client deliverable.",
    },
]
WEATHER_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_current_weather",
            "description": "Get the current weather in a given location",
            "parameters": {
                "type": "object",
                "properties": {
                    "location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"},
                    "unit": {
                        "type": "string",
                        "description": "The unit of temperature to return",
                        "enum": ["celsius", "fahrenheit"],
                    },
                },
                "required": ["location"],
            },
        },
    }
]
WEATHER_MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant that can answer to questions about the weather."},
    {"role": "user", "content": "What's the weather like in San Francisco?"},
]

# name -> (messages, tools, the provider's figure per model as the cookbook publishes it)
SHAPES: dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]] | None, dict[str, int]]] = {
    "plain (system + user)": (
        [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "Summarise the attached meeting notes in three bullet points, please."},
        ],
        None,
        {},
    ),
    "multi-turn with names (cookbook)": (COOKBOOK, None, {"gpt-4o": 124, "gpt-4": 129}),
    "tools (cookbook weather)": (WEATHER_MESSAGES, WEATHER_TOOLS, {"gpt-4o": 101, "gpt-4": 105}),
    "multi-turn, 40 turns of 400 B": (
        [{"role": "user" if i % 2 else "assistant", "content": text_of(400)} for i in range(40)],
        None,
        {},
    ),
    "long (one 100 KB message)": ([{"role": "user", "content": text_of(100_000)}], None, {}),
}
CHAT_SHAPES = ("plain (system + user)", "multi-turn with names (cookbook)", "tools (cookbook weather)")


def cookbook_reference(messages: list[dict[str, Any]], model: str) -> int:
    """The cookbook's ``num_tokens_from_messages`` (for gpt-4o and gpt-4 alike)."""
    from credit_guard import tokens

    encoding = tokens.get_encoding(ENCODINGS[model])
    total = 0
    for message in messages:
        total += 3
        for key, value in message.items():
            total += len(encoding.encode_ordinary(value))
            if key == "name":
                total += 1
    return total + 3


def time_call(fn: Callable[[], Any], budget: float) -> float:
    """Mean seconds per call over at least ``budget`` seconds (and 3 calls)."""
    fn()
    runs = 0
    start = time.perf_counter()
    while True:
        fn()
        runs += 1
        elapsed = time.perf_counter() - start
        if elapsed >= budget and runs >= 3:
            return elapsed / runs


def counters() -> tuple[dict[str, Callable[..., int]], dict[str, str]]:
    from credit_guard import PriceTable, shapes, tokens

    table = PriceTable.default()

    def ours(messages: list[dict[str, Any]], tools: Any, model: str) -> int:
        body: dict[str, Any] = {"model": model, "messages": messages}
        if tools:
            body["tools"] = tools
        ask = shapes.parse("chat", body)
        return tokens.count_input(ask, table.resolve(model)).tokens

    short_cache = getattr(tokens, "_SHORT", None)

    def ours_cold(messages: list[dict[str, Any]], tools: Any, model: str) -> int:
        if short_cache is not None:
            short_cache.clear()
        return ours(messages, tools, model)

    found: dict[str, Callable[..., int]] = {
        "credit_guard": ours_cold,
        "credit_guard (warm cache)": ours,
    }
    notes: dict[str, str] = {}
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import litellm

        def litellm_count(messages: list[dict[str, Any]], tools: Any, model: str) -> int:
            return int(litellm.token_counter(model=model, messages=messages, tools=tools))

        found["litellm.token_counter"] = litellm_count
        notes["litellm"] = getattr(litellm, "version", "") or _version("litellm")
    except Exception as exc:  # an optional peer
        notes["litellm"] = f"missing: {type(exc).__name__}: {exc}"[:200]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import tokencost

        def tokencost_count(messages: list[dict[str, Any]], tools: Any, model: str) -> int:
            if tools:
                # count_message_tokens(messages, model) has no tools parameter.
                raise NotImplementedError("no tools parameter")
            # tokencost prints a warning on every call for "gpt-4"; its snapshot
            # name counts the same without it, so the peer is timed at its best.
            return int(tokencost.count_message_tokens(messages, _TOKENCOST_NAMES.get(model, model)))

        found["tokencost.count_message_tokens"] = tokencost_count
        notes["tokencost"] = _version("tokencost")
    except Exception as exc:
        notes["tokencost"] = f"missing: {type(exc).__name__}: {exc}"[:200]
    return found, notes


def _version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "?"


def run(budget: float, shape_names: list[str] | None = None) -> dict[str, Any]:
    found, notes = counters()
    results: dict[str, Any] = {"python": sys.executable, "versions": notes, "shapes": {}}
    for name, (messages, tools, published) in SHAPES.items():
        if shape_names and name not in shape_names:
            continue
        row: dict[str, Any] = {}
        for model in MODELS:
            cell: dict[str, Any] = {"published": published.get(model)}
            if tools is None:
                cell["cookbook_reference"] = cookbook_reference(messages, model)
                # The cookbook's function is bare encode_ordinary calls: the floor
                # for any exact counter built on tiktoken.
                cell["floor_us"] = round(
                    time_call(lambda m=messages, n=model: cookbook_reference(m, n), budget) * 1e6, 2
                )
            for label, count in found.items():
                try:
                    tokens = count(messages, tools, model)
                    seconds = time_call(lambda c=count, m=messages, t=tools, n=model: c(m, t, n), budget)
                    cell[label] = {"tokens": tokens, "us": round(seconds * 1e6, 2)}
                except NotImplementedError as exc:
                    cell[label] = {"error": f"n/a: {exc}"}
                except Exception as exc:
                    cell[label] = {"error": f"{type(exc).__name__}: {exc}"[:160]}
            truth = cell["published"] if cell["published"] is not None else cell.get("cookbook_reference")
            for label in found:
                if "tokens" in cell[label]:
                    cell[label]["right"] = truth is None or cell[label]["tokens"] == truth
            peer_us = [v["us"] for k, v in cell.items() if not k.startswith("credit_guard") and isinstance(v, dict)
                       and "us" in v]
            mine = cell["credit_guard"].get("us")
            if peer_us and mine:
                cell["fastest_peer_us"] = min(peer_us)
                cell["speedup_vs_fastest_peer"] = round(min(peer_us) / mine, 2)
            row[model] = cell
        results["shapes"][name] = row
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=float, default=0.5, help="seconds of timing per cell")
    parser.add_argument("--shape", action="append", help="only these shapes (by name)")
    args = parser.parse_args(argv)
    print(json.dumps(run(args.budget, args.shape)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
