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


# -- the architecture, the error codes, the imports and the log lines stay true ------------------------


PACKAGE = ROOT / "credit_guard"


def test_every_module_is_in_the_architecture_and_every_named_one_exists() -> None:
    text = (ROOT / "docs" / "architecture.md").read_text()
    named = set(re.findall(r"`((?:[a-z_]+/)*[a-z_]+\.py)`", text))
    outside = {name for name in named if name.split("/")[0] in ("tests", "examples", "benchmarks")}
    assert all((ROOT / name).is_file() for name in outside)
    modules = {path.relative_to(PACKAGE).as_posix() for path in PACKAGE.rglob("*.py")}
    assert len(modules) > 30
    assert modules - named == set(), "modules missing from docs/architecture.md"
    assert named - outside - modules == set(), "docs/architecture.md names modules that do not exist"


def _every_error_class() -> set[type]:
    import importlib
    import pkgutil

    import credit_guard
    from credit_guard.errors import CreditGuardError

    for info in pkgutil.walk_packages(credit_guard.__path__, "credit_guard."):
        if info.name != "credit_guard.stores.redis":  # needs the redis extra; defines no error code
            importlib.import_module(info.name)
    found: set[type] = set()
    todo: list[type] = [CreditGuardError]
    while todo:
        cls = todo.pop()
        found.add(cls)
        todo.extend(cls.__subclasses__())
    return found


def _proxy_error_codes() -> set[str]:
    """The codes the proxy answers by itself: an upstream nobody listens on
    (502) and one that accepts and never answers (504)."""
    import socket

    import anyio
    import httpx

    from credit_guard.proxy import create_proxy

    from .servers import free_port

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    try:
        upstreams = [f"http://127.0.0.1:{free_port()}/v1", f"http://127.0.0.1:{silent.getsockname()[1]}/v1"]

        async def ask(upstream: str) -> str:
            proxy = create_proxy(upstream, timeout=0.5, connect_timeout=0.5)
            try:
                async with httpx.AsyncClient(transport=httpx.ASGITransport(app=proxy), base_url="http://t") as http:
                    answer = await http.post("/v1/chat/completions", json={})
            finally:
                await proxy.aclose()
            assert answer.status_code in (502, 504), answer.text
            return str(answer.json()["error"]["code"])

        return {anyio.run(ask, upstream) for upstream in upstreams}
    finally:
        silent.close()


def test_every_error_code_the_guard_answers_is_documented() -> None:
    codes = {cls.code for cls in _every_error_class()}
    # Literal codes written outside the error classes, anywhere in the package.
    for path in PACKAGE.rglob("*.py"):
        codes |= set(re.findall(r"""["']code["']:\s*["']([A-Z][A-Z_]+)["']""", path.read_text()))
    proxy_codes = _proxy_error_codes()
    assert proxy_codes == {"UPSTREAM_ERROR", "UPSTREAM_TIMEOUT"}
    codes |= proxy_codes
    assert {"ENDPOINT_NOT_PRICED", "INSUFFICIENT_CREDITS", "INVALID_API_KEY"} <= codes
    text = (ROOT / "docs" / "errors.md").read_text()
    table = text[: text.index("## The 402")]
    missing = {code for code in codes if f"`{code}`" not in table}
    assert missing == set(), "codes the guard answers but docs/errors.md's table does not list"


def test_the_readme_imports_every_public_name_it_uses() -> None:
    import credit_guard

    text = (ROOT / "README.md").read_text()
    imports = re.findall(r"from (credit_guard[\w.]*) import ([\w, ]+)", text)
    imported = {name.strip() for _, names in imports for name in names.split(",")}
    # Python names: in python blocks, and in inline code as a call, an attribute or a class.
    code = " ".join(blocks(ROOT / "README.md", "python"))
    spans = re.findall(r"`([^`\n]+)`", text)
    used = {
        name
        for name in credit_guard.__all__
        if re.search(rf"\b{name}\b", code)
        or any(re.search(rf"\b{name}[(.]", span) or (span == name and name[0].isupper()) for span in spans)
    }
    assert {"SQLiteStore", "RedisStore", "open_store"} <= used
    assert used - imported == set(), "the README uses public names it never shows the import of"
    for module, names in imports:
        exec(f"from {module} import {names}", {})


@pytest.mark.anyio
async def test_a_402_is_logged_as_deploying_md_says(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    import httpx

    key = "sk-log-check-0123456789"
    store = MemoryStore({"acct_log": "0.02"}, keys={key: "acct_log"})
    guard = CreditGuard(create_app(), prices=PriceTable.default(), store=store)
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 16000}
    caplog.set_level(logging.INFO, logger="credit_guard")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=guard), base_url="http://t") as http:
        answer = await http.post("/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"})
    assert answer.status_code == 402
    context = json.loads(answer.text, parse_float=Decimal)["error"]["context"]
    records = [r for r in caplog.records if r.name == "credit_guard"]
    assert len(records) == 1
    record = records[0]
    assert record.levelno == logging.INFO
    line = record.getMessage()
    assert key not in line and all(key not in str(arg) for arg in record.args or ())
    fields = dict(part.split("=", 1) for part in line.split()[1:])
    assert line.split()[0] == "credit_guard.rejected"
    assert fields["request_id"] == answer.headers["x-request-id"]
    assert (fields["account"], fields["model"], fields["reason"]) == ("acct_log", "gpt-4o", context["reason"])
    assert Decimal(fields["shortfall"]) == context["credit_deficit"] > 0
    assert f'"credit_deficit":{fields["shortfall"]},' in answer.text  # the same text as the 402's
    assert Decimal(fields["required"]) == context["required_credits"]
    assert Decimal(fields["available"]) == context["current_credits"] == Decimal("0.02")
    # The line documented in deploying.md has exactly these fields, in this order.
    documented = re.search(r"`credit_guard\.rejected ([^`]*)`", (ROOT / "docs" / "deploying.md").read_text())
    assert documented is not None
    assert [part.split("=")[0] for part in documented.group(1).split()] == list(fields)


def test_every_log_line_is_documented_with_its_level_and_fields() -> None:
    import ast

    logged = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "logger"
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            ):
                text = node.args[0].value.split(":")[0]
                event, *fields = text.split()
                level = "ERROR" if node.func.attr == "exception" else node.func.attr.upper()
                logged.add((level, event, tuple(field.split("=")[0] for field in fields)))
    section = (ROOT / "docs" / "deploying.md").read_text().split("## Metrics and logs")[1]
    documented = set()
    for level, line in re.findall(r"^\| (INFO|WARNING|ERROR) \| `([^`]+)`", section, flags=re.M):
        event, *fields = line.split(":")[0].split()
        documented.add((level, event, tuple(field.split("=")[0] for field in fields)))
    assert len(logged) >= 4
    assert logged == documented
