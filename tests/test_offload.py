"""Large bodies priced in worker processes (``offload.py``): the client sees
exactly what it sees without them, a worker that dies or hangs costs a 503 and
not the request's life, and no worker outlives the guard."""

from __future__ import annotations

import gzip
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import anyio
import httpx
import orjson
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from credit_guard import CreditGuard, MemoryStore, PriceTable, _mistral
from credit_guard.fake_llm import create_app
from credit_guard.offload import DEFAULT_OFFLOAD_BYTES, PricingPool

from .servers import free_port, serve, wait_for_port

pytestmark = pytest.mark.anyio

KEY = "sk-offload-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}
TABLE = PriceTable.default()
# Just over the threshold: every body below is priced by a worker process.
PAD = "gateway token " * (DEFAULT_OFFLOAD_BYTES // 14 + 1)
MODELS = [
    "gpt-4o-mini",
    "gpt-4o",
    "claude-3-5-haiku-20241022",
    "mistral-large-latest",
    "gemini-2.0-flash",
    "text-embedding-3-small",
    "gpt-3.5-turbo-instruct",
    "no-such-model",
]


@pytest.fixture(scope="module")
def pool() -> Iterator[PricingPool]:
    # The workers load Mistral's tokenizer when first needed; this process
    # loads it now, so both sides count Mistral exactly (where the extra is
    # installed) whatever ran before.
    _mistral.warm()
    shared = PricingPool(TABLE, processes=2)
    yield shared
    shared.close()


class Upstream:
    """Answers with usage or without it, and records the bodies that reach it."""

    def __init__(self, usage: bool) -> None:
        self.usage = usage
        self.bodies: list[tuple[bytes, list[tuple[bytes, bytes]]]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        chunks = await read_pieces(receive)
        if chunks is None:
            return
        headers = sorted((k, v) for k, v in scope["headers"] if k in (b"content-length", b"content-encoding"))
        self.bodies.append((b"".join(chunks), headers))
        await answer(send, self.usage)


async def read_pieces(receive: Any) -> list[bytes] | None:
    """The request body in the messages it came in, or ``None`` where the
    client left before its end."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return chunks


async def answer(send: Any, usage: bool) -> None:
    """A chat completion, with usage or without."""
    reply: dict[str, Any] = {
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "fine"}, "finish_reason": "stop"}]
    }
    if usage:
        reply["usage"] = {"prompt_tokens": 1000, "completion_tokens": 3}
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": orjson.dumps(reply)})


async def _exchange(
    body: bytes, route: str, *, offload: PricingPool | None, balance: str, usage: bool, auto_fit: bool, gz: bool
) -> tuple[Any, ...]:
    store = MemoryStore({"acct": balance})
    upstream = Upstream(usage)
    guard = CreditGuard(
        upstream,
        store=store,
        prices=TABLE,
        accounts={KEY: "acct"},
        auto_fit=auto_fit,
        max_body_bytes=32 * 1024 * 1024,
        offload_bytes=DEFAULT_OFFLOAD_BYTES if offload else None,
    )
    if offload is not None:
        guard.pricing = offload  # one pool for every example: workers start once
    headers = dict(AUTH)
    if gz:
        body = gzip.compress(body, compresslevel=1, mtime=0)  # the same bytes in both runs
        headers["Content-Encoding"] = "gzip"
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=guard), base_url="http://t") as client:
        response = await client.post(route, content=body, headers=headers)
    after = await store.balance("acct")
    assert after.available + after.held + after.spent == after.granted
    assert after.held == 0
    payload = response.json()
    if "error" in payload:
        payload["error"].pop("request_id", None)
    kept = ("x-credits-remaining", "x-credit-guard-adjusted", "retry-after", "content-type")
    return (
        response.status_code,
        payload,
        {name: response.headers.get(name) for name in kept},
        after,
        upstream.bodies,
    )


def _value(key: str) -> st.SearchStrategy[bytes]:
    """JSON text for one field: mostly sensible, sometimes wrong."""
    anything = st.one_of(
        st.one_of(st.none(), st.booleans(), st.text(max_size=8), st.floats(allow_nan=False)).map(orjson.dumps),
        st.integers(-(2**70), 2**70).map(lambda n: str(n).encode()),
    )
    specific: dict[str, st.SearchStrategy[Any]] = {
        "model": st.sampled_from(MODELS).map(orjson.dumps),
        "max_tokens": st.integers(-2, 200_000).map(lambda n: str(n).encode()),
        "max_completion_tokens": st.integers(0, 5000).map(lambda n: str(n).encode()),
        "max_output_tokens": st.integers(0, 5000).map(lambda n: str(n).encode()),
        "n": st.integers(-1, 200).map(lambda n: str(n).encode()),
        "stream": st.booleans().map(orjson.dumps),
        "stream_options": st.sampled_from([b"null", b"{}", b'{"include_usage":false}', b'{"include_usage":true}']),
        "service_tier": st.sampled_from([b'"auto"', b'"flex"', b'"priority"', b'"nonsense"', b"7"]),
        "messages": st.sampled_from([b"[]", b"{}", b'[{"role":"user","content":3}]', b'[{"role":"wizard"}]']),
        "tools": st.sampled_from([b"[]", b'[{"type":"function","function":{"name":"f","parameters":{}}}]', b"5"]),
    }
    return st.one_of(specific[key], anything) if key in specific else anything


# Each route with the prompt field, the models that serve it, and the fields it needs.
SHAPES = {
    "/v1/chat/completions": (
        "messages",
        ["gpt-4o-mini", "gpt-4o", "claude-3-5-haiku-20241022", "mistral-large-latest"],
    ),
    "/v1/completions": ("prompt", ["gpt-3.5-turbo-instruct"]),
    "/v1/embeddings": ("input", ["text-embedding-3-small"]),
    "/v1/responses": ("input", ["gpt-4o-mini", "gemini-2.0-flash"]),
    "/v1/messages": ("messages", ["claude-3-5-haiku-20241022"]),
}
EXTRA = [
    "model",
    "max_tokens",
    "max_completion_tokens",
    "max_output_tokens",
    "n",
    "stream",
    "stream_options",
    "service_tier",
    "tools",
    "messages",
    "temperature",
    "x_extra",
]


@st.composite
def big_bodies(draw: st.DrawFn) -> tuple[str, bytes]:
    """A route and a body of a little over 4 MiB: the padding as the prompt,
    a model that may or may not serve the route, sensible or wrong fields in
    any order (some repeated), and at times bytes that are not JSON at all."""
    route = draw(st.sampled_from(sorted(SHAPES)))
    prompt_key, models = SHAPES[route]
    pad = orjson.dumps(PAD)
    prompt = b'[{"role":"user","content":' + pad + b"}]" if prompt_key == "messages" else pad
    model = draw(st.one_of(st.sampled_from(models), st.sampled_from(models), st.sampled_from(MODELS)))
    fields = [b'"model":' + orjson.dumps(model), b'"' + prompt_key.encode() + b'":' + prompt]
    if route == "/v1/messages" or draw(st.booleans()):
        fields.append(b'"max_tokens":' + str(draw(st.integers(1, 40_000))).encode())
    if route == "/v1/chat/completions" and draw(st.booleans()):
        fields.append(b'"stream":true')
    fields += [
        b'"' + key.encode() + b'":' + draw(_value(key)) for key in draw(st.lists(st.sampled_from(EXTRA), max_size=3))
    ]
    body = b"{" + b",".join(draw(st.permutations(fields))) + b"}"
    mutation = draw(st.sampled_from(["none"] * 10 + ["garbage", "utf8", "truncate", "nan", "deep", "array", "space"]))
    if mutation == "garbage":
        body += b"}"
    elif mutation == "utf8":
        at = draw(st.integers(0, 40))
        body = body[:at] + b"\xff" + body[at:]
    elif mutation == "truncate":
        body = body[: -draw(st.integers(1, 30))]
    elif mutation == "nan":
        body = body[:-1] + b',"temperature":NaN}'
    elif mutation == "deep":
        body = body[:-1] + b',"metadata":' + b"[" * 1100 + b"]" * 1100 + b"}"
    elif mutation == "array":
        body = b"[" + body + b"]"
    elif mutation == "space":
        body = b" \n" + body
    return route, body


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
)
@given(
    request=big_bodies(),
    balance=st.sampled_from(["0.0001", "0.5", "3", "100000"]),
    usage=st.booleans(),
    auto_fit=st.booleans(),
    gz=st.sampled_from([False] * 4 + [True]),
)
async def test_an_offloaded_body_gets_exactly_the_answer_and_charge_of_one_priced_here(
    pool: PricingPool, request: tuple[str, bytes], balance: str, usage: bool, auto_fit: bool, gz: bool
) -> None:
    route, body = request
    assert len(body) >= DEFAULT_OFFLOAD_BYTES
    options: dict[str, Any] = {"balance": balance, "usage": usage, "auto_fit": auto_fit, "gz": gz}
    here = await _exchange(body, route, offload=None, **options)
    there = await _exchange(body, route, offload=pool, **options)
    event(f"status {here[0]}")
    assert there[0] == here[0]  # status
    assert there[1] == here[1]  # the whole answer: type, code, message, param, context
    assert there[2] == here[2]  # credits remaining, the auto-fit header
    assert there[3] == here[3]  # the charge, to the unit
    assert there[4] == here[4]  # the body (and its length) the app received


async def test_a_stream_is_asked_for_usage_with_the_same_bytes(pool: PricingPool) -> None:
    """The splice (the body untouched but for the field) and the rewrites (a
    compressed body, or one with stream_options) reach the app as without
    offloading."""
    base = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": PAD}], "stream": True}
    for extra, gz in (
        ({}, False),
        ({}, True),
        ({"stream_options": {"include_usage": False}}, False),
        ({"stream_options": None}, False),
    ):
        body = orjson.dumps({**base, **extra})
        options: dict[str, Any] = {"balance": "100000", "usage": True, "auto_fit": False, "gz": gz}
        here = await _exchange(body, "/v1/chat/completions", offload=None, **options)
        there = await _exchange(body, "/v1/chat/completions", offload=pool, **options)
        assert there[0] == 200 and there[4] == here[4]
        assert there[4][0][0] != body and b'"include_usage":true' in there[4][0][0]
        # The whole body went on, with exactly one stream_options.
        sent = orjson.loads(there[4][0][0])
        assert sent["messages"][0]["content"] == PAD and sent["stream_options"] == {"include_usage": True}


async def test_auto_fit_rewrites_an_offloaded_body_as_it_would_here(pool: PricingPool) -> None:
    body = orjson.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": PAD}], "max_tokens": 100_000})
    # The input (about 600k tokens) fits, the largest output does not.
    options: dict[str, Any] = {"balance": "1.55", "usage": False, "auto_fit": True, "gz": False}
    here = await _exchange(body, "/v1/chat/completions", offload=None, **options)
    there = await _exchange(body, "/v1/chat/completions", offload=pool, **options)
    assert here[2]["x-credit-guard-adjusted"] is not None
    assert there[:5] == here[:5]


def _guard(upstream: Any, store: MemoryStore, **options: Any) -> CreditGuard:
    return CreditGuard(upstream, store=store, prices=TABLE, accounts={KEY: "acct"}, **options)


def _big() -> bytes:
    return orjson.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": PAD}], "max_tokens": 5})


def _gone(pid: int) -> bool:
    """No such process, nor a zombie of one."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ")[1][0] == "Z"
    except FileNotFoundError:
        return True


async def test_a_worker_killed_mid_request_costs_a_503_and_is_replaced() -> None:
    store = MemoryStore({"acct": "100000"})
    upstream = Upstream(True)
    guard = _guard(upstream, store)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=guard), base_url="http://t", timeout=60) as client:
        assert (await client.post("/v1/chat/completions", content=_big(), headers=AUTH)).status_code == 200
        assert guard.pricing is not None
        (pid,) = guard.pricing.pids()
        os.kill(pid, signal.SIGSTOP)  # it takes the next body and never answers
        result: list[httpx.Response] = []

        async def send() -> None:
            result.append(await client.post("/v1/chat/completions", content=_big(), headers=AUTH))

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(send)
            await anyio.sleep(0.5)
            os.kill(pid, signal.SIGKILL)
        (response,) = result
        assert response.status_code == 503
        error = response.json()["error"]
        assert error["type"] == "pricing_unavailable" and error["code"] == "PRICING_UNAVAILABLE"
        assert response.headers["x-request-id"] == error["request_id"]
        assert len(upstream.bodies) == 1  # nothing forwarded unpriced
        # A new worker prices the next one.
        assert (await client.post("/v1/chat/completions", content=_big(), headers=AUTH)).status_code == 200
        assert guard.pricing.pids() != [pid] and _gone(pid)
    after = await store.balance("acct")
    assert after.held == 0 and after.available + after.spent == after.granted
    await guard.aclose()


