"""Memory per request is bounded: a huge body of one repeated character (one
BPE piece, quadratic for tiktoken) from an account that cannot afford it, and
several of them at once, cost the guard's process a small multiple of the
body, measured on the real process (its peak RSS, VmHWM)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import httpx
import orjson
import pytest

from credit_guard import PriceTable, shapes, tokens

from .servers import free_port, wait_for_port

pytestmark = pytest.mark.slow

_SERVER = textwrap.dedent(
    """
    import sys
    import uvicorn
    from credit_guard import CreditGuard, MemoryStore

    async def app(scope, receive, send):
        raise AssertionError("an unaffordable request reached the app")

    guard = CreditGuard(app, store=MemoryStore({"acct": "1.00"}), accounts={"sk-poor": "acct"},
                        max_body_bytes=32 * 1024 * 1024)
    uvicorn.run(guard, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", lifespan="off")
    """
)

BODY_MB = 15


def _peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def _body(char: str) -> bytes:
    return orjson.dumps(
        {"model": "gpt-4o", "messages": [{"role": "user", "content": char * (BODY_MB * 1024 * 1024)}], "max_tokens": 10}
    )


def test_a_long_run_is_bounded_by_its_bytes_not_encoded() -> None:
    price = PriceTable.default().resolve("gpt-4o")
    text = "a" * (2 * 1024 * 1024)
    ask = shapes.parse("chat", {"model": "gpt-4o", "messages": [{"role": "user", "content": text}]})
    count = tokens.count_input(ask, price)
    # A bound (every token holds at least one byte), and said to be one.
    assert count.exact is False
    assert count.tokens >= len(text)
    # Ordinary text of the same size is still counted exactly.
    words = "the gateway counts every token " * 70_000
    ask = shapes.parse("chat", {"model": "gpt-4o", "messages": [{"role": "user", "content": words}]})
    count = tokens.count_input(ask, price)
    assert count.exact is True
    assert count.tokens == 3 + 3 + 1 + len(tokens.get_encoding("o200k_base").encode_ordinary(words))


def test_runs_shorter_than_two_windows_are_counted_exactly() -> None:
    price = PriceTable.default().resolve("gpt-4o")
    text = ("b" * 40_000 + " ") * 3  # runs under twice the window: no aligned window is free of spaces
    ask = shapes.parse("chat", {"model": "gpt-4o", "messages": [{"role": "user", "content": text}]})
    count = tokens.count_input(ask, price)
    encoding = tokens.get_encoding("o200k_base")
    exact = 3 + 3 + 1 + len(encoding.encode_ordinary(text))
    assert count.tokens >= exact
    if count.exact:
        assert count.tokens == exact


def test_huge_one_character_bodies_cost_a_small_multiple_of_the_body() -> None:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    server = subprocess.Popen([sys.executable, "-c", _SERVER, str(port)], env=env)
    try:
        wait_for_port(port)
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        headers = {"Authorization": "Bearer sk-poor"}
        with httpx.Client(timeout=120) as client:
            # Warm up: the encodings are loaded, the first request is served.
            small = client.post(
                url, json={"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "n": 8}, headers=headers
            )
            assert small.status_code == 402
        before = _peak_rss_mib(server.pid)
        statuses: list[int] = []
        bodies = [_body(char) for char in "aé"]

        def send(body: bytes) -> None:
            with httpx.Client(timeout=300) as client:
                response = client.post(url, content=body, headers={**headers, "content-type": "application/json"})
                statuses.append(response.status_code)
                if response.status_code == 402:
                    assert response.json()["error"]["context"]["input_tokens_exact"] is False

        # Four at once: two of each character, 15 MiB and 30 MiB of UTF-8.
        threads = [threading.Thread(target=send, args=(bodies[i % 2],)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=600)
        after = _peak_rss_mib(server.pid)
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert statuses == [402] * len(threads)
    sent = sum(len(bodies[i % 2]) for i in range(4)) / (1024 * 1024)
    growth = after - before
    # Measured here: about 2.7x the bodies in flight (the body as read, its
    # parse, its text); quadratic encoding of one 15 MiB piece alone took
    # hundreds of MiB.
    assert growth < 4 * sent, f"peak RSS grew by {growth:.0f} MiB for {sent:.0f} MiB of bodies"
