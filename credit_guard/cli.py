"""The ``credit-guard`` command.

    credit-guard serve --upstream URL | --demo     a guarded OpenAI-compatible endpoint
    credit-guard quote [REQUEST.json|-]            the worst case of a request, offline
    credit-guard credits grant|balance|history     manage balances
    credit-guard keys add|revoke|list              manage API keys
    credit-guard usage [summary|records|prune]     where the credits went
    credit-guard prices list|show|check            inspect a price table

Exit codes: 0 done (or affordable), 1 refused (insufficient credits, nothing
found), 2 bad input.  Every option of ``serve`` is also read from an environment
variable ``CREDIT_GUARD_<OPTION>`` (``CREDIT_GUARD_UPSTREAM``,
``CREDIT_GUARD_STORE``...).
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio

from .errors import CreditGuardError, dumps, error_body
from .money import display, json_text, parse_amount

__all__ = ["main", "app_from_env", "build_app"]

DEFAULT_STORE = "sqlite:///credit_guard.db"
DEMO_STORE = "sqlite:///credit_guard_demo.db"
DEMO_ACCOUNT = "demo"
DEMO_BALANCE = "0.05"


class UsageError(Exception):
    """Bad input on the command line: exit 2."""


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get("CREDIT_GUARD_" + name.upper().replace("-", "_"), default)


def _print_json(value: object) -> None:
    sys.stdout.write(dumps(value).decode() + "\n")


def _prices(path: str | None) -> Any:
    from .prices import PriceTable

    if not path:
        return PriceTable.default()
    try:
        return PriceTable.from_file(path)
    except FileNotFoundError:
        raise UsageError(f"no price table at {path}") from None
    except (ValueError, OSError) as exc:
        raise UsageError(f"invalid price table {path}: {exc}") from None


def _store(url: str) -> Any:
    from .stores import open_store

    try:
        return open_store(url)
    except (ValueError, ImportError) as exc:
        raise UsageError(str(exc)) from None


# -- serve -------------------------------------------------------------------------


def build_app(
    *,
    upstream: str | None,
    demo: bool,
    store_url: str,
    prices: str | None,
    upstream_key: str | None = None,
    billing_url: str | None = None,
    max_body_bytes: int | None = None,
    fail_open: bool = False,
    hold_ttl: float | None = None,
    admin_token: str | None = None,
) -> Any:
    """The guarded app ``serve`` runs: the guard in front of the proxy (or of
    the fake model with ``demo``)."""
    from .fake_llm import create_app
    from .middleware import CreditGuard
    from .proxy import create_proxy

    if demo:
        inner: Any = create_app()
    elif upstream:
        inner = create_proxy(upstream, api_key=upstream_key)
    else:
        raise UsageError("serve needs --upstream URL or --demo")
    # In front of a paid upstream, nothing goes through unpriced or anonymous.
    options: dict[str, Any] = {"billing_url": billing_url, "fail_open": fail_open, "unpriced": "refuse"}
    if max_body_bytes:
        options["max_body_bytes"] = max_body_bytes
    if hold_ttl:
        options["hold_ttl"] = hold_ttl
    from .rejections import RejectionLog

    options["rejections"] = RejectionLog()
    guard = CreditGuard(inner, store=_store(store_url), prices=_prices(prices), **options)
    return _with_apis(guard, admin_token)


def _with_apis(guard: Any, admin_token: str | None) -> Any:
    """The guard, with callers' ``/v1/credits`` API beside it, and the admin
    API under ``/admin`` when a token is configured."""
    from .admin import PREFIX, AdminAPI
    from .api import CreditsAPI

    credits = CreditsAPI(guard.store, accounts=guard._lookup, low_balance_threshold=guard.low_balance_threshold)
    admin = None if admin_token is None else AdminAPI(guard.store, token=admin_token, rejections=guard.rejections)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            path = str(scope.get("path", ""))
            if path.rstrip("/") in ("/v1/credits", "/v1/credits/usage"):
                await credits(scope, receive, send)
                return
            if admin is not None and (path == PREFIX or path.startswith(PREFIX + "/")):
                await admin(scope, receive, send)
                return
        await guard(scope, receive, send)

    app.guard = guard  # type: ignore[attr-defined]
    return app


def _admin_token(file: str | None) -> str | None:
    """The admin token: read from ``file``, else ``$CREDIT_GUARD_ADMIN_TOKEN``;
    None (no admin API) when neither is set.  Never a default."""
    from .admin import check_token

    if file:
        try:
            text = Path(file).read_text(encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"cannot read the admin token file {file}: {exc.strerror}") from None
    else:
        text = _env("admin_token") or ""
        if not text:
            return None
    try:
        return check_token(text)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def app_from_env() -> Any:
    """The app for ``uvicorn --factory`` workers: configured by the
    ``CREDIT_GUARD_*`` variables ``serve`` sets."""
    return build_app(
        upstream=_env("upstream"),
        demo=_env("demo") == "1",
        store_url=_env("store") or DEFAULT_STORE,
        prices=_env("prices"),
        upstream_key=_env("upstream_key") or os.environ.get("OPENAI_API_KEY"),
        billing_url=_env("billing_url"),
        max_body_bytes=int(_env("max_body_bytes") or 0) or None,
        fail_open=_env("fail_open") == "1",
        hold_ttl=float(_env("hold_ttl") or 0) or None,
        admin_token=_admin_token(_env("admin_token_file")),
    )


async def _prepare_demo(store_url: str, balance: str) -> str:
    """Top the demo account up to ``balance`` and mint a key for it."""
    store = _store(store_url)
    try:
        current = await store.balance(DEMO_ACCOUNT)
        wanted = parse_amount(balance, what="--demo-balance")
        if current.available < wanted:
            await store.grant(DEMO_ACCOUNT, wanted - current.available)
        key = "sk-demo-" + secrets.token_urlsafe(24)
        await store.add_key(key, DEMO_ACCOUNT)
        return key
    finally:
        await store.aclose()


def _demo_banner(host: str, port: int, key: str, store_url: str, balance: str) -> str:
    base = f"http://{host}:{port}"
    return f"""