async def test_a_worker_that_does_not_answer_in_time_costs_a_503() -> None:
    store = MemoryStore({"acct": "100000"})
    guard = _guard(Upstream(True), store)
    guard.pricing = PricingPool(TABLE, timeout=3.0)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=guard), base_url="http://t", timeout=60) as client:
        assert (await client.post("/v1/chat/completions", content=_big(), headers=AUTH)).status_code == 200
        (pid,) = guard.pricing.pids()
        os.kill(pid, signal.SIGSTOP)
        response = await client.post("/v1/chat/completions", content=_big(), headers=AUTH)
        assert response.status_code == 503 and response.json()["error"]["type"] == "pricing_unavailable"
        assert _gone(pid)  # killed and reaped, not left stopped
        assert (await client.post("/v1/chat/completions", content=_big(), headers=AUTH)).status_code == 200
    await guard.aclose()
    assert guard.pricing.pids() == []


async def test_a_worker_killed_while_idle_is_replaced_without_an_error() -> None:
    guard = _guard(Upstream(True), MemoryStore({"acct": "100000"}))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=guard), base_url="http://t", timeout=60) as client:
        assert (await client.post("/v1/chat/completions", content=_big(), headers=AUTH)).status_code == 200
        assert guard.pricing is not None
        (pid,) = guard.pricing.pids()
        os.kill(pid, signal.SIGKILL)
        await anyio.sleep(0.2)
        assert (await client.post("/v1/chat/completions", content=_big(), headers=AUTH)).status_code == 200
    await guard.aclose()


