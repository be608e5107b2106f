"""The request target is what gets priced and what gets forwarded, and nothing
anonymous reaches a paid upstream.

Real HTTP throughout: the guard as ``credit-guard serve --upstream`` builds it
(``cli.build_app``) served by uvicorn on 127.0.0.1, in front of a recording
upstream that notes every request it receives and whether the caller's
worst case was held at that moment, with a second "attacker" server on another
port that must never hear from the gateway.  Hostile targets are written by
hand on a raw socket, since an HTTP client would normalise them away.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest

from credit_guard import CreditGuard, MemoryStore, PriceTable
from credit_guard.cli import build_app
from credit_guard.proxy import create_proxy, gateway_policy
from credit_guard.stores import SQLiteStore

from .servers import serve

KEY = "sk-caller-targets-0123456789"
UPSTREAM_KEY = "sk-upstream-secret-9876543210"
ACCOUNT = "team"
GRANT = Decimal("5")
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 5}
EMBED = {"model": "text-embedding-3-small", "input": "hello"}
USAGE = {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}
PRICES = PriceTable.default()


@dataclass
class Call:
    method: str
    raw_path: bytes
    query: bytes
    headers: dict[bytes, bytes]
    body: bytes
    held: Decimal | None


@dataclass
class Recorder:
    """An upstream that records what it receives and answers a chat
    completion (or ``status``/``body``/``headers`` as set)."""

    db: Path | None = None
    calls: list[Call] = field(default_factory=list)
    status: int = 200
    body: bytes = orjson.dumps({"id": "x", "object": "chat.completion", "choices": [], "usage": USAGE})
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    _store: SQLiteStore | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        held = None
        if self.db is not None:
            if self._store is None:
                self._store = SQLiteStore(self.db)
            held = (await self._store.balance(ACCOUNT)).held
        with self._lock:
            self.calls.append(
                Call(scope["method"], scope["raw_path"], scope["query_string"], dict(scope["headers"]), body, held)
            )
        headers = [(b"content-type", b"application/json"), *self.headers]
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": self.body})


@dataclass
class Gateway:
    url: str
    port: int
    upstream: Recorder
    attacker: Recorder
    attacker_port: int
    db: Path

    def balance(self) -> Any:
        async def read() -> Any:
            store = SQLiteStore(self.db)
            try:
                return await store.balance(ACCOUNT)
            finally:
                await store.aclose()

        return anyio.run(read)

    def settled(self) -> Any:
        """The balance once every hold has ended (a hold ends just after the
        response is sent)."""
        for _ in range(400):
            figures = self.balance()
            if figures.held == 0:
                return figures
            threading.Event().wait(0.01)
        return self.balance()


def prepare(db: Path) -> None:
    async def run() -> None:
        store = SQLiteStore(db)
        try:
            await store.grant(ACCOUNT, GRANT)
            await store.add_key(KEY, ACCOUNT)
        finally:
            await store.aclose()

    anyio.run(run)


@contextmanager
def gateway(
    tmp_path: Path, *, base: str = "/v1", make: Any = None, http: str = "h11", **serve_options: Any
) -> Iterator[Gateway]:
    """``credit-guard serve --upstream`` (or ``make(upstream_url, db)``) in
    front of a recorder, with an attacker server listening beside it; the
    gateway's uvicorn parses requests with ``http`` (h11 or httptools)."""
    db = tmp_path / "credits.db"
    prepare(db)
    upstream, attacker = Recorder(db), Recorder()
    with serve(upstream) as up, serve(attacker) as evil:
        if make is None:
            app = build_app(
                upstream=up + base,
                demo=False,
                store_url=f"sqlite:///{db}",
                prices=None,
                upstream_key=UPSTREAM_KEY,
                **serve_options,
            )
        else:
            app = make(up + base, db)
        with serve(app, lifespan="on", http=http) as url:
            yield Gateway(url, port_of(url), upstream, attacker, port_of(evil), db)


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


@dataclass
class Answer:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key == name]

    def error(self) -> dict[str, Any]:
        error: dict[str, Any] = orjson.loads(self.body)["error"]
        assert error["status"] == self.status
        assert error["request_id"] == self.header("x-request-id")[0]
        return error


