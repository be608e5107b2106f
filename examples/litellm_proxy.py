"""credit_guard in front of LiteLLM's proxy server, in the same process.

LiteLLM's proxy is a FastAPI app; the guard wraps it like any ASGI app.  The
model list here answers with LiteLLM's `mock_response`, so the example runs
with no provider keys and no network; put real `litellm_params` there to guard
real providers.

    pip install -e '.[litellm]'
    python examples/litellm_proxy.py        # http://127.0.0.1:8004 (--port or PORT to change)

It sets itself up on every start, idempotently (the example account gets $1.00
when it is new, never again, and its key, in ``litellm_credits.db`` in
the current directory), and prints the key to use and the requests to try.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

# LiteLLM fetches its price map from the network at import unless told not to.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

LITELLM_KEY = os.environ.get("LITELLM_MASTER_KEY", "sk-litellm-master-example")

CONFIG = f"""
general_settings:
  master_key: {LITELLM_KEY}
model_list:
  - model_name: gpt-4o-mini
    litellm_params:
      model: openai/gpt-4o-mini
      api_key: sk-not-used
      mock_response: "Hello from a mocked gpt-4o-mini."
  - model_name: gpt-4o
    litellm_params:
      model: openai/gpt-4o
      api_key: sk-not-used
      mock_response: "Hello from a mocked gpt-4o."
"""

config_path = Path(tempfile.mkdtemp()) / "litellm_config.yaml"
config_path.write_text(CONFIG)
os.environ.setdefault("CONFIG_FILE_PATH", str(config_path))

from litellm.proxy.proxy_server import app as litellm_app  # noqa: E402

from credit_guard import CreditGuard, PriceTable  # noqa: E402
from credit_guard.proxy import gateway_policy  # noqa: E402
from credit_guard.stores import SQLiteStore  # noqa: E402


def with_litellm_key(inner: Any, key: str) -> Any:
    """Callers present their gateway keys to the guard; LiteLLM sees its own."""

    async def shim(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            headers = [(k, v) for k, v in scope["headers"] if k not in (b"authorization", b"x-api-key")]
            headers.append((b"authorization", b"Bearer " + key.encode()))
            scope = dict(scope, headers=headers)
        await inner(scope, receive, send)

    return shim


app = CreditGuard(
    with_litellm_key(litellm_app, LITELLM_KEY),
    prices=PriceTable.default(),
    store=SQLiteStore("litellm_credits.db"),
    **gateway_policy(),
)


@asynccontextmanager
async def lifespan_context() -> AsyncIterator[None]:
    """Run LiteLLM's start-up (it loads CONFIG_FILE_PATH) and shutdown, for
    in-process use without a server."""
    async with litellm_app.router.lifespan_context(litellm_app):
        yield


ACCOUNT, KEY, BALANCE = "acct_1", "sk-litellm-example-1", "1.00"


async def setup() -> None:
    """Give the example account its first credits and its key; running it
    again changes nothing."""
    store = app.store
    if not await store.account_exists(ACCOUNT):
        await store.grant(ACCOUNT, BALANCE)
    if await store.account_for_key(KEY) != ACCOUNT:
        await store.add_key(KEY, ACCOUNT)


def banner(port: int) -> str:
    base = f"http://127.0.0.1:{port}"

    def curl(fields: str) -> str:
        return (
            f"  curl -s {base}/v1/chat/completions -H 'Authorization: Bearer {KEY}' \\\n"
            "    -H 'Content-Type: application/json' \\\n"
            f"""    -d '{{"messages": [{{"role": "user", "content": "Hi"}}], {fields}}}'"""
        )

    return f"""
credit_guard in front of LiteLLM's proxy (mocked models: no provider keys, no network), on {base}/v1

  API key   {KEY}   (account {ACCOUNT}, ${BALANCE} granted when new)
  store     litellm_credits.db

A request that fits:
{curl('"model": "gpt-4o-mini", "max_tokens": 20')}

One the balance cannot cover (the guard's 402; LiteLLM never sees it):
{curl('"model": "gpt-4o", "max_tokens": 16000, "n": 8')}

Stop with Ctrl-C.
"""


def main(argv: list[str] | None = None) -> None:
    import argparse

    import anyio
    import uvicorn

    parser = argparse.ArgumentParser(description="credit_guard in front of LiteLLM's proxy server")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8004")))
    args = parser.parse_args(argv)
    anyio.run(setup)
    print(banner(args.port), flush=True)
    uvicorn.run(app, host="127.0.0.1", port=args.port)


if __name__ == "__main__":
    main()
