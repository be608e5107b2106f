"""credit_guard in front of an LLM proxy: any OpenAI-compatible upstream.

    OPENAI_API_KEY=sk-... UPSTREAM=https://api.openai.com/v1 python examples/openai_proxy.py

Callers use their gateway keys (`credit-guard keys add ACCOUNT`); the proxy sends
the upstream its own key and never the caller's.  This is what
`credit-guard serve --upstream URL` runs, in a dozen lines.
"""

from __future__ import annotations

import os

from credit_guard import CreditGuard, PriceTable
from credit_guard.proxy import create_proxy, gateway_policy
from credit_guard.stores import open_store

upstream = os.environ.get("UPSTREAM", "http://127.0.0.1:9000/v1")
proxy = create_proxy(upstream, api_key=os.environ.get("OPENAI_API_KEY"))
app = CreditGuard(
    proxy,
    prices=PriceTable.default(),
    store=open_store(os.environ.get("CREDIT_STORE", "sqlite:///proxy_credits.db")),
    billing_url=os.environ.get("BILLING_URL"),
    **gateway_policy(),
)

if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=int(os.environ.get("PORT", "8000")))
