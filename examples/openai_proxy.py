"""credit_guard in front of an LLM proxy: any OpenAI-compatible upstream.

    python -m credit_guard.fake_llm --port 9000 &      # a fake upstream (or set UPSTREAM to a real one)
    python examples/openai_proxy.py                    # http://127.0.0.1:8003 (--port or PORT to change)

    OPENAI_API_KEY=sk-... UPSTREAM=https://api.openai.com/v1 python examples/openai_proxy.py

Callers use their gateway keys (`credit-guard keys add ACCOUNT`); the proxy sends
the upstream its own key and never the caller's.  This is what
`credit-guard serve --upstream URL` runs, in a dozen lines.  It sets itself up
on every start, idempotently (the example account gets $1.00 when it is new,
never again, and its key, in ``proxy_credits.db`` unless
``CREDIT_STORE`` says otherwise), and prints the key to use and a request to try.
"""

from __future__ import annotations

import argparse
import os
from decimal import Decimal

from credit_guard import CreditGuard, PriceTable, open_store
from credit_guard.proxy import create_proxy, gateway_policy

ACCOUNT, KEY, BALANCE = "team", "sk-example-proxy-1", Decimal("1.00")

upstream = os.environ.get("UPSTREAM", "http://127.0.0.1:9000/v1")
proxy = create_proxy(upstream, api_key=os.environ.get("OPENAI_API_KEY"))
store_url = os.environ.get("CREDIT_STORE", "sqlite:///proxy_credits.db")
app = CreditGuard(
    proxy,
    prices=PriceTable.default(),
    store=open_store(store_url),
    billing_url=os.environ.get("BILLING_URL"),
    **gateway_policy(),
)


async def setup() -> None:
    """Give the example account its first credits and its key; running it
    again changes nothing."""
    store = app.store
    if not await store.account_exists(ACCOUNT):
        await store.grant(ACCOUNT, BALANCE)
    if await store.account_for_key(KEY) != ACCOUNT:
        await store.add_key(KEY, ACCOUNT)


def upstream_hint() -> str:
    """A line for the banner when nothing listens at the upstream's address."""
    import socket

    import httpx

    url = httpx.URL(upstream)
    try:
        with socket.create_connection((url.host, url.port or (443 if url.scheme == "https" else 80)), timeout=2):
            return ""
    except OSError:
        port = url.port or 9000
        return (
            f"  (nothing answers there yet: start `python -m credit_guard.fake_llm --port {port}`, or set UPSTREAM)\n"
        )


def banner(port: int) -> str:
    base = f"http://127.0.0.1:{port}"
    return f"""
credit_guard in front of {upstream}, on {base}/v1
{upstream_hint()}
  API key   {KEY}   (account {ACCOUNT}, ${BALANCE} granted when new)
  store     {store_url}

Try:
  curl -s {base}/v1/chat/completions -H 'Authorization: Bearer {KEY}' -H 'Content-Type: application/json' \\
    -d '{{"model": "gpt-4o-mini", "messages": [{{"role": "user", "content": "Hi"}}], "max_tokens": 20}}'

Stop with Ctrl-C.
"""


def main(argv: list[str] | None = None) -> None:
    import anyio
    import uvicorn

    parser = argparse.ArgumentParser(description="credit_guard in front of an OpenAI-compatible upstream")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8003")))
    args = parser.parse_args(argv)
    anyio.run(setup)
    print(banner(args.port), flush=True)
    uvicorn.run(app, host="127.0.0.1", port=args.port)


if __name__ == "__main__":
    main()
