"""The guard end to end over httpx's ASGI transport: the 402, settlement from
usage, byte-identical replay, and every error status of the contract."""

from __future__ import annotations

import gzip
from decimal import Decimal
from typing import Any

import httpx
import orjson
import pytest

from credit_guard import CreditGuard, MemoryStore, PriceTable
from credit_guard.fake_llm import create_app
from credit_guard.stores.base import Hold

pytestmark = pytest.mark.anyio

KEY = "sk-test-1"
AUTH = {"Authorization": f"Bearer {KEY}"}
PRICES = PriceTable.from_dict(
    {
        "format": "credit_guard/prices@1",
        "currency": "USD",
        "as_of": "2026-11-01",
        "source": "test",
        "models": {
            "gpt-4o": {
                "kind": "chat",
                "provider": "openai",
                "input": "2.50",
                "output": "10.00",
                "max_output_tokens": 16384,
                "encoding": "o200k_base",
            },
            "gpt-4o-mini": {
                "kind": "chat",
                "provider": "openai",
                "input": "0.15",
                "output": "0.60",
                "max_output_tokens": 16384,
                "encoding": "o200k_base",
            },
        },
    }
)


def messages(words: int = 10) -> list[dict[str, str]]:
    return [{"role": "user", "content": " ".join(["hello"] * words)}]


