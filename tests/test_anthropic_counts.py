"""Anthropic Messages: the bound against every published Anthropic token figure,
the tool-use system prompt per model and tool_choice, and Claude's image rule.

Claude has no public tokenizer, so each count is an upper bound (``exact`` is
False) and each published figure is a floor it must reach.  Sources:

- Anthropic docs, token counting (build-with-claude/token-counting): the
  count_tokens examples;
- Anthropic docs, tool use, pricing table (agents-and-tools/tool-use/overview,
  "Pricing"): the tool-use system prompt per model and tool_choice;
- Anthropic docs, vision (build-with-claude/vision): image sizes and costs.
"""

from __future__ import annotations

import base64
import struct
import zlib
from decimal import Decimal
from typing import Any

import httpx
import pytest

from credit_guard import CreditGuard, MemoryStore, PriceTable, shapes, tokens
from credit_guard._anthropic import UNKNOWN_MODEL_TOKENS, model_family, tool_prompt_tokens
from credit_guard.errors import InvalidRequest
from credit_guard.fake_llm import create_app

from .reference import LITELLM_PRICE_MAP, needs_litellm_map
from .servers import serve

TABLE = PriceTable.default()
LITELLM = PriceTable.from_file(LITELLM_PRICE_MAP) if LITELLM_PRICE_MAP.exists() else None


def litellm() -> PriceTable:
    if LITELLM is None:
        pytest.skip("LiteLLM's price map is not found (see tests/reference.py)")
    return LITELLM


WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Get the current weather in a given location",
    "input_schema": {
        "type": "object",
        "properties": {
            "location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"},
        },
        "required": ["location"],
    },
}
ANT_URL = "https://upload.wikimedia.org/wikipedia/commons/a/a7/Camponotus_flavomarginatus_ant.jpg"


def count(body: dict[str, Any], table: PriceTable = TABLE) -> tokens.TokenCount:
    ask = shapes.parse("anthropic", body)
    return tokens.count_input(ask, table.resolve(body["model"]))


def png(width: int, height: int) -> str:
    raw = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    ihdr = struct.pack(">I", 13) + b"IHDR" + raw + struct.pack(">I", zlib.crc32(b"IHDR" + raw))
    return base64.b64encode(b"\x89PNG\r\n\x1a\n" + ihdr + b"\x00" * 16).decode()


def image_block(width: int, height: int) -> dict[str, Any]:
    return {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": png(width, height)}}


# -- the token counting examples (Anthropic docs, token counting) --------------------

MODELS = ["claude-sonnet-4-5", "claude-opus-4-5", "claude-haiku-4-5"]
NEWER = ["claude-opus-4-7", "claude-opus-4-8", "claude-sonnet-5", "claude-sonnet-4-6"]
NEWER_FROM_LITELLM = [pytest.param(LITELLM, m, marks=needs_litellm_map) for m in NEWER]


@pytest.mark.parametrize(("table", "model"), [(TABLE, m) for m in MODELS] + NEWER_FROM_LITELLM)
def test_count_tokens_basic_message_is_14(table: PriceTable, model: str) -> None:
    """count_tokens(system="You are a scientist", "Hello, Claude") -> 14 input tokens."""
    body = {
        "model": model,
        "max_tokens": 10,
        "system": "You are a scientist",
        "messages": [{"role": "user", "content": "Hello, Claude"}],
    }
    result = count(body, table)
    assert result.exact is False
    assert result.tokens >= 14


@pytest.mark.parametrize(("table", "model"), [(TABLE, m) for m in MODELS] + NEWER_FROM_LITELLM)
def test_count_tokens_with_tools_is_403(table: PriceTable, model: str) -> None:
    """count_tokens(tools=[get_weather], "What's the weather like in San Francisco?") -> 403.

    403 includes the tool-use system prompt (313 to 804 tokens by model): the
    bound holds it as its own term, on top of the tool's JSON text."""
    body = {
        "model": model,
        "max_tokens": 10,
        "tools": [WEATHER_TOOL],
        "messages": [{"role": "user", "content": "What's the weather like in San Francisco?"}],
    }
    with_tools = count(body, table)
    without = count({k: v for k, v in body.items() if k != "tools"}, table)
    assert with_tools.tokens >= 403
    prompt = tool_prompt_tokens(table.resolve(model).name, "")
    assert prompt >= 290
    tool_bytes = len(shapes.parse("anthropic", body).texts[-1].encode())
    assert with_tools.tokens - without.tokens == prompt + tool_bytes + 16


@pytest.mark.parametrize(
    ("table", "model"),
    [(TABLE, "claude-sonnet-4-5"), pytest.param(LITELLM, "claude-opus-4-7", marks=needs_litellm_map)],
)
def test_count_tokens_with_an_image_is_1551(table: PriceTable, model: str) -> None:
    """count_tokens(an image by base64 of Camponotus_flavomarginatus_ant.jpg,
    "Describe this image") -> 1551.  Its size is not in the request we can read
    (a URL, or base64 without a readable header): the worst case is priced."""
    for source in (
        {"type": "url", "url": ANT_URL},
        {"type": "base64", "media_type": "image/jpeg", "data": base64.b64encode(b"\xff\xd8\xff\xe0garbage").decode()},
    ):
        body = {
            "model": model,
            "max_tokens": 10,
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "image", "source": source}, {"type": "text", "text": "Describe this image"}],
                }
            ],
        }
        result = count(body, table)
        assert result.tokens >= 1551
        assert result.exact is False


