"""``CreditsAPI``: callers read their own credits and usage.

    GET /v1/credits          available, held, spent, granted, low_balance
    GET /v1/credits/usage    the caller's usage records, newest first; with
                             ``by=day|model|key`` summed per group instead.
                             Filters: key, model, since, until (UTC days), limit.

A pure ASGI app: mount it anywhere (Starlette's ``Mount``, FastAPI's
``app.mount``) or let ``credit-guard serve`` serve it.  The caller is the
account of the API key sent (``Authorization: Bearer`` or ``x-api-key``), looked
up as ``CreditGuard`` does; every figure is that account's, and no parameter
can name another one.  Amounts are JSON numbers whose text is the exact decimal
(``errors.dumps``).  Errors use the contract's envelope: 401 without a valid key,
400 for an unknown or malformed parameter, 503 while the store is down.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from decimal import Decimal
from typing import Any

from ._asgi import Receive, Scope, Send
from ._jsonapi import (
    Forbidden,
    MethodNotAllowed,
    NotFound,
    header,
    query_params,
    request_id,
    send_error,
    send_json,
    usage_query,
)
from .errors import AuthenticationFailed, CreditGuardError, StoreUnavailableError
from .middleware import account_lookup
from .money import parse_amount
from .records import key_label
from .stores.base import CreditStore, StoreUnavailable

__all__ = ["CreditsAPI", "api_key_from"]

Lookup = Callable[[str], Awaitable[str | tuple[str, str] | None]]

_BALANCE_PATHS = {"", "/", "/credits", "/v1/credits"}
_USAGE_PATHS = {"/usage", "/credits/usage", "/v1/credits/usage"}
_USAGE_PARAMS = ("key", "model", "since", "until", "by", "limit")


def api_key_from(scope: Scope) -> str | None:
    """The API key of a request: ``Authorization: Bearer <key>`` or ``x-api-key``."""
    auth = header(scope, b"authorization")
    if auth is not None:
        scheme, _, token = auth.decode("latin-1").partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    api_key = header(scope, b"x-api-key")
    if api_key:
        return api_key.decode("latin-1").strip() or None
    return None


class CreditsAPI:
    """The caller's own credits, for a gateway's users.

    ``store``: the credit store (it must keep usage records for
    ``/usage``).  ``accounts``: API key -> account as for ``CreditGuard``
    (a mapping, an async callable, or None for the store's own keys).
    ``usage_scope``: ``"key"`` (default) shows a caller the records made with
    the key it sent; ``"account"`` shows every key of its account.
    ``low_balance_threshold``: ``low_balance`` is true below it (default: at or
    below zero).  Raises ``ValueError`` for an invalid setting.
    """

    def __init__(
        self,
        store: CreditStore,
        *,
        accounts: Mapping[str, str] | Lookup | None = None,
        usage_scope: str = "key",
        low_balance_threshold: Decimal | str | int | None = None,
    ) -> None:
        self.store = store
        self._lookup: Lookup = account_lookup(store, accounts)
        if usage_scope not in ("key", "account"):
            raise ValueError("usage_scope must be 'key' or 'account'")
        self.usage_scope = usage_scope
        self.low_balance_threshold = (
            None if low_balance_threshold is None else parse_amount(low_balance_threshold, what="threshold")
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        rid = request_id(scope)
        try:
            path = _route_path(scope)
            if path not in _BALANCE_PATHS and path not in _USAGE_PATHS:
                raise NotFound(f"No such endpoint: {path}.", param="path")
            if scope.get("method", "GET") not in ("GET", "HEAD"):
                raise MethodNotAllowed("Use GET.", param="method")
            account, label = await self._caller(scope)
            if path in _BALANCE_PATHS:
                query_params(scope, ())
                answer = await self._balance(account)
            else:
                answer = await self._usage(scope, account, label)
        except CreditGuardError as error:
            await send_error(send, error, rid)
            return
        except StoreUnavailable:
            await send_error(send, StoreUnavailableError("The credit store is unavailable. Retry shortly."), rid)
            return
        await send_json(send, 200, answer, rid)

    async def _caller(self, scope: Scope) -> tuple[str, str]:
        key = api_key_from(scope)
        if key is None:
            raise AuthenticationFailed("No API key: send it as 'Authorization: Bearer <key>' or in 'x-api-key'.")
        found = await self._lookup(key)
        label = key_label(key)
        if isinstance(found, tuple):
            found, label = found
        if not found:
            raise AuthenticationFailed("The API key is not valid for this gateway.")
        return found, label

    async def _balance(self, account: str) -> dict[str, Any]:
        balance = await self.store.balance(account)
        threshold = self.low_balance_threshold
        low = balance.available <= 0 if threshold is None else balance.available < threshold
        return {
            "object": "credits",
            "account": account,
            "available": balance.available,
            "held": balance.held,
            "spent": balance.spent,
            "granted": balance.granted,
            "low_balance": low,
            "low_balance_threshold": threshold,
        }

    async def _usage(self, scope: Scope, account: str, label: str) -> dict[str, Any]:
        params = query_params(scope, _USAGE_PARAMS)
        query, by, limit = usage_query(params, account=account)
        if self.usage_scope == "key":
            if query.key is not None and query.key != label:
                # Another key's records are not the caller's to see, even on its account.
                raise Forbidden("This key may read only its own usage.", param="key")
            query = replace(query, key=label)
        store: Any = self.store
        if not getattr(store, "keeps_usage", False):
            raise NotFound("This gateway keeps no usage records.", param="path")
        if by is None:
            records = await store.usage_records(query, limit=limit)
            return {"object": "list", "data": [_own(r.as_json()) for r in records]}
        rows = await store.usage_summary(query, by=by)
        return {"object": "list", "by": by, "data": [row.as_json(by) for row in rows]}


def _own(record: dict[str, Any]) -> dict[str, Any]:
    # The hold id is the store's business.
    record.pop("hold", None)
    return record


def _route_path(scope: Scope) -> str:
    path = str(scope.get("path", ""))
    root = str(scope.get("root_path", ""))
    if root and path.startswith(root):
        path = path[len(root) :]
    return path.rstrip("/") if path not in ("", "/") else path
