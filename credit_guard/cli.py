"""The ``credit-guard`` command.

    credit-guard serve --upstream URL | --demo     a guarded OpenAI-compatible endpoint
    credit-guard quote [REQUEST.json|-]            the worst case of a request, offline
    credit-guard credits grant|balance|history|list   manage balances
    credit-guard keys add|revoke|list              manage API keys
    credit-guard usage [summary|records|prune]     where the credits went
    credit-guard prices list|show|check            inspect a price table

Exit codes, the same for every subcommand: 0 done (or affordable), 1 refused or
not found (insufficient credits, no such account, key or store, a port in use),
2 bad input (arguments, files, request bodies).  Every option of ``serve`` is
also read from an environment variable ``CREDIT_GUARD_<OPTION>``
(``CREDIT_GUARD_UPSTREAM``, ``CREDIT_GUARD_STORE``...).
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

from . import __version__
from .errors import CreditGuardError, dumps, error_body
from .money import display, json_text, parse_amount

__all__ = ["main", "app_from_env", "build_app"]

DEFAULT_STORE = "sqlite:///credit_guard.db"
DEMO_STORE = "sqlite:///credit_guard_demo.db"
DEMO_ACCOUNT = "demo"
DEMO_BALANCE = "0.05"
# A hold is extended every third of its TTL while its request runs, and a store
# call may wait up to 10 s (SQLite's busy timeout, Redis's pool timeout): at 30 s
# two slow extends in a row still leave the hold alive.
MIN_HOLD_TTL = 30.0


class UsageError(Exception):
    """Bad input on the command line: exit 2."""


class Refused(Exception):
    """A command that cannot be done as asked, or whose subject does not
    exist: exit 1."""


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


def _store(url: str, *, existing: bool = False) -> Any:
    """The store at ``url``.  With ``existing``, a SQLite file that does not
    exist is refused instead of created: a command that reads must not make
    an empty store and report from it."""
    from .stores import open_store

    _check_store_url(url)
    if existing and url.startswith("sqlite:///"):
        path = Path(url[len("sqlite:///") :])
        if str(path) and not path.is_file():
            raise Refused(f"no credit store at {path} (check --store or CREDIT_GUARD_STORE)")
    try:
        return open_store(url)
    except (ValueError, ImportError) as exc:
        raise UsageError(str(exc)) from None


def _check_store_url(url: str) -> None:
    if url in ("memory://", "memory"):
        raise UsageError(
            "memory:// lives and dies with one process, not across commands: use sqlite:///FILE or redis://"
        )


async def _known(store: Any, account: str) -> None:
    if not await store.account_exists(account):
        raise Refused(f"no such account: {account}")


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
    metrics_path: str | None = None,
    allow_read: Sequence[str] = (),
    admin_token: str | None = None,
    bound_margin: str | None = None,
) -> Any:
    """The guarded app ``serve`` runs: the guard in front of the proxy (or of
    the fake model with ``demo``), with ``proxy.gateway_policy``: nothing
    anonymous or unpriced is forwarded, and of bodiless reads only the model
    list and ``allow_read`` (glob patterns); with ``metrics_path``, Prometheus
    metrics served there, beside the guard."""
    from .fake_llm import create_app
    from .middleware import CreditGuard
    from .proxy import create_proxy, gateway_policy

    if demo:
        inner: Any = create_app()
    elif upstream:
        inner = create_proxy(upstream, api_key=upstream_key)
    else:
        raise UsageError("serve needs --upstream URL or --demo")
    # In front of a paid upstream, nothing goes through unpriced or anonymous.
    options: dict[str, Any] = {"billing_url": billing_url, "fail_open": fail_open, **gateway_policy(allow_read)}
    if max_body_bytes:
        options["max_body_bytes"] = max_body_bytes
    if hold_ttl:
        options["hold_ttl"] = hold_ttl
    if bound_margin:
        options["bound_margin"] = _bound_margin(bound_margin)
    from .rejections import RejectionLog

    options["rejections"] = RejectionLog()
    if metrics_path:
        from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector

        from .metrics import PrometheusMetrics, with_metrics_endpoint

        # A registry of this app's own, so that building a second app in one
        # process does not register every metric twice.
        registry = CollectorRegistry()
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        metrics = PrometheusMetrics(registry)
        guard = CreditGuard(inner, store=_store(store_url), prices=_prices(prices), metrics=metrics, **options)
        app = with_metrics_endpoint(_with_apis(guard, admin_token), metrics_path, registry)
        app.guard = guard
        return app
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
        metrics_path=_env("metrics_path"),
        billing_url=_env("billing_url"),
        max_body_bytes=int(_env("max_body_bytes") or 0) or None,
        fail_open=_env("fail_open") == "1",
        hold_ttl=float(_env("hold_ttl") or 0) or None,
        allow_read=(_env("allow_read") or "").split(),
        admin_token=_admin_token(_env("admin_token_file")),
        bound_margin=_env("bound_margin"),
    )


def _bound_margin(text: str) -> int | None:
    """``--bound-margin``: a whole number of at least 1, or ``off``."""
    if text.strip().lower() == "off":
        return None
    try:
        margin = int(text)
    except ValueError:
        margin = 0
    if margin < 1:
        raise UsageError(f"--bound-margin must be a whole number of at least 1, or 'off', not {text!r}")
    return margin


async def _prepare_demo(store_url: str, balance: str, key_file: Path) -> str:
    """Top the demo account up to ``balance`` and give it its key: the one in
    ``key_file`` when there is one (so a restarted demo keeps its key and adds
    none), else a new one, kept there."""
    store = _store(store_url)
    try:
        try:
            wanted = parse_amount(balance, what="--demo-balance")
        except (TypeError, ValueError) as exc:
            raise UsageError(str(exc)) from None
        if wanted < 0:
            raise UsageError("--demo-balance must not be negative")
        current = await store.balance(DEMO_ACCOUNT)
        if current.available < wanted:
            await store.grant(DEMO_ACCOUNT, wanted - current.available)
        key = key_file.read_text().strip() if key_file.is_file() else ""
        if not key.startswith("sk-demo-") or await store.account_for_key(key) not in (None, DEMO_ACCOUNT):
            key = "sk-demo-" + secrets.token_urlsafe(24)
            key_file.parent.mkdir(parents=True, exist_ok=True)
            # Created private: the key is a credential, if only for the demo.
            fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(key + "\n")
        if await store.account_for_key(key) != DEMO_ACCOUNT:
            await store.add_key(key, DEMO_ACCOUNT)
        return key
    finally:
        await store.aclose()


def _demo_key_file(store_url: str) -> Path:
    """Where the demo keeps its key: beside its SQLite file, or in the current
    directory for other stores."""
    if store_url.startswith("sqlite:///") and store_url != "sqlite:///:memory:":
        return Path(store_url[len("sqlite:///") :] + ".key")
    return Path("credit_guard_demo.key")


def _check_bind(host: str, port: int) -> None:
    """Refuse now, before the store is touched or a banner printed, when the
    address cannot be listened on (uvicorn would fail only after both)."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise UsageError(f"cannot listen on {host}:{port}: {exc}") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        # As uvicorn binds: SO_REUSEADDR, so a port in TIME_WAIT is no refusal.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            raise Refused(
                f"cannot listen on {host}:{port}: {exc.strerror or exc} (another server? try --port)"
            ) from None


