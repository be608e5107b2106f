"""CreditsAPI: each caller reads its own credits and usage, over real HTTP,
and nothing of another account's; errors in the envelope."""

from __future__ import annotations

import json
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

from credit_guard import CreditGuard, CreditsAPI, PriceTable
from credit_guard.fake_llm import create_app
from credit_guard.records import key_label
from credit_guard.stores import MemoryStore, SQLiteStore

from .servers import serve

pytestmark = pytest.mark.anyio

PRICES = PriceTable.default()
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 20}


async def _traffic(store: Any, keys: dict[str, str]) -> None:
    guard = CreditGuard(create_app(), store=store, prices=PRICES)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=guard), base_url="http://t") as http:
        for key, model in keys.items():
            response = await http.post(
                "/v1/chat/completions", json={**CHAT, "model": model}, headers={"Authorization": f"Bearer {key}"}
            )
            assert response.status_code == 200


@pytest.fixture
async def two_accounts(tmp_path: Path) -> Any:
    store = SQLiteStore(tmp_path / "credits.db")
    alice = "sk-alice-" + uuid.uuid4().hex
    alice2 = "sk-alice-second-" + uuid.uuid4().hex
    bob = "sk-bob-" + uuid.uuid4().hex
    await store.add_key(alice, "alice")
    await store.add_key(alice2, "alice")
    await store.add_key(bob, "bob")
    await store.grant("alice", "2.50")
    await store.grant("bob", "0.0005")
    await _traffic(store, {alice: "gpt-4o-mini", alice2: "gpt-4o", bob: "gpt-4o-mini"})
    yield store, alice, alice2, bob
    await store.aclose()


async def test_each_caller_sees_only_its_own_figures(two_accounts: Any) -> None:
    store, alice, alice2, bob = two_accounts
    api = CreditsAPI(store, low_balance_threshold="0.01")
    with serve(api) as base:
        async with httpx.AsyncClient(base_url=base) as http:
            mine = await http.get("/v1/credits", headers={"Authorization": f"Bearer {alice}"})
            theirs = await http.get("/v1/credits", headers={"x-api-key": bob})
            usage = await http.get("/v1/credits/usage", headers={"Authorization": f"Bearer {alice}"})
            by_model = await http.get("/v1/credits/usage?by=model", headers={"Authorization": f"Bearer {alice}"})
            bob_usage = await http.get("/v1/credits/usage?by=day", headers={"x-api-key": bob})
    assert mine.status_code == theirs.status_code == usage.status_code == 200
    a = json.loads(mine.content, parse_float=Decimal)
    b = json.loads(theirs.content, parse_float=Decimal)
    alice_balance, bob_balance = await store.balance("alice"), await store.balance("bob")
    assert (a["account"], a["available"], a["held"], a["spent"], a["granted"]) == (
        "alice",
        alice_balance.available,
        0,
        alice_balance.spent,
        Decimal("2.5"),
    )
    assert (b["account"], b["spent"], b["granted"]) == ("bob", bob_balance.spent, Decimal("0.0005"))
    assert (a["low_balance"], b["low_balance"]) == (False, True)
    assert b"e-" not in mine.content.lower() and b"e-" not in theirs.content.lower()  # exact decimal text
    # By default a key sees the records it made, not its account's other keys'.
    records = usage.json()["data"]
    assert [(r["account"], r["key"], r["model"]) for r in records] == [("alice", key_label(alice), "gpt-4o-mini")]
    assert "hold" not in records[0]
    assert [row["model"] for row in by_model.json()["data"]] == ["gpt-4o-mini"]
    [bob_day] = bob_usage.json()["data"]
    assert Decimal(str(bob_day["charged"])) == bob_balance.spent
    assert bob not in mine.text and "bob" not in usage.text + by_model.text


