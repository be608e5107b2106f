"""A small fake OpenAI-compatible model server, for the demo, tests and benchmarks.

It answers chat completions, completions, embeddings, Responses and Anthropic
messages in the providers' wire formats, JSON or streamed as
``text/event-stream`` (one token per event, ``[DONE]`` at the end, usage in the
final chunk when ``stream_options.include_usage`` asks for it, and
``"usage":null`` on every other chunk then, as OpenAI does).  The reply is a
fixed run of common words, each one token, cut at the request's output cap.
Usage is counted with credit_guard's own counter, so it is exact for models
whose encoding we ship.

``python -m credit_guard.fake_llm --port 9000`` runs it alone, as an upstream.

Per-request knobs, as headers (for tests): ``x-fake-tokens`` (reply length),
``x-fake-no-usage`` (report no usage), ``x-fake-status`` (answer that error
status), ``x-fake-delay-ms`` (pause between stream events), ``x-fake-extra-usage``
(report this many more output tokens than were sent, to test overruns).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import anyio
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

__all__ = ["create_app", "REPLY_WORDS"]

#: Words the fake model says, each a single token in cl100k_base and o200k_base.
REPLY_WORDS = (
    " the quick brown fox jumps over the lazy dog and then it runs back home to sleep in the warm sun"
).split(" ")[1:]

_DEFAULT_TOKENS = 24


def _reply(count: int) -> list[str]:
    words = [(" " if i else "") + REPLY_WORDS[i % len(REPLY_WORDS)] for i in range(count)]
    return words


def _sse(obj: Any) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def _event(name: str, obj: Any) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(obj) + b"\n\n"


class _Knobs:
    def __init__(self, request: Request, body: dict[str, Any], cap_field: str, default_tokens: int) -> None:
        headers = request.headers
        cap = body.get(cap_field) or body.get("max_tokens") or body.get("max_completion_tokens")
        wanted = int(headers.get("x-fake-tokens", default_tokens))
        self.tokens = min(wanted, cap) if isinstance(cap, int) and cap > 0 else wanted
        self.usage = headers.get("x-fake-no-usage") is None
        self.status = int(headers.get("x-fake-status", "200"))
        self.delay = int(headers.get("x-fake-delay-ms", "0")) / 1000
        self.extra = int(headers.get("x-fake-extra-usage", "0"))


def _prompt_tokens(kind: str, body: dict[str, Any]) -> int:
    from . import shapes, tokens
    from .prices import PriceTable

    try:
        ask = shapes.parse(kind, body)
        price = PriceTable.default().resolve(ask.model)
        return tokens.count_input(ask, price).tokens
    except Exception:
        # The fake still answers requests it cannot price; it reports a
        # byte-count figure for them.
        return len(orjson.dumps(body))


def _output_tokens(words: list[str]) -> int:
    from .tokens import get_encoding

    return len(get_encoding("o200k_base").encode_ordinary("".join(words))) if words else 0


async def _read(request: Request) -> dict[str, Any] | Response:
    try:
        body = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        return _error(400, "invalid JSON")
    if not isinstance(body, dict):
        return _error(400, "body must be an object")
    return body


def _error(status: int, message: str) -> Response:
    body = {"error": {"message": message, "type": "fake_upstream_error", "code": status}}
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


class _Turn:
    """What every generating endpoint starts with: the body, the knobs, the
    reply and the prompt's token count."""

    def __init__(self, body: dict[str, Any], knobs: _Knobs, words: list[str], prompt: int) -> None:
        self.body = body
        self.knobs = knobs
        self.words = words
        self.prompt = prompt
        self.output = _output_tokens(words) + knobs.extra


async def _begin(request: Request, kind: str, cap_field: str, default_tokens: int) -> _Turn | Response:
    body = await _read(request)
    if isinstance(body, Response):
        return body
    knobs = _Knobs(request, body, cap_field, default_tokens)
    if knobs.status != 200:
        return _error(knobs.status, "the fake upstream was told to fail")
    prompt = await anyio.to_thread.run_sync(_prompt_tokens, kind, body)
    return _Turn(body, knobs, _reply(knobs.tokens), prompt)


