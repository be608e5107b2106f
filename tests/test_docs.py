"""The docs stay true: their code runs and their examples are what the guard
really answers."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import openai
import pytest

from credit_guard import CreditGuard, MemoryStore, PriceTable
from credit_guard.fake_llm import create_app
from credit_guard.prices import ModelPrice
from credit_guard.quote import insufficient_credits, make_quote
from credit_guard.shapes import Ask

from .servers import serve

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "docs" / "errors.md", ROOT / "docs" / "deploying.md", ROOT / "README.md", ROOT / "SECURITY.md"]


def blocks(path: Path, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", path.read_text(), flags=re.S)


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_python_blocks_compile(path: Path) -> None:
    for block in blocks(path, "python"):
        compile(block, str(path), "exec")


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_json_blocks_parse(path: Path) -> None:
    for block in blocks(path, "json"):
        if '"..."' in block:
            continue  # an abridged illustration
        json.loads(block)


def test_the_documented_402_is_what_the_guard_answers() -> None:
    documented = json.loads([b for b in blocks(ROOT / "docs" / "errors.md", "json") if "INSUFFICIENT_CREDITS" in b][0])[
        "error"
    ]
    gpt_4o = ModelPrice("gpt-4o", "chat", Decimal("0.0000025"), Decimal("0.00001"), "openai", 16384)
    ask = Ask(kind="chat", model="gpt-4o", output_tokens=4096, output_param="max_tokens")
    quote = make_quote(ask, gpt_4o, 150)
    error = insufficient_credits(
        quote,
        available=Decimal("0.02"),
        held=Decimal(0),
        cheaper=("gpt-4o-mini", Decimal("0.0024801")),
        billing_url="https://example.com/billing",
    )
    from credit_guard.errors import error_body

    actual = json.loads(error_body(error, documented["request_id"]))["error"]
    assert actual == documented


def test_every_context_key_is_documented_and_every_documented_one_is_real() -> None:
    text = (ROOT / "docs" / "errors.md").read_text()
    section = text[text.index("### Every field") : text.index("## Handling it in Python")]
    context_part = section[section.index("- `context`") :]
    named = set(re.findall(r"`([a-z_]+)`", context_part)) - {"context", "null", "true", "false"}
    documented = json.loads([b for b in blocks(ROOT / "docs" / "errors.md", "json") if "INSUFFICIENT_CREDITS" in b][0])[
        "error"
    ]["context"]
    assert set(documented) <= named
    reasons = {"insufficient_balance", "in_flight_holds", "input_exceeds_balance", "reservation", "detail"}
    fields = {"max_tokens", "max_completion_tokens", "max_output_tokens"}
    assert named - set(documented) <= reasons | fields


def test_the_python_client_handler_in_errors_md_works() -> None:
    code = blocks(ROOT / "docs" / "errors.md", "python")[0]
    namespace: dict[str, Any] = {}
    exec(compile(code, "errors.md", "exec"), namespace)
    store = MemoryStore({"acct": "0.01"}, keys={"sk-docs-example-1": "acct"})
    guard = CreditGuard(create_app(default_tokens=3), prices=PriceTable.default(), store=store)
    with serve(guard) as url, openai.OpenAI(base_url=url + "/v1", api_key="sk-docs-example-1", max_retries=0) as client:
        reply = namespace["complete_within_budget"](client, "gpt-4o", [{"role": "user", "content": "Hi"}], 16000)
    assert reply.choices[0].message.content


def test_the_library_block_in_deploying_md_builds_a_guard(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    code = [b for b in blocks(ROOT / "docs" / "deploying.md", "python") if "CreditGuard(" in b][0]
    namespace: dict[str, Any] = {}
    exec(compile(code, "deploying.md", "exec"), namespace)
    assert isinstance(namespace["app"], CreditGuard)


def test_documented_serve_variables_are_read() -> None:
    cli = (ROOT / "credit_guard" / "cli.py").read_text()
    text = (ROOT / "docs" / "deploying.md").read_text()
    for name in set(re.findall(r"CREDIT_GUARD_([A-Z_]+)", text)):
        assert f'"{name.lower()}"' in cli or f"CREDIT_GUARD_{name}" in cli, name
