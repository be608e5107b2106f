"""``credit-guard serve`` as a user runs it: a real process on a real port."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from .servers import free_port, serve, wait_for_port

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 5}


@contextmanager
def credit_guard(args: list[str], env: dict[str, str] | None = None, port: int | None = None) -> Iterator[Any]:
    """``credit-guard ARGS`` running; yields (process, the lines it printed
    up to its banner's end, port)."""
    port = port or free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "credit_guard.cli", *args, "--port", str(port), "--log-level", "warning"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
    try:
        assert process.stdout is not None
        lines: list[str] = []
        for line in process.stdout:
            lines.append(line)
            if line.startswith(("Stop with Ctrl-C", "credit_guard: guarding")):
                break
        wait_for_port(port, timeout=60)
        yield process, lines, port
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


def banner_key(lines: list[str]) -> str:
    return next(line.split()[-1] for line in lines if line.strip().startswith("API key"))


def cli(*args: str) -> tuple[int, str, str]:
    result = subprocess.run(
        [sys.executable, "-m", "credit_guard.cli", *args], capture_output=True, text=True, timeout=60
    )
    return result.returncode, result.stdout, result.stderr


def test_a_restarted_demo_keeps_its_key_and_adds_none(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'demo.db'}"
    keys = []
    for _ in range(2):
        with credit_guard(["serve", "--demo", "--store", store]) as (_, lines, port):
            key = banner_key(lines)
            answer = httpx.post(
                f"http://127.0.0.1:{port}/v1/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {key}"}
            )
            assert answer.status_code == 200, answer.text
            keys.append(key)
    assert keys[0] == keys[1] and keys[0].startswith("sk-demo-")
    code, out, _ = cli("keys", "list", "demo", "--store", store)
    assert code == 0 and len(out.splitlines()) == 1
    key_file = tmp_path / "demo.db.key"
    assert key_file.read_text().strip() == keys[0]
    assert key_file.stat().st_mode & 0o077 == 0
    # Topped up to the demo balance, not granted again on each start.
    code, out, _ = cli("credits", "balance", "demo", "--store", store)
    figures = json.loads(out)
    assert code == 0 and 0.049 < figures["available"] < 0.05 and figures["granted"] < 0.0501


def test_a_busy_port_is_refused_before_the_store_or_the_banner(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "credit_guard.cli", "serve", "--demo", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
        )
    assert result.returncode == 1 and result.stdout == ""
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert list(tmp_path.iterdir()) == []  # no store, no key file


