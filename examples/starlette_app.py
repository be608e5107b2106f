"""Wrapping an existing Starlette app with credit_guard.

The app has its own chat endpoint (here a stand-in that answers with usage, as
an LLM API does), priced by the guard per token, and a flat-priced report
endpoint whose own handler holds the report's price on the caller's balance and
raises the same 402 the guard answers (``InsufficientCredits``) when it cannot.
The report endpoint needs the caller's key like every priced one: it never shows
an account's figures to an anonymous caller.

    python examples/starlette_app.py             # http://127.0.0.1:8001 (--port or PORT to change)

It prints the key to use and the requests to try.  Balances live in memory:
every start begins from the same $0.05.
"""

from __future__ import annotations

import argparse
import os
from decimal import ROUND_FLOOR, Decimal

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from credit_guard import (
    AuthenticationFailed,
    CreditGuard,
    Insufficient,
    InsufficientCredits,
    MemoryStore,
    PriceTable,
    install_handler,
)

ACCOUNT, KEY, BALANCE = "acct_1", "sk-example-1", "0.05"
REPORT_PRICE = Decimal("0.10")
CENT = Decimal("0.0001")  # a balance shown to four places, rounded down: never more than there is

store = MemoryStore({ACCOUNT: BALANCE}, keys={KEY: ACCOUNT})


async def chat(request: Request) -> JSONResponse:
    body = await request.json()
    words = ["Hello", " there", "!"][: body.get("max_tokens", 3)]
    return JSONResponse(
        {
            "object": "chat.completion",
            "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(words)}}],
            "usage": {"prompt_tokens": 9, "completion_tokens": len(words)},
        }
    )


async def caller(request: Request) -> str:
    """The caller's account, from the key the guard also reads.  The guard
    passes this route through unpriced, so the handler checks the key itself."""
    auth = request.headers.get("authorization", "")
    key = auth[7:].strip() if auth.lower().startswith("bearer ") else request.headers.get("x-api-key", "")
    account = await store.account_for_key(key) if key else None
    if account is None:
        raise AuthenticationFailed("A valid API key is required: 'Authorization: Bearer <key>'.")
    return account


async def report(request: Request) -> JSONResponse:
    """A flat-priced endpoint: holds its price, makes the report, charges it."""
    account = await caller(request)
    hold = await store.reserve(account, REPORT_PRICE)
    if isinstance(hold, Insufficient):
        raise InsufficientCredits(
            f"A report costs ${REPORT_PRICE}; your available balance is ${hold.available.quantize(CENT, ROUND_FLOOR)}.",
            context={
                "current_credits": hold.available,
                "required_credits": REPORT_PRICE,
                "credit_deficit": REPORT_PRICE - hold.available,
            },
        )
    result = {"report": "All systems nominal.", "charged": str(REPORT_PRICE)}
    await store.settle(hold, REPORT_PRICE)
    return JSONResponse(result)


inner = Starlette(
    routes=[Route("/v1/chat/completions", chat, methods=["POST"]), Route("/v1/report", report, methods=["POST"])]
)
install_handler(inner)  # the app's own InsufficientCredits answers in the guard's envelope

app = CreditGuard(inner, prices=PriceTable.default(), store=store, billing_url="https://example.com/billing")


def banner(port: int) -> str:
    base = f"http://127.0.0.1:{port}"
    auth = f"-H 'Authorization: Bearer {KEY}'"
    return f"""
credit_guard Starlette example on {base}

  API key   {KEY}   (account {ACCOUNT}, ${BALANCE} in memory)

A chat completion, priced per token by the guard:
  curl -s {base}/v1/chat/completions {auth} -H 'Content-Type: application/json' \\
    -d '{{"model": "gpt-4o-mini", "messages": [{{"role": "user", "content": "Hi"}}], "max_tokens": 20}}'

A report at ${REPORT_PRICE} flat: the app's own handler answers the 402:
  curl -s -X POST {base}/v1/report {auth}

Stop with Ctrl-C.
"""


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description="credit_guard in front of a Starlette app")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8001")))
    args = parser.parse_args(argv)
    print(banner(args.port), flush=True)
    uvicorn.run(app, host="127.0.0.1", port=args.port)


if __name__ == "__main__":
    main()