def _upstream_key(args: argparse.Namespace) -> tuple[str, str]:
    """The key ``serve`` sends upstream and where it came from (never the key
    itself, for the banner): ``--upstream-key-file``, ``--upstream-key``,
    ``CREDIT_GUARD_UPSTREAM_KEY`` or ``OPENAI_API_KEY``, in that order."""
    if args.upstream_key_file:
        try:
            key = Path(args.upstream_key_file).read_text().strip()
        except OSError as exc:
            raise UsageError(f"cannot read --upstream-key-file: {exc}") from None
        if not key:
            raise UsageError(f"--upstream-key-file {args.upstream_key_file} is empty")
        return key, f"file {args.upstream_key_file}"
    if args.upstream_key:
        print(
            "credit-guard: warning: --upstream-key shows the key in every process listing;"
            " use CREDIT_GUARD_UPSTREAM_KEY or --upstream-key-file",
            file=sys.stderr,
        )
        return args.upstream_key, "--upstream-key"
    for name in ("CREDIT_GUARD_UPSTREAM_KEY", "OPENAI_API_KEY"):
        if os.environ.get(name):
            return os.environ[name], f"${name}"
    return "", "none"


def _demo_banner(host: str, port: int, key: str, store_url: str, balance: str, extra: str = "") -> str:
    base = f"http://{host}:{port}"
    return f"""
credit_guard demo: a guarded fake OpenAI-compatible model (no network, no real keys)

  API key   {key}
  account   {DEMO_ACCOUNT}, balance topped up to ${balance}
  store     {store_url}
  base URL  {base}/v1
{extra}
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
    store_url = args.store or _env("store") or (DEMO_STORE if args.demo else DEFAULT_STORE)
    upstream = args.upstream or _env("upstream")
    if not args.demo and not upstream:
        raise UsageError("serve needs --upstream URL (or CREDIT_GUARD_UPSTREAM), or --demo")
    if args.demo and upstream:
        raise UsageError("--demo and --upstream exclude each other")
    prices = args.prices or _env("prices")
    _prices(prices)  # fail now, not in a worker
    for pattern in args.allow_read or (_env("allow_read") or "").split():
        if not pattern.startswith("/"):
            raise UsageError(f"--allow-read {pattern!r}: a path pattern must start with '/'")
    hold_ttl = args.hold_ttl or float(_env("hold_ttl") or 0)
    if hold_ttl and hold_ttl < MIN_HOLD_TTL:
        raise UsageError(f"--hold-ttl must be at least {MIN_HOLD_TTL:g} seconds (holds are extended every third of it)")
    bound_margin = args.bound_margin or _env("bound_margin")
    if bound_margin:
        _bound_margin(bound_margin)  # fail now, not in a worker
    token_file = args.admin_token_file or _env("admin_token_file")
    admin = _admin_token(token_file) is not None  # fail now, not in a worker
    anyio.run(_store(store_url).aclose)  # a bad URL or a missing extra: said now, not by a worker
    metrics_path = _metrics_path(args)
    upstream_key, key_source = ("", "none") if args.demo else _upstream_key(args)
    _check_bind(args.host, args.port)
    import uvicorn

    config = {
        "CREDIT_GUARD_UPSTREAM": upstream or "",
        "CREDIT_GUARD_DEMO": "1" if args.demo else "0",
        "CREDIT_GUARD_STORE": store_url,
        "CREDIT_GUARD_PRICES": prices or "",
        "CREDIT_GUARD_UPSTREAM_KEY": upstream_key,
        "CREDIT_GUARD_BILLING_URL": args.billing_url or _env("billing_url") or "",
        "CREDIT_GUARD_MAX_BODY_BYTES": str(args.max_body_bytes or _env("max_body_bytes") or ""),
        "CREDIT_GUARD_FAIL_OPEN": "1" if args.fail_open or _env("fail_open") == "1" else "0",
        "CREDIT_GUARD_HOLD_TTL": str(args.hold_ttl or _env("hold_ttl") or ""),
        "CREDIT_GUARD_BOUND_MARGIN": bound_margin or "",
        "CREDIT_GUARD_METRICS_PATH": metrics_path or "",
        "CREDIT_GUARD_ALLOW_READ": " ".join(args.allow_read or []) or _env("allow_read") or "",
        # The path, not the token: workers read the file themselves.
        "CREDIT_GUARD_ADMIN_TOKEN_FILE": token_file or "",
    }
    os.environ.update(config)
    metrics_line = f"  metrics   http://{args.host}:{args.port}{metrics_path}\n" if metrics_path else ""
    if args.demo:
        key = anyio.run(_prepare_demo, store_url, args.demo_balance, _demo_key_file(store_url))
        print(_demo_banner(args.host, args.port, key, store_url, args.demo_balance, metrics_line), flush=True)
    else:
        print(
            f"credit_guard: guarding {upstream} on http://{args.host}:{args.port}"
            f" (store {store_url}; upstream key: {key_source})\n{metrics_line}",
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
        log_config=_log_config(args.log_level),
        lifespan="on",
    )
    return 0


def _log_config(level: str) -> dict[str, Any]:
    """uvicorn's logging, with the guard's own lines (``credit_guard.rejected``
    and the rest, see docs/deploying.md) printed beside uvicorn's at ``level``."""
    import copy

    from uvicorn.config import LOGGING_CONFIG

    config: dict[str, Any] = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["credit_guard"] = {"handlers": ["default"], "level": level.upper(), "propagate": False}
    return config