def raw(
    port: int, method: str, target: bytes, body: bytes = b"", *, key: str | None = KEY, extra: bytes = b""
) -> Answer:
    """One request written by hand: the target goes on the wire exactly as given."""
    head = method.encode() + b" " + target + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
    if key is not None:
        head += b"Authorization: Bearer " + key.encode() + b"\r\n"
    if body or method == "POST":
        head += b"Content-Type: application/json\r\nContent-Length: " + str(len(body)).encode() + b"\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head + b"\r\n" + body)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return parse(data, method)


def parse(data: bytes, method: str = "GET") -> Answer:
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = [(k.strip().lower(), v.strip()) for k, _, v in (line.partition(":") for line in lines[1:])]
    if ("transfer-encoding", "chunked") in headers:
        body = b""
        while rest:
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line, 16)
            if size == 0:
                break
            body, rest = body + rest[:size], rest[size + 2 :]
        rest = body
    return Answer(status, headers, rest)


def assert_refused(answer: Answer, gw: Gateway, status: int = 400) -> dict[str, Any]:
    assert answer.status == status, answer.body
    error = answer.error()
    assert gw.upstream.calls == [] and gw.attacker.calls == []
    return error


# -- 1. the target priced is the target forwarded ----------------------------------------


@pytest.mark.parametrize(
    ("target", "body"),
    [
        # Priced as an embedding by the guard; the upstream's URL parser drops the fragment.
        (b"/v1/chat/completions#/../../embeddings", EMBED),
        (b"/v1/chat/completions#", CHAT),
        (b"/v1/embeddings#x", EMBED),
        (b"/v1/chat/completions%23/../../embeddings", EMBED),
    ],
)
def test_a_fragment_in_the_target_is_refused(tmp_path: Path, target: bytes, body: dict[str, Any]) -> None:
    with gateway(tmp_path) as gw:
        answer = raw(gw.port, "POST", target, orjson.dumps(body))
        error = assert_refused(answer, gw)
    assert error["param"] == "path"
    assert gw.settled().spent == 0


def attacker_targets(port: int) -> list[bytes]:
    host = f"127.0.0.1:{port}".encode()
    return [
        b"@" + host + b"/v1/chat/completions",
        b"//" + host + b"/v1/chat/completions",
        b"http://" + host + b"/v1/chat/completions",
        b"https://" + host + b"/v1/chat/completions",
        b"%2F%2F" + host + b"/v1/chat/completions",
        b"/%2F" + host + b"/v1/chat/completions",
        b"%40" + host + b"/v1/chat/completions",
        b"\\\\" + host + b"\\v1\\chat\\completions",
        b"/\\" + host + b"/v1/chat/completions",
        b"/..//" + host + b"/v1/chat/completions",
        b"/../" + host + b"/v1/chat/completions",
        b":" + str(port).encode() + b"/v1/chat/completions",
        b"." + host + b"/v1/chat/completions",
        b"v1/chat/completions",
        b"*",
    ]


def parsers() -> list[Any]:
    """h11 keeps a target as sent; httptools cuts an absolute form and a
    fragment away.  Both must hold."""
    import importlib.util

    missing = importlib.util.find_spec("httptools") is None
    return ["h11", pytest.param("httptools", marks=pytest.mark.skipif(missing, reason="httptools is not installed"))]


@pytest.mark.parametrize("http", parsers())
def test_no_target_reaches_another_host_or_leaks_the_upstream_key(tmp_path: Path, http: str) -> None:
    for number, base in enumerate(("", "/v1")):
        (tmp_path / str(number)).mkdir()
        with gateway(tmp_path / str(number), base=base, http=http) as gw:
            served = 0
            for target in attacker_targets(gw.attacker_port):
                for method in ("POST", "GET", "OPTIONS"):
                    body = orjson.dumps(CHAT) if method == "POST" else b""
                    answer = raw(gw.port, method, target, body)
                    if answer.status == 200:
                        # Dot segments above the root resolve to a plain path on the
                        # upstream; httptools reads an absolute form as its path.
                        assert method == "POST", target
                        assert target.startswith(b"/..") or (http == "httptools" and target.startswith(b"http")), target
                        served += 1
                        continue
                    assert 400 <= answer.status < 500, (target, method, answer.status, answer.body)
                    if answer.header("content-type") == ["application/json"]:
                        answer.error()  # the guard's own envelope (uvicorn refuses some targets itself)
            figures = gw.settled()
        assert gw.attacker.calls == []
        assert len(gw.upstream.calls) == served
        inside = base.encode() + f"/127.0.0.1:{gw.attacker_port}/v1/chat/completions".encode()
        for call in gw.upstream.calls:
            assert call.raw_path in (inside, b"/v1/chat/completions"), call.raw_path
            assert call.held is not None and call.held > 0
            assert call.headers[b"authorization"] == b"Bearer " + UPSTREAM_KEY.encode()
        assert figures.spent == served * cost("gpt-4o-mini")


