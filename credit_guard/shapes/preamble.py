"""Input that OpenAI models bill but a request does not show, per model family.

The chat framing (3 tokens per message, 1 per name, 3 to prime the reply) is
verified by published counts on a few families only: gpt-3.5-turbo and gpt-4
(cl100k_base) and gpt-4o / gpt-4o-mini (o200k_base), in OpenAI's cookbook
(``How_to_count_tokens_with_tiktoken.ipynb``).  Other OpenAI families may add
input of their own (a system preamble, the date, tool instructions), and
published Responses counts show that they do:

- the API reference's Responses examples ("Text input", "Streaming") bill 36
  and 37 tokens where the chat framing of the same text counts 18 and 19: 18
  hidden tokens per request;
- its "Reasoning" example (o-series) bills 81 where the chat framing counts
  17: 64 hidden tokens;
- its "Functions" example bills 291 where the chat rendering of the same
  request, tool definitions included, counts 82: 209 hidden tokens, 191 of
  them beyond the 18 every request has.

Each allowance below is at least twice the largest hidden input published for
its case (``tests/test_accuracy.py`` recomputes the ratios from the figures),
because one or two figures per case say little about the spread across models
and dates; a hold above the bill is released at settlement, one below it is
lost.  A count that takes an allowance is never exact.
"""

from __future__ import annotations

import functools

__all__ = [
    "HIDDEN_BASE",
    "HIDDEN_FUNCTION_TOOLS",
    "HIDDEN_REASONING",
    "chat_allowance",
    "chat_verified",
    "responses_allowance",
]

#: Per request, on the Responses API and on unverified OpenAI chat families.
HIDDEN_BASE = 40
#: Per request, on reasoning families (o-series, gpt-5, codex) and on OpenAI
#: names not known to be a chat family.
HIDDEN_REASONING = 128
#: Per Responses request that defines function tools.
HIDDEN_FUNCTION_TOOLS = 384

# OpenAI model names, after any "provider/" prefix and "ft:".
_OPENAI = ("gpt-", "o1", "o3", "o4", "chatgpt-", "codex", "computer-use")
# Families not known to reason (no hidden reasoning preamble expected).
_NOT_REASONING = ("gpt-3.5", "gpt-35", "gpt-4", "chatgpt-4o")
# Families whose chat framing published counts verify.
_VERIFIED_PREFIXES = ("gpt-3.5-turbo", "gpt-35-turbo", "gpt-4o")
_VERIFIED_GPT4 = frozenset({"gpt-4", "gpt-4-0314", "gpt-4-0613", "gpt-4-32k", "gpt-4-32k-0314", "gpt-4-32k-0613"})


def _name(model: str) -> str:
    name = model.rsplit("/", 1)[-1].lower()
    return name[3:] if name.startswith("ft:") else name


def _openai(name: str) -> bool:
    return name.startswith(_OPENAI)


def _reasoning(name: str) -> bool:
    return not name.startswith(_NOT_REASONING)


@functools.lru_cache(maxsize=4096)
def chat_verified(model: str) -> bool:
    """Whether published counts verify the chat framing on ``model``'s family."""
    name = _name(model)
    return name.startswith(_VERIFIED_PREFIXES) or name in _VERIFIED_GPT4


@functools.lru_cache(maxsize=4096)
def chat_allowance(model: str) -> int:
    """Hidden input a chat request may bill on ``model`` beyond its framing:
    0 on verified families and on models that are not OpenAI's (their own
    counting decides)."""
    name = _name(model)
    if chat_verified(model) or not _openai(name):
        return 0
    return HIDDEN_BASE + (HIDDEN_REASONING if _reasoning(name) else 0)


def responses_allowance(model: str, *, function_tools: bool) -> int:
    """Hidden input a Responses request may bill on ``model``."""
    name = _name(model)
    reasoning = _reasoning(name) if _openai(name) else True
    return HIDDEN_BASE + (HIDDEN_REASONING if reasoning else 0) + (HIDDEN_FUNCTION_TOOLS if function_tools else 0)
