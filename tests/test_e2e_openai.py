"""End to end: ``credit-guard serve`` as a real process on 127.0.0.1, driven by
the real ``openai`` SDK, in front of the built-in demo model and in front of a
fake upstream process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import openai
import pytest

from credit_guard.cli import main as cli_main

from .servers import free_port, wait_for_port

MINI_IN = Decimal("0.15") / 1_000_000
MINI_OUT = Decimal("0.60") / 1_000_000


def start(args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "credit_guard.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **(env or {})},
    )


def stop(process: subprocess.Popen[Any]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
    if process.stdout is not None:
        process.stdout.close()


def balance(store: str, account: str, capsys: pytest.CaptureFixture[str]) -> dict[str, Decimal]:
    """The account's figures once no hold is open: a hold ends in the server's
    ``finally``, just after the client has the last byte of the answer."""
    import json
    import time

    deadline = time.monotonic() + 30
    while True:
        capsys.readouterr()
        assert cli_main(["credits", "balance", account, "--store", store]) == 0
        data = json.loads(capsys.readouterr().out, parse_float=Decimal)
        figures = {k: Decimal(str(v)) for k, v in data.items() if k != "account"}
        if figures["held"] == 0 or time.monotonic() > deadline:
            return figures
        time.sleep(0.02)


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[tuple[str, str, str]]:
    port = free_port()
    store = f"sqlite:///{tmp_path / 'demo.db'}"
    process = start(["serve", "--demo", "--port", str(port), "--store", store, "--log-level", "warning"])
    try:
        wait_for_port(port, timeout=60)
        key = ""
        assert process.stdout is not None
        for line in process.stdout:
            if line.strip().startswith("API key"):
                key = line.split()[-1]
                break
        assert key.startswith("sk-demo-")
        yield f"http://127.0.0.1:{port}/v1", key, store
    finally:
        stop(process)


def test_demo_with_the_openai_sdk(demo: tuple[str, str, str], capsys: pytest.CaptureFixture[str]) -> None:
    base_url, key, store = demo
    client = openai.OpenAI(base_url=base_url, api_key=key, max_retries=0)
    try:
        before = balance(store, "demo", capsys)
        reply = client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "Hello"}], max_tokens=20
        )
        assert reply.usage is not None
        charged = MINI_IN * reply.usage.prompt_tokens + MINI_OUT * reply.usage.completion_tokens
        after = balance(store, "demo", capsys)
        assert before["available"] - after["available"] == charged
        assert after["held"] == 0

        stream = client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "Hello"}],
            max_tokens=10,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
        usage = chunks[-1].usage
        assert usage is not None and usage.completion_tokens == 10
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text.startswith("the quick brown")
        streamed = balance(store, "demo", capsys)
        assert after["available"] - streamed["available"] == MINI_IN * usage.prompt_tokens + MINI_OUT * 10

        with pytest.raises(openai.APIStatusError) as caught:
            client.chat.completions.create(
                model="gpt-4o", messages=[{"role": "user", "content": "Hello"}], max_tokens=16000
            )
        assert caught.value.status_code == 402
        body: Any = caught.value.body
        error = body["error"] if "error" in body else body
        assert error["type"] == "insufficient_credits"
        context = error["context"]
        for field in (
            "current_credits",
            "required_credits",
            "credit_deficit",
            "requested_model",
            "requested_max_tokens",
            "input_tokens",
            "input_cost",
            "max_output_cost",
            "affordable_max_tokens",
            "check_type",
        ):
            assert field in context
        assert caught.value.response.headers["x-request-id"] == error["request_id"]
        retry = client.chat.completions.create(
            model="gpt-4o",
            messages=[{"role": "user", "content": "Hello"}],
            max_tokens=context["affordable_max_tokens"],
        )
        assert retry.choices[0].message.content
    finally:
        client.close()


def test_serve_in_front_of_an_upstream_process(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    upstream_port = free_port()
    upstream = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "credit_guard.fake_llm:create_app",
            "--factory",
            "--host",
            "127.0.0.1",
            "--port",
            str(upstream_port),
            "--log-level",
            "warning",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    store = f"sqlite:///{tmp_path / 'gw.db'}"
    port = free_port()
    gateway = start(
        [
            "serve",
            "--upstream",
            f"http://127.0.0.1:{upstream_port}/v1",
            "--port",
            str(port),
            "--store",
            store,
            "--log-level",
            "warning",
        ],
        env={"OPENAI_API_KEY": "sk-upstream-secret"},
    )
    try:
        wait_for_port(upstream_port, timeout=60)
        wait_for_port(port, timeout=60)
        capsys.readouterr()
        assert cli_main(["keys", "add", "team", "--key", "sk-team-0123456789abcdef", "--store", store]) == 0
        assert cli_main(["credits", "grant", "team", "1.00", "--store", store]) == 0
        client = openai.OpenAI(
            base_url=f"http://127.0.0.1:{port}/v1", api_key="sk-team-0123456789abcdef", max_retries=0
        )
        try:
            reply = client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}], max_tokens=15
            )
            assert reply.usage is not None
            stream = client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}], max_tokens=7, stream=True
            )
            chunks = list(stream)
            # The client did not ask for usage; the guard did, and hid it.
            assert all(c.usage is None for c in chunks)
            with pytest.raises(openai.APIStatusError) as caught:
                client.chat.completions.create(
                    model="gpt-4o", messages=[{"role": "user", "content": "Hi"}], max_tokens=16000, n=20
                )
            assert caught.value.status_code == 402
        finally:
            client.close()
        figures = balance(store, "team", capsys)
        expected = MINI_IN * reply.usage.prompt_tokens * 2 + MINI_OUT * (15 + 7)
        assert figures["spent"] == expected
        assert figures["held"] == 0
    finally:
        stop(gateway)
        upstream.terminate()
        upstream.wait(timeout=10)


def test_serve_refuses_anonymous_and_unpriced_calls(demo: tuple[str, str, str]) -> None:
    import httpx

    base_url, key, _ = demo
    with httpx.Client(base_url=base_url) as http:
        assert http.get("/models").status_code == 401  # the upstream's key is never lent to strangers
        assert http.get("/models", headers={"Authorization": f"Bearer {key}"}).status_code == 200
        images = http.post("/images/generations", json={"prompt": "a cat"}, headers={"Authorization": f"Bearer {key}"})
        assert images.status_code == 400
        assert images.json()["error"]["code"] == "ENDPOINT_NOT_PRICED"
