"""Every example runs, and does what its docstring says."""

from __future__ import annotations

import importlib.util
import os
import sys
from decimal import Decimal
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from credit_guard import CreditGuard, MemoryStore, PriceTable
from credit_guard.fake_llm import create_app

from .servers import serve

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://example.test")


CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 20}


@pytest.mark.anyio
async def test_starlette_example() -> None:
    example = load("starlette_app")
    async with client(example.app) as http:
        ok = await http.post("/v1/chat/completions", json=CHAT, headers={"Authorization": "Bearer sk-example-1"})
        refused = await http.post(
            "/v1/chat/completions",
            json={**CHAT, "model": "gpt-4o", "max_tokens": 16000},
            headers={"Authorization": "Bearer sk-example-1"},
        )
        report = await http.get("/v1/report")
    assert ok.status_code == 200
    balance = await example.store.balance("acct_1")
    assert balance.spent == Decimal("0.00000015") * 9 + Decimal("0.0000006") * 3
    assert refused.status_code == 402
    assert refused.json()["error"]["suggestions"][-1] == "Visit https://example.com/billing to add credits"
    # The app's own handler raised the 402; install_handler answered it in the envelope.
    assert report.status_code == 402
    error = report.json()["error"]
    assert error["type"] == "insufficient_credits" and error["request_id"] == report.headers["x-request-id"]


@pytest.mark.anyio
async def test_fastapi_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    example = load("fastapi_app")
    try:
        await example.setup()
        async with client(example.app) as http:
            ok = await http.post(
                "/v1/chat/completions", json=CHAT, headers={"Authorization": "Bearer sk-example-fastapi-1"}
            )
            health = await http.get("/health")
            anonymous = await http.post("/v1/chat/completions", json=CHAT)
        assert ok.status_code == 200 and ok.json()["id"].startswith("req_")
        assert ok.headers["x-request-id"] == ok.json()["id"]
        assert health.json() == {"status": "ok"}
        assert anonymous.status_code == 401
        balance = await example.store.balance("acct_1")
        assert balance.spent == Decimal("0.00000015") * 12 + Decimal("0.0000006") * 2
        assert (tmp_path / "fastapi_example_credits.db").exists()
    finally:
        await example.store.aclose()


@pytest.mark.anyio
async def test_openai_proxy_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with serve(create_app(default_tokens=6)) as upstream:
        monkeypatch.setenv("UPSTREAM", upstream + "/v1")
        monkeypatch.setenv("CREDIT_STORE", f"sqlite:///{tmp_path / 'proxy.db'}")
        example = load("openai_proxy")
        store = example.app.store
        try:
            await store.grant("team", "1")
            await store.add_key("sk-team-key-123456789", "team")
            async with client(example.app) as http:
                response = await http.post(
                    "/v1/chat/completions", json=CHAT, headers={"Authorization": "Bearer sk-team-key-123456789"}
                )
            assert response.status_code == 200
            usage = response.json()["usage"]
            assert usage["completion_tokens"] == 6
            expected = Decimal("0.00000015") * usage["prompt_tokens"] + Decimal("0.0000006") * 6
            assert (await store.balance("team")).spent == expected
        finally:
            await example.proxy.aclose()
            await store.aclose()


def test_client_retry_example(capsys: pytest.CaptureFixture[str]) -> None:
    example = load("client_retry")
    store = MemoryStore({"acct": "0.01"}, keys={"sk-retry-example-1": "acct"})
    guard = CreditGuard(create_app(), prices=PriceTable.default(), store=store)
    with serve(guard) as url:
        assert example.main(["--base-url", url + "/v1", "--api-key", "sk-retry-example-1"]) == 0
    out = capsys.readouterr().out
    assert "Insufficient credits for this request." in out
    assert "Try setting max_tokens to" in out
    assert "Retrying with max_tokens=" in out
    assert "usage:" in out


@pytest.mark.anyio
# LiteLLM's own modules warn about their use of pydantic and friends at import.
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
async def test_litellm_proxy_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    if importlib.util.find_spec("litellm") is None:
        if os.environ.get("CI"):
            pytest.fail("CI installs the litellm extra for this example")
        pytest.skip("litellm is not installed (pip install -e '.[litellm]')")
    monkeypatch.chdir(tmp_path)
    example = load("litellm_proxy")
    async with example.lifespan_context():
        store = example.app.store
        await store.grant("acct_1", "0.05")
        await store.add_key("sk-litellm-example-1", "acct_1")
        async with client(example.app) as http:
            ok = await http.post(
                "/v1/chat/completions",
                json={**CHAT, "model": "gpt-4o-mini"},
                headers={"Authorization": "Bearer sk-litellm-example-1"},
            )
            refused = await http.post(
                "/v1/chat/completions",
                json={**CHAT, "model": "gpt-4o", "max_tokens": 16000},
                headers={"Authorization": "Bearer sk-litellm-example-1"},
            )
        assert ok.status_code == 200, ok.text
        usage = ok.json()["usage"]
        expected = Decimal("0.00000015") * usage["prompt_tokens"] + Decimal("0.0000006") * usage["completion_tokens"]
        assert (await store.balance("acct_1")).spent == expected
        assert refused.status_code == 402
    sys.modules.pop("example_litellm_proxy", None)
