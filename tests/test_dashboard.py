"""The admin dashboard in a real headless Chromium, against a running
``credit-guard serve --demo`` with traffic: its tables and charts show the
figures the store holds, exactly (read from the ``data-*`` attributes the
page's script writes)."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from decimal import Decimal
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest

from .servers import free_port, wait_for_port

ROOT = Path(__file__).resolve().parents[1]
CHAT = {"messages": [{"role": "user", "content": "Hello there"}]}


def chromium() -> str:
    binary = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (.ci/run installs it from Debian's packages)")
        pytest.skip("chromium is not installed")
    return binary


class Elements(HTMLParser):
    """Every element of a page with its attributes, and its text."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[dict[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found.append({"tag": tag, **{k: v or "" for k, v in attrs}})

    def having(self, name: str, tag: str | None = None) -> list[dict[str, str]]:
        return [e for e in self.found if name in e and (tag is None or e["tag"] == tag)]


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[tuple[str, str]]:
    token = secrets.token_urlsafe(32)
    token_file = tmp_path / "admin-token"
    token_file.write_text(token + "\n")
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env = {k: v for k, v in env.items() if not k.startswith("CREDIT_GUARD_")}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "credit_guard.cli",
            "serve",
            "--demo",
            "--store",
            f"sqlite:///{tmp_path / 'demo.db'}",
            "--port",
            str(port),
            "--admin-token-file",
            str(token_file),
            "--log-level",
            "warning",
        ],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for_port(port, timeout=60)
        yield f"http://127.0.0.1:{port}", token
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        assert process.stderr is not None
        log = process.stderr.read().decode(errors="replace")
        process.stderr.close()
        assert token not in log


def traffic(base: str, token: str) -> dict[str, Any]:
    admin = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=base, timeout=30) as http:
        keys = {}
        for account, amount in (("alice", "0.50"), ("bob", "0.0004")):
            keys[account] = http.post("/admin/api/keys", json={"account": account}, headers=admin).json()["key"]
            assert http.post(f"/admin/api/accounts/{account}/grant", json={"amount": amount}, headers=admin).is_success
        second = http.post("/admin/api/keys", json={"account": "alice"}, headers=admin).json()["key"]
        sent = []
        for key, model, tokens in (
            (keys["alice"], "gpt-4o-mini", 30),
            (keys["alice"], "gpt-4o", 12),
            (second, "gpt-4o", 7),
            (keys["bob"], "gpt-4o-mini", 5),
        ):
            response = http.post(
                "/v1/chat/completions",
                json={**CHAT, "model": model, "max_tokens": tokens},
                headers={"Authorization": f"Bearer {key}"},
            )
            assert response.status_code == 200, response.text
            sent.append(response.headers["x-request-id"])
        refused = http.post(
            "/v1/chat/completions",
            json={**CHAT, "model": "gpt-4o", "max_tokens": 4000},
            headers={"Authorization": f"Bearer {keys['bob']}"},
        )
        assert refused.status_code == 402
        figures = {
            "accounts": http.get("/admin/api/accounts", headers=admin).text,
            "models": http.get("/admin/api/usage?by=model", headers=admin).text,
            "keys": http.get("/admin/api/usage?by=key", headers=admin).text,
        }
    import json

    parsed = {name: json.loads(text, parse_float=Decimal)["data"] for name, text in figures.items()}
    return {**parsed, "sent": sent, "refused": refused.headers["x-request-id"]}


def dump(base: str, token: str) -> Elements:
    profile = tempfile.mkdtemp(prefix="cg-chromium-")
    try:
        result = subprocess.run(
            [
                chromium(),
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                f"--user-data-dir={profile}",
                "--virtual-time-budget=5000",
                "--dump-dom",
                f"{base}/admin/#token={token}",
            ],
            capture_output=True,
            timeout=180,
        )
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-2000:]
    page = Elements()
    page.feed(result.stdout.decode())
    return page


@pytest.mark.slow
def test_the_dashboard_shows_the_figures_the_store_holds(gateway: tuple[str, str]) -> None:
    chromium()
    base, token = gateway
    expected = traffic(base, token)
    page = dump(base, token)
    [body] = [e for e in page.found if e["tag"] == "body"]
    assert body["data-state"] == "ready"

    # Accounts and balances: every figure exact.
    rows = {e["data-account"]: e for e in page.having("data-account", "tr")}
    cells = page.found
    for account in expected["accounts"]:
        assert account["account"] in rows
        start = cells.index(rows[account["account"]])
        row_cells = cells[start + 1 : start + 7]
        for name in ("available", "held", "spent", "granted"):
            [shown] = [c[f"data-{name}"] for c in row_cells if f"data-{name}" in c]
            assert Decimal(shown) == account[name], (account["account"], name)
        [rejected] = [c["data-rejected"] for c in row_cells if "data-rejected" in c]
        assert rejected == ("1" if account["account"] == "bob" else "0")

    # Spend per day by model and by key: the bars sum to the store's figures.
    for dimension, groups in (("model", expected["models"]), ("key", expected["keys"])):
        [svg] = [e for e in page.having("data-chart", "svg") if e["data-chart"] == dimension]
        bars = [e for e in page.having(f"data-{dimension}", "rect")]
        for group in groups:
            shown = sum(
                (Decimal(b["data-charged"]) for b in bars if b[f"data-{dimension}"] == group[dimension]), Decimal(0)
            )
            assert shown == group["charged"] > 0, (dimension, group)
        assert Decimal(svg["data-max"]) == sum((g["charged"] for g in groups), Decimal(0))  # one day of traffic
    assert len({b["data-key"] for b in page.having("data-key", "rect")}) == 3

    # Recent requests and the 402.
    shown_requests = {e["data-request"] for e in page.having("data-request", "tr")}
    assert set(expected["sent"]) | {expected["refused"]} <= shown_requests
    assert token not in str(page.found)
