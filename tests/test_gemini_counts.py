"""Gemini (on its OpenAI-compatible chat endpoint): the byte bound against
Google's published token figures, and Google's image rule.

Sources: Google's "Understand and count tokens" guide (ai.google.dev
gemini-api/docs/tokens, and its code in google-gemini/api-examples
``python/count_tokens.py``) for the counts; Vertex AI's image requirements
(cloud.google.com vertex-ai/generative-ai/docs/multimodal/send-multimodal-prompts)
for the tile rule; the media resolution guide for Gemini 3.
"""

from __future__ import annotations

import base64
import struct
import zlib
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from credit_guard import PriceTable, shapes, tokens
from credit_guard.shapes import ImageRef
from credit_guard.tokens import _crop_tiles, _crop_tiles_worst

from .reference import LITELLM_PRICE_MAP, needs_litellm_map

TABLE = PriceTable.default()
GEMINI = TABLE.resolve("gemini-2.5-flash")


def count(messages: list[dict[str, Any]], model: str = "gemini-2.5-flash") -> tokens.TokenCount:
    ask = shapes.parse("chat", {"model": model, "messages": messages})
    return tokens.count_input(ask, TABLE.resolve(model))


def png(width: int, height: int) -> str:
    raw = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    ihdr = struct.pack(">I", 13) + b"IHDR" + raw + struct.pack(">I", zlib.crc32(b"IHDR" + raw))
    return "data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\n" + ihdr + b"\x00" * 16).decode()


# (messages, published prompt tokens) from the guide.
PUBLISHED = [
    # "The quick brown fox jumps over the lazy dog." -> total_tokens 10, prompt_token_count 11
    ([{"role": "user", "content": "The quick brown fox jumps over the lazy dog."}], 11),
    # a chat history: "Hi my name is Bob" / "Hi Bob!" -> total_tokens 10
    ([{"role": "user", "content": "Hi my name is Bob"}, {"role": "assistant", "content": "Hi Bob!"}], 10),
    # ... and send_message("In one sentence, explain how a computer works to a young child.") -> 25
    (
        [
            {"role": "user", "content": "Hi my name is Bob"},
            {"role": "assistant", "content": "Hi Bob!"},
            {"role": "user", "content": "In one sentence, explain how a computer works to a young child."},
        ],
        25,
    ),
    # "Please give a short summary of this file." -> total_tokens 9
    ([{"role": "user", "content": "Please give a short summary of this file."}], 9),
]


@pytest.mark.parametrize(("messages", "published"), PUBLISHED)
@pytest.mark.parametrize("model", ["gemini-2.5-flash", "gemini-2.5-pro", "gemini-2.5-flash-lite"])
def test_text_bound_reaches_the_published_counts(messages: list[dict[str, Any]], published: int, model: str) -> None:
    result = count(messages, model)
    assert result.exact is False
    assert result.tokens >= published


def test_an_image_of_unknown_size_reaches_the_published_count() -> None:
    """ "Tell me about this image" + organ.jpg -> total_tokens 263, prompt_token_count 264."""
    content = [
        {"type": "text", "text": "Tell me about this image"},
        {"type": "image_url", "image_url": {"url": "https://example.com/organ.jpg"}},
    ]
    assert count([{"role": "user", "content": content}]).tokens >= 264


# (width, height, tiles) under Google's rule.
TILES = [
    (100, 100, 1),  # both sides <= 384: 258 tokens
    (384, 384, 1),
    (385, 100, 2),  # tiles of 256 (100 / 1.5 kept at the minimum): 2 x 1
    (1000, 1000, 4),  # tiles of 666 px: 2 x 2
    (400, 2000, 16),  # tiles of 266 px: 2 x 8 (768 px tiles would say 3)
    (1920, 1080, 6),  # tiles of 720 px: 3 x 2
    (3072, 3072, 16),  # tiles of 768 px: 4 x 4
    (8000, 4000, 8),  # fitted within 3072: 3072 x 1536, tiles of 768 px: 4 x 2
]


@pytest.mark.parametrize(("width", "height", "tiles"), TILES)
def test_gemini_images_follow_googles_tile_rule(width: int, height: int, tiles: int) -> None:
    assert GEMINI.vision is not None
    assert tokens.image_tokens(GEMINI.vision, ImageRef(width=width, height=height)) == 258 * tiles


def test_the_worst_case_is_the_most_any_image_can_cost() -> None:
    rule = GEMINI.vision
    assert rule is not None
    # The tile side depends on the shorter side only and the count grows with
    # the longer side, so every image's count is reached with the longer side
    # at 3072 (larger ones are fitted within 3072 first).
    most = max(_crop_tiles(rule, short, rule.max_side) for short in range(1, rule.max_side + 1))
    assert _crop_tiles_worst(rule) == most == 24 * 258
    assert tokens.image_tokens(rule, ImageRef()) == most
    for width, height, _ in TILES:
        assert tokens.image_tokens(rule, ImageRef(width=width, height=height)) <= most


@given(st.integers(1, 1 << 16), st.integers(1, 1 << 16))
def test_no_image_costs_more_than_the_worst_case(width: int, height: int) -> None:
    rule = GEMINI.vision
    assert rule is not None
    cost = tokens.image_tokens(rule, ImageRef(width=width, height=height))
    assert 258 <= cost <= tokens.image_tokens(rule, ImageRef())


def test_inline_images_are_counted_from_their_header() -> None:
    text = [{"type": "text", "text": "What is it?"}]
    image = {"type": "image_url", "image_url": {"url": png(400, 2000)}}
    with_image = count([{"role": "user", "content": [*text, image]}]).tokens
    assert with_image - count([{"role": "user", "content": text}]).tokens == 16 * 258


@needs_litellm_map
def test_gemini_3_images_cost_the_largest_media_resolution() -> None:
    table = PriceTable.from_file(LITELLM_PRICE_MAP)
    names = [m.name for m in table.models("chat") if m.name.startswith("gemini-3") and m.vision is not None]
    assert names, "the LiteLLM map carries Gemini 3 models"
    for name in names:
        rule = table.resolve(name).vision
        assert rule is not None and rule.method == "fixed" and rule.max_tokens == 2240
        assert tokens.image_tokens(rule, ImageRef(width=100, height=100)) == 2240