credit_guard demo: a guarded fake OpenAI-compatible model (no network, no real keys)

  API key   {key}
  account   {DEMO_ACCOUNT}, balance topped up to ${balance}
  store     {store_url}
  base URL  {base}/v1

A request that fits (charged from the reported usage):
  curl -s {base}/v1/chat/completions -H 'Authorization: Bearer {key}' \\
    -H 'Content-Type: application/json' \\
    -d '{{"model": "gpt-4o-mini", "messages": [{{"role": "user", "content": "Hi"}}], "max_tokens": 50}}'

Streamed:
  curl -sN {base}/v1/chat/completions -H 'Authorization: Bearer {key}' \\
    -H 'Content-Type: application/json' \\
    -d '{{"model": "gpt-4o-mini", "stream": true, "messages": [{{"role": "user", "content": "Hi"}}]}}'

One the balance cannot cover (a detailed 402):
  curl -s {base}/v1/chat/completions -H 'Authorization: Bearer {key}' \\
    -H 'Content-Type: application/json' \\
    -d '{{"model": "gpt-4o", "messages": [{{"role": "user", "content": "Hi"}}], "max_tokens": 16000}}'

With the openai SDK:
  from openai import OpenAI
  client = OpenAI(base_url="{base}/v1", api_key="{key}")

