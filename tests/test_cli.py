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


# -- reading refuses what does not exist ---------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["credits", "balance", "acct"],
        ["credits", "history", "acct"],
        ["credits", "list"],
        ["keys", "list"],
        ["keys", "revoke", "sk-any-0123456789"],
    ],
    ids=lambda a: " ".join(a[:2]),
)
def test_reading_a_store_that_does_not_exist_is_refused_and_creates_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    missing = tmp_path / "typo" / "credits.db"
    code, out, err = run([*args, "--store", f"sqlite:///{missing}"], capsys)
    assert (code, out) == (1, "")
    assert f"no credit store at {missing}" in err
    assert not missing.parent.exists()


def test_an_unknown_account_is_an_error_not_a_zero_balance(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = f"sqlite:///{tmp_path}/credits.db"
    assert run(["credits", "grant", "acct", "1.00", "--store", store], capsys)[0] == 0
    for args in (["credits", "balance", "acct_x"], ["credits", "history", "acct_x"], ["keys", "list", "acct_x"]):
        code, out, err = run([*args, "--store", store], capsys)
        assert (code, out) == (1, ""), args
        assert "no such account: acct_x" in err
    # A key alone makes an account known, with nothing granted.
    assert run(["keys", "add", "keyed", "--store", store], capsys)[0] == 0
    code, out, _ = run(["credits", "balance", "keyed", "--store", store], capsys)
    assert code == 0 and json.loads(out)["granted"] == 0


def test_credits_list_shows_every_account_with_its_figures(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = f"sqlite:///{tmp_path}/credits.db"
    run(["credits", "grant", "b_acct", "2.50", "--store", store], capsys)
    run(["credits", "grant", "a_acct", "0.0000000001", "--store", store], capsys)
    run(["keys", "add", "c_acct", "--store", store], capsys)
    code, out, _ = run(["credits", "list", "--store", store], capsys)
    rows = [json.loads(line, parse_float=Decimal) for line in out.splitlines()]
    assert code == 0
    assert [(r["account"], r["available"], r["granted"]) for r in rows] == [
        ("a_acct", Decimal("1E-10"), Decimal("1E-10")),
        ("b_acct", Decimal("2.5"), Decimal("2.5")),
        ("c_acct", 0, 0),
    ]


def test_taking_back_more_than_is_available_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = f"sqlite:///{tmp_path}/credits.db"
    run(["credits", "grant", "acct", "1.00", "--store", store], capsys)
    code, out, err = run(["credits", "grant", "acct", "-1.01", "--store", store], capsys)
    assert (code, out) == (1, "") and "cannot take back" in err
    code, out, _ = run(["credits", "balance", "acct", "--store", store], capsys)
    assert json.loads(out)["available"] == 1


# -- keys ---------------------------------------------------------------------------------------------


def test_keys_add_moves_another_accounts_key_only_when_forced(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = f"sqlite:///{tmp_path}/credits.db"
    key = "sk-shared-0123456789abcdef"
    assert run(["keys", "add", "alice", "--key", key, "--store", store], capsys)[0] == 0
    code, out, err = run(["keys", "add", "mallory", "--key", key, "--store", store], capsys)
    assert (code, out) == (1, "") and "belongs to account alice" in err and "--force" in err
    code, out, _ = run(["keys", "list", "alice", "--store", store], capsys)
    assert [json.loads(line)["account"] for line in out.splitlines()] == ["alice"]
    # Adding it again to its own account is no move: fine.
    assert run(["keys", "add", "alice", "--key", key, "--store", store], capsys)[0] == 0
    code, _, err = run(["keys", "add", "bob", "--key", key, "--force", "--store", store], capsys)
    assert code == 0 and "Moved the key from account alice" in err
    code, out, _ = run(["keys", "list", "--store", store], capsys)
    assert [json.loads(line)["account"] for line in out.splitlines()] == ["bob"]


def test_revoking_by_an_ambiguous_prefix_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = f"sqlite:///{tmp_path}/credits.db"
    first, second = "sk-abcd-first-middle-wxyz", "sk-abcd-other-middle-wxyz"
    run(["keys", "add", "a", "--key", first, "--store", store], capsys)
    run(["keys", "add", "b", "--key", second, "--store", store], capsys)
    code, out, _ = run(["keys", "list", "--store", store], capsys)
    prefixes = {json.loads(line)["prefix"] for line in out.splitlines()}
    assert prefixes == {"sk-abcd...wxyz"}
    code, out, err = run(["keys", "revoke", "sk-abcd...wxyz", "--store", store], capsys)
    assert (code, out) == (1, "") and "matches 2 keys" in err and "a, b" in err
    code, out, _ = run(["keys", "list", "--store", store], capsys)
    assert all(json.loads(line)["revoked"] is None for line in out.splitlines())
    # The whole key names one; then the prefix is unique again.
    assert run(["keys", "revoke", first, "--store", store], capsys)[0] == 0
    assert run(["keys", "revoke", "sk-abcd...wxyz", "--store", store], capsys)[0] == 0
    code, out, _ = run(["keys", "list", "--store", store], capsys)
    assert all(json.loads(line)["revoked"] is not None for line in out.splitlines())
    assert run(["keys", "revoke", "sk-abcd...wxyz", "--store", store], capsys)[0] == 1


# -- quote ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        ({"model": "text-embedding-3-small", "input": ["a", "b"]}, "embedding"),
        ({"model": "text-embedding-3-small", "input": "a"}, "embedding"),
        ({"model": "gpt-3.5-turbo-instruct", "prompt": "Say hi", "max_tokens": 5}, "completion"),
        ({"model": "gpt-4o", "input": "Hi", "max_output_tokens": 20}, "responses"),
        ({"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 20}, "chat"),
        (
            {"model": "claude-sonnet-4-5", "max_tokens": 30, "messages": [{"role": "user", "content": "Hi"}]},
            "anthropic",
        ),
    ],
    ids=lambda v: v if isinstance(v, str) else v["model"],
)
def test_quote_infers_the_endpoint_from_the_model_and_the_body(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], body: dict[str, object], kind: str
) -> None:
    code, out, err = run(["quote", write(tmp_path, body)], capsys)
    assert code == 0, err
    assert json.loads(out)["kind"] == kind


def test_quote_refuses_a_negative_balance(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["quote", write(tmp_path, CHAT), "--balance", "-0.01"], capsys)
    assert (code, out) == (2, "") and "must not be negative" in err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    import credit_guard

    with pytest.raises(SystemExit) as caught:
        main(["--version"])
    assert caught.value.code == 0
    assert capsys.readouterr().out.strip() == f"credit-guard {credit_guard.__version__}"


# -- one meaning for each exit code, in every subcommand ---------------------------------------------------


def test_exit_codes_mean_the_same_in_every_subcommand(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket
    import sys

    store = f"sqlite:///{tmp_path}/credits.db"
    request = write(tmp_path, CHAT)
    bad_table = tmp_path / "table.json"
    bad_table.write_text(json.dumps({"format": "credit_guard/prices@1", "models": {"m": {"kind": "x"}}}))
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    busy_port = str(taken.getsockname()[1])
    matrix: list[tuple[int, list[str]]] = [
        # 0: done
        (0, ["credits", "grant", "acct", "1.00", "--store", store]),
        (0, ["credits", "balance", "acct", "--store", store]),
        (0, ["credits", "history", "acct", "--store", store]),
        (0, ["credits", "list", "--store", store]),
        (0, ["keys", "add", "acct", "--key", "sk-matrix-0123456789", "--store", store]),
        (0, ["keys", "list", "acct", "--store", store]),
        (0, ["quote", request]),
        (0, ["quote", request, "--balance", "1.00"]),
        (0, ["prices", "show", "gpt-4o"]),
        (0, ["prices", "list", "--kind", "embedding"]),
        (0, ["prices", "check"]),
        # 1: refused, or not found
        (1, ["credits", "balance", "nobody", "--store", store]),
        (1, ["credits", "history", "nobody", "--store", store]),
        (1, ["credits", "balance", "acct", "--store", f"sqlite:///{tmp_path}/none.db"]),
        (1, ["credits", "grant", "acct", "-5", "--store", store]),
        (1, ["keys", "add", "other", "--key", "sk-matrix-0123456789", "--store", store]),
        (1, ["keys", "list", "nobody", "--store", store]),
        (1, ["keys", "revoke", "sk-never-issued-0000", "--store", store]),
        (1, ["quote", request, "--balance", "0.001"]),
        (1, ["prices", "show", "no-such-model"]),
        (1, ["serve", "--demo", "--port", busy_port, "--store", f"sqlite:///{tmp_path}/demo.db"]),
        # 2: bad input
        (2, ["credits", "grant", "acct", "ten", "--store", store]),
        (2, ["credits", "balance", "acct", "--store", "ftp://x"]),
        (2, ["credits", "grant", "acct", "1", "--store", "memory://"]),
        (2, ["serve", "--demo", "--store", "memory://", "--port", busy_port]),
        (2, ["serve", "--demo", "--store", "ftp://x", "--port", busy_port]),
        (2, ["credits", "grant", " acct", "1", "--store", store]),
        (2, ["keys", "add", "", "--store", store]),
        (2, ["keys", "add", "acct", "--key", "short", "--store", store]),
        (2, ["quote", str(tmp_path / "missing.json")]),
        (2, ["quote", write(tmp_path, {"model": "gpt-4o", "messages": "x"}, "bad.json")]),
        (2, ["quote", request, "--balance", "-1"]),
        (2, ["prices", "check", str(bad_table)]),
        (2, ["serve"]),
        (2, ["serve", "--demo", "--upstream", "http://127.0.0.1:9/v1"]),
        (2, ["serve", "--upstream", "http://127.0.0.1:9/v1", "--upstream-key-file", str(tmp_path / "none")]),
        (2, ["serve", "--demo", "--metrics", "--workers", "2", "--port", busy_port]),
    ]
    try:
        for expected, args in matrix:
            code, _, err = run(args, capsys)
            assert code == expected, (args, err)
            assert expected == 0 or err.startswith("credit-guard"), (args, err)
        for args in (["credits"], ["credits", "balance"], ["keys", "frobnicate"], ["quote", "--endpoint", "x"]):
            with pytest.raises(SystemExit) as caught:
                main(args)
            assert caught.value.code == 2, args
        # quote with no request and a terminal for stdin says so instead of waiting.
        monkeypatch.setattr(sys.stdin, "isatty", lambda: True)
        code, _, err = run(["quote"], capsys)
        assert code == 2 and "quote needs a request" in err
        # The metrics extra missing is bad input too, said before anything starts.
        monkeypatch.setitem(sys.modules, "prometheus_client", None)
        code, _, err = run(["serve", "--demo", "--metrics", "--port", busy_port], capsys)
        assert code == 2 and "pip install 'credit-guard[metrics]'" in err
    finally:
        taken.close()
    assert not (tmp_path / "demo.db").exists()  # the busy port was found before the store was touched