def test_the_bare_proxy_refuses_targets_that_would_leave_the_upstream(tmp_path: Path) -> None:
    upstream, attacker = Recorder(), Recorder()
    with serve(upstream) as up, serve(attacker) as evil:
        proxy = create_proxy(up, api_key=UPSTREAM_KEY)
        with serve(proxy, lifespan="on", http="h11") as url:
            for target in attacker_targets(port_of(evil)):
                answer = raw(port_of(url), "POST", target, orjson.dumps(CHAT))
                if not target.startswith(b"/.."):
                    assert 400 <= answer.status < 500, (target, answer.status, answer.body)
            ok = raw(port_of(url), "POST", b"/v1/./x/../chat//completions/?a=b", orjson.dumps(CHAT))
    assert attacker.calls == []
    assert ok.status == 200
    inside = f"/127.0.0.1:{port_of(evil)}/v1/chat/completions".encode()
    assert [(c.raw_path, c.query) for c in upstream.calls] == [
        (inside, b""),
        (inside, b""),
        (b"/v1/chat/completions", b"a=b"),
    ]


@pytest.mark.parametrize(
    ("target", "forwarded"),
    [
        (b"/v1/chat/completions", b"/v1/chat/completions"),
        (b"/chat/completions", b"/v1/chat/completions"),
        (b"/v1//chat/./completions/", b"/v1/chat/completions"),
        (b"/v1/x/../chat/%63ompletions", b"/v1/chat/completions"),
        (b"/v1/chat%2Fcompletions", b"/v1/chat/completions"),
        (b"/v1/chat/completions;a=b", b"/v1/chat/completions"),
        (b"/v1/embeddings/%2e%2e/chat/completions", b"/v1/chat/completions"),
        (b"/v1/embeddings/%252e%252e/chat/completions", b"/v1/chat/completions"),
    ],
)
def test_the_upstream_receives_the_path_that_was_priced(tmp_path: Path, target: bytes, forwarded: bytes) -> None:
    with gateway(tmp_path) as gw:
        answer = raw(gw.port, "POST", target, orjson.dumps(CHAT))
        assert answer.status == 200, answer.body
        figures = gw.settled()
    [call] = gw.upstream.calls
    assert call.raw_path == forwarded
    assert call.held is not None and call.held > 0
    mini = PRICES.resolve("gpt-4o-mini")
    assert figures.spent == mini.input_price * 5 + mini.output_price * 3


def test_options_star_is_not_forwarded_and_never_a_500(tmp_path: Path) -> None:
    with gateway(tmp_path) as gw:
        for method in ("OPTIONS", "POST", "GET"):
            answer = raw(gw.port, method, b"*", orjson.dumps(CHAT) if method == "POST" else b"")
            assert_refused(answer, gw)


# -- model in the path ----------------------------------------------------------------------


def azure(deployments: dict[str, str]) -> Any:
    def make(upstream: str, db: Path) -> CreditGuard:
        return CreditGuard(
            create_proxy(upstream, api_key=UPSTREAM_KEY),
            store=SQLiteStore(db),
            prices=PRICES,
            deployments=deployments,
            **gateway_policy(),
        )

    return make


def cost(model: str) -> Decimal:
    price = PRICES.resolve(model)
    return price.input_price * USAGE["prompt_tokens"] + price.output_price * USAGE["completion_tokens"]