async def test_no_parameter_reaches_another_account(two_accounts: Any) -> None:
    store, alice, alice2, bob = two_accounts
    api = CreditsAPI(store)
    auth = {"Authorization": f"Bearer {alice}"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=api), base_url="http://t") as http:
        named = await http.get("/v1/credits/usage?account=bob", headers=auth)
        twice = await http.get("/v1/credits/usage?model=a&model=b", headers=auth)
        other_key = await http.get(f"/v1/credits/usage?key={key_label(bob)}", headers=auth)
        sibling = await http.get(f"/v1/credits/usage?key={key_label(alice2)}", headers=auth)
        on_balance = await http.get("/v1/credits?account=bob", headers=auth)
        bad_day = await http.get("/v1/credits/usage?since=yesterday", headers=auth)
        bad_limit = await http.get("/v1/credits/usage?limit=100000", headers=auth)
        post = await http.post("/v1/credits", headers=auth)
        elsewhere = await http.get("/v1/credits/../admin", headers=auth)
    for response, status, param in (
        (named, 400, "account"),
        (twice, 400, "model"),
        (other_key, 403, "key"),
        (sibling, 403, "key"),
        (on_balance, 400, "account"),
        (bad_day, 400, "since"),
        (bad_limit, 400, "limit"),
        (post, 405, "method"),
    ):
        error = response.json()["error"]
        assert (response.status_code, error["status"], error["param"]) == (status, status, param), response.text
        assert "bob" not in response.text.replace("account=bob", "")
    assert elsewhere.status_code in (404, 400)
    # With usage_scope="account", the account's every key is visible to each of its keys.
    wide = CreditsAPI(store, usage_scope="account")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=wide), base_url="http://t") as http:
        everything = await http.get("/v1/credits/usage?by=key", headers=auth)
        sibling = await http.get(f"/v1/credits/usage?key={key_label(alice2)}", headers=auth)
    assert sorted(row["key"] for row in everything.json()["data"]) == sorted([key_label(alice), key_label(alice2)])
    assert [r["model"] for r in sibling.json()["data"]] == ["gpt-4o"]


async def test_no_key_or_a_wrong_key_gets_the_401_envelope(two_accounts: Any) -> None:
    store, *_ = two_accounts
    api = CreditsAPI(store)
    with serve(api) as base:
        async with httpx.AsyncClient(base_url=base) as http:
            anonymous = await http.get("/v1/credits", headers={"x-request-id": "req_anon1"})
            wrong = await http.get("/v1/credits/usage", headers={"Authorization": "Bearer sk-nope-nope-nope"})
            basic = await http.get("/v1/credits", headers={"Authorization": "Basic YWxpY2U6eA=="})
    for response in (anonymous, wrong, basic):
        assert response.status_code == 401
        error = response.json()["error"]
        assert (error["type"], error["status"]) == ("authentication_error", 401)
        assert response.headers["content-type"] == "application/json"
        assert response.headers["x-request-id"] == error["request_id"]
    assert anonymous.json()["error"]["request_id"] == "req_anon1"
    assert "sk-nope" not in wrong.text


async def test_mounted_in_a_starlette_app_with_a_mapping_of_keys() -> None:
    store = MemoryStore({"a": "1", "b": "3"})
    api = CreditsAPI(store, accounts={"sk-key-of-a-000": "a", "sk-key-of-b-000": "b"})
    app = Starlette(routes=[Mount("/v1/credits", app=api)])
    transport = httpx.ASGITransport(app=app)
    # Starlette redirects /v1/credits to the mount's /v1/credits/.
    async with httpx.AsyncClient(transport=transport, base_url="http://t", follow_redirects=True) as http:
        a = await http.get("/v1/credits", headers={"x-api-key": "sk-key-of-a-000"})
        b = await http.get("/v1/credits/", headers={"x-api-key": "sk-key-of-b-000"})
        usage = await http.get("/v1/credits/usage", headers={"x-api-key": "sk-key-of-b-000"})
    assert (a.json()["granted"], b.json()["granted"]) == (1, 3)
    assert usage.json() == {"object": "list", "data": []}
    with pytest.raises(ValueError):
        CreditsAPI(store, usage_scope="everyone")


async def test_serve_answers_the_credits_api_beside_the_guard(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from credit_guard.cli import build_app

    url = f"sqlite:///{tmp_path / 'serve.db'}"
    app = build_app(upstream=None, demo=True, store_url=url, prices=None)
    store = app.guard.store
    await store.grant("demo", "0.05")
    key = "sk-demo-" + uuid.uuid4().hex
    await store.add_key(key, "demo")
    auth = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
        assert (await http.post("/v1/chat/completions", json=CHAT, headers=auth)).status_code == 200
        credits = await http.get("/v1/credits", headers=auth)
        usage = await http.get("/v1/credits/usage", headers=auth)
        anonymous = await http.get("/v1/credits")
    assert credits.json()["spent"] > 0 and credits.json()["available"] < 0.05
    [record] = usage.json()["data"]
    assert Decimal(str(record["charged"])) == (await store.balance("demo")).spent
    assert anonymous.status_code == 401
    await store.aclose()