def test_count_tokens_with_thinking_is_88() -> None:
    """count_tokens(thinking enabled, a prior assistant turn with a thinking
    block, a follow-up) -> 88 (previous turns' thinking is not billed; the bound
    counts it anyway)."""
    body = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 20000,
        "thinking": {"type": "enabled", "budget_tokens": 16000},
        "messages": [
            {"role": "user", "content": "Are there an infinite number of prime numbers such that n mod 4 == 3?"},
            {
                "role": "assistant",
                "content": [
                    {
                        "type": "thinking",
                        "thinking": "This is a nice number theory question. Let's think about it step by step...",
                        "signature": "EuYBCkQYAiJAgCs1le6/Pol5Z4/JMomVOouGrWdhYNsH3ukzUECbB6iWrSQtsQuRHJID6lWV...",
                    },
                    {"type": "text", "text": "Yes, there are infinitely many prime numbers p such that p mod 4 = 3..."},
                ],
            },
            {"role": "user", "content": "Can you write a formal proof?"},
        ],
    }
    assert count(body).tokens >= 88


def test_count_tokens_pdf_is_refused_not_guessed() -> None:
    """count_tokens(a PDF document block) -> 2188 in the docs: a PDF costs its
    text and one image per page, which the gateway cannot bound without reading
    the PDF, so the request is refused with the block named."""
    body = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 10,
        "messages": [
            {
                "role": "user",
                "content": [
                    {
                        "type": "document",
                        "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0xLjQK"},
                    },
                    {"type": "text", "text": "Please summarize this document."},
                ],
            }
        ],
    }
    with pytest.raises(InvalidRequest) as caught:
        shapes.parse("anthropic", body)
    assert caught.value.param == "messages[0].content[0]"


# -- the tool-use system prompt (Anthropic docs, tool use, pricing table) ------------

# (model name as requested or resolved, auto/none, any/tool): the largest figure
# any revision of the table gave the model.
TOOL_TABLE = [
    ("claude-3-opus-20240229", 530, 281),
    ("claude-3-sonnet-20240229", 159, 235),
    ("claude-3-haiku-20240307", 264, 340),
    ("claude-3-5-haiku-20241022", 264, 355),
    ("claude-3-5-sonnet-20240620", 346, 313),
    ("claude-3-5-sonnet-20241022", 346, 313),
    ("claude-3-7-sonnet-20250219", 346, 313),
    ("claude-sonnet-4-20250514", 346, 315),
    ("claude-opus-4-20250514", 346, 315),
    ("claude-4-opus-20250514", 346, 315),
    ("claude-opus-4-1-20250805", 346, 315),
    ("claude-haiku-4-5-20251001", 496, 588),
    ("claude-sonnet-4-5", 496, 588),
    ("claude-opus-4-5-20251101", 496, 588),
    ("claude-sonnet-4-6", 497, 589),
    ("claude-opus-4-6", 497, 589),
    ("claude-opus-4-7", 675, 804),
    ("claude-opus-4-8", 290, 410),
    ("claude-sonnet-5", 354, 474),
    ("anthropic.claude-3-5-sonnet-20241022-v2:0", 346, 313),
    ("us.anthropic.claude-opus-4-1-20250805-v1:0", 346, 315),
    ("vertex_ai/claude-sonnet-4@20250514", 346, 315),
]