@pytest.mark.parametrize(
    ("target", "body", "model"),
    [
        # The body names a cheap model; the deployment runs gpt-4o.
        (b"/openai/deployments/my-gpt4o/chat/completions?api-version=2024-06-01", CHAT, "gpt-4o"),
        (b"/openai/deployments/My-GPT4o/chat/completions", {k: v for k, v in CHAT.items() if k != "model"}, "gpt-4o"),
        (b"/openai/deployments/cheap/chat/completions", {**CHAT, "model": "gpt-4o"}, "gpt-4o-mini"),
        (b"/v1/engines/gpt-4o/completions", {"model": "gpt-4o-mini", "prompt": "Hi", "max_tokens": 5}, "gpt-4o"),
        (b"/engines/gpt-4o/chat/completions", CHAT, "gpt-4o"),
    ],
)
def test_routes_that_name_the_model_are_priced_with_it(
    tmp_path: Path, target: bytes, body: dict[str, Any], model: str
) -> None:
    with gateway(tmp_path, base="", make=azure({"my-gpt4o": "gpt-4o", "cheap": "gpt-4o-mini"})) as gw:
        answer = raw(gw.port, "POST", target, orjson.dumps(body))
        assert answer.status == 200, answer.body
        figures = gw.settled()
    [call] = gw.upstream.calls
    assert call.raw_path == target.partition(b"?")[0]
    assert orjson.loads(call.body) == body  # the body goes upstream as sent
    assert figures.spent == cost(model)


@pytest.mark.parametrize(
    "target",
    [
        b"/openai/deployments/unknown/chat/completions",
        b"/openai/deployments/unknown/embeddings",
        b"/openai/deployments/my-gpt4o/extra/chat/completions",
        b"/openai/deployments/chat/completions",
        b"/v1/engines/chat/completions",
        b"/v1/engines/no-such-model/completions",
    ],
)
def test_a_model_in_the_path_that_cannot_be_priced_is_refused(tmp_path: Path, target: bytes) -> None:
    with gateway(tmp_path, base="", make=azure({"my-gpt4o": "gpt-4o"})) as gw:
        answer = raw(gw.port, "POST", target, orjson.dumps(CHAT))
        assert_refused(answer, gw)
        assert gw.settled().spent == 0


def test_a_deployment_mapped_to_an_unpriced_model_fails_at_construction() -> None:
    with pytest.raises(ValueError, match="deployment 'x'"):
        CreditGuard(create_proxy("http://127.0.0.1:1"), store=MemoryStore(), deployments={"x": "no-such-model"})


# -- 2. nothing anonymous reaches a paid upstream ----------------------------------------


def test_bodiless_reads_are_forwarded_only_from_the_allow_list(tmp_path: Path) -> None:
    with gateway(tmp_path) as gw:
        for method in ("GET", "HEAD", "OPTIONS"):
            for target in (b"/v1/models", b"/v1/models/gpt-4o", b"/models"):
                answer = raw(gw.port, method, target)
                assert answer.status == 200, (method, target, answer.body)
        assert len(gw.upstream.calls) == 9
        assert all(call.headers[b"authorization"] == b"Bearer " + UPSTREAM_KEY.encode() for call in gw.upstream.calls)
        gw.upstream.calls.clear()
        for target in (
            b"/v1/chat/completions",
            b"/v1/chat/completions/chatcmpl-1/messages",
            b"/v1/files",
            b"/v1/files/file-1/content",
            b"/v1/batches",
            b"/v1/responses/resp_1",
            b"/v1/models/a/b",
            b"/v1/fine_tuning/jobs",
            b"/",
        ):
            answer = raw(gw.port, "GET", target)
            assert answer.error()["code"] == "ENDPOINT_NOT_PRICED", target
        assert raw(gw.port, "GET", b"/v1/models", key=None).status == 401
        assert gw.upstream.calls == []


def test_allow_read_opens_more_reads(tmp_path: Path) -> None:
    with gateway(tmp_path, allow_read=("/v1/files", "/v1/files/*")) as gw:
        assert raw(gw.port, "GET", b"/v1/files").status == 200
        assert raw(gw.port, "GET", b"/v1/files/file-1").status == 200
        assert raw(gw.port, "GET", b"/v1/files/file-1/content").error()["code"] == "ENDPOINT_NOT_PRICED"
        assert raw(gw.port, "POST", b"/v1/files", b"{}").error()["code"] == "ENDPOINT_NOT_PRICED"
    assert [call.raw_path for call in gw.upstream.calls] == [b"/v1/files", b"/v1/files/file-1"]


