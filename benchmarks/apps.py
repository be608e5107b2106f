"""The apps the HTTP benchmarks serve (``uvicorn --factory benchmarks.apps:NAME``).

``bare``: a trivial chat-completions app that answers at once with usage.
``guarded_memory`` / ``guarded_sqlite``: the same app behind ``CreditGuard``.
``streaming_guarded``: the guard in front of an app that streams
``x-bench-bytes`` bytes of SSE events, for the memory figure.
``litellm_bare`` / ``litellm_memory`` / ``litellm_sqlite``: LiteLLM's proxy server
(its FastAPI app, a mocked model: no provider, no network) alone and behind the
guard (the ``litellm`` extra); ``litellm_parked``, a diagnostic: the memory
store's guard with each request parked 0.5 ms before its hold; ``litellm_holding`` /
``litellm_churning``, diagnostics: the memory store's guard with 32 more objects per
request the collector tracks, kept while LiteLLM answers or let go at once.  Under
``BENCH_GC_STATS=<file>`` the LiteLLM servers count the garbage collector's passes,
their time and the objects they freed, per generation, and write the totals to
that file on ``SIGUSR1`` (the same for all of them).
"""

from __future__ import annotations

import os
from typing import Any

import orjson

from credit_guard import CreditGuard, MemoryStore, PriceTable

KEY = "sk-bench-0123456789abcdef"
ACCOUNT = "bench"
BALANCE = "100000000"  # nothing is ever refused for want of credits

_REPLY = orjson.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 1, "total_tokens": 11},
    }
)


async def _lifespan(receive: Any, send: Any) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _trivial(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    while (await receive()).get("more_body"):
        pass
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(_REPLY)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": _REPLY})


async def _streamer(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    while (await receive()).get("more_body"):
        pass
    total = int(dict(scope["headers"]).get(b"x-bench-bytes", b"1000000"))
    word = b'data: {"choices":[{"index":0,"delta":{"content":"' + b"x" * 200 + b'"}}]}\n\n'
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
    sent = 0
    chunk = word * 50
    while sent < total:
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
        sent += len(chunk)
    final = b'data: {"choices":[],"usage":{"prompt_tokens":10,"completion_tokens":5}}\n\ndata: [DONE]\n\n'
    await send({"type": "http.response.body", "body": final, "more_body": False})


def bare() -> Any:
    return _trivial


def _guard(inner: Any, store: Any) -> CreditGuard:
    return CreditGuard(inner, store=store, prices=PriceTable.default(), accounts={KEY: ACCOUNT})


def guarded_memory() -> Any:
    return _guard(_trivial, MemoryStore({ACCOUNT: BALANCE}))


def guarded_sqlite() -> Any:
    from credit_guard.stores import SQLiteStore

    path = os.environ.get("BENCH_SQLITE", "bench_credits.db")
    store = SQLiteStore(path)
    return _guard(_trivial, store)


def streaming_guarded() -> Any:
    return _guard(_streamer, MemoryStore({ACCOUNT: BALANCE}))


_LITELLM_CONFIG = f"""
general_settings:
  master_key: {KEY}
model_list:
  - model_name: gpt-4o-mini
    litellm_params:
      model: openai/gpt-4o-mini
      api_key: sk-not-used
      mock_response: "ok"
litellm_settings:
  telemetry: false
"""


def _litellm() -> Any:
    import tempfile
    from pathlib import Path

    # LiteLLM fetches its price map from the network at import unless told not to.
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    config = Path(tempfile.mkdtemp()) / "litellm_config.yaml"
    config.write_text(_LITELLM_CONFIG)
    os.environ["CONFIG_FILE_PATH"] = str(config)
    from litellm.proxy.proxy_server import app

    return app


_counting: list[str] = []


def _count_gc() -> None:
    """Count the collector's passes, time and the objects it freed (garbage
    that only the collector frees: reference cycles) per generation;
    ``SIGUSR1`` writes the totals to ``BENCH_GC_STATS`` (nothing happens
    without it)."""
    path = os.environ.get("BENCH_GC_STATS")
    if not path or _counting:
        return
    _counting.append(path)  # once per process (servers of one process share it)
    import gc
    import signal
    import time

    totals: dict[int, list[float]] = {generation: [0, 0.0, 0] for generation in range(3)}
    started = [0.0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            total = totals[info["generation"]]
            total[0] += 1
            total[1] += time.perf_counter() - started[0]
            total[2] += info["collected"]

    def dump(signum: int, frame: Any) -> None:
        with open(path, "wb") as out:
            out.write(
                orjson.dumps({str(g): {"passes": n, "seconds": s, "collected": c} for g, (n, s, c) in totals.items()})
            )

    gc.callbacks.append(on_gc)
    signal.signal(signal.SIGUSR1, dump)


def litellm_bare() -> Any:
    _count_gc()
    return _litellm()


def litellm_memory() -> Any:
    _count_gc()
    return _guard(_litellm(), MemoryStore({ACCOUNT: BALANCE}))


def litellm_parked() -> Any:
    """A diagnostic, not a setting: the memory store's guard with each
    request parked ``BENCH_PARK_SECONDS`` (0.5 ms) before its hold.  A wait
    before the app, which costs no CPU, makes LiteLLM's server faster (the
    SQLite store's requests wait for its writer): this server shows how much
    such a wait moves the figure beside the memory store's."""
    import asyncio

    pause = float(os.environ.get("BENCH_PARK_SECONDS", "0.0005"))

    class Parked(MemoryStore):
        async def reserve(self, *args: Any, **kwargs: Any) -> Any:
            await asyncio.sleep(pause)
            return await super().reserve(*args, **kwargs)

    _count_gc()
    return _guard(_litellm(), Parked({ACCOUNT: BALANCE}))


def _holding(inner: Any, alive: bool) -> Any:
    """``inner`` with 32 more objects the collector tracks made per request (a
    list of 30 empty lists, and the function that builds it): ``alive``, kept
    until the app has answered, as the guard keeps its own; else let go at once."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await inner(scope, receive, send)
            return
        held: list[list[int]] = [[] for _ in range(30)]
        if not alive:
            del held
        await inner(scope, receive, send)

    return app


def litellm_holding() -> Any:
    """A diagnostic: the memory store's guard, and 32 more objects alive while
    LiteLLM answers (``_holding``)."""
    _count_gc()
    return _guard(_holding(_litellm(), True), MemoryStore({ACCOUNT: BALANCE}))


def litellm_churning() -> Any:
    """A diagnostic: the memory store's guard, and 32 more objects made and
    let go before LiteLLM is called (``_holding``)."""
    _count_gc()
    return _guard(_holding(_litellm(), False), MemoryStore({ACCOUNT: BALANCE}))


def litellm_sqlite() -> Any:
    from credit_guard.stores import SQLiteStore

    _count_gc()
    return _guard(_litellm(), SQLiteStore(os.environ.get("BENCH_SQLITE", "bench_credits.db")))