def _metrics_path(args: argparse.Namespace) -> str | None:
    """The path ``--metrics`` serves metrics at, or None; refuses now what
    would fail in a worker."""
    wanted = args.metrics or _env("metrics") == "1"
    if not wanted:
        return None
    path = args.metrics_path or _env("metrics_path") or "/metrics"
    if not path.startswith("/") or path.rstrip("/") in ("", "/v1") or "?" in path:
        raise UsageError(f"--metrics-path must be a path such as /metrics, not {path!r}")
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        raise UsageError("--metrics needs prometheus-client: pip install 'credit-guard[metrics]'") from None
    if args.workers > 1:
        # Each worker counts for itself: a scrape would see one worker's share.
        raise UsageError("--metrics counts in one process: run it with --workers 1 (or one server per core)")
    return str(path)


# -- quote -------------------------------------------------------------------------


def _read_request(source: str | None) -> Any:
    if source is None and sys.stdin.isatty():
        raise UsageError("quote needs a request: a JSON file, or - to read it from stdin")
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
    available = None
    if args.balance is not None:
        try:
            available = parse_amount(args.balance, what="--balance")
        except (TypeError, ValueError) as exc:
            raise UsageError(str(exc)) from None
        if available < 0:
            raise UsageError("--balance must not be negative")
    try:
        body = _read_request(args.request)
        ask = shapes.parse(args.endpoint or _endpoint_of(body, table), body)
        guard = CreditGuard(_nothing, store=MemoryStore(), prices=table)
        price = guard.resolve(ask)
        count = tokens.count_input(ask, price)
        quote = make_quote(ask, price, count.tokens, count.exact)
    except CreditGuardError as error:
        sys.stdout.write(error_body(error, "req_cli").decode() + "\n")
        print(f"credit-guard quote: {error.message}", file=sys.stderr)
        return 2
    if available is not None:
        if quote.max_cost > available:
            short = insufficient_credits(
                quote,
                available=available,
                held=Decimal(0),
                cheaper=guard.cheaper(quote, ask, available),
            )
            sys.stdout.write(error_body(short, "req_cli").decode() + "\n")
            print(f"credit-guard quote: {short.message}", file=sys.stderr)
            return 1
    _print_json(quote.as_json())
    return 0


