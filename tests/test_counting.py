"""Counting input tokens as the provider bills them: the published figures,
every request shape, images, tools, and the bounds for unknown tokenizers."""

from __future__ import annotations

import base64
import math
import os
import struct
import subprocess
import sys
import zlib
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from credit_guard import PriceTable, shapes, tokens
from credit_guard._tools import render
from credit_guard.errors import InvalidRequest
from credit_guard.prices import ModelPrice, TokenBound, VisionRule

TABLE = PriceTable.default()

# The OpenAI cookbook "How to count tokens with tiktoken": its example messages
# and the prompt_tokens the API reported for them.
COOKBOOK_MESSAGES = [
    {
        "role": "system",
        "content": "You are a helpful, pattern-following assistant that translates corporate jargon "
        "into plain English.",
    },
    {"role": "system", "name": "example_user", "content": "New synergies will help drive top-line growth."},
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Things working well together will increase revenue.",
    },
    {
        "role": "system",
        "name": "example_user",
        "content": "Let's circle back when we have more bandwidth to touch base on opportunities for "
        "increased leverage.",
    },
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Let's talk later when we're less busy about how to do better.",
    },
    {
        "role": "user",
        "content": "This late pivot means we don't have time to boil the ocean for the client deliverable.",
    },
]
WEATHER_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_current_weather",
            "description": "Get the current weather in a given location",
            "parameters": {
                "type": "object",
                "properties": {
                    "location": {
                        "type": "string",
                        "description": "The city and state, e.g. San Francisco, CA",
                    },
                    "unit": {
                        "type": "string",
                        "description": "The unit of temperature to return",
                        "enum": ["celsius", "fahrenheit"],
                    },
                },
                "required": ["location"],
            },
        },
    }
]
WEATHER_MESSAGES = [
    {
        "role": "system",
        "content": "You are a helpful assistant that can answer to questions about the weather.",
    },
    {"role": "user", "content": "What's the weather like in San Francisco?"},
]


def count(kind: str, body: dict[str, Any], model: str | None = None) -> tokens.TokenCount:
    ask = shapes.parse(kind, body)
    return tokens.count_input(ask, TABLE.resolve(model or ask.model))


@pytest.mark.parametrize(
    ("model", "expected"), [("gpt-3.5-turbo", 129), ("gpt-4", 129), ("gpt-4o", 124), ("gpt-4o-mini", 124)]
)
def test_cookbook_messages_count_as_the_api_reported(model: str, expected: int) -> None:
    assert count("chat", {"model": model, "messages": COOKBOOK_MESSAGES}) == (expected, True)


@pytest.mark.parametrize(
    ("model", "expected"), [("gpt-3.5-turbo", 105), ("gpt-4", 105), ("gpt-4o", 101), ("gpt-4o-mini", 101)]
)
def test_cookbook_weather_tool_counts_as_the_api_reported(model: str, expected: int) -> None:
    body = {"model": model, "messages": WEATHER_MESSAGES, "tools": WEATHER_TOOLS}
    assert count("chat", body) == (expected, True)
    # The legacy `functions` field renders the same.
    legacy = {"model": model, "messages": WEATHER_MESSAGES, "functions": [WEATHER_TOOLS[0]["function"]]}
    assert count("chat", legacy) == (expected, True)


def test_special_token_text_is_counted_not_raised() -> None:
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "<|endoftext|> and <|endofprompt|>"}]}
    result = count("chat", body)
    assert result.exact
    assert result.tokens > 7


def test_counts_offline_without_a_cache_directory() -> None:
    # A fresh interpreter with no tiktoken cache and no route anywhere.
    code = (
        "import os, socket\n"
        "assert 'TIKTOKEN_CACHE_DIR' not in os.environ and 'DATA_GYM_CACHE_DIR' not in os.environ\n"
        "def refuse(*a, **k): raise OSError('network used')\n"
        "socket.socket.connect = refuse\n"
        "socket.create_connection = refuse\n"
        "from credit_guard import tokens\n"
        "print(len(tokens.get_encoding('o200k_base').encode_ordinary('hello world')),"
        " len(tokens.get_encoding('cl100k_base').encode_ordinary('hello world')))\n"
        "assert 'TIKTOKEN_CACHE_DIR' not in os.environ\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR")}
    env["HOME"] = "/nonexistent"
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["2", "2"]


