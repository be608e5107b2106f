"""The credit-guard command: exit codes, exact output, and the store round trip."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from credit_guard.cli import main

CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 4096}


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(args)
    out = capsys.readouterr()
    return code, out.out, out.err


def write(tmp_path: Path, body: object, name: str = "req.json") -> str:
    path = tmp_path / name
    path.write_text(json.dumps(body))
    return str(path)


def test_quote_prints_the_exact_worst_case(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["quote", write(tmp_path, CHAT)], capsys)
    assert code == 0
    quote = json.loads(out, parse_float=Decimal)
    tokens = quote["input_tokens"]
    assert quote["model"] == "gpt-4o" and quote["input_tokens_exact"] is True
    assert quote["max_output_tokens"] == 4096
    assert quote["input_cost"] == Decimal("0.0000025") * tokens
    assert quote["max_output_cost"] == Decimal("0.04096")
    assert quote["max_cost"] == quote["input_cost"] + quote["max_output_cost"]
    assert "e-" not in out.lower()  # exact decimal text, never exponent or float noise


def test_quote_with_a_short_balance_prints_the_402(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["quote", write(tmp_path, CHAT), "--balance", "0.02"], capsys)
    assert code == 1
    error = json.loads(out)["error"]
    assert error["status"] == 402
    assert error["context"]["current_credits"] == 0.02
    assert error["context"]["affordable_max_tokens"] is not None


def test_quote_reads_stdin_and_every_shape(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import io
    import sys

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(json.dumps(CHAT).encode())))
    assert run(["quote", "-"], capsys)[0] == 0
    shapes = {
        "completion": {"model": "gpt-3.5-turbo-instruct", "prompt": "Say hi", "max_tokens": 5},
        "embedding": {"model": "text-embedding-3-small", "input": ["a", "b"]},
        "responses": {"model": "gpt-4o", "input": "Hi", "max_output_tokens": 20},
        "anthropic": {"model": "claude-sonnet-4-5", "max_tokens": 30, "messages": [{"role": "user", "content": "Hi"}]},
    }
    for endpoint, body in shapes.items():
        code, out, _ = run(["quote", "--endpoint", endpoint, write(tmp_path, body, f"{endpoint}.json")], capsys)
        assert code == 0, (endpoint, out)
        assert json.loads(out)["kind"] == endpoint


@pytest.mark.parametrize(
    ("content", "args"),
    [
        ("{not json", []),
        (json.dumps({"model": "gpt-4o", "messages": "x"}), []),
        (json.dumps({"model": "unknown-model", "messages": [{"role": "user", "content": "x"}]}), []),
    ],
)
def test_quote_bad_input_exits_2_with_the_envelope(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, args: list[str]
) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    code, out, err = run(["quote", str(path), *args], capsys)
    assert code == 2
    assert json.loads(out)["error"]["status"] == 400
    assert err


def test_bad_usage_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["quote", str(tmp_path / "missing.json")], capsys)[0] == 2
    assert run(["quote", write(tmp_path, CHAT), "--balance", "ten"], capsys)[0] == 2
    assert run(["quote", write(tmp_path, CHAT), "--prices", str(tmp_path / "none.json")], capsys)[0] == 2
    assert run(["credits", "grant", "a", "0.1.2", "--store", f"sqlite:///{tmp_path}/c.db"], capsys)[0] == 2
    assert run(["credits", "balance", "a", "--store", "ftp://x"], capsys)[0] == 2
    with pytest.raises(SystemExit) as caught:
        main(["nonsense"])
    assert caught.value.code == 2


def test_credits_and_keys_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = f"sqlite:///{tmp_path}/credits.db"
    code, out, _ = run(["credits", "grant", "acct", "10.00", "--note", "invoice 1", "--store", store], capsys)
    assert code == 0 and json.loads(out)["granted"] == 10
    run(["credits", "grant", "acct", "-2.50", "--store", store], capsys)
    code, out, _ = run(["credits", "balance", "acct", "--store", store], capsys)
    assert json.loads(out, parse_float=Decimal)["available"] == Decimal("7.5")
    code, out, _ = run(["credits", "history", "acct", "--store", store], capsys)
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line["kind"] for line in lines] == ["grant", "grant"]
    assert lines[0]["note"] == "invoice 1"

    code, out, err = run(["keys", "add", "acct", "--store", store], capsys)
    key = json.loads(out)["key"]
    assert code == 0 and key.startswith("sk-") and "digest" in err
    code, out, _ = run(["keys", "list", "--store", store], capsys)
    assert key not in out
    listed = json.loads(out.splitlines()[0])
    assert listed["account"] == "acct" and listed["revoked"] is None
    assert run(["keys", "revoke", listed["prefix"], "--store", store], capsys)[0] == 0
    code, out, _ = run(["keys", "list", "acct", "--store", store], capsys)
    assert json.loads(out.splitlines()[0])["revoked"] is not None
    assert run(["keys", "revoke", "sk-never-existed-123", "--store", store], capsys)[0] == 1


def test_prices_show_list_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["prices", "show", "gpt-4o-2024-08-06"], capsys)
    shown = json.loads(out)
    assert code == 0 and shown["model"] == "gpt-4o-2024-08-06" and shown["input_per_1m"] == "2.5"
    assert run(["prices", "show", "no-such-model"], capsys)[0] == 1
    code, out, _ = run(["prices", "list", "--kind", "embedding"], capsys)
    assert code == 0 and all(json.loads(line)["kind"] == "embedding" for line in out.splitlines())
    assert run(["prices", "check"], capsys)[0] == 0
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps({"format": "credit_guard/prices@1", "models": {"m": {"kind": "chat", "input": "-1", "output": "1"}}})
    )
    code, _, err = run(["prices", "check", str(bad)], capsys)
    assert code == 2 and "not negative" in err


def test_serve_needs_an_upstream_or_the_demo(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["serve"], capsys)
    assert code == 2 and "--upstream" in err


def test_help_everywhere(capsys: pytest.CaptureFixture[str]) -> None:
    for args in (
        ["--help"],
        ["serve", "--help"],
        ["quote", "--help"],
        ["credits", "grant", "--help"],
        ["keys", "add", "--help"],
        ["prices", "show", "--help"],
    ):
        with pytest.raises(SystemExit) as caught:
            main(args)
        assert caught.value.code == 0
        assert "usage:" in capsys.readouterr().out
