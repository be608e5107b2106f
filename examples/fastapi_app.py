"""Wrapping an existing FastAPI app with credit_guard.

python examples/fastapi_app.py          # serves on http://127.0.0.1:8000
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request

from credit_guard import CreditGuard, CreditGuardError, PriceTable, credit_error_handler
from credit_guard.stores import SQLiteStore

api = FastAPI(title="An LLM service")
api.add_exception_handler(CreditGuardError, credit_error_handler)


@api.post("/v1/chat/completions")
async def chat(request: Request) -> dict[str, Any]:
    body = await request.json()
    # The guard has already held this request's worst case; the request id it
    # gave the request is there for logs.
    request_id = request.scope["state"]["credit_guard_request_id"]
    return {
        "id": request_id,
        "object": "chat.completion",
        "model": body["model"],
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello!"}}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 2},
    }


@api.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}  # not a priced route: the guard lets it through untouched


store = SQLiteStore("fastapi_example_credits.db")
app = CreditGuard(api, prices=PriceTable.default(), store=store)


async def setup() -> None:
    """Give the example account credits and a key (run once)."""
    await store.grant("acct_1", "1.00")
    await store.add_key("sk-example-fastapi-1", "acct_1")


if __name__ == "__main__":
    import anyio
    import uvicorn

    anyio.run(setup)
    uvicorn.run(app, host="127.0.0.1", port=8000)