def _endpoint_of(body: Any, table: Any) -> str:
    """The API a request body is for, where ``--endpoint`` does not say: the
    model's kind decides (an embedding model takes embeddings, a completion
    model completions), then the body's fields (``input`` for the Responses
    API, ``prompt`` for completions, ``messages`` for chat, or for Anthropic's
    Messages API when an Anthropic model has ``max_tokens``)."""
    from .prices import ModelNotPriced

    if not isinstance(body, dict):
        return "chat"  # the parser answers what is wrong with it
    try:
        price = table.resolve(body.get("model"))
    except (ModelNotPriced, TypeError, ValueError):
        price = None
    if price is not None and price.kind in ("embedding", "completion"):
        return str(price.kind)
    if "messages" not in body and "input" in body:
        return "responses"
    if "messages" not in body and "prompt" in body:
        return "completion"
    if price is not None and price.provider == "anthropic" and "max_tokens" in body:
        return "anthropic"  # Anthropic's Messages API requires max_tokens; a body without is OpenAI-style chat
    return "chat"


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


def _account_name(account: str | None) -> None:
    if account is not None and (not account.strip() or account != account.strip()):
        raise UsageError(f"an account name must be non-empty, without surrounding spaces: {account!r}")


def _credits(args: argparse.Namespace) -> int:
    _account_name(getattr(args, "account", None))

    async def run() -> int:
        store = _store(args.store, existing=args.action != "grant")
        try:
            if args.action == "grant":
                try:
                    amount = parse_amount(args.amount, what="AMOUNT")
                except (TypeError, ValueError) as exc:
                    raise UsageError(str(exc)) from None
                try:
                    balance = await store.grant(args.account, amount, **({"note": args.note} if args.note else {}))
                except ValueError as exc:  # taking back more than is available
                    raise Refused(str(exc)) from None
                _print_json(_balance_json(args.account, balance))
            elif args.action == "list":
                for account in await store.accounts():
                    _print_json(_balance_json(account, await store.balance(account)))
            elif args.action == "balance":
                await _known(store, args.account)
                balance = await store.balance(args.account)
                _print_json(_balance_json(args.account, balance))
                print(f"available {display(balance.available, owed=False)}", file=sys.stderr)
            else:
                if not hasattr(store, "history"):
                    raise UsageError("this store keeps no history; use sqlite:/// or redis://")
                await _known(store, args.account)
                for line in await store.history(args.account, limit=args.limit):
                    _print_json(line)
            return 0
        finally:
            await store.aclose()

    return anyio.run(run)