@pytest.mark.parametrize(("model", "auto", "forced"), TOOL_TABLE)
def test_tool_prompt_follows_the_published_table(model: str, auto: int, forced: int) -> None:
    assert tool_prompt_tokens(model, "auto") == auto
    assert tool_prompt_tokens(model, "none") == auto
    assert tool_prompt_tokens(model, "any") == forced
    assert tool_prompt_tokens(model, "tool") == forced
    assert tool_prompt_tokens(model, "") == max(auto, forced)


@pytest.mark.parametrize(
    "model",
    ["claude-fable-5", "claude-mythos-5-1", "claude-haiku-5-5", "claude-3.5-sonnet", "claude-instant-1.2", "gpt-4o"],
)
def test_a_model_outside_the_table_gets_its_largest_figure(model: str) -> None:
    assert model_family(model) is None
    assert UNKNOWN_MODEL_TOKENS == 804
    for choice in ("auto", "none", "any", "tool", ""):
        assert tool_prompt_tokens(model, choice) == 804


def test_tool_prompt_is_priced_on_the_resolved_model_and_the_choice() -> None:
    base = {
        "model": "claude-sonnet-4-5-latest",  # an alias of claude-sonnet-4-5
        "max_tokens": 10,
        "tools": [WEATHER_TOOL],
        "messages": [{"role": "user", "content": "Hi"}],
    }
    none = count({**base, "tools": []}).tokens
    forced = count({**base, "tool_choice": {"type": "tool", "name": "get_weather"}}).tokens
    auto = count({**base, "tool_choice": {"type": "auto", "disable_parallel_tool_use": True}}).tokens
    unset = count(base).tokens
    assert auto - forced == 496 - 588
    assert unset == forced  # the larger of the two
    assert unset - none > 588
    # input_bounds (used for large bodies) carries the same prompt.
    ask = shapes.parse("anthropic", base)
    low, high = tokens.input_bounds(ask, TABLE.resolve("claude-sonnet-4-5"))
    assert low == high == unset


@pytest.mark.parametrize(
    "tool",
    [
        {"type": "bash_20250124", "name": "bash"},  # 245 input tokens (tool use docs)
        {"type": "text_editor_20250429", "name": "str_replace_based_edit_tool"},  # 700 tokens
        {"type": "computer_20250124", "name": "computer", "display_width_px": 1024, "display_height_px": 768},
        {"type": "web_search_20250305", "name": "web_search", "max_uses": 5},  # billed per search
    ],
)
def test_anthropic_defined_tools_are_refused_not_guessed(tool: dict[str, Any]) -> None:
    """Anthropic-defined tools add their own definitions and system prompts
    (bash 245 tokens, text editor 700, computer use 735 plus 466-499) or bill
    per use: they are refused with the tool named."""
    body = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 10,
        "tools": [WEATHER_TOOL, tool],
        "messages": [{"role": "user", "content": "Hi"}],
    }
    with pytest.raises(InvalidRequest) as caught:
        shapes.parse("anthropic", body)
    assert caught.value.param == "tools[1]"


@pytest.mark.parametrize("choice", [{"type": "required"}, "auto", {"name": "x"}, 3])
def test_a_tool_choice_anthropic_does_not_accept_is_refused(choice: object) -> None:
    body = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 10,
        "tools": [WEATHER_TOOL],
        "tool_choice": choice,
        "messages": [{"role": "user", "content": "Hi"}],
    }
    with pytest.raises(InvalidRequest) as caught:
        shapes.parse("anthropic", body)
    assert caught.value.param == "tool_choice"


def test_every_field_of_tools_and_system_blocks_is_counted() -> None:
    cached = {**WEATHER_TOOL, "cache_control": {"type": "ephemeral", "ttl": "1h"}}
    body = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 10,
        "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        "tools": [cached],
        "messages": [{"role": "user", "content": "Hi"}],
    }
    plain = {**body, "system": [{"type": "text", "text": "Be brief."}], "tools": [WEATHER_TOOL]}
    # A cache_control mark is not read by the model: it is priced as a cache
    # write of the prompt (at the longest TTL asked), not counted as text.
    assert count(body).tokens == count(plain).tokens
    assert shapes.parse("anthropic", body).cache_ttl == "1h"
    assert shapes.parse("anthropic", plain).cache_ttl is None
    # Every other field of a tool or a system block is counted as JSON text.
    extra = {**WEATHER_TOOL, "x-note": "n" * 200}
    assert count({**plain, "tools": [extra]}).tokens - count(plain).tokens >= 200
    with pytest.raises(InvalidRequest) as caught:
        shapes.parse("anthropic", {**body, "system": [{"type": "image", "source": {}}]})
    assert caught.value.param == "system[0]"


