"""How long the usage tap takes to find the usage of answers past its buffers.

    python -m benchmarks.usage_scan

A JSON answer past 8 MiB is scanned for its top-level ``usage`` as it passes (in
a worker thread, in the guard); the figures are the tap's own time for the
whole body in 64 KiB chunks: long text (strings, with escapes), dense
structure (logprobs), and the same text gzip-compressed.
"""

from __future__ import annotations

import gzip
import random
import time

import orjson

from credit_guard.usage import UsageTap

USAGE = {"prompt_tokens": 1, "completion_tokens": 2}


def bodies() -> dict[str, tuple[bytes, bytes | None]]:
    # Words drawn at random: text compresses as prose does, not as one word repeated.
    words = random.Random(7).choices(["the", "quick", '"brown"', "fox", "jumps\n", "over", "lazy", "dog"], k=4_000_000)
    text = orjson.dumps({"choices": [{"message": {"content": " ".join(words)}}], "usage": USAGE})
    token = {"token": "ab", "logprob": -0.1, "bytes": [97, 98], "top_logprobs": [{"token": "x", "logprob": -1.0}]}
    dense = orjson.dumps({"choices": [{"logprobs": {"content": [token] * 200_000}}], "usage": USAGE})
    return {"text": (text, None), "logprobs": (dense, None), "text-gzip": (gzip.compress(text), b"gzip")}


def main() -> None:
    for name, (body, encoding) in bodies().items():
        tap = UsageTap("chat")
        headers = [(b"content-type", b"application/json")]
        if encoding:
            headers.append((b"content-encoding", encoding))
        tap.start({"status": 200, "headers": headers})
        started = time.perf_counter()
        for at in range(0, len(body), 65536):
            tap.body(body[at : at + 65536], True)
        tap.body(b"", False)
        seconds = time.perf_counter() - started
        assert tap.usage is not None and tap.unreadable is None, (name, tap.unreadable)
        size = len(body) / 1e6
        print(f"{name:10} {size:7.1f} MB on the wire  {seconds:6.2f} s  {size / seconds:6.1f} MB/s")


if __name__ == "__main__":
    main()
