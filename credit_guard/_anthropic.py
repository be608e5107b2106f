"""What Anthropic bills on top of a request's own text: the tool-use system prompt.

When ``tools`` is non-empty, Anthropic adds a system prompt of its own that
enables tool use, and bills it as input.  Its size is published per model and
per ``tool_choice`` (Anthropic docs, tool use, pricing table).  The table has
been revised over time (Claude Haiku 4.5, Sonnet 4.5 and Opus 4.5 were listed
at 346 / 313 tokens and later at 496 / 588), so every model here carries the
largest figure any revision of the table gave it.  A model the table does not
name (a newer one, or a name we cannot place) is priced at the largest figure of
the whole table.

``auto`` and ``none`` share one figure, ``any`` and ``tool`` the other; a
request that sets no ``tool_choice`` gets the larger of the two.
"""

from __future__ import annotations

import re

__all__ = ["TOOL_CHOICES", "tool_prompt_tokens", "model_family"]

#: The ``tool_choice`` types Anthropic accepts.
TOOL_CHOICES = ("auto", "none", "any", "tool")

# family -> (auto/none, any/tool), the largest over the table's revisions.
_TOOL_PROMPT: dict[str, tuple[int, int]] = {
    "claude-3-opus": (530, 281),
    "claude-3-sonnet": (159, 235),
    "claude-3-haiku": (264, 340),
    "claude-3-5-haiku": (264, 355),
    # June 2024 (294 / 261) and October 2024 (346 / 313) snapshots share the name.
    "claude-3-5-sonnet": (346, 313),
    "claude-3-7-sonnet": (346, 313),
    "claude-sonnet-4": (346, 315),
    "claude-opus-4": (346, 315),
    "claude-opus-4-1": (346, 315),
    "claude-haiku-4-5": (496, 588),
    "claude-sonnet-4-5": (496, 588),
    "claude-opus-4-5": (496, 588),
    "claude-sonnet-4-6": (497, 589),
    "claude-opus-4-6": (497, 589),
    "claude-opus-4-7": (675, 804),
    "claude-opus-4-8": (290, 410),
    "claude-sonnet-5": (354, 474),
}
# Older names of the same families (``claude-4-opus-20250514``).
_ALIASES = {"claude-4-opus": "claude-opus-4", "claude-4-sonnet": "claude-sonnet-4"}

#: The largest figure of the table: what a model it does not name is priced at.
UNKNOWN_MODEL_TOKENS = max(max(pair) for pair in _TOOL_PROMPT.values())

# Claude's name inside a provider's: "anthropic.claude-3-5-sonnet-20241022-v2:0",
# "us.anthropic.claude-opus-4-1-20250805-v1:0", "vertex_ai/claude-sonnet-4@20250514".
_CLAUDE = re.compile(r"claude-[a-z0-9.-]*")
# Where the family name ends: a date, a version tag, "-latest".
_SUFFIX = re.compile(r"-(?:\d{8}|latest|v\d+).*$")


def model_family(model: str) -> str | None:
    """The family of the tool-use table a (resolved) model name belongs to, or None."""
    found = _CLAUDE.search(model.lower())
    if found is None:
        return None
    name = _SUFFIX.sub("", found.group(0)).rstrip("-")
    name = _ALIASES.get(name, name)
    return name if name in _TOOL_PROMPT else None


def tool_prompt_tokens(model: str, tool_choice: str) -> int:
    """Tokens of the tool-use system prompt Anthropic adds for ``model`` when
    ``tools`` is non-empty.  ``tool_choice`` is the ``tool_choice`` type, or ""
    when the request sets none (the larger figure is taken).  A model outside the
    table costs the table's largest figure.  Raises ``ValueError`` for another
    ``tool_choice``."""
    if tool_choice not in TOOL_CHOICES and tool_choice != "":
        raise ValueError(f"unknown tool_choice {tool_choice!r}")
    family = model_family(model)
    if family is None:
        return UNKNOWN_MODEL_TOKENS
    auto, forced = _TOOL_PROMPT[family]
    if tool_choice in ("auto", "none"):
        return auto
    if tool_choice in ("any", "tool"):
        return forced
    return max(auto, forced)