# -- images (Anthropic docs, vision) -------------------------------------------------

# (width, height, published tokens): the docs' cost table and size table.
PUBLISHED_IMAGES = [
    (200, 200, 54),
    (1000, 1000, 1334),
    (1092, 1092, 1590),
    (951, 1268, 1600),
    (896, 1344, 1600),
    (819, 1456, 1590),
    (784, 1568, 1639),  # 1:2 at the largest size accepted unscaled: 784 * 1568 / 750
]


@pytest.mark.parametrize(("width", "height", "published"), PUBLISHED_IMAGES)
def test_claude_images_of_known_size_reach_the_published_costs(width: int, height: int, published: int) -> None:
    price = TABLE.resolve("claude-sonnet-4-5")
    ref = shapes.ImageRef(width=width, height=height)
    assert tokens.image_tokens(price.vision, ref) >= published


def test_claude_image_rule_takes_the_larger_of_area_and_patches_and_the_documented_caps() -> None:
    standard = TABLE.resolve("claude-sonnet-4-5").vision
    hires = litellm().resolve("claude-opus-4-7").vision
    assert standard is not None and hires is not None
    # A small image: 29 x 29 px is 2 by area, 4 patches of 28 px.
    assert tokens.image_tokens(standard, shapes.ImageRef(width=29, height=29)) == 4
    # Unknown size: the documented maxima.
    assert tokens.image_tokens(standard, shapes.ImageRef()) == 1640
    assert tokens.image_tokens(hires, shapes.ImageRef()) == 4784
    # Claude Opus 4.7 and later: a 1920 x 1080 image is 2691 visual tokens, unscaled.
    assert tokens.image_tokens(hires, shapes.ImageRef(width=1920, height=1080)) >= 2691
    # Larger than accepted unscaled: never above the cap, never below it either.
    assert tokens.image_tokens(standard, shapes.ImageRef(width=8000, height=8000)) == 1640
    assert tokens.image_tokens(hires, shapes.ImageRef(width=8000, height=8000)) == 4784


def test_image_blocks_are_counted_from_their_base64_header() -> None:
    body = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 10,
        "messages": [{"role": "user", "content": [image_block(200, 200), {"type": "text", "text": "What is it?"}]}],
    }
    text_only = {**body, "messages": [{"role": "user", "content": [{"type": "text", "text": "What is it?"}]}]}
    # 200 x 200 px: ~54 by area (the docs' cost table), 8 x 8 = 64 patches of 28 px.
    assert count(body).tokens - count(text_only).tokens == 64


@pytest.mark.parametrize(
    ("model", "rule_max"),
    [
        ("claude-opus-4-6-20260205", 1640),
        ("claude-sonnet-4-6", 1640),
        ("claude-haiku-4-5-20251001", 1640),
        ("claude-opus-4-7", 4784),
        ("claude-opus-4-8", 4784),
        ("claude-sonnet-5", 4784),
        ("claude-fable-5", 4784),  # a newer model: the high-resolution worst case
    ],
)
def test_families_from_the_litellm_map_get_the_right_image_worst_case(model: str, rule_max: int) -> None:
    rule = litellm().resolve(model).vision
    assert rule is not None and rule.max_tokens == rule_max


# -- over real HTTP ------------------------------------------------------------------

KEY = "sk-anthropic-counts-0123456789"


@pytest.mark.anyio
async def test_the_402_of_a_tool_request_carries_the_tool_prompt() -> None:
    store = MemoryStore({"acct": "0.000001"}, keys={KEY: "acct"})
    app = CreditGuard(create_app(), prices=TABLE, store=store)
    body = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 100,
        "tools": [WEATHER_TOOL],
        "tool_choice": {"type": "any"},
        "messages": [{"role": "user", "content": "What's the weather like in San Francisco?"}],
    }
    with serve(app) as url:
        async with httpx.AsyncClient() as http:
            reply = await http.post(url + "/v1/messages", json=body, headers={"x-api-key": KEY})
            bare = await http.post(
                url + "/v1/messages", json={k: v for k, v in body.items() if k != "tools"}, headers={"x-api-key": KEY}
            )
    assert reply.status_code == bare.status_code == 402
    context = reply.json()["error"]["context"]
    assert context["input_tokens_exact"] is False
    assert context["input_tokens"] >= 403
    added = context["input_tokens"] - bare.json()["error"]["context"]["input_tokens"]
    assert added > 588  # the any/tool prompt of Claude Sonnet 4.5, plus the tool's JSON
    assert (await store.balance("acct")).available == Decimal("0.000001")
