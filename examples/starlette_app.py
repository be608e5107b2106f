"""Wrapping an existing Starlette app with credit_guard.

The app has its own chat endpoint (here a stand-in that answers with usage, as
an LLM API does) and a report endpoint that decides in its own handler that a
caller cannot afford it, raising the same 402 the guard answers.

    python examples/starlette_app.py        # serves on http://127.0.0.1:8000
    curl -s http://127.0.0.1:8000/v1/chat/completions -H 'Authorization: Bearer sk-example-1' \\
      -H 'Content-Type: application/json' \\
      -d '{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 20}'
"""

from __future__ import annotations

from decimal import Decimal

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from credit_guard import CreditGuard, InsufficientCredits, MemoryStore, PriceTable, install_handler

store = MemoryStore({"acct_1": "0.05"}, keys={"sk-example-1": "acct_1"})
REPORT_PRICE = Decimal("0.10")


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


async def report(request: Request) -> JSONResponse:
    """A flat-priced endpoint that checks the balance itself."""
    balance = await store.balance("acct_1")
    if balance.available < REPORT_PRICE:
        raise InsufficientCredits(
            f"A report costs ${REPORT_PRICE}; you have ${balance.available.quantize(Decimal('0.0001'))}.",
            context={"required_credits": REPORT_PRICE, "current_credits": balance.available},
        )
    return JSONResponse({"report": "..."})


inner = Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"]), Route("/v1/report", report)])
install_handler(inner)  # the app's own InsufficientCredits answers in the contract's envelope

app = CreditGuard(inner, prices=PriceTable.default(), store=store, billing_url="https://example.com/billing")

if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=8000)