def test_serve_command_takes_allow_read(tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys

    from .servers import free_port, wait_for_port

    db = tmp_path / "credits.db"
    prepare(db)
    upstream = Recorder(db)
    port = free_port()
    with serve(upstream) as up:
        process = subprocess.Popen(
            [sys.executable, "-m", "credit_guard.cli", "serve", "--upstream", up + "/v1", "--port", str(port)]
            + ["--store", f"sqlite:///{db}", "--allow-read", "/v1/batches", "--log-level", "warning"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "CREDIT_GUARD_UPSTREAM_KEY": UPSTREAM_KEY},
        )
        try:
            wait_for_port(port)
            batches = raw(port, "GET", b"/v1/batches")
            files = raw(port, "GET", b"/v1/files")
            models = raw(port, "GET", b"/v1/models")
        finally:
            process.send_signal(signal.SIGINT)
            process.wait(timeout=20)
    assert batches.status == 200 and models.status == 200
    assert files.error()["code"] == "ENDPOINT_NOT_PRICED"
    assert [call.raw_path for call in upstream.calls] == [b"/v1/batches", b"/v1/models"]


@pytest.mark.parametrize("name", ["openai_proxy", "litellm_proxy"])
# LiteLLM's own modules warn about their use of pydantic and friends at import.
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_the_proxy_examples_use_the_serve_policy(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util
    import sys

    import httpx

    from .test_examples import load

    if name == "litellm_proxy" and importlib.util.find_spec("litellm") is None:
        pytest.skip("litellm is not installed (pip install -e '.[litellm]')")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    monkeypatch.setenv("CREDIT_STORE", f"sqlite:///{tmp_path / 'proxy.db'}")
    example = load(name)
    app = example.app
    policy = gateway_policy()

    async def run() -> list[httpx.Response]:
        await app.store.grant(ACCOUNT, "1")
        await app.store.add_key(KEY, ACCOUNT)
        auth = {"Authorization": f"Bearer {KEY}"}
        transport = httpx.ASGITransport(app=app)
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://example.test") as http:
                return [
                    await http.get("/v1/models"),
                    await http.get("/v1/files", headers=auth),
                    await http.get("/v1/chat/completions", headers=auth),
                    await http.post("/v1/images/generations", json={"prompt": "x"}, headers=auth),
                ]
        finally:
            await app.store.aclose()

    try:
        answers = anyio.run(run)
    finally:
        sys.modules.pop(f"example_{name}", None)
    assert app.unpriced == policy["unpriced"]
    assert answers[0].status_code == 401
    for answer in answers[1:]:
        assert answer.json()["error"]["code"] == "ENDPOINT_NOT_PRICED"
    read = {"type": "http", "method": "GET", "path": "/v1/models/gpt-4o", "headers": []}
    assert app.router.readable(read)


# -- WebSockets ------------------------------------------------------------------------------


class SocketApp:
    """An app that accepts every WebSocket it sees, and records it."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.lifespan: list[str] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                self.lifespan.append(message["type"])
                await send({"type": message["type"] + ".complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        if scope["type"] == "websocket":
            self.seen.append(scope["path"])
            await receive()
            await send({"type": "websocket.accept"})
            await send({"type": "websocket.close", "code": 1000})
        elif scope["type"] == "http":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})


def handshake(port: int, path: bytes, key: str | None) -> Answer:
    extra = b"Upgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    head = b"GET " + path + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\n" + extra
    if key is not None:
        head += b"Authorization: Bearer " + key.encode() + b"\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head + b"\r\n")
        data = b""
        while b"\r\n\r\n" not in data or not data.startswith(b"HTTP/1.1 101"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
            if data.startswith(b"HTTP/1.1 101") and b"\r\n\r\n" in data:
                break
    return parse(data)


@pytest.mark.parametrize(
    ("policy", "open_paths", "key", "status"),
    [
        ("authenticate", (), None, 401),
        ("authenticate", (), "sk-wrong", 401),
        ("authenticate", (), KEY, 101),
        ("refuse", (), None, 401),
        ("refuse", (), KEY, 400),
        ("refuse", ("/v1/realtime",), KEY, 101),
        ("refuse", ("/v1/realtime",), None, 401),
        ("pass", (), None, 101),
    ],
)
def test_websockets_follow_the_unpriced_policy(
    policy: str, open_paths: tuple[str, ...], key: str | None, status: int
) -> None:
    app = SocketApp()
    guard = CreditGuard(
        app, store=MemoryStore({"acct": "1"}), accounts={KEY: "acct"}, unpriced=policy, open_paths=open_paths
    )
    with serve(guard, lifespan="on", ws="websockets-sansio") as url:
        answer = handshake(port_of(url), b"/v1/realtime?model=gpt-4o-realtime-preview", key)
    assert answer.status == status, answer.body
    if status == 101:
        assert app.seen == ["/v1/realtime"]
    else:
        assert app.seen == []
        assert answer.error()["status"] == status  # the contract's envelope, through websocket.http.response
    assert app.lifespan == ["lifespan.startup", "lifespan.shutdown"]


@pytest.mark.anyio
async def test_a_denied_websocket_is_closed_with_1008_where_the_server_cannot_answer_http() -> None:
    app = SocketApp()
    guard = CreditGuard(app, store=MemoryStore({"acct": "1"}), accounts={KEY: "acct"}, unpriced="authenticate")
    sent: list[dict[str, Any]] = []
    messages = iter([{"type": "websocket.connect"}])

    async def receive() -> dict[str, Any]:
        return next(messages)  # a second receive would raise: the guard must not wait for more

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "websocket", "path": "/v1/realtime", "raw_path": b"/v1/realtime", "headers": [], "extensions": {}}
    await guard(scope, receive, send)
    assert sent == [{"type": "websocket.close", "code": 1008}]
    assert app.seen == []


# -- 3. an upstream that is itself a gateway ---------------------------------------------


@pytest.mark.parametrize("status", [401, 402, 403])
def test_an_upstream_refusing_the_gateway_is_a_502_and_costs_nothing(tmp_path: Path, status: int) -> None:
    with gateway(tmp_path) as gw:
        gw.upstream.status = status
        gw.upstream.body = orjson.dumps(
            {"error": {"message": "Upstream account acct_ops: balance $12.34, needs $99.00", "code": "billing"}}
        )
        gw.upstream.headers = [(b"x-credits-remaining", b"12.34")]
        answer = raw(gw.port, "POST", b"/v1/chat/completions", orjson.dumps(CHAT))
        figures = gw.settled()
    assert answer.status == 502
    error = answer.error()
    assert error["code"] == "UPSTREAM_REJECTED"
    assert "not about your balance" in error["message"]
    assert b"12.34" not in answer.body and b"acct_ops" not in answer.body
    assert "12.34" not in answer.header("x-credits-remaining")
    assert len(gw.upstream.calls) == 1
    assert (figures.spent, figures.held, figures.available) == (0, 0, GRANT)


def test_the_upstream_credit_date_and_server_headers_are_not_passed_on(tmp_path: Path) -> None:
    with gateway(tmp_path) as gw:
        gw.upstream.headers = [
            (b"x-credits-remaining", b"999.99"),
            (b"x-credits-low", b"true"),
            (b"X-Credit-Guard-Adjusted", b"max_tokens=1"),
            (b"server", b"upstream-gateway/1.0"),
            (b"date", b"Thu, 01 Jan 1970 00:00:00 GMT"),
            (b"x-ratelimit-remaining-requests", b"42"),
        ]
        answer = raw(gw.port, "POST", b"/v1/chat/completions", orjson.dumps(CHAT))
        gw.settled()
    assert answer.status == 200
    [remaining] = answer.header("x-credits-remaining")
    assert remaining != "999.99" and Decimal(remaining) <= GRANT
    assert answer.header("x-credits-low") == []
    assert answer.header("x-credit-guard-adjusted") == []
    assert "upstream-gateway/1.0" not in answer.header("server")
    assert "Thu, 01 Jan 1970 00:00:00 GMT" not in answer.header("date")
    assert len(answer.header("date")) == 1 and len(answer.header("server")) <= 1
    assert answer.header("x-ratelimit-remaining-requests") == ["42"]


# -- 4. generated targets ----------------------------------------------------------------------


def target_strategy(attacker_port: int) -> Any:
    from hypothesis import strategies as st

    pieces = st.sampled_from(
        [
            b"/",
            b"//",
            b"v1",
            b"V1",
            b"chat",
            b"completions",
            b"embeddings",
            b"models",
            b"files",
            b"..",
            b".",
            b"%2e%2e",
            b"%2E",
            b"%2F",
            b"%252F",
            b"%5C",
            b"\\",
            b"#",
            b"%23",
            b"?",
            b"?x=1",
            b"@",
            b"127.0.0.1:" + str(attacker_port).encode(),
            b"http:",
            b"*",
            b";a=b",
            b"deployments",
            b"engines",
            b"gpt-4o",
            b"%00",
            b"%",
            b":",
            b"%40",
        ]
    )
    free = st.lists(pieces, min_size=1, max_size=10).map(b"".join)
    attacker = b"127.0.0.1:" + str(attacker_port).encode()
    segment = st.sampled_from(
        [b"v1", b"V1", b"chat", b"completions", b"embeddings", b"..", b".", b"", b"%2e%2e", b"%2E", b"x", b"%2F"]
        + [b"%252e%252e", attacker, b"@" + attacker, b"deployments", b"engines", b"gpt-4o", b"c%68at", b";p=1"]
    )
    # Mostly plain paths, so that many reach the upstream and the checks below bite.
    prefix = st.sampled_from(
        [b"/"] * 6 + [b"//", b"", b"@", b"http://" + attacker + b"/", b"/../", b"\\", b"*", b"%2F"]
    )
    suffix = st.sampled_from(
        [b"/chat/completions"] * 4
        + [b"/v1/chat/completions", b"/chat/completions?x=1", b"", b"#/../../embeddings", b"#", b"/", b"?#"]
    )
    built = st.tuples(prefix, st.lists(segment, max_size=6), suffix).map(lambda t: t[0] + b"/".join(t[1]) + t[2])
    return st.one_of(
        built,
        built,
        built,
        free,
        free.map(lambda tail: b"/v1/chat/completions" + tail),
        free.map(lambda head: head + b"/v1/chat/completions"),
    )


def canonical(path: str) -> bool:
    """A path with nothing left for an upstream to resolve: no empty or dot
    segments, no fragment, no backslash."""
    segments = path.split("/")
    return (
        path.startswith("/")
        and all(segment not in ("", ".", "..") for segment in segments[1:])
        and "#" not in path
        and "\\" not in path
    )


@pytest.mark.parametrize("http", parsers())
def test_generated_targets_reach_the_upstream_only_as_priced(tmp_path: Path, http: str) -> None:
    from urllib.parse import unquote

    from hypothesis import HealthCheck, example, given, settings
    from hypothesis import strategies as st

    with gateway(tmp_path, http=http) as gw:
        attacker = f"127.0.0.1:{gw.attacker_port}".encode()
        served: list[bytes] = []

        @settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(target=target_strategy(gw.attacker_port), method=st.sampled_from(["POST", "POST", "POST", "GET"]))
        @example(target=b"/v1/chat/completions", method="POST")
        @example(target=b"/v1/x/../chat/completions?x=1", method="POST")
        @example(target=b"@" + attacker + b"/v1/chat/completions", method="POST")
        @example(target=b"/v1/chat/completions#/../../embeddings", method="POST")
        @example(target=b"/v1/models", method="GET")
        def one(target: bytes, method: str) -> None:
            before = len(gw.upstream.calls)
            answer = raw(gw.port, method, target, orjson.dumps(CHAT) if method == "POST" else b"")
            assert answer.status < 500, (target, answer.status, answer.body)
            if answer.status >= 400 and answer.header("content-type") == ["application/json"]:
                answer.error()
            new = gw.upstream.calls[before:]
            assert len(new) <= 1
            for call in new:
                path = unquote(call.raw_path.decode("ascii"))
                assert canonical(path), (target, call.raw_path)
                if call.method == "POST":
                    # The exact path priced: a chat completion, with its worst case held.
                    assert path.lower().endswith("/chat/completions"), (target, call.raw_path)
                    assert call.held is not None and call.held > 0
                    assert answer.status == 200
                    served.append(target)
                else:
                    assert path.lower() in ("/v1/models", "/models") or path.lower().startswith("/v1/models/")
            assert gw.attacker.calls == []

        one()
        figures = gw.settled()
    assert figures.held == 0
    assert figures.available + figures.held + figures.spent == figures.granted == GRANT
    assert len(served) >= 2
    assert figures.spent == len(served) * cost("gpt-4o-mini")
