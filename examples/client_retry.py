"""A client that handles the 402: shows why, then retries with the
`affordable_max_tokens` the error carries.  Uses the real openai SDK.

    credit-guard serve --demo               # prints a key
    python examples/client_retry.py --base-url http://127.0.0.1:8000/v1 --api-key sk-demo-...

The key defaults to ``$OPENAI_API_KEY``, else to the demo's own key when run
from the directory the demo runs in (it keeps it in ``credit_guard_demo.db.key``).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import openai


def complete_within_budget(client: openai.OpenAI, model: str, prompt: str, max_tokens: int) -> Any:
    """Ask for ``max_tokens``; on a 402 with an affordable cap, retry once with it."""
    messages = [{"role": "user", "content": prompt}]
    try:
        return client.chat.completions.create(model=model, messages=messages, max_tokens=max_tokens)  # type: ignore[arg-type]
    except openai.APIStatusError as exc:
        if exc.status_code != 402:
            raise
        body: Any = exc.body
        error = body.get("error", body) if isinstance(body, dict) else {}
        print(error.get("message", "Insufficient credits"))
        print("What you can do:")
        for number, suggestion in enumerate(error.get("suggestions", []), 1):
            print(f"  {number}. {suggestion}")
        affordable = (error.get("context") or {}).get("affordable_max_tokens")
        if not affordable:
            raise
        print(f"Retrying with max_tokens={affordable} (request id {error.get('request_id')})")
        return client.chat.completions.create(model=model, messages=messages, max_tokens=affordable)  # type: ignore[arg-type]


def _demo_key() -> str | None:
    path = Path("credit_guard_demo.db.key")
    return path.read_text().strip() if path.is_file() else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--base-url", default="http://127.0.0.1:8000/v1")
    parser.add_argument("--api-key", default=os.environ.get("OPENAI_API_KEY") or _demo_key())
    parser.add_argument("--model", default="gpt-4o")
    parser.add_argument("--max-tokens", type=int, default=16000)
    args = parser.parse_args(argv)
    if not args.api_key:
        parser.error("give --api-key (credit-guard serve --demo prints one)")
    with openai.OpenAI(base_url=args.base_url, api_key=args.api_key, max_retries=0) as client:
        try:
            reply = complete_within_budget(client, args.model, "Write a haiku about budgets.", args.max_tokens)
        except openai.APIConnectionError:
            print(f"Nothing answers at {args.base_url}: start `credit-guard serve --demo` first.")
            return 1
    print(reply.choices[0].message.content)
    print(f"usage: {reply.usage.prompt_tokens} in, {reply.usage.completion_tokens} out")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
