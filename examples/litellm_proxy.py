"""credit_guard in front of LiteLLM's proxy server, in the same process.

LiteLLM's proxy is a FastAPI app; the guard wraps it like any ASGI app.  The
model list here answers with LiteLLM's `mock_response`, so the example runs
with no provider keys and no network; put real `litellm_params` there to guard
real providers.

    pip install -e '.[litellm]'
    python examples/litellm_proxy.py        # serves on http://127.0.0.1:8000
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


if __name__ == "__main__":
    import anyio
    import uvicorn

    async def setup() -> None:
        await app.store.grant("acct_1", "1.00")
        await app.store.add_key("sk-litellm-example-1", "acct_1")

    anyio.run(setup)
    uvicorn.run(app, host="127.0.0.1", port=8000)