class Recorder:
    """An ASGI app that records what reached it and answers with usage."""

    def __init__(self, usage: dict[str, int] | None = None, status: int = 200) -> None:
        self.calls: list[dict[str, Any]] = []
        self.usage = usage if usage is not None else {"prompt_tokens": 10, "completion_tokens": 20}
        self.status = status

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.calls.append({"path": scope["path"], "body": body, "headers": scope["headers"]})
        reply: dict[str, Any] = {"choices": [{"message": {"content": "ok"}}]}
        if self.usage:
            reply["usage"] = self.usage
        payload = orjson.dumps(reply)
        await send(
            {
                "type": "http.response.start",
                "status": self.status,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": payload})


def guard(app: Any, balance: str = "1.00", **options: Any) -> tuple[CreditGuard, MemoryStore]:
    store = MemoryStore({"acct_1": balance})
    return CreditGuard(app, prices=PRICES, store=store, accounts={KEY: "acct_1"}, **options), store


def client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://guard.test")


async def test_402_has_every_field_and_the_app_never_runs() -> None:
    inner = Recorder()
    app, store = guard(inner, "0.02", billing_url="https://example.com/billing")
    async with client(app) as http:
        response = await http.post(
            "/v1/chat/completions",
            json={"model": "gpt-4o", "messages": messages(), "max_tokens": 4096},
            headers={**AUTH, "X-Request-ID": "req_abc"},
        )
    assert response.status_code == 402
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-request-id"] == "req_abc"
    error = response.json()["error"]
    assert inner.calls == []
    assert error["type"] == "insufficient_credits"
    assert error["code"] == "INSUFFICIENT_CREDITS"
    assert error["status"] == 402
    assert error["param"] == "max_tokens"
    assert error["request_id"] == "req_abc"
    context = error["context"]
    tokens = context["input_tokens"]
    input_cost = Decimal("0.0000025") * tokens
    required = input_cost + Decimal("0.04096")
    assert Decimal(str(context["required_credits"])) == required
    assert Decimal(str(context["current_credits"])) == Decimal("0.02")
    assert Decimal(str(context["credit_deficit"])) == required - Decimal("0.02")
    assert context["affordable_max_tokens"] == int((Decimal("0.02") - input_cost) / Decimal("0.00001"))
    assert context["requested_model"] == "gpt-4o"
    assert context["requested_max_tokens"] == 4096
    assert context["check_type"] == "reservation"
    assert context["reason"] == "insufficient_balance"
    assert context["input_tokens_exact"] is True
    assert error["suggestions"][-1] == "Visit https://example.com/billing to add credits"
    assert any(s.startswith("Use a less expensive model, such as gpt-4o-mini") for s in error["suggestions"])
    balance = await store.balance("acct_1")
    assert (balance.available, balance.held) == (Decimal("0.02"), Decimal(0))


async def test_retry_with_affordable_max_tokens_passes_and_settles_exactly() -> None:
    inner = Recorder(usage={"prompt_tokens": 13, "completion_tokens": 1000})
    app, store = guard(inner, "0.02")
    body = {"model": "gpt-4o", "messages": messages(), "max_tokens": 4096}
    async with client(app) as http:
        refused = await http.post("/v1/chat/completions", json=body, headers=AUTH)
        fits = refused.json()["error"]["context"]["affordable_max_tokens"]
        one_more = await http.post("/v1/chat/completions", json={**body, "max_tokens": fits + 1}, headers=AUTH)
        retried = await http.post("/v1/chat/completions", json={**body, "max_tokens": fits}, headers=AUTH)
    # The 402's figure is exactly the edge: one token more is still refused.
    assert one_more.status_code == 402
    assert retried.status_code == 200
    assert len(inner.calls) == 1
    charged = Decimal("0.0000025") * 13 + Decimal("0.00001") * 1000
    balance = await store.balance("acct_1")
    assert balance.available == Decimal("0.02") - charged
    assert balance.held == 0
    assert balance.spent == charged


async def test_body_reaches_the_app_byte_for_byte() -> None:
    inner = Recorder()
    app, _ = guard(inner)
    raw = (
        b'{ "model" : "gpt-4o",\n "messages":[{"role":"user","content":"caf\\u00e9 \xf0\x9f\x98\x80"}],"max_tokens":5 }'  # noqa: E501
    )
    async with client(app) as http:
        response = await http.post(
            "/v1/chat/completions", content=raw, headers={**AUTH, "content-type": "application/json"}
        )
    assert response.status_code == 200
    assert inner.calls[0]["body"] == raw


async def test_gzip_body_is_priced_decoded_and_replayed_as_sent() -> None:
    inner = Recorder()
    app, _ = guard(inner)
    raw = gzip.compress(orjson.dumps({"model": "gpt-4o", "messages": messages(), "max_tokens": 5}))
    async with client(app) as http:
        response = await http.post("/v1/chat/completions", content=raw, headers={**AUTH, "content-encoding": "gzip"})
    assert response.status_code == 200
    assert inner.calls[0]["body"] == raw


async def test_settles_from_the_fake_models_usage_exactly() -> None:
    app, store = guard(create_app(default_tokens=7))
    async with client(app) as http:
        response = await http.post(
            "/v1/chat/completions",
            json={"model": "gpt-4o-mini", "messages": messages(), "max_tokens": 100},
            headers=AUTH,
        )
    assert response.status_code == 200
    usage = response.json()["usage"]
    assert usage["completion_tokens"] == 7
    charged = Decimal("0.00000015") * usage["prompt_tokens"] + Decimal("0.0000006") * 7
    balance = await store.balance("acct_1")
    assert (balance.spent, balance.held) == (charged, Decimal(0))
    assert Decimal(response.headers["x-credits-remaining"]) < Decimal("1.00")


async def test_no_usage_in_the_response_charges_input_and_counted_output() -> None:
    inner = Recorder(usage={})
    app, store = guard(inner)
    async with client(app) as http:
        response = await http.post(
            "/v1/chat/completions",
            json={"model": "gpt-4o", "messages": messages(), "max_tokens": 50},
            headers=AUTH,
        )
        quote = await http.post(  # the same request refused, to read its input count
            "/v1/chat/completions",
            json={"model": "gpt-4o", "messages": messages(), "max_tokens": 16384, "n": 128},
            headers=AUTH,
        )
    assert response.status_code == 200
    input_tokens = quote.json()["error"]["context"]["input_tokens"]
    balance = await store.balance("acct_1")
    # "ok" is one token.
    assert balance.spent == Decimal("0.0000025") * input_tokens + Decimal("0.00001")
    assert balance.held == 0


async def test_upstream_error_releases_the_hold() -> None:
    inner = Recorder(usage={}, status=500)
    app, store = guard(inner)
    async with client(app) as http:
        response = await http.post(
            "/v1/chat/completions",
            json={"model": "gpt-4o", "messages": messages(), "max_tokens": 50},
            headers=AUTH,
        )
    assert response.status_code == 500
    balance = await store.balance("acct_1")
    assert (balance.available, balance.held, balance.spent) == (Decimal("1.00"), Decimal(0), Decimal(0))


async def test_app_exception_releases_and_reraises() -> None:
    async def broken(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("boom")

    app, store = guard(broken)
    async with client(app) as http:
        with pytest.raises(RuntimeError, match="boom"):
            await http.post(
                "/v1/chat/completions",
                json={"model": "gpt-4o", "messages": messages(), "max_tokens": 50},
                headers=AUTH,
            )
    balance = await store.balance("acct_1")
    assert (balance.available, balance.held, balance.spent) == (Decimal("1.00"), Decimal(0), Decimal(0))


async def test_app_exception_charges_input_under_that_policy() -> None:
    async def broken(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("boom")

    app, store = guard(broken, on_app_error="charge_input")
    async with client(app) as http:
        with pytest.raises(RuntimeError):
            await http.post(
                "/v1/chat/completions",
                json={"model": "gpt-4o", "messages": messages(), "max_tokens": 50},
                headers=AUTH,
            )
    balance = await store.balance("acct_1")
    assert balance.held == 0
    assert balance.spent > 0
    assert balance.spent < Decimal("0.0001")  # the input only: no output was priced


@pytest.mark.parametrize(
    ("body", "status", "error_type", "param"),
    [
        (b"not json", 400, "invalid_request_error", "body"),
        (b"", 400, "invalid_request_error", "body"),
        (b"[1, 2]", 400, "invalid_request_error", None),
        (b'{"model": "gpt-4o", "messages": "hi"}', 400, "invalid_request_error", "messages"),
        (b'{"model": "gpt-4o", "messages": [], "max_tokens": 5}', 400, "invalid_request_error", "messages"),
        (
            b'{"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}], "max_tokens": -1}',
            400,
            "invalid_request_error",
            "max_tokens",
        ),
        (
            b'{"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}], "n": 0}',
            400,
            "invalid_request_error",
            "n",
        ),
        (
            b'{"model": "no-such-model", "messages": [{"role": "user", "content": "x"}]}',
            400,
            "model_not_priced",
            "model",
        ),
    ],
)
async def test_bad_bodies_get_a_contract_error_and_never_reach_the_app(
    body: bytes, status: int, error_type: str, param: str | None
) -> None:
    inner = Recorder()
    app, store = guard(inner)
    async with client(app) as http:
        response = await http.post("/v1/chat/completions", content=body, headers=AUTH)
    assert response.status_code == status
    error = response.json()["error"]
    assert error["type"] == error_type
    assert error["status"] == status
    if param is not None:
        assert error["param"] == param
    assert error["request_id"] == response.headers["x-request-id"]
    assert inner.calls == []
    assert (await store.balance("acct_1")).held == 0


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer sk-wrong"}, {"Authorization": "Basic abc"}, {"x-api-key": "nope"}],
)
async def test_401_without_a_valid_key(headers: dict[str, str]) -> None:
    inner = Recorder()
    app, _ = guard(inner)
    async with client(app) as http:
        response = await http.post(
            "/v1/chat/completions", json={"model": "gpt-4o", "messages": messages()}, headers=headers
        )
    assert response.status_code == 401
    error = response.json()["error"]
    assert error["type"] == "authentication_error"
    assert "sk-wrong" not in response.text
    assert inner.calls == []


async def test_x_api_key_is_accepted() -> None:
    inner = Recorder()
    app, _ = guard(inner)
    async with client(app) as http:
        response = await http.post(
            "/v1/chat/completions",
            json={"model": "gpt-4o", "messages": messages(), "max_tokens": 5},
            headers={"x-api-key": KEY},
        )
    assert response.status_code == 200


async def test_413_over_the_limit() -> None:
    inner = Recorder()
    app, _ = guard(inner, max_body_bytes=1000)
    async with client(app) as http:
        response = await http.post(
            "/v1/chat/completions",
            json={"model": "gpt-4o", "messages": messages(1000), "max_tokens": 5},
            headers=AUTH,
        )
    assert response.status_code == 413
    assert response.json()["error"]["type"] == "request_too_large"
    assert inner.calls == []


async def test_unpriced_routes_and_methods_pass_through_untouched() -> None:
    inner = Recorder()
    app, store = guard(inner, "0")
    async with client(app) as http:
        other = await http.post("/v1/other", content=b"anything")
        get = await http.get("/v1/chat/completions")
    assert other.status_code == get.status_code == 200
    assert [c["path"] for c in inner.calls] == ["/v1/other", "/v1/chat/completions"]
    assert (await store.balance("acct_1")).spent == 0


async def test_async_callable_accounts() -> None:
    inner = Recorder()
    store = MemoryStore({"team": "1"})

    async def lookup(key: str) -> str | None:
        return "team" if key == "sk-team" else None

    app = CreditGuard(inner, prices=PRICES, store=store, accounts=lookup)
    async with client(app) as http:
        ok = await http.post(
            "/v1/chat/completions",
            json={"model": "gpt-4o", "messages": messages(), "max_tokens": 5},
            headers={"Authorization": "Bearer sk-team"},
        )
    assert ok.status_code == 200
    assert (await store.balance("team")).spent > 0


async def test_in_flight_402_has_retry_after() -> None:
    app, store = guard(Recorder(), "0.05")
    hold = await store.reserve("acct_1", Decimal("0.04"))
    assert isinstance(hold, Hold)
    async with client(app) as http:
        response = await http.post(
            "/v1/chat/completions",
            json={"model": "gpt-4o", "messages": messages(), "max_tokens": 2000},
            headers=AUTH,
        )
    assert response.status_code == 402
    assert response.json()["error"]["context"]["reason"] == "in_flight_holds"
    assert response.headers["retry-after"] == "5"
    await store.release(hold)


async def test_auto_fit_lowers_the_cap_instead_of_402() -> None:
    inner = Recorder()
    app, _ = guard(inner, "0.02", auto_fit=True)
    async with client(app) as http:
        response = await http.post(
            "/v1/chat/completions",
            json={"model": "gpt-4o", "messages": messages(), "max_tokens": 4096},
            headers=AUTH,
        )
    assert response.status_code == 200
    forwarded = orjson.loads(inner.calls[0]["body"])
    assert forwarded["max_tokens"] < 4096
    assert response.headers["x-credit-guard-adjusted"] == f"max_tokens={forwarded['max_tokens']}"


def test_invalid_configuration_fails_at_construction() -> None:
    with pytest.raises(ValueError):
        CreditGuard(Recorder(), store=MemoryStore(), prices=PRICES, routes={"/x": "images"})
    with pytest.raises(ValueError):
        CreditGuard(Recorder(), store=MemoryStore(), prices=PRICES, on_app_error="ignore")
    with pytest.raises(ValueError):
        CreditGuard(Recorder(), store=MemoryStore(), prices=PRICES, max_body_bytes=0)


async def test_non_http_scopes_pass_through() -> None:
    seen: list[str] = []

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["type"])

    app, _ = guard(inner)
    await app({"type": "lifespan"}, None, None)  # type: ignore[arg-type]
    await app({"type": "websocket", "path": "/v1/chat/completions"}, None, None)  # type: ignore[arg-type]
    assert seen == ["lifespan", "websocket"]


async def test_requests_that_come_while_the_tokenizers_load_wait_for_one_load(monkeypatch: pytest.MonkeyPatch) -> None:
    """Sixty first requests at once start one worker thread for the load, not
    one each (anyio would start up to 40 and keep them); a load that fails is
    tried again by the next request."""
    import threading

    import anyio

    from credit_guard import tokens

    loads: list[str] = []
    started = threading.Event()
    release = threading.Event()

    def slow_warm() -> None:
        loads.append(threading.current_thread().name)
        started.set()
        release.wait(10)
        if len(loads) == 1:
            raise RuntimeError("the first load fails")

    monkeypatch.setattr(tokens, "warm", slow_warm)
    guard = CreditGuard(create_app(), store=MemoryStore({"acct": "1"}, keys={KEY: "acct"}))
    errors: list[BaseException] = []

    async def first() -> None:
        try:
            await guard.warm()
        except RuntimeError as exc:
            errors.append(exc)

    async with anyio.create_task_group() as group:
        for _ in range(60):
            group.start_soon(first)
        await anyio.to_thread.run_sync(started.wait, 10)
        await anyio.sleep(0.3)  # time for any other load to start
        assert len(loads) == 1
        release.set()
    # The first load failed for its own caller; the others waited, and one of
    # them loaded again, alone.
    assert len(errors) == 1
    assert len(loads) == 2 and guard._warmed