async def test_a_settlement_recount_the_worker_cannot_make_keeps_the_bound() -> None:
    """No usage in the response and the worker gone: the charge is the byte
    bound that was held for the input, never less."""
    store = MemoryStore({"acct": "100000"})
    guard = _guard(Upstream(False), store)
    first = guard.pricing
    assert first is not None

    async def app(scope: Any, receive: Any, send: Any) -> None:
        # The worker that priced the body dies, and its replacement cannot answer in time.
        for pid in first.pids():
            os.kill(pid, signal.SIGKILL)
        guard.pricing = PricingPool(TABLE, timeout=0.001)
        await Upstream(False)(scope, receive, send)

    guard.app = app
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=guard), base_url="http://t", timeout=60) as client:
        response = await client.post("/v1/chat/completions", content=_big(), headers=AUTH)
    assert response.status_code == 200
    price = TABLE.resolve("gpt-4o-mini")
    after = await store.balance("acct")
    assert after.held == 0
    # At least the input at one token per byte of the prompt.
    assert after.spent >= price.input_price * len(PAD)
    await guard.aclose()
    await first.aclose()


async def test_offloading_can_be_turned_off_and_is_validated() -> None:
    guard = _guard(Upstream(True), MemoryStore({"acct": "100000"}), offload_bytes=None)
    assert guard.pricing is None
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=guard), base_url="http://t", timeout=60) as client:
        assert (await client.post("/v1/chat/completions", content=_big(), headers=AUTH)).status_code == 200
    for bad in (0, -5, True):
        with pytest.raises(ValueError):
            _guard(Upstream(True), MemoryStore(), offload_bytes=bad)