async def _pace(knobs: _Knobs) -> None:
    if knobs.delay:
        await anyio.sleep(knobs.delay)


def create_app(*, default_tokens: int = _DEFAULT_TOKENS, deterministic: bool = False) -> Starlette:
    """The fake model as an ASGI app.  ``deterministic`` fixes ids and timestamps,
    so two identical requests get byte-identical answers."""

    def new_id(prefix: str) -> str:
        return prefix + ("0" * 24 if deterministic else uuid.uuid4().hex[:24])

    def now() -> int:
        return 1_700_000_000 if deterministic else int(time.time())

    async def chat(request: Request) -> Response:
        turn = await _begin(request, "chat", "max_completion_tokens", default_tokens)
        if isinstance(turn, Response):
            return turn
        body, knobs, words, prompt = turn.body, turn.knobs, turn.words, turn.prompt
        model = str(body.get("model", "fake"))
        n: int = body["n"] if isinstance(body.get("n"), int) else 1
        completion = _output_tokens(words) * n + knobs.extra
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }
        ident = new_id("chatcmpl-")
        created = now()
        if not body.get("stream"):
            reply = {
                "id": ident,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [
                    {
                        "index": i,
                        "message": {"role": "assistant", "content": "".join(words), "refusal": None},
                        "logprobs": None,
                        "finish_reason": "length" if knobs.tokens else "stop",
                    }
                    for i in range(n)
                ],
            }
            if knobs.usage:
                reply["usage"] = usage
            return Response(orjson.dumps(reply), media_type="application/json")
        with_usage = bool((body.get("stream_options") or {}).get("include_usage")) and knobs.usage

        def chunk(choices: list[Any]) -> dict[str, Any]:
            data: dict[str, Any] = {
                "id": ident,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "system_fingerprint": "fp_fake",
                "choices": choices,
            }
            if with_usage:
                data["usage"] = None
            return data

        async def events() -> AsyncIterator[bytes]:
            for i in range(n):
                yield _sse(chunk([{"index": i, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]))
            for word in words:
                await _pace(knobs)
                for i in range(n):
                    yield _sse(chunk([{"index": i, "delta": {"content": word}, "finish_reason": None}]))
            for i in range(n):
                yield _sse(chunk([{"index": i, "delta": {}, "finish_reason": "length"}]))
            if with_usage:
                final = chunk([])
                final["usage"] = usage
                yield _sse(final)
            yield b"data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    async def completions(request: Request) -> Response:
        turn = await _begin(request, "completion", "max_tokens", default_tokens)
        if isinstance(turn, Response):
            return turn
        body, knobs, words, prompt = turn.body, turn.knobs, turn.words, turn.prompt
        completion = turn.output
        reply: dict[str, Any] = {
            "id": new_id("cmpl-"),
            "object": "text_completion",
            "created": now(),
            "model": body.get("model"),
            "choices": [{"index": 0, "text": "".join(words), "logprobs": None, "finish_reason": "length"}],
        }
        if knobs.usage:
            reply["usage"] = {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            }
        return Response(orjson.dumps(reply), media_type="application/json")

    async def embeddings(request: Request) -> Response:
        body = await _read(request)
        if isinstance(body, Response):
            return body
        inputs = body.get("input")
        count = len(inputs) if isinstance(inputs, list) and inputs and not isinstance(inputs[0], int) else 1
        prompt = await anyio.to_thread.run_sync(_prompt_tokens, "embedding", body)
        reply = {
            "object": "list",
            "data": [{"object": "embedding", "index": i, "embedding": [0.0, 0.5, -0.5]} for i in range(count)],
            "model": body.get("model"),
            "usage": {"prompt_tokens": prompt, "total_tokens": prompt},
        }
        return Response(orjson.dumps(reply), media_type="application/json")

    async def responses(request: Request) -> Response:
        turn = await _begin(request, "responses", "max_output_tokens", default_tokens)
        if isinstance(turn, Response):
            return turn
        body, knobs, words, prompt = turn.body, turn.knobs, turn.words, turn.prompt
        output = turn.output
        ident = new_id("resp_")
        text = "".join(words)
        response: dict[str, Any] = {
            "id": ident,
            "object": "response",
            "created_at": now(),
            "status": "completed",
            "model": body.get("model"),
            "output": [
                {
                    "type": "message",
                    "id": "msg_" + ident[5:],
                    "status": "completed",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": text, "annotations": []}],
                }
            ],
            "usage": {
                "input_tokens": prompt,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": output,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": prompt + output,
            }
            if knobs.usage
            else None,
        }
        if not body.get("stream"):
            return Response(orjson.dumps(response), media_type="application/json")

        async def events() -> AsyncIterator[bytes]:
            started = dict(response, status="in_progress", output=[], usage=None)
            yield _event("response.created", {"type": "response.created", "response": started})
            for word in words:
                await _pace(knobs)
                yield _event(
                    "response.output_text.delta",
                    {
                        "type": "response.output_text.delta",
                        "output_index": 0,
                        "content_index": 0,
                        "delta": word,
                    },
                )
            yield _event("response.completed", {"type": "response.completed", "response": response})

        return StreamingResponse(events(), media_type="text/event-stream")

    async def messages(request: Request) -> Response:
        turn = await _begin(request, "anthropic", "max_tokens", default_tokens)
        if isinstance(turn, Response):
            return turn
        body, knobs, words, prompt = turn.body, turn.knobs, turn.words, turn.prompt
        output = turn.output
        ident = new_id("msg_")
        message = {
            "id": ident,
            "type": "message",
            "role": "assistant",
            "model": body.get("model"),
            "content": [{"type": "text", "text": "".join(words)}],
            "stop_reason": "max_tokens",
            "stop_sequence": None,
            "usage": {"input_tokens": prompt, "output_tokens": output},
        }
        if not body.get("stream"):
            if not knobs.usage:
                message.pop("usage")
            return Response(orjson.dumps(message), media_type="application/json")

        async def events() -> AsyncIterator[bytes]:
            start = dict(message, content=[], stop_reason=None, usage={"input_tokens": prompt, "output_tokens": 1})
            if not knobs.usage:
                start.pop("usage")
            yield _event("message_start", {"type": "message_start", "message": start})
            yield _event(
                "content_block_start",
                {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
            )
            for word in words:
                await _pace(knobs)
                yield _event(
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": 0,
                        "delta": {"type": "text_delta", "text": word},
                    },
                )
            yield _event("content_block_stop", {"type": "content_block_stop", "index": 0})
            delta: dict[str, Any] = {
                "type": "message_delta",
                "delta": {"stop_reason": "max_tokens", "stop_sequence": None},
            }
            if knobs.usage:
                delta["usage"] = {"output_tokens": output}
            yield _event("message_delta", delta)
            yield _event("message_stop", {"type": "message_stop"})

        return StreamingResponse(events(), media_type="text/event-stream")

    async def models(request: Request) -> Response:
        from .prices import PriceTable

        data = [
            {"id": p.name, "object": "model", "owned_by": p.provider or "fake"} for p in PriceTable.default().models()
        ]
        return Response(orjson.dumps({"object": "list", "data": data}), media_type="application/json")

    routes = [
        Route("/v1/chat/completions", chat, methods=["POST"]),
        Route("/v1/completions", completions, methods=["POST"]),
        Route("/v1/embeddings", embeddings, methods=["POST"]),
        Route("/v1/responses", responses, methods=["POST"]),
        Route("/v1/messages", messages, methods=["POST"]),
        Route("/v1/models", models, methods=["GET"]),
    ]
    return Starlette(routes=routes)


def main(argv: list[str] | None = None) -> None:
    """``python -m credit_guard.fake_llm [--port 9000]``: the fake model alone,
    unguarded, as an upstream to put a guard in front of."""
    import argparse

    import uvicorn

    parser = argparse.ArgumentParser(description="A fake OpenAI-compatible model (no keys, no network).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    args = parser.parse_args(argv)
    print(f"fake OpenAI-compatible model on http://{args.host}:{args.port}/v1 (any key, or none)", flush=True)
    uvicorn.run(create_app(), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":  # pragma: no cover
    main()
