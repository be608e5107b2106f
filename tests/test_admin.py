"""The admin API: off without a token, refuses without the right one (401 /
403 envelopes), never logs it; accounts, idempotent grants on every store,
keys, usage and the 402s."""

from __future__ import annotations

import logging
import secrets
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from credit_guard.admin import AdminAPI, check_token
from credit_guard.cli import build_app
from credit_guard.stores.base import IdempotencyConflict

from .servers import serve
from .test_store_contract import Clock, make_store

pytestmark = pytest.mark.anyio

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 20}


@pytest.fixture(params=["memory", "sqlite", "redis"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    redis_url = request.getfixturevalue("redis_url") if request.param == "redis" else None
    store = make_store(str(request.param), Clock(), tmp_path, redis_url)
    yield store
    await store.aclose()


async def test_a_retried_grant_grants_once_on_every_store(store: Any) -> None:
    account = "acct_" + uuid.uuid4().hex[:8]
    results = []

    async def grant() -> None:
        results.append(await store.grant_once(account, "10.00", "evt_1", note="payment"))

    async with anyio.create_task_group() as tg:
        for _ in range(8):
            tg.start_soon(grant)
    assert sorted(r.repeat for r in results) == [False] + [True] * 7
    assert (await store.balance(account)).granted == Decimal("10")
    with pytest.raises(IdempotencyConflict):
        await store.grant_once(account, "11.00", "evt_1")
    # The key is per account, and another key grants again.
    other = "acct_" + uuid.uuid4().hex[:8]
    assert not (await store.grant_once(other, "1", "evt_1")).repeat
    assert not (await store.grant_once(account, "-2.5", "evt_2")).repeat
    assert (await store.balance(account)).granted == Decimal("7.5")
    with pytest.raises(ValueError):
        await store.grant_once(account, "-100", "evt_3")
    # A refused grant records no key: the same key can be used once it fits.
    assert not (await store.grant_once(account, "-1", "evt_3")).repeat
    assert account in await store.accounts() and other in await store.accounts()


def test_there_is_no_default_token(monkeypatch: pytest.MonkeyPatch) -> None:
    from credit_guard.cli import UsageError, _admin_token

    monkeypatch.delenv("CREDIT_GUARD_ADMIN_TOKEN", raising=False)
    assert _admin_token(None) is None
    monkeypatch.setenv("CREDIT_GUARD_ADMIN_TOKEN", "short")
    with pytest.raises(UsageError):
        _admin_token(None)
    for bad in ("", "x" * 15, "has a space in the middle of it"):
        with pytest.raises(ValueError):
            check_token(bad)
    with pytest.raises(UsageError):
        _admin_token("/nonexistent/token")


@pytest.fixture
def gateway(tmp_path: Path) -> Any:
    token = secrets.token_urlsafe(32)
    app = build_app(
        upstream=None, demo=True, store_url=f"sqlite:///{tmp_path / 'g.db'}", prices=None, admin_token=token
    )
    yield app, token
    anyio.run(app.guard.store.aclose)


async def test_without_a_token_configured_there_is_no_admin_api(tmp_path: Path) -> None:
    app = build_app(upstream=None, demo=True, store_url=f"sqlite:///{tmp_path / 'g.db'}", prices=None)
    store = app.guard.store
    key = "sk-some-user-" + uuid.uuid4().hex
    await store.add_key(key, "a")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
        for path in ("/admin/", "/admin/api/accounts"):
            anonymous = await http.get(path)
            with_key = await http.get(path, headers={"Authorization": f"Bearer {key}"})
            assert anonymous.status_code == 401  # the guard: no key
            # serve's gateway policy: a read outside the allow-list is refused.
            assert with_key.status_code == 400
            assert with_key.json()["error"]["code"] == "ENDPOINT_NOT_PRICED"
            # Nothing of an account's figures: only the refusal, which names the path.
            assert not any(word in with_key.text for word in ("available", "granted", "spent"))
    await store.aclose()


async def test_admin_routes_refuse_without_the_token(gateway: Any) -> None:
    app, token = gateway
    with serve(app) as base:
        async with httpx.AsyncClient(base_url=base) as http:
            answers = [
                await http.get("/admin/api/accounts"),
                await http.get("/admin/api/accounts", headers={"Authorization": "Bearer " + token[:-1] + "x"}),
                await http.get("/admin/api/usage", headers={"Authorization": f"Basic {token}"}),
                await http.post(
                    "/admin/api/accounts/a/grant",
                    json={"amount": "5"},
                    headers={"Authorization": "Bearer " + token * 2},
                ),
                await http.get("/admin/api/keys", headers={"x-api-key": token}),
            ]
    granted = await app.guard.store.balance("a")
    assert [r.status_code for r in answers] == [401, 403, 401, 403, 401]
    for response in answers:
        error = response.json()["error"]
        assert error["status"] == response.status_code and error["type"] in ("authentication_error", "permission_error")
        assert token not in response.text
    assert granted.granted == 0


async def test_accounts_grants_keys_usage_and_rejections(gateway: Any) -> None:
    app, token = gateway
    admin = {"Authorization": f"Bearer {token}"}
    with serve(app) as base:
        async with httpx.AsyncClient(base_url=base) as http:
            added = await http.post("/admin/api/keys", json={"account": "alice"}, headers=admin)
            assert added.status_code == 201
            key = added.json()["key"]
            grant = {"amount": "0.0002", "note": "invoice 7"}
            first = await http.post(
                "/admin/api/accounts/alice/grant", json=grant, headers={**admin, "Idempotency-Key": "pay_1"}
            )
            again = await http.post(
                "/admin/api/accounts/alice/grant", json=grant, headers={**admin, "Idempotency-Key": "pay_1"}
            )
            conflict = await http.post(
                "/admin/api/accounts/alice/grant", json={"amount": "9"}, headers={**admin, "Idempotency-Key": "pay_1"}
            )
            floated = await http.post("/admin/api/accounts/alice/grant", content=b'{"amount": 0.1}', headers=admin)
            user = {"Authorization": f"Bearer {key}"}
            ok = await http.post("/v1/chat/completions", json=CHAT, headers=user)
            refused = await http.post(
                "/v1/chat/completions", json={**CHAT, "model": "gpt-4o", "max_tokens": 4000}, headers=user
            )
            accounts = await http.get("/admin/api/accounts", headers=admin)
            by_model = await http.get("/admin/api/usage?account=alice&by=model", headers=admin)
            records = await http.get("/admin/api/usage?account=alice", headers=admin)
            rejections = await http.get("/admin/api/rejections", headers=admin)
            keys = await http.get("/admin/api/keys?account=alice", headers=admin)
            revoked = await http.post(
                "/admin/api/keys/revoke", json={"key": keys.json()["data"][0]["prefix"]}, headers=admin
            )
            after = await http.post("/v1/chat/completions", json=CHAT, headers=user)
            unknown = await http.get("/admin/api/nothing", headers=admin)
            wrong_method = await http.delete("/admin/api/accounts", headers=admin)
    assert (first.status_code, first.json()["repeat"], again.json()["repeat"]) == (200, False, True)
    assert again.json()["balance"]["granted"] == 0.0002
    assert (conflict.status_code, conflict.json()["error"]["param"]) == (409, "Idempotency-Key")
    assert (floated.status_code, floated.json()["error"]["param"]) == (400, "amount")
    assert (ok.status_code, refused.status_code) == (200, 402)
    [alice] = [a for a in accounts.json()["data"] if a["account"] == "alice"]
    balance = await app.guard.store.balance("alice")
    assert Decimal(str(alice["spent"])) == balance.spent > 0 and Decimal(str(alice["granted"])) == Decimal("0.0002")
    [row] = by_model.json()["data"]
    assert (row["model"], Decimal(str(row["charged"]))) == ("gpt-4o-mini", balance.spent)
    [record] = records.json()["data"]
    assert record["request_id"] == ok.headers["x-request-id"] and record["outcome"] == "settled"
    assert rejections.json()["counts"] == [{"account": "alice", "rejected": 1}]
    [rejection] = rejections.json()["data"]
    assert (rejection["request_id"], rejection["model"]) == (refused.headers["x-request-id"], "gpt-4o")
    assert key not in keys.text and key not in records.text and key not in rejections.text
    assert revoked.json() == {"revoked": 1} and after.status_code == 401
    assert (unknown.status_code, wrong_method.status_code) == (404, 405)


async def test_the_token_never_appears_in_logs(gateway: Any, caplog: pytest.LogCaptureFixture) -> None:
    app, token = gateway
    caplog.set_level(logging.DEBUG)
    admin = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
        await http.get("/admin/api/accounts", headers=admin)
        await http.post("/admin/api/accounts/a/grant", json={"amount": "1"}, headers={**admin, "Idempotency-Key": "k"})
        await http.post("/admin/api/accounts/a/grant", json={"amount": "x"}, headers=admin)
        await http.get("/admin/api/accounts", headers={"Authorization": "Bearer " + token + "x"})
        await http.get("/admin/api/accounts", headers={"Authorization": "Bearer " + token[:20]})
        await http.get("/admin/api/accounts")
    refusals = [r for r in caplog.records if "admin_refused" in r.getMessage()]
    assert len(refusals) == 3  # the refusals are logged...
    everything = "\n".join(r.getMessage() for r in caplog.records) + caplog.text
    assert token not in everything and token[:20] not in everything  # ...without the token


async def test_admin_api_alone_needs_a_real_token() -> None:
    from credit_guard.stores import MemoryStore

    with pytest.raises(ValueError):
        AdminAPI(MemoryStore(), token="")


async def test_odd_admin_requests_get_the_envelope(gateway: Any) -> None:
    app, token = gateway
    admin = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
        answers = {
            "empty account": await http.post("/admin/api/accounts//grant", json={"amount": "1"}, headers=admin),
            "not json": await http.post("/admin/api/accounts/a/grant", content=b"{", headers=admin),
            "a list": await http.post("/admin/api/accounts/a/grant", json=["1"], headers=admin),
            "bool": await http.post("/admin/api/accounts/a/grant", json={"amount": True}, headers=admin),
            "NaN": await http.post("/admin/api/accounts/a/grant", json={"amount": "NaN"}, headers=admin),
            "too fine": await http.post("/admin/api/accounts/a/grant", json={"amount": "1e-11"}, headers=admin),
            "huge body": await http.post(
                "/admin/api/accounts/a/grant",
                content=b'{"amount": "1", "note": "' + b"x" * 70_000 + b'"}',
                headers=admin,
            ),
            "unknown filter": await http.get("/admin/api/usage?acount=a", headers=admin),
            "long key": await http.post(
                "/admin/api/accounts/a/grant", json={"amount": "1"}, headers={**admin, "Idempotency-Key": "k" * 300}
            ),
        }
        balance = await app.guard.store.balance("a")
    for name, response in answers.items():
        assert 400 <= response.status_code < 500, name
        assert response.json()["error"]["status"] == response.status_code, name
    assert answers["huge body"].status_code == 413
    assert balance.granted == 0