def test_lifespan_shutdown_stops_the_workers() -> None:
    """Real uvicorn with lifespan on: after shutdown no worker is left, not
    even as a zombie."""
    guard = _guard(create_app(), MemoryStore({"acct": "100000"}))
    assert guard.pricing is not None
    with serve(guard, lifespan="on") as url:
        response = httpx.post(f"{url}/v1/chat/completions", content=_big(), headers=AUTH, timeout=60)
        assert response.status_code == 200
        pids = guard.pricing.pids()
        assert pids and not any(_gone(pid) for pid in pids)
    assert guard.pricing.pids() == []
    assert all(_gone(pid) for pid in pids)


def _descendants(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-eo", "pid=,ppid="], capture_output=True, text=True, check=True).stdout
    children: dict[int, list[int]] = {}
    for line in out.splitlines():
        child, parent = (int(x) for x in line.split())
        children.setdefault(parent, []).append(child)
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


@pytest.mark.slow
def test_serve_with_workers_prices_large_bodies_and_leaves_no_process(tmp_path: Any) -> None:
    """``credit-guard serve --demo --workers 2``: large bodies are priced by
    each uvicorn worker's pool, and stopping the server stops them all."""
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "credit_guard.cli",
            "serve",
            "--demo",
            "--demo-balance",
            "100",
            "--workers",
            "2",
            "--port",
            str(port),
            "--store",
            f"sqlite:///{tmp_path / 'credits.db'}",
            "--log-level",
            "warning",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        wait_for_port(port, 60)
        assert process.stdout is not None
        banner = ""
        deadline = time.monotonic() + 30
        while "sk-" not in banner and time.monotonic() < deadline:
            banner += process.stdout.readline()
        key = next(word for word in banner.split() if word.startswith("sk-"))
        body = orjson.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": PAD}], "max_tokens": 5})
        with httpx.Client(timeout=120) as client:
            for _ in range(4):
                response = client.post(
                    f"http://127.0.0.1:{port}/v1/chat/completions",
                    content=body,
                    headers={"Authorization": f"Bearer {key}"},
                )
                assert response.status_code == 200, response.text
            bad = client.post(
                f"http://127.0.0.1:{port}/v1/chat/completions",
                content=body[:-1] + b',"model":"gpt-4o"}',
                headers={"Authorization": f"Bearer {key}"},
            )
            assert bad.status_code == 400 and bad.json()["error"]["param"] == "model"
        tree = _descendants(process.pid)
        assert len(tree) >= 3  # the uvicorn workers and at least one pricing worker
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=60)
        if process.stdout is not None:
            process.stdout.close()
    time.sleep(0.5)
    assert all(_gone(pid) for pid in tree)