def recording_upstream(seen: list[str]) -> Any:
    """An OpenAI-compatible upstream that remembers the Authorization it was sent."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        seen.append(dict(scope["headers"]).get(b"authorization", b"").decode())
        while (await receive()).get("more_body"):
            pass
        body = json.dumps(
            {
                "object": "chat.completion",
                "model": "gpt-4o-mini",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}}],
                "usage": {"prompt_tokens": 8, "completion_tokens": 1},
            }
        ).encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})

    return app


@pytest.mark.parametrize("source", ["environment", "file", "openai"])
def test_the_upstream_key_comes_from_the_environment_or_a_file(tmp_path: Path, source: str) -> None:
    secret = "sk-upstream-secret-" + source
    store = f"sqlite:///{tmp_path / 'gw.db'}"
    assert cli("credits", "grant", "team", "1.00", "--store", store)[0] == 0
    assert cli("keys", "add", "team", "--key", "sk-team-0123456789", "--store", store)[0] == 0
    env = {"CREDIT_GUARD_UPSTREAM_KEY": "", "OPENAI_API_KEY": ""}
    extra: list[str] = []
    if source == "environment":
        env["CREDIT_GUARD_UPSTREAM_KEY"] = secret
        env["OPENAI_API_KEY"] = "sk-not-this-one"
        named = "$CREDIT_GUARD_UPSTREAM_KEY"
    elif source == "file":
        key_file = tmp_path / "upstream.key"
        key_file.write_text(secret + "\n")
        env["CREDIT_GUARD_UPSTREAM_KEY"] = "sk-not-this-one"
        extra = ["--upstream-key-file", str(key_file)]
        named = f"file {key_file}"
    else:
        env["OPENAI_API_KEY"] = secret
        named = "$OPENAI_API_KEY"
    seen: list[str] = []
    with serve(recording_upstream(seen)) as upstream:
        args = ["serve", "--upstream", upstream + "/v1", "--store", store, *extra]
        with credit_guard(args, env=env) as (process, lines, port):
            answer = httpx.post(
                f"http://127.0.0.1:{port}/v1/chat/completions",
                json=CHAT,
                headers={"Authorization": "Bearer sk-team-0123456789"},
            )
            cmdline = Path(f"/proc/{process.pid}/cmdline").read_bytes()
    assert answer.status_code == 200, answer.text
    assert seen == [f"Bearer {secret}"]
    banner = "".join(lines)
    assert f"upstream key: {named}" in banner and secret not in banner
    assert secret.encode() not in cmdline


def test_serve_metrics_at_a_path_of_its_own(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'demo.db'}"
    with credit_guard(["serve", "--demo", "--store", store, "--metrics", "--metrics-path", "/prom"]) as (
        _,
        lines,
        port,
    ):
        base = f"http://127.0.0.1:{port}"
        assert f"metrics   {base}/prom" in "".join(lines)
        refused = httpx.post(
            base + "/v1/chat/completions",
            json={**CHAT, "model": "gpt-4o", "max_tokens": 16000},
            headers={"Authorization": f"Bearer {banner_key(lines)}"},
        )
        scraped = httpx.get(base + "/prom")  # a scraper has no API key
        elsewhere = httpx.get(base + "/metrics")
    assert refused.status_code == 402
    assert scraped.status_code == 200 and scraped.headers["content-type"].startswith("text/plain")
    assert 'credit_guard_rejections_total{model="gpt-4o",reason="insufficient_balance"} 1.0' in scraped.text
    assert "sk-demo-" not in scraped.text and "demo" not in scraped.text.replace("credit_guard", "")
    assert elsewhere.status_code == 401  # not the metrics path: the guard's, and serve refuses the anonymous


def test_serve_logs_a_402_as_deploying_md_says(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'demo.db'}"
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "credit_guard.cli", "serve", "--demo", "--store", store, "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        lines = []
        for line in process.stdout:
            lines.append(line)
            if line.startswith("Stop with Ctrl-C"):
                break
        wait_for_port(port, timeout=60)
        key = banner_key(lines)
        refused = httpx.post(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            json={**CHAT, "model": "gpt-4o", "max_tokens": 16000},
            headers={"Authorization": f"Bearer {key}"},
        )
    finally:
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=30)
    assert refused.status_code == 402
    context = refused.json()["error"]["context"]
    [line] = [line for line in err.splitlines() if "credit_guard.rejected" in line]
    assert line.startswith("INFO:") and key not in err
    assert f"request_id={refused.headers['x-request-id']} account=demo model=gpt-4o" in line
    assert f"shortfall={context['credit_deficit']} " in line


@pytest.mark.anyio
async def test_build_app_with_metrics_twice_in_one_process() -> None:
    from credit_guard.cli import build_app

    apps = [build_app(upstream=None, demo=True, store_url="sqlite:///:memory:", prices=None, metrics_path="/m")]
    apps.append(build_app(upstream=None, demo=True, store_url="sqlite:///:memory:", prices=None, metrics_path="/m"))
    for app in apps:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
            scraped = await http.get("/m")
        assert scraped.status_code == 200 and "credit_guard_rejections_total" in scraped.text
        assert "process_cpu_seconds_total" in scraped.text


@pytest.mark.parametrize("margin", ["0", "-3", "1.5", "ten"])
def test_a_bad_bound_margin_is_refused_before_serving(tmp_path: Path, margin: str) -> None:
    store = f"sqlite:///{tmp_path / 'credits.db'}"
    code, out, err = cli("serve", "--demo", "--store", store, "--bound-margin", margin, "--port", str(free_port()))
    assert code == 2 and "--bound-margin must be a whole number" in err
    assert out == ""  # no banner: nothing was served


def test_bound_margin_reaches_the_guard() -> None:
    from credit_guard.cli import build_app

    common: dict[str, Any] = {"upstream": None, "demo": True, "store_url": "sqlite:///:memory:", "prices": None}
    assert build_app(**common).guard.bound_margin == 10
    assert build_app(**common, bound_margin="off").guard.bound_margin is None
    assert build_app(**common, bound_margin="3").guard.bound_margin == 3