def tiktoken_cache(directory: Path) -> Path:
    """A tiktoken cache holding this package's encoding files under tiktoken's
    own cache keys (the SHA-1 of each download URL).  tiktoken checks each
    file's SHA-256 when it reads it and, finding one wrong, tries to download
    it (refused in the test's process): so it builds its encodings from exactly
    the published files, by its own code."""
    import hashlib

    for name in ("cl100k_base", "o200k_base"):
        url = f"https://openaipublic.blob.core.windows.net/encodings/{name}.tiktoken"
        source = Path(tokens.__file__).parent / "data" / f"{name}.tiktoken"
        (directory / hashlib.sha1(url.encode()).hexdigest()).write_bytes(source.read_bytes())
    return directory


def test_bundled_encodings_equal_tiktokens_own(tmp_path: Path) -> None:
    text = "Hello, wörld! 12345 <|endoftext|>\n\n  indented\tcode() {}; 日本語のテキスト 🙂" * 20
    code = (
        "import socket, sys, tiktoken\n"
        "def refuse(*a, **k): raise OSError('network used')\n"
        "socket.socket.connect = refuse\n"
        "text = sys.stdin.read()\n"
        "for name in ('cl100k_base', 'o200k_base'):\n"
        "    print(tiktoken.get_encoding(name).encode_ordinary(text))\n"
    )
    env = {**os.environ, "TIKTOKEN_CACHE_DIR": str(tiktoken_cache(tmp_path))}
    result = subprocess.run(
        [sys.executable, "-c", code], input=text, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    ours = [str(tokens.get_encoding(name).encode_ordinary(text)) for name in ("cl100k_base", "o200k_base")]
    assert result.stdout.split("\n")[:2] == ours


def test_a_damaged_encoding_file_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    name = "cl100k_base"
    filename, _, pattern, special = tokens._SPECS[name]
    monkeypatch.setitem(tokens._SPECS, name, (filename, "0" * 64, pattern, special))
    with pytest.raises(tokens.EncodingFileError, match="damaged"):
        tokens._load(name)


# -- shapes ----------------------------------------------------------------------


def test_name_and_content_parts() -> None:
    enc = tokens.get_encoding("o200k_base")
    body = {
        "model": "gpt-4o",
        "messages": [{"role": "user", "name": "bob", "content": [{"type": "text", "text": "hi there"}]}],
    }
    expected = 3 + 3 + len(enc.encode("user")) + len(enc.encode("hi there")) + len(enc.encode("bob")) + 1
    assert count("chat", body) == (expected, True)


def test_tool_calls_in_history_are_bounded() -> None:
    body = {
        "model": "gpt-4o",
        "messages": [
            {"role": "user", "content": "weather?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "get", "arguments": '{"a": 1}'}}
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        ],
    }
    result = count("chat", body)
    assert result.exact is False
    without = count("chat", {"model": "gpt-4o", "messages": body["messages"][:1]})
    assert result.tokens > without.tokens + 20


def test_response_format_schema_is_bounded() -> None:
    schema = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}], "response_format": schema}
    plain = count("chat", {"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]})
    result = count("chat", body)
    assert result.exact is False
    assert result.tokens > plain.tokens


@pytest.mark.parametrize(
    ("model", "choice", "extra", "exact"),
    [
        # cl100k_base: API counts verify "none" +1, "auto" +0, a name +4 in
        # function_call (hmarr) and +7 in tool_choice (openai-messages-token-helper).
        ("gpt-4", "none", 1, True),
        ("gpt-4", "auto", 0, True),
        ("gpt-4", {"type": "function", "function": {"name": "get_current_weather"}}, 7, True),
        # o200k_base: not published; the larger reading and a margin of one.
        ("gpt-4o", "none", 2, False),
        ("gpt-4o", "auto", 1, False),
        ("gpt-4o", {"type": "function", "function": {"name": "get_current_weather"}}, 8, False),
    ],
)
def test_tool_choice_adds_its_tokens(model: str, choice: object, extra: int, exact: bool) -> None:
    base = {"model": model, "messages": WEATHER_MESSAGES, "tools": WEATHER_TOOLS}
    plain = count("chat", base)
    with_choice = count("chat", {**base, "tool_choice": choice})
    if isinstance(choice, dict):
        name = "cl100k_base" if model == "gpt-4" else "o200k_base"
        extra += len(tokens.get_encoding(name).encode("get_current_weather"))
    assert plain.exact is True
    assert (with_choice.tokens - plain.tokens, with_choice.exact) == (extra, exact)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (
            {"model": "gpt-4o", "messages": [{"role": "user", "content": [{"type": "input_audio"}]}]},
            "messages[0]",
        ),
        ({"model": "gpt-4o", "messages": [{"role": "user", "content": [{"type": "video"}]}]}, "messages[0]"),
        ({"model": "gpt-4o", "messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
        ({"model": "gpt-4o", "messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
        (
            {"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}], "audio": {"voice": "x"}},
            "audio",
        ),
        (
            {"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}], "service_tier": 5},
            "service_tier",
        ),
        (
            {"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}], "tools": [{"type": "web"}]},
            None,
        ),
        ({"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}], "n": 500}, "n"),
        ({"model": "", "messages": [{"role": "user", "content": "x"}]}, "model"),
        ({"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}], "stream": "yes"}, "stream"),
    ],
)
def test_unpriceable_chat_fields_are_refused(body: dict[str, Any], param: str | None) -> None:
    with pytest.raises(InvalidRequest) as caught:
        shapes.parse("chat", body)
    if param is not None:
        assert caught.value.param is not None and caught.value.param.startswith(param)
    else:
        assert caught.value.param


def test_output_cap_fields() -> None:
    both = {
        "model": "o3",
        "messages": [{"role": "user", "content": "x"}],
        "max_completion_tokens": 7,
        "max_tokens": 9,
    }
    # Both set: the larger is held, since upstreams differ on which one wins.
    ask = shapes.parse("chat", both)
    assert (ask.output_tokens, ask.output_param) == (9, "max_tokens")
    ask = shapes.parse("chat", {**both, "max_completion_tokens": 11})
    assert (ask.output_tokens, ask.output_param) == (11, "max_completion_tokens")
    ask = shapes.parse("chat", {"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}], "n": 3})
    assert (ask.output_tokens, ask.output_param, ask.choices) == (None, "max_tokens", 3)


def test_completions_shapes() -> None:
    enc = tokens.get_encoding("cl100k_base")
    one = count("completion", {"model": "gpt-3.5-turbo-instruct", "prompt": "Say hi"})
    assert one == (len(enc.encode("Say hi")), True)
    many = shapes.parse("completion", {"model": "gpt-3.5-turbo-instruct", "prompt": ["a", "b c"], "n": 2, "best_of": 3})
    assert many.choices == 3 * 2  # best_of completions for each of the two prompts
    assert (many.output_tokens, many.default_output_tokens) == (None, 16)  # the API's default cap
    arrays = count("completion", {"model": "gpt-3.5-turbo-instruct", "prompt": [[1, 2, 3], [4, 5]]})
    assert arrays == (5, True)
    with pytest.raises(InvalidRequest):
        shapes.parse("completion", {"model": "x", "prompt": "a", "n": 3, "best_of": 2})


def test_embeddings_shapes() -> None:
    enc = tokens.get_encoding("cl100k_base")
    result = count("embedding", {"model": "text-embedding-3-small", "input": ["hello world", "bye"]})
    assert result == (len(enc.encode("hello world")) + len(enc.encode("bye")), True)
    assert count("embedding", {"model": "text-embedding-3-small", "input": [1, 2, 3, 4]}) == (4, True)
    ask = shapes.parse("embedding", {"model": "text-embedding-3-small", "input": "x"})
    assert ask.output_tokens == 0


def test_responses_shapes_are_bounded_and_never_below_the_chat_count() -> None:
    body = {
        "model": "gpt-4o",
        "instructions": "Be brief.",
        "input": [{"role": "user", "content": "Hello there"}],
    }
    chat = count(
        "chat",
        {
            "model": "gpt-4o",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hello there"},
            ],
        },
    )
    result = count("responses", body)
    assert result.exact is False
    assert result.tokens >= chat.tokens
    ask = shapes.parse("responses", {**body, "max_output_tokens": 55})
    assert (ask.output_tokens, ask.output_param) == (55, "max_output_tokens")
    for refused in (
        {"previous_response_id": "resp_1"},
        {"background": True},
        {"tools": [{"type": "web_search"}]},
    ):
        with pytest.raises(InvalidRequest):
            shapes.parse("responses", {**body, **refused})


def test_anthropic_shapes_are_bounded_by_bytes() -> None:
    body = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 100,
        "system": "You are terse.",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Hello, Claude"}]}],
    }
    result = count("anthropic", body)
    assert result.exact is False
    text_bytes = len(b"You are terse.") + len(b"Hello, Claude")
    assert result.tokens >= text_bytes
    with pytest.raises(InvalidRequest) as caught:
        shapes.parse("anthropic", {**body, "max_tokens": None})
    assert caught.value.param == "max_tokens"


# -- images ------------------------------------------------------------------------


def png(width: int, height: int) -> str:
    raw = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    ihdr = struct.pack(">I", 13) + b"IHDR" + raw + struct.pack(">I", zlib.crc32(b"IHDR" + raw))
    data = b"\x89PNG\r\n\x1a\n" + ihdr + b"\x00" * 16
    return "data:image/png;base64," + base64.b64encode(data).decode()


def jpeg(width: int, height: int) -> str:
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, height, width, 1) + b"\x01\x11\x00"
    data = b"\xff\xd8" + app0 + sof + b"\xff\xd9"
    return "data:image/jpeg;base64," + base64.b64encode(data).decode()


def gif(width: int, height: int) -> str:
    data = b"GIF89a" + struct.pack("<HH", width, height) + b"\x00" * 8
    return "data:image/gif;base64," + base64.b64encode(data).decode()


def webp(width: int, height: int) -> str:
    vp8x = (
        b"VP8X"
        + struct.pack("<I", 10)
        + b"\x00" * 4
        + (width - 1).to_bytes(3, "little")
        + (height - 1).to_bytes(3, "little")
    )
    data = b"RIFF" + struct.pack("<I", 4 + len(vp8x)) + b"WEBP" + vp8x
    return "data:image/webp;base64," + base64.b64encode(data).decode()


def image_body(url: str, detail: str = "high", model: str = "gpt-4o") -> dict[str, Any]:
    part = {"type": "image_url", "image_url": {"url": url, "detail": detail}}
    return {"model": model, "messages": [{"role": "user", "content": [part]}]}


def image_only(url: str, detail: str = "high", model: str = "gpt-4o") -> tuple[int, bool]:
    base = count("chat", {"model": model, "messages": [{"role": "user", "content": []}]})
    result = count("chat", image_body(url, detail, model))
    return result.tokens - base.tokens, result.exact


@pytest.mark.parametrize("make", [png, jpeg, gif, webp])
def test_image_headers_give_the_size(make: Any) -> None:
    from credit_guard._images import image_size

    assert image_size(make(1024, 768)) == (1024, 768)


@pytest.mark.parametrize(
    ("size", "detail", "expected"),
    [
        # OpenAI's vision guide: gpt-4o, 1024x1024 high -> 4 tiles -> 765; 2048x4096 -> 6 tiles -> 1105.
        ((1024, 1024), "high", 765),
        ((2048, 4096), "high", 1105),
        ((4096, 8192), "low", 85),
        ((512, 512), "auto", 255),
    ],
)
def test_gpt_4o_image_tokens_follow_the_published_rule(size: tuple[int, int], detail: str, expected: int) -> None:
    rule = TABLE.resolve("gpt-4o").vision
    assert tokens.image_tokens(rule, shapes.ImageRef(detail, *size)) == expected
    # In a message the framing around an image is not verified: a bound.
    assert image_only(png(*size), detail) == (expected, False)


def test_unknown_image_size_is_the_worst_case() -> None:
    assert image_only("https://example.com/cat.png", "high") == (85 + 8 * 170, False)
    assert image_only("https://example.com/cat.png", "auto") == (1445, False)
    assert image_only("https://example.com/cat.png", "low") == (85, False)
    # gpt-4o-mini's constants come from the table too.
    assert image_only("https://example.com/cat.png", "high", "gpt-4o-mini")[0] == 2833 + 8 * 5667


def test_patch_rule_and_no_rule() -> None:
    # gpt-4.1-mini: 32px patches times 1.62; 1024x1024 = 1024 patches.
    assert image_only(png(1024, 1024), "high", "gpt-4.1-mini") == (math.ceil(1024 * Decimal("1.62")), False)
    with pytest.raises(InvalidRequest):
        count("chat", image_body(png(10, 10), model="gpt-3.5-turbo"))


@settings(max_examples=200, deadline=None)
@given(width=st.integers(1, 20000), height=st.integers(1, 20000))
def test_known_sizes_never_exceed_the_unknown_worst_case(width: int, height: int) -> None:
    rule = TABLE.resolve("gpt-4o").vision
    assert rule is not None
    worst = tokens.image_tokens(rule, shapes.ImageRef("high"))
    assert tokens.image_tokens(rule, shapes.ImageRef("high", width, height)) <= worst


# -- bounds --------------------------------------------------------------------------

BYTES_ONLY = ModelPrice(name="claude-x", kind="chat", input_price=Decimal(1), output_price=Decimal(1))
RATIO = ModelPrice(
    name="claude-y",
    kind="chat",
    input_price=Decimal(1),
    output_price=Decimal(1),
    token_bound=TokenBound(o200k_ratio=Decimal("1.2"), margin=8),
)
EXACT = ModelPrice(name="gpt-4o", kind="chat", input_price=Decimal(1), output_price=Decimal(1), encoding="o200k_base")


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=400))
def test_bounded_counts_are_never_below_the_exact_count(text: str) -> None:
    ask = shapes.parse("chat", {"model": "m", "messages": [{"role": "user", "content": text}]})
    exact = tokens.count_input(ask, EXACT)
    for bounded in (tokens.count_input(ask, BYTES_ONLY), tokens.count_input(ask, RATIO)):
        assert bounded.exact is False
        assert bounded.tokens >= exact.tokens
    low, high = tokens.input_bounds(ask, EXACT)
    assert low <= exact.tokens <= high


# Single-line text JSON writes as it is: the cases whose TypeScript rendering is
# known exactly (multi-line descriptions and escaped enum values are counted as
# bounds; tests/test_tools.py covers those).
PLAIN = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126, exclude_characters='"\\'), max_size=30)

schemas = st.deferred(
    lambda: st.one_of(
        st.fixed_dictionaries(
            {"type": st.sampled_from(["string", "number", "integer", "boolean"])},
            optional={"description": PLAIN},
        ),
        st.fixed_dictionaries(
            {
                "type": st.just("string"),
                "enum": st.lists(PLAIN.filter(bool), min_size=1, max_size=4),
            }
        ),
        st.fixed_dictionaries({"type": st.just("array"), "items": schemas}, optional={"description": PLAIN}),
        st.builds(
            lambda props, req: {"type": "object", "properties": props, "required": [k for k in props if req]},
            st.dictionaries(st.from_regex(r"[a-z_]{1,10}", fullmatch=True), schemas, min_size=1, max_size=4),
            st.booleans(),
        ),
    )
)


@settings(max_examples=150, deadline=None)
@given(
    props=st.dictionaries(st.from_regex(r"[a-z_]{1,12}", fullmatch=True), schemas, min_size=0, max_size=5),
    description=PLAIN,
)
def test_the_json_bound_for_unknown_constructs_is_never_below_the_rendering(
    props: dict[str, Any], description: str
) -> None:
    function = {
        "name": "f",
        "description": description,
        "parameters": {"type": "object", "properties": props},
    }
    exact_text, _ = render([function])
    bound_text, bound_exact = render([function], bound=True)
    assert bound_exact is False
    for name in ("cl100k_base", "o200k_base"):
        encoding = tokens.get_encoding(name)
        assert len(encoding.encode_ordinary(bound_text)) >= len(encoding.encode_ordinary(exact_text))


def test_renderings() -> None:
    function = {
        "name": "f",
        "parameters": {
            "type": "object",
            "properties": {
                "tags": {"type": "array", "items": {"type": "string"}},
                "where": {
                    "type": "object",
                    "properties": {"city": {"type": "string", "description": "deep"}},
                    "required": ["city"],
                },
                "n": {"type": "integer", "enum": [1, 2]},
            },
            "required": ["tags"],
        },
    }
    text, exact = render([function, {"name": "g"}])
    # A nested description is shown (a bound: gpt-3.5-turbo dropped them).
    assert exact is False
    assert text == (
        "namespace functions {\n\n"
        "type f = (_: {\n"
        "tags: string[],\n"
        "where?: {\n"
        "  // deep\n"
        "  city: string,\n"
        "},\n"
        "n?: 1 | 2,\n"
        "}) => any;\n\n"
        "type g = () => any;\n\n"
        "} // namespace functions"
    )
    unknown = {
        "name": "h",
        "parameters": {"type": "object", "properties": {"x": {"anyOf": [{"type": "string"}]}}},
    }
    text, exact = render([unknown])
    assert exact is False
    assert '{"anyOf":[{"type":"string"}]}' in text


def test_count_output_and_bounds() -> None:
    assert tokens.count_output(["hello", " world"], EXACT) == 2
    assert tokens.count_output(["héllo"], BYTES_ONLY) == 6
    assert tokens.count_output([], EXACT) == 0


def test_images_need_a_rule_in_the_table() -> None:
    no_rule = VisionRule(method="fixed", max_tokens=99)
    assert tokens.image_tokens(no_rule, shapes.ImageRef("high")) == 99


def test_tools_next_to_a_developer_message_take_no_system_saving() -> None:
    system = {"model": "gpt-4o", "messages": WEATHER_MESSAGES, "tools": WEATHER_TOOLS}
    developer = {**system, "messages": [{**WEATHER_MESSAGES[0], "role": "developer"}, WEATHER_MESSAGES[1]]}
    with_system, with_developer = count("chat", system), count("chat", developer)
    assert with_system == (101, True)
    assert with_developer.exact is False
    # "developer" and "system" are one token each; the saving of 5 is not taken.
    assert with_developer.tokens == with_system.tokens + 5
