"""``AdminAPI``: what operators do to a running gateway, behind one token.

    GET  /admin/api/accounts                     every account with its figures
    GET  /admin/api/accounts/{account}           one account's figures
    POST /admin/api/accounts/{account}/grant     {"amount": "10.00", "note": "..."} (negative takes back);
                                                 with ``Idempotency-Key`` a retried call grants once
    GET  /admin/api/keys[?account=]              keys by prefix (never the keys)
    POST /admin/api/keys                         {"account": "a"[, "key": "..."]}: the key, shown once
    POST /admin/api/keys/revoke                  {"key": "<key or its prefix>"}
    GET  /admin/api/usage                        records, or ``by=day|model|key|account`` sums;
                                                 filters account, key, model, since, until, limit
    GET  /admin/api/rejections[?account=]        recent refusals (402s) and counts per account
    GET  /admin/                                 the dashboard (``dashboard.py``)

Off unless a token is configured: there is no default token.  Every route
but the dashboard page needs ``Authorization: Bearer <token>``: none gets 401,
a wrong one 403, both in the error envelope.  The token is compared in
constant time (as SHA-256 digests, so its length does not show either) and is
never logged; the page never sends it in a URL (it lives in the page, typed in
or read from the URL fragment, which browsers do not send).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from decimal import Decimal
from typing import Any

from ._asgi import Receive, Scope, Send
from ._jsonapi import (
    Forbidden,
    MethodNotAllowed,
    NotFound,
    header,
    query_params,
    read_json,
    request_id,
    send_error,
    send_json,
    usage_query,
)
from .errors import AuthenticationFailed, CreditGuardError, InvalidRequest, StoreUnavailableError
from .money import parse_amount
from .rejections import RejectionLog
from .stores.base import CreditStore, IdempotencyConflict, StoreUnavailable

__all__ = ["AdminAPI", "PREFIX", "check_token"]

logger = logging.getLogger("credit_guard")

#: Where the admin API lives under ``credit-guard serve``.
PREFIX = "/admin"
_USAGE_PARAMS = ("account", "key", "model", "since", "until", "by", "limit")
_MIN_TOKEN = 16


class Conflict(CreditGuardError):
    status = 409
    type = "idempotency_error"
    code = "IDEMPOTENCY_CONFLICT"


def check_token(token: str) -> str:
    """The token, stripped; ``ValueError`` when it is too short to be secret."""
    token = token.strip()
    if len(token) < _MIN_TOKEN or any(c.isspace() for c in token):
        raise ValueError(f"the admin token must have at least {_MIN_TOKEN} characters and no spaces")
    return token


class AdminAPI:
    """The operators' API (and dashboard) for ``store``.

    ``token``: the bearer token every call must send (at least 16
    characters; ``ValueError`` otherwise).  ``rejections``: the guard's
    ``RejectionLog``, for ``/rejections`` and the dashboard's 402s.
    """

    def __init__(self, store: CreditStore, *, token: str, rejections: RejectionLog | None = None) -> None:
        self.store = store
        self._digest = hashlib.sha256(check_token(token).encode()).digest()
        self.rejections = rejections

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        rid = request_id(scope)
        path = _route_path(scope)
        method = str(scope.get("method", "GET"))
        try:
            if path in ("", "/"):
                if method not in ("GET", "HEAD"):
                    raise MethodNotAllowed("Use GET.", param="method")
                await _send_page(send, rid)
                return
            self._authorize(scope, rid)
            answer, status = await self._route(path, method, scope, receive)
        except CreditGuardError as error:
            await send_error(send, error, rid)
            return
        except StoreUnavailable:
            await send_error(send, StoreUnavailableError("The credit store is unavailable. Retry shortly."), rid)
            return
        await send_json(send, status, answer, rid)

    def _authorize(self, scope: Scope, rid: str) -> None:
        auth = header(scope, b"authorization")
        given = None
        if auth is not None:
            scheme, _, value = auth.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and value.strip():
                given = value.strip()
        if given is None:
            logger.warning("credit_guard.admin_refused request_id=%s reason=no_token", rid)
            raise AuthenticationFailed("The admin API needs 'Authorization: Bearer <admin token>'.")
        if not hmac.compare_digest(hashlib.sha256(given.encode("utf-8", "replace")).digest(), self._digest):
            logger.warning("credit_guard.admin_refused request_id=%s reason=wrong_token", rid)
            raise Forbidden("The admin token is not valid.")

    async def _route(self, path: str, method: str, scope: Scope, receive: Receive) -> tuple[Any, int]:
        parts = path.strip("/").split("/")
        if parts[0] != "api" or len(parts) < 2:
            raise NotFound(f"No such endpoint: {path}.", param="path")
        store: Any = self.store
        name, rest = parts[1], parts[2:]
        if name == "accounts" and rest and not rest[0]:
            raise InvalidRequest("An account name must not be empty.", param="account")
        if name == "accounts" and not rest:
            _need(method, "GET")
            query_params(scope, ())
            return {"object": "list", "data": [await self._account(a) for a in await store.accounts()]}, 200
        if name == "accounts" and len(rest) == 1:
            _need(method, "GET")
            query_params(scope, ())
            return await self._account(rest[0]), 200
        if name == "accounts" and len(rest) == 2 and rest[1] == "grant":
            _need(method, "POST")
            return await self._grant(rest[0], scope, receive), 200
        if name == "keys" and not rest:
            if method == "POST":
                return await self._add_key(receive), 201
            _need(method, "GET")
            params = query_params(scope, ("account",))
            return {"object": "list", "data": await store.list_keys(params.get("account") or None)}, 200
        if name == "keys" and rest == ["revoke"]:
            _need(method, "POST")
            body = _object(await read_json(receive))
            key = body.get("key")
            if not isinstance(key, str) or not key:
                raise InvalidRequest("'key' must be the key or its listed prefix.", param="key")
            return {"revoked": await store.revoke_key(key)}, 200
        if name == "usage" and not rest:
            _need(method, "GET")
            params = query_params(scope, _USAGE_PARAMS)
            query, by, limit = usage_query(params, account=params.get("account") or None)
            if by is None:
                records = await store.usage_records(query, limit=limit)
                return {"object": "list", "data": [r.as_json() for r in records]}, 200
            rows = await store.usage_summary(query, by=by)
            return {"object": "list", "by": by, "data": [row.as_json(by) for row in rows]}, 200
        if name == "rejections" and not rest:
            _need(method, "GET")
            params = query_params(scope, ("account", "limit"))
            log = self.rejections or RejectionLog(0)
            return log.as_json(params.get("account") or None, _limit(params.get("limit"))), 200
        raise NotFound(f"No such endpoint: {path}.", param="path")

    async def _account(self, account: str) -> dict[str, Any]:
        balance = await self.store.balance(account)
        return {
            "account": account,
            "available": balance.available,
            "held": balance.held,
            "spent": balance.spent,
            "granted": balance.granted,
        }

    async def _grant(self, account: str, scope: Scope, receive: Receive) -> dict[str, Any]:
        body = _object(await read_json(receive))
        amount = body.get("amount")
        if isinstance(amount, float) or not isinstance(amount, (str, int)) or isinstance(amount, bool):
            # A JSON number with a fraction parses as a binary float: not money.
            raise InvalidRequest("'amount' must be a decimal string such as \"10.00\" (or an integer).", param="amount")
        note = body.get("note")
        if note is not None and not isinstance(note, str):
            raise InvalidRequest("'note' must be a string.", param="note")
        try:
            value = parse_amount(amount, what="amount")
        except (TypeError, ValueError) as exc:
            raise InvalidRequest(str(exc), param="amount") from None
        once = header(scope, b"idempotency-key")
        try:
            if once is not None:
                key = once.decode("latin-1").strip()
                if not key or len(key) > 255:
                    raise InvalidRequest("'Idempotency-Key' must have 1 to 255 characters.", param="Idempotency-Key")
                result = await self.store.grant_once(account, value, key, note=note)  # type: ignore[attr-defined]
                balance, repeat = result.balance, result.repeat
            else:
                balance = await _plain_grant(self.store, account, value, note)
                repeat = False
        except IdempotencyConflict as exc:
            raise Conflict(str(exc), param="Idempotency-Key") from None
        except ValueError as exc:
            raise InvalidRequest(str(exc), param="amount") from None
        return {
            "account": account,
            "granted": value,
            "repeat": repeat,
            "balance": {
                "available": balance.available,
                "held": balance.held,
                "spent": balance.spent,
                "granted": balance.granted,
            },
        }

    async def _add_key(self, receive: Receive) -> dict[str, Any]:
        body = _object(await read_json(receive))
        account = body.get("account")
        if not isinstance(account, str) or not account:
            raise InvalidRequest("'account' must be a non-empty string.", param="account")
        key = body.get("key") or "sk-" + secrets.token_urlsafe(36)
        if not isinstance(key, str):
            raise InvalidRequest("'key' must be a string.", param="key")
        try:
            prefix = await self.store.add_key(key, account)  # type: ignore[attr-defined]
        except ValueError as exc:
            raise InvalidRequest(str(exc), param="key") from None
        return {"account": account, "key": key, "prefix": prefix}


async def _plain_grant(store: Any, account: str, amount: Decimal, note: str | None) -> Any:
    if note is not None:
        try:
            return await store.grant(account, amount, note=note)
        except TypeError:  # a store without notes
            pass
    return await store.grant(account, amount)


def _need(method: str, wanted: str) -> None:
    if method != wanted and not (wanted == "GET" and method == "HEAD"):
        raise MethodNotAllowed(f"Use {wanted}.", param="method")


def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise InvalidRequest("The body must be a JSON object.")
    return body


def _limit(text: str | None) -> int:
    if not text:
        return 100
    if not text.isdigit() or not 1 <= int(text) <= 1000:
        raise InvalidRequest("'limit' must be an integer from 1 to 1000.", param="limit")
    return int(text)


def _route_path(scope: Scope) -> str:
    path = str(scope.get("path", ""))
    root = str(scope.get("root_path", ""))
    if root and path.startswith(root):
        path = path[len(root) :]
    if path.startswith(PREFIX + "/") or path == PREFIX:
        path = path[len(PREFIX) :]
    return path


async def _send_page(send: Send, rid: str) -> None:
    from .dashboard import PAGE

    body = PAGE.encode()
    headers = [
        (b"content-type", b"text/html; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
        (b"x-request-id", rid.encode("latin-1")),
        (b"cache-control", b"no-store"),
        # Nothing is loaded from anywhere else; the page talks only to this origin.
        (
            b"content-security-policy",
            b"default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; "
            b"img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        ),
        (b"referrer-policy", b"no-referrer"),
        (b"x-content-type-options", b"nosniff"),
    ]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})
