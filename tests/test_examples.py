"""Every example runs as a user runs it, and does what its docstring says.

Each is started as ``python examples/NAME.py`` in a directory of its own, on a
real port (``--port`` or ``PORT``), and asked over real HTTP; the test reads
the banner it printed and uses the key and the requests it shows.  Each sets
itself up on every start: starting it twice must change nothing.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from .servers import free_port, wait_for_port

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
MINI_IN, MINI_OUT = Decimal("0.15") / 10**6, Decimal("0.60") / 10**6


def load(name: str) -> ModuleType:
    """An example imported in process (for tests of its configuration)."""
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@contextmanager
def started(
    command: list[str], cwd: Path, *, port: int, env: dict[str, str] | None = None, until: str = "Stop with Ctrl-C."
) -> Iterator[str]:
    """``command`` running in ``cwd``; yields what it printed up to ``until``,
    once its port answers."""
    process = subprocess.Popen(
        command,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, **(env or {})},
    )
    try:
        assert process.stdout is not None
        printed = ""
        for line in process.stdout:
            printed += line
            if line.startswith(until):
                break
        assert until in printed, printed
        wait_for_port(port, timeout=90)
        yield printed
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()


@contextmanager
def example(name: str, cwd: Path, *, env: dict[str, str] | None = None, by_env: bool = False) -> Iterator[Any]:
    """``python examples/NAME.py --port P`` (or ``PORT=P`` with ``by_env``)."""
    port = free_port()
    args = [] if by_env else ["--port", str(port)]
    env = {**(env or {}), **({"PORT": str(port)} if by_env else {})}
    with started([sys.executable, str(EXAMPLES / f"{name}.py"), *args], cwd, port=port, env=env) as printed:
        yield printed, f"http://127.0.0.1:{port}"


def shown_key(printed: str) -> str:
    match = re.search(r"API key\s+(\S+)", printed)
    assert match is not None, printed
    return match.group(1)


def shown_curls(printed: str, base: str) -> list[list[str]]:
    """The curl commands the banner shows, as argument lists."""
    commands = re.findall(r"^\s*(curl .*?)(?=\n\s*\n|\Z)", printed, flags=re.S | re.M)
    parsed = [shlex.split(command.replace("\\\n", " ")) for command in commands]
    assert parsed and all(base in " ".join(args) for args in parsed), printed
    return parsed


def as_request(curl: list[str]) -> dict[str, Any]:
    """A curl argument list as httpx.request's arguments (-X, -H, -d, URL)."""
    method, headers, data, url = "GET", {}, None, ""
    words = iter(curl[1:])
    for word in words:
        if word == "-X":
            method = next(words)
        elif word == "-H":
            name, _, value = next(words).partition(":")
            headers[name.strip()] = value.strip()
        elif word == "-d":
            data, method = next(words), "POST" if method == "GET" else method
        elif not word.startswith("-"):
            url = word
    return {"method": method, "url": url, "headers": headers, "content": data}