def _keys(args: argparse.Namespace) -> int:
    _account_name(getattr(args, "account", None))

    async def run() -> int:
        store = _store(args.store, existing=args.action != "add")
        try:
            if args.action == "add":
                return await _add_key(store, args)
            if args.action == "revoke":
                return await _revoke_key(store, args.key)
            if args.account is not None:
                await _known(store, args.account)
            for row in await store.list_keys(args.account):
                _print_json(row)
            return 0
        finally:
            await store.aclose()

    return anyio.run(run)


async def _add_key(store: Any, args: argparse.Namespace) -> int:
    key = args.key or "sk-" + secrets.token_urlsafe(36)
    owner = await store.account_for_key(key)
    if owner is not None and owner != args.account and not args.force:
        raise Refused(f"that key belongs to account {owner}; --force moves it to {args.account}")
    try:
        prefix = await store.add_key(key, args.account)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    _print_json({"account": args.account, "key": key, "prefix": prefix})
    if owner is not None and owner != args.account:
        print(f"Moved the key from account {owner}.", file=sys.stderr)
    print("Keep the key now: only its digest is stored.", file=sys.stderr)
    return 0


async def _revoke_key(store: Any, key_or_prefix: str) -> int:
    if await store.account_for_key(key_or_prefix) is None:
        # Not a whole live key: a listed prefix, which must name one key only.
        matches = [row for row in await store.list_keys() if row["prefix"] == key_or_prefix and not row["revoked"]]
        if len(matches) > 1:
            owners = ", ".join(sorted({str(row["account"]) for row in matches}))
            raise Refused(
                f"the prefix {key_or_prefix} matches {len(matches)} keys (accounts: {owners}); give the whole key"
            )
    count = await store.revoke_key(key_or_prefix)
    _print_json({"revoked": count})
    if not count:
        raise Refused(f"no live key {key_or_prefix}")
    return 0


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
        "cache_write_per_1m": None if price.cache_write_price is None else json_text(price.cache_write_price * million),
        "cache_write_1h_per_1m": None
        if price.cache_write_1h_price is None
        else json_text(price.cache_write_1h_price * million),
        "context_tiers_above": sorted({t.above for t in price.tiers if t.above}),
        "service_tiers": price.service_tiers(),
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
    parser.add_argument("--version", action="version", version=f"credit-guard {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run a guarded endpoint", description="Run the guard in front of an upstream.")
    serve.add_argument("--upstream", help="the OpenAI-compatible upstream URL (CREDIT_GUARD_UPSTREAM)")
    serve.add_argument("--demo", action="store_true", help="guard a built-in fake model: no keys, no network")
    serve.add_argument("--store", help=f"store URL (default {DEFAULT_STORE}; demo: {DEMO_STORE})")
    serve.add_argument("--prices", help="price table file (default: the bundled one)")
    serve.add_argument("--host", default=_env("host", "127.0.0.1"), help="default 127.0.0.1 (CREDIT_GUARD_HOST)")
    # String defaults go through type=int too: a bad CREDIT_GUARD_PORT is a usage error, not a traceback.
    serve.add_argument("--port", type=int, default=_env("port") or "8000", help="default 8000 (CREDIT_GUARD_PORT)")
    serve.add_argument(
        "--workers", type=int, default=_env("workers") or "1", help="worker processes (CREDIT_GUARD_WORKERS)"
    )
    serve.add_argument(
        "--upstream-key-file",
        help="a file holding the key sent upstream (else $CREDIT_GUARD_UPSTREAM_KEY, else $OPENAI_API_KEY)",
    )
    serve.add_argument("--upstream-key", help="the key sent upstream (visible in process listings: prefer the above)")
    serve.add_argument(
        "--metrics",
        action="store_true",
        help="serve Prometheus metrics (needs the metrics extra; CREDIT_GUARD_METRICS=1)",
    )
    serve.add_argument("--metrics-path", help="where --metrics serves them (default /metrics)")
    serve.add_argument("--billing-url", help="named in the 402's suggestions")
    serve.add_argument("--max-body-bytes", type=int, help="request body limit (default 16 MiB)")
    serve.add_argument("--hold-ttl", type=float, help="seconds a dead process's hold lasts (default 300, at least 30)")
    serve.add_argument(
        "--bound-margin",
        metavar="N|off",
        help="hold a request's byte upper bound uncounted where it fits the balance N times over (default 10);"
        " off counts every request, for admission exact to the unit under any concurrency",
    )
    serve.add_argument(
        "--allow-read",
        action="append",
        metavar="PATTERN",
        help="also forward bodiless reads (GET/HEAD/OPTIONS) of paths matching this glob (* in a segment,"
        " ** across); repeatable; the model list is always open (CREDIT_GUARD_ALLOW_READ, space-separated)",
    )
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
        choices=["chat", "completion", "embedding", "responses", "anthropic"],
        help="the request's API (default: from the model's kind and the body's fields)",
    )
    quote.set_defaults(run=_quote)

    credits = sub.add_parser("credits", help="grant credits, show balances and history")
    credits_sub = credits.add_subparsers(dest="action", required=True)
    for name, text in (
        ("grant", "add credits (negative: take back)"),
        ("balance", "show an account's figures"),
        ("history", "the ledger"),
        ("list", "every account with its figures"),
    ):
        cmd = credits_sub.add_parser(name, help=text)
        if name != "list":
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
    add.add_argument("--force", action="store_true", help="move the key here if another account has it")
    revoke = keys_sub.add_parser("revoke", help="revoke a key (whole, or its listed prefix when that is unique)")
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
    except Refused as exc:
        print(f"credit-guard: {exc}", file=sys.stderr)
        return 1
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