Balance:  credit-guard credits balance {DEMO_ACCOUNT} --store {store_url}
Stop with Ctrl-C.
"""


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    store_url = args.store or _env("store") or (DEMO_STORE if args.demo else DEFAULT_STORE)
    upstream = args.upstream or _env("upstream")
    if not args.demo and not upstream:
        raise UsageError("serve needs --upstream URL (or CREDIT_GUARD_UPSTREAM), or --demo")
    if args.demo and upstream:
        raise UsageError("--demo and --upstream exclude each other")
    prices = args.prices or _env("prices")
    _prices(prices)  # fail now, not in a worker
    token_file = args.admin_token_file or _env("admin_token_file")
    admin = _admin_token(token_file) is not None  # fail now, not in a worker
    config = {
        "CREDIT_GUARD_UPSTREAM": upstream or "",
        "CREDIT_GUARD_DEMO": "1" if args.demo else "0",
        "CREDIT_GUARD_STORE": store_url,
        "CREDIT_GUARD_PRICES": prices or "",
        "CREDIT_GUARD_UPSTREAM_KEY": args.upstream_key or _env("upstream_key") or "",
        "CREDIT_GUARD_BILLING_URL": args.billing_url or _env("billing_url") or "",
        "CREDIT_GUARD_MAX_BODY_BYTES": str(args.max_body_bytes or _env("max_body_bytes") or ""),
        "CREDIT_GUARD_FAIL_OPEN": "1" if args.fail_open or _env("fail_open") == "1" else "0",
        "CREDIT_GUARD_HOLD_TTL": str(args.hold_ttl or _env("hold_ttl") or ""),
        # The path, not the token: workers read the file themselves.
        "CREDIT_GUARD_ADMIN_TOKEN_FILE": token_file or "",
    }
    os.environ.update(config)
    if args.demo:
        key = anyio.run(_prepare_demo, store_url, args.demo_balance)
        print(_demo_banner(args.host, args.port, key, store_url, args.demo_balance), flush=True)
    else:
        print(
            f"credit_guard: guarding {upstream} on http://{args.host}:{args.port} (store {store_url})",
            flush=True,
        )
    if admin:
        print(f"admin API and dashboard: http://{args.host}:{args.port}/admin/ (bearer token)", flush=True)
    uvicorn.run(
        "credit_guard.cli:app_from_env",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=args.log_level,
        lifespan="on",
    )
    return 0


# -- quote -------------------------------------------------------------------------


def _read_request(source: str | None) -> Any:
    try:
        raw = sys.stdin.buffer.read() if source in (None, "-") else Path(source).read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {source}: {exc}") from None
    from .body import parse_json

    return parse_json(raw)


def _quote(args: argparse.Namespace) -> int:
    from . import shapes, tokens
    from .middleware import CreditGuard
    from .quote import insufficient_credits, make_quote
    from .stores import MemoryStore

    table = _prices(args.prices)
    try:
        body = _read_request(args.request)
        ask = shapes.parse(args.endpoint, body)
        guard = CreditGuard(_nothing, store=MemoryStore(), prices=table)
        price = guard.resolve(ask)
        count = tokens.count_input(ask, price)
        quote = make_quote(ask, price, count.tokens, count.exact)
    except CreditGuardError as error:
        sys.stdout.write(error_body(error, "req_cli").decode() + "\n")
        print(f"credit-guard quote: {error.message}", file=sys.stderr)
        return 2
    if args.balance is not None:
        try:
            available = parse_amount(args.balance, what="--balance")
        except (TypeError, ValueError) as exc:
            raise UsageError(str(exc)) from None
        if quote.max_cost > available:
            short = insufficient_credits(
                quote,
                available=available,
                held=Decimal(0),
                cheaper=guard.cheaper(quote, ask, available),
            )
            sys.stdout.write(error_body(short, "req_cli").decode() + "\n")
            return 1
    _print_json(quote.as_json())
    return 0


async def _nothing(scope: Any, receive: Any, send: Any) -> None:  # pragma: no cover - never called
    raise RuntimeError("quote never runs an app")


# -- credits and keys ----------------------------------------------------------------


def _balance_json(account: str, balance: Any) -> dict[str, Any]:
    return {
        "account": account,
        "available": balance.available,
        "held": balance.held,
        "spent": balance.spent,
        "granted": balance.granted,
    }


def _credits(args: argparse.Namespace) -> int:
    async def run() -> int:
        store = _store(args.store)
        try:
            if args.action == "grant":
                try:
                    amount = parse_amount(args.amount, what="AMOUNT")
                    balance = await store.grant(args.account, amount, **({"note": args.note} if args.note else {}))
                except (TypeError, ValueError) as exc:
                    raise UsageError(str(exc)) from None
                _print_json(_balance_json(args.account, balance))
            elif args.action == "balance":
                balance = await store.balance(args.account)
                _print_json(_balance_json(args.account, balance))
                print(f"available {display(balance.available, owed=False)}", file=sys.stderr)
            else:
                if not hasattr(store, "history"):
                    raise UsageError("this store keeps no history; use sqlite:/// or redis://")
                for line in await store.history(args.account, limit=args.limit):
                    _print_json(line)
            return 0
        finally:
            await store.aclose()

    return anyio.run(run)


def _keys(args: argparse.Namespace) -> int:
    async def run() -> int:
        store = _store(args.store)
        try:
            if args.action == "add":
                key = args.key or "sk-" + secrets.token_urlsafe(36)
                try:
                    prefix = await store.add_key(key, args.account)
                except ValueError as exc:
                    raise UsageError(str(exc)) from None
                _print_json({"account": args.account, "key": key, "prefix": prefix})
                print("Keep the key now: only its digest is stored.", file=sys.stderr)
                return 0
            if args.action == "revoke":
                count = await store.revoke_key(args.key)
                _print_json({"revoked": count})
                return 0 if count else 1
            for row in await store.list_keys(args.account):
                _print_json(row)
            return 0
        finally:
            await store.aclose()

    return anyio.run(run)


# -- usage -----------------------------------------------------------------------------


def _usage(args: argparse.Namespace) -> int:
    from .records import UsageQuery, parse_day
    from .report import render_records, render_rows

    try:
        query = UsageQuery(
            account=args.account,
            key=args.key,
            model=args.model,
            since=parse_day(args.since) if args.since else None,
            until=parse_day(args.until) if args.until else None,
        )
        before = parse_day(args.before) if args.before else None
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.action == "prune" and before is None:
        raise UsageError("usage prune needs --before YYYY-MM-DD")
    if args.action != "prune" and before is not None:
        raise UsageError("--before is for usage prune")

    async def run() -> int:
        store = _store(args.store)
        try:
            if not getattr(store, "keeps_usage", False):
                raise UsageError("this store keeps no usage records")
            if args.action == "prune":
                assert before is not None
                removed = await store.prune_usage(before, account=args.account)
                _print_json({"pruned": removed, "before": before.isoformat()})
            elif args.action == "records":
                records = await store.usage_records(query, limit=args.limit)
                sys.stdout.write(render_records(records, args.format))
            else:
                rows = await store.usage_summary(query, by=args.by)
                sys.stdout.write(render_rows(rows, args.by, args.format))
            return 0
        finally:
            await store.aclose()

    return anyio.run(run)


# -- prices ----------------------------------------------------------------------------


def _price_json(price: Any) -> dict[str, Any]:
    million = Decimal(1_000_000)
    return {
        "model": price.name,
        "kind": price.kind,
        "provider": price.provider,
        "input_per_1m": json_text(price.input_price * million),
        "output_per_1m": json_text(price.output_price * million),
        "cached_input_per_1m": None
        if price.cached_input_price is None
        else json_text(price.cached_input_price * million),
        "max_output_tokens": price.max_output_tokens,
        "max_input_tokens": price.max_input_tokens,
        "encoding": price.encoding,
        "input_count": "exact" if price.encoding else "bounded",
        "vision": price.vision.method if price.vision else None,
    }


def _prices_command(args: argparse.Namespace) -> int:
    from .prices import ModelNotPriced

    if args.action == "show":
        if len(args.names) == 2:
            file, model = args.names
        elif len(args.names) == 1:
            file, model = None, args.names[0]
        else:
            raise UsageError("prices show [FILE] MODEL")
        table = _prices(file)
        try:
            price = table.resolve(model)
        except ModelNotPriced as exc:
            print(f"credit-guard prices: {exc}", file=sys.stderr)
            return 1
        _print_json({"requested": model, **_price_json(price)})
        return 0
    if len(args.names) > 1:
        raise UsageError(f"prices {args.action} [FILE]")
    table = _prices(args.names[0] if args.names else None)
    if args.action == "check":
        kinds: dict[str, int] = {}
        for model in table.models():
            kinds[model.kind] = kinds.get(model.kind, 0) + 1
        _print_json({"valid": True, "models": len(table), "by_kind": kinds, "as_of": table.as_of})
        return 0
    for model in table.models(args.kind):
        _print_json(_price_json(model))
    return 0


# -- the parser ----------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="credit-guard", description="Prepaid credits in front of any OpenAI-compatible API."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run a guarded endpoint", description="Run the guard in front of an upstream.")
    serve.add_argument("--upstream", help="the OpenAI-compatible upstream URL (CREDIT_GUARD_UPSTREAM)")
    serve.add_argument("--demo", action="store_true", help="guard a built-in fake model: no keys, no network")
    serve.add_argument("--store", help=f"store URL (default {DEFAULT_STORE}; demo: {DEMO_STORE})")
    serve.add_argument("--prices", help="price table file (default: the bundled one)")
    serve.add_argument("--host", default=_env("host", "127.0.0.1"), help="default 127.0.0.1 (CREDIT_GUARD_HOST)")
    serve.add_argument("--port", type=int, default=int(_env("port", "8000") or 8000), help="default 8000")
    serve.add_argument("--workers", type=int, default=int(_env("workers", "1") or 1), help="worker processes")
    serve.add_argument("--upstream-key", help="the key sent upstream (default: $OPENAI_API_KEY)")
    serve.add_argument("--billing-url", help="named in the 402's suggestions")
    serve.add_argument("--max-body-bytes", type=int, help="request body limit (default 16 MiB)")
    serve.add_argument("--hold-ttl", type=float, help="seconds a dead process's hold lasts (default 300)")
    serve.add_argument("--fail-open", action="store_true", help="forward unpriced while the store is down (risky)")
    serve.add_argument(
        "--admin-token-file",
        help="turn on the admin API and dashboard under /admin with the token in this file "
        "(or $CREDIT_GUARD_ADMIN_TOKEN); off without one",
    )
    serve.add_argument("--demo-balance", default=DEMO_BALANCE, help=f"demo balance in dollars (default {DEMO_BALANCE})")
    serve.add_argument("--log-level", default=_env("log_level", "info"), help="uvicorn's log level")
    serve.set_defaults(run=_serve)

    quote = sub.add_parser("quote", help="price a request offline", description="Print a request's worst case.")
    quote.add_argument("request", nargs="?", help="the request body as JSON (a file, or - for stdin)")
    quote.add_argument("--prices", help="price table file (default: the bundled one)")
    quote.add_argument("--balance", help="a balance in dollars: print the 402 when it is short")
    quote.add_argument(
        "--endpoint",
        default="chat",
        choices=["chat", "completion", "embedding", "responses", "anthropic"],
        help="the request's shape (default chat)",
    )
    quote.set_defaults(run=_quote)

    credits = sub.add_parser("credits", help="grant credits, show balances and history")
    credits_sub = credits.add_subparsers(dest="action", required=True)
    for name, text in (
        ("grant", "add credits (negative: take back)"),
        ("balance", "show"),
        ("history", "the ledger"),
    ):
        cmd = credits_sub.add_parser(name, help=text)
        cmd.add_argument("account")
        if name == "grant":
            cmd.add_argument("amount", help="dollars, an exact decimal such as 10.00")
            cmd.add_argument("--note", help="why (kept in the ledger)")
        if name == "history":
            cmd.add_argument("--limit", type=int, default=100)
        cmd.add_argument("--store", default=_env("store", DEFAULT_STORE), help=f"store URL (default {DEFAULT_STORE})")
    credits.set_defaults(run=_credits)

    keys = sub.add_parser("keys", help="add, revoke and list API keys")
    keys_sub = keys.add_subparsers(dest="action", required=True)
    add = keys_sub.add_parser("add", help="create a key for an account (printed once)")
    add.add_argument("account")
    add.add_argument("--key", help="use this key instead of a new random one")
    revoke = keys_sub.add_parser("revoke", help="revoke a key (whole, or its listed prefix)")
    revoke.add_argument("key")
    listing = keys_sub.add_parser("list", help="list keys (prefixes only)")
    listing.add_argument("account", nargs="?")
    for cmd in (add, revoke, listing):
        cmd.add_argument("--store", default=_env("store", DEFAULT_STORE), help=f"store URL (default {DEFAULT_STORE})")
    keys.set_defaults(run=_keys)

    usage = sub.add_parser(
        "usage",
        help="where the credits went: summaries, records, pruning",
        description="Usage summed per day, model, key or account (summary, the default), the records "
        "themselves (records, newest first), or delete records before a day (prune --before DAY). "
        "Days are UTC, YYYY-MM-DD; --since and --until are both included.",
    )
    usage.add_argument("action", nargs="?", default="summary", choices=["summary", "records", "prune"])
    usage.add_argument("--account", help="only this account")
    usage.add_argument("--key", help="only this key (its label, as 'keys list' shows it)")
    usage.add_argument("--model", help="only this model")
    usage.add_argument("--since", metavar="DAY", help="from this UTC day (YYYY-MM-DD)")
    usage.add_argument("--until", metavar="DAY", help="up to and including this UTC day")
    usage.add_argument("--by", default="day", choices=["day", "model", "key", "account"], help="group (default day)")
    usage.add_argument("--format", default="table", choices=["table", "csv", "json"], help="json: one object a line")
    usage.add_argument("--limit", type=int, default=100, help="records: at most this many (default 100)")
    usage.add_argument("--before", metavar="DAY", help="prune: delete records that ended before this UTC day")
    usage.add_argument("--store", default=_env("store", DEFAULT_STORE), help=f"store URL (default {DEFAULT_STORE})")
    usage.set_defaults(run=_usage)

    prices = sub.add_parser("prices", help="inspect and check a price table")
    prices_sub = prices.add_subparsers(dest="action", required=True)
    plist = prices_sub.add_parser("list", help="list models: prices [FILE]")
    plist.add_argument("names", nargs="*", metavar="FILE")
    plist.add_argument("--kind", choices=["chat", "completion", "embedding", "responses"])
    show = prices_sub.add_parser("show", help="what a model name resolves to: prices show [FILE] MODEL")
    show.add_argument("names", nargs="+", metavar="[FILE] MODEL")
    check = prices_sub.add_parser("check", help="validate a table: prices check [FILE]")
    check.add_argument("names", nargs="*", metavar="FILE")
    prices.set_defaults(run=_prices_command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        result: int = args.run(args)
        return result
    except UsageError as exc:
        print(f"credit-guard: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # the store and the network: say what failed, not a traceback
        from .stores.base import StoreUnavailable

        if isinstance(exc, StoreUnavailable):
            print(f"credit-guard: the credit store is unavailable: {exc}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