def cli(*args: str) -> Any:
    result = subprocess.run(
        [sys.executable, "-m", "credit_guard.cli", *args], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return [json.loads(line, parse_float=Decimal) for line in result.stdout.splitlines()]


def test_every_example_has_a_port_of_its_own_beside_the_demo() -> None:
    defaults = {"demo": 8000}
    for path in sorted(EXAMPLES.glob("*.py")):
        found = re.findall(r'os\.environ\.get\("PORT", "(\d+)"\)', path.read_text())
        if path.stem != "client_retry":
            assert len(found) == 1, path.name
            defaults[path.stem] = int(found[0])
    assert len(set(defaults.values())) == len(defaults) == 6, defaults


def test_starlette_example(tmp_path: Path) -> None:
    with example("starlette_app", tmp_path) as (printed, base):
        key = shown_key(printed)
        chat, report = shown_curls(printed, base)
        ok = httpx.request(**as_request(chat))
        refused = httpx.request(**as_request(report))
        anonymous = httpx.post(base + "/v1/report")
        stranger = httpx.post(base + "/v1/report", headers={"Authorization": "Bearer sk-not-a-key-000"})
        anonymous_chat = httpx.post(base + "/v1/chat/completions", json={"model": "gpt-4o-mini", "messages": []})
    assert key == "sk-example-1"
    assert ok.status_code == 200, ok.text
    assert ok.json()["usage"] == {"prompt_tokens": 9, "completion_tokens": 3}
    # The hold was the worst case; what is left after this request is exact.
    spent = MINI_IN * 9 + MINI_OUT * 3
    assert Decimal(ok.headers["x-credits-remaining"]) < Decimal("0.05") - spent
    # The app's own handler raised the 402; install_handler answered it in the envelope.
    assert refused.status_code == 402
    error = refused.json()["error"]
    assert error["type"] == "insufficient_credits" and error["request_id"] == refused.headers["x-request-id"]
    assert error["message"].startswith("A report costs $0.10; your available balance is $0.0499.")
    assert Decimal(str(error["context"]["required_credits"])) == Decimal("0.10")
    # Nobody without the account's key learns its figures.
    for answer in (anonymous, stranger):
        assert answer.status_code == 401
        assert answer.json()["error"]["type"] == "authentication_error"
        assert "0.0" not in answer.text
    assert anonymous_chat.status_code == 401


def test_fastapi_example_sets_itself_up_once_and_its_handler_answers_the_402(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'fastapi_example_credits.db'}"
    with example("fastapi_app", tmp_path) as (printed, base):
        key = shown_key(printed)
        chat, report = shown_curls(printed, base)
        ok = httpx.request(**as_request(chat))
        refused = httpx.request(**as_request(report))
        anonymous = httpx.post(base + "/v1/report")
        health = httpx.get(base + "/health")
    assert key == "sk-example-fastapi-1"
    assert ok.status_code == 200 and ok.json()["id"] == ok.headers["x-request-id"]
    assert refused.status_code == 402
    error = refused.json()["error"]
    assert error["code"] == "INSUFFICIENT_CREDITS" and error["message"].startswith("A report costs $0.10")
    assert anonymous.status_code == 401 and "0.0" not in anonymous.text
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    chat_cost = MINI_IN * 12 + MINI_OUT * 2
    [after_first] = cli("credits", "balance", "acct_1", "--store", store)
    assert (after_first["granted"], after_first["spent"], after_first["held"]) == (Decimal("0.05"), chat_cost, 0)

    # The command the banner shows for more credits; then a second start adds nothing.
    grant = re.search(r"credit-guard credits grant .*", printed)
    assert grant is not None
    subprocess.run(
        [sys.executable, "-m", "credit_guard.cli", *shlex.split(grant.group(0))[1:]], cwd=tmp_path, check=True
    )
    with example("fastapi_app", tmp_path, by_env=True) as (printed, base):
        passed = httpx.request(**as_request(shown_curls(printed, base)[1]))
    assert passed.status_code == 200 and passed.json()["charged"] == "0.10"
    [after] = cli("credits", "balance", "acct_1", "--store", store)
    assert after["granted"] == Decimal("1.05") and after["spent"] == chat_cost + Decimal("0.10")
    assert len(cli("keys", "list", "--store", store)) == 1


def test_openai_proxy_example(tmp_path: Path) -> None:
    upstream_port = free_port()
    fake = [sys.executable, "-m", "credit_guard.fake_llm", "--port", str(upstream_port)]
    store = f"sqlite:///{tmp_path / 'proxy.db'}"
    env = {"UPSTREAM": f"http://127.0.0.1:{upstream_port}/v1", "CREDIT_STORE": store, "OPENAI_API_KEY": ""}
    # With nothing at the upstream's address, the banner says how to start one.
    with example("openai_proxy", tmp_path, env=env, by_env=True) as (printed, base):
        unreachable = httpx.request(**as_request(shown_curls(printed, base)[0]))
    assert f"python -m credit_guard.fake_llm --port {upstream_port}" in printed
    assert unreachable.status_code == 502
    with started(fake, tmp_path, port=upstream_port, until="fake OpenAI-compatible model"):
        with example("openai_proxy", tmp_path, env=env) as (printed, base):
            ok = httpx.request(**as_request(shown_curls(printed, base)[0]))
    assert "nothing answers" not in printed and shown_key(printed) == "sk-example-proxy-1"
    assert ok.status_code == 200, ok.text
    usage = ok.json()["usage"]
    [balance] = cli("credits", "balance", "team", "--store", store)
    assert balance["granted"] == Decimal("1.00")  # set up twice, granted once
    assert balance["spent"] == MINI_IN * usage["prompt_tokens"] + MINI_OUT * usage["completion_tokens"]
    assert len(cli("keys", "list", "--store", store)) == 1


def test_client_retry_example_against_the_demo(tmp_path: Path) -> None:
    port = free_port()
    demo = [sys.executable, "-m", "credit_guard.cli", "serve", "--demo", "--port", str(port), "--log-level", "warning"]
    with started(demo, tmp_path, port=port):
        # Run from the demo's directory, it finds the demo's key by itself.
        result = subprocess.run(
            [sys.executable, str(EXAMPLES / "client_retry.py"), "--base-url", f"http://127.0.0.1:{port}/v1"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
            env={k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"},
        )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "Insufficient credits for this request." in out
    assert "Try setting max_tokens to" in out
    affordable = re.search(r"Retrying with max_tokens=(\d+)", out)
    assert affordable is not None and 0 < int(affordable.group(1)) < 16000
    assert re.search(r"usage: \d+ in, \d+ out", out)


# LiteLLM's own modules warn about their use of pydantic and friends at import.
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_litellm_proxy_example(tmp_path: Path) -> None:
    if importlib.util.find_spec("litellm") is None:
        if os.environ.get("CI"):
            pytest.fail("CI installs the litellm extra for this example")
        pytest.skip("litellm is not installed (pip install -e '.[litellm]')")
    store = f"sqlite:///{tmp_path / 'litellm_credits.db'}"
    for _ in range(2):
        with example("litellm_proxy", tmp_path, env={"LITELLM_LOCAL_MODEL_COST_MAP": "True"}) as (printed, base):
            fits, too_much = (as_request(curl) for curl in shown_curls(printed, base))
            ok = httpx.request(**fits, timeout=60)
            refused = httpx.request(**too_much, timeout=60)
        assert shown_key(printed) == "sk-litellm-example-1"
        assert ok.status_code == 200, ok.text
        assert ok.json()["choices"][0]["message"]["content"] == "Hello from a mocked gpt-4o-mini."
        assert refused.status_code == 402 and refused.json()["error"]["context"]["n"] == 8
    [balance] = cli("credits", "balance", "acct_1", "--store", store)
    assert balance["granted"] == Decimal("1.00") and balance["held"] == 0
    assert 0 < balance["spent"] < Decimal("0.001")
    assert len(cli("keys", "list", "--store", store)) == 1


def test_client_retry_example_says_when_nothing_answers(tmp_path: Path) -> None:
    base = f"http://127.0.0.1:{free_port()}/v1"
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "client_retry.py"), "--base-url", base, "--api-key", "sk-any-0123456789"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"Nothing answers at {base}: start `credit-guard serve --demo` first." in result.stdout


def test_stripe_webhook_example_grants_once_from_the_event_it_prints(tmp_path: Path) -> None:
    with example("stripe_webhook", tmp_path) as (printed, base):
        (curl,) = shown_curls(printed, base)
        first = httpx.request(**as_request(curl))
        again = httpx.request(**as_request(curl))
        forged = as_request(curl)
        forged["headers"] = {**forged["headers"], "Stripe-Signature": "t=1,v1=" + "0" * 64}
        refused = httpx.request(**forged)
    assert first.status_code == 200, first.text
    assert first.json() == {"received": True, "account": "acct_demo", "granted": "5", "repeat": False}
    assert again.status_code == 200 and again.json()["repeat"] is True
    assert refused.status_code == 400
    shown = subprocess.run(
        [sys.executable, "-m", "credit_guard.cli", "credits", "balance", "acct_demo"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    assert Decimal(str(json.loads(shown.stdout)["granted"])) == Decimal("5")
