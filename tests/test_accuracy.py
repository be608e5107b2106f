"""Every published figure the counts are held against, one test each (the
tables of docs/accuracy.md name them).  A count is never below the figure, and
equals it where the count says it is exact."""

from __future__ import annotations

import fnmatch
import re
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from credit_guard import PriceTable, shapes, tokens
from credit_guard.errors import InvalidRequest
from credit_guard.prices import ModelNotPriced, ModelPrice
from credit_guard.shapes import preamble

from .test_counting import png
from .test_tools import functions_strategy

TABLE = PriceTable.default()
# A chat model without a tokenizer: counted by its UTF-8 bytes.
BYTES_ONLY = ModelPrice(name="other", kind="chat", input_price=Decimal(1), output_price=Decimal(1))

COOKBOOK = "OpenAI cookbook, examples/How_to_count_tokens_with_tiktoken.ipynb"
API_REFERENCE = "OpenAI API reference: openai/openai-openapi openapi.yaml @f85dbe2, x-oaiMeta example"
HMARR = "openai-chat-tokens 0.2.8 (hmarr/openai-chat-tokens @b8e3b11) tests/token-counts.test.ts, API on gpt-3.5-turbo"
GPT_TOKENIZER = "gpt-tokenizer 4.0.0 (npm) src/fixtures/functionCallingTestCases.ts, gpt-4o, its own renderer"
OMTH = "openai-messages-token-helper 0.1.13 (PyPI) tests/messages.py, functions.py, image_messages.py: API counts"
VISION_GUIDE = "OpenAI vision guide, 'Calculating costs' (platform.openai.com/docs/guides/images-vision)"


class Figure(NamedTuple):
    """One published count: the request, the model(s) it is checked on, the
    figure, and whether the guard's count is exact for it."""

    source: str
    kind: str
    body: dict[str, Any]
    models: tuple[str, ...]
    published: int
    exact: bool


def price_for(model: str) -> ModelPrice:
    """The model's table entry; for a dated snapshot the bundled table no
    longer prices (a published figure's model), an entry of that name whose
    encoding follows from the name, as for any OpenAI model."""
    try:
        return TABLE.resolve(model)
    except ModelNotPriced:
        return replace(TABLE.resolve("gpt-4o"), name=model, encoding=None)


def count(kind: str, body: dict[str, Any], model: str) -> tokens.TokenCount:
    ask = shapes.parse(kind, {**body, "model": model})
    return tokens.count_input(ask, price_for(model))


def check(figure: Figure) -> None:
    for model in figure.models:
        result = count(figure.kind, figure.body, model)
        assert result.tokens >= figure.published, (model, result)
        if figure.exact:
            assert result == (figure.published, True), model
        else:
            assert result.exact is False, model


COOKBOOK_MESSAGES = [
    {
        "role": "system",
        "content": "You are a helpful, pattern-following assistant that translates corporate jargon "
        "into plain English.",
    },
    {"role": "system", "name": "example_user", "content": "New synergies will help drive top-line growth."},
    {"role": "system", "name": "example_assistant", "content": "Things working well together will increase revenue."},
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
WEATHER = {
    "name": "get_current_weather",
    "description": "Get the current weather in a given location",
    "parameters": {
        "type": "object",
        "properties": {
            "location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"},
            "unit": {
                "type": "string",
                "description": "The unit of temperature to return",
                "enum": ["celsius", "fahrenheit"],
            },
        },
        "required": ["location"],
    },
}
WEATHER_MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant that can answer to questions about the weather."},
    {"role": "user", "content": "What's the weather like in San Francisco?"},
]
# The API reference's weather tool: "unit" has no description.
REFERENCE_WEATHER = {
    "name": "get_current_weather",
    "description": "Get the current weather in a given location",
    "parameters": {
        "type": "object",
        "properties": {
            "location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        },
        "required": ["location"],
    },
}
BOARDWALK = (
    "https://upload.wikimedia.org/wikipedia/commons/thumb/d/dd/Gfp-wisconsin-madison-the-nature-boardwalk.jpg/"
    "2560px-Gfp-wisconsin-madison-the-nature-boardwalk.jpg"
)
RESPONSES_MODELS = ("gpt-4o", "gpt-4.1", "gpt-5", "o3-mini")

FIGURES: dict[str, Figure] = {
    # -- OpenAI cookbook: chat messages and the weather tool ---------------------------
    "cookbook messages gpt-3.5-turbo-0613": Figure(
        COOKBOOK, "chat", {"messages": COOKBOOK_MESSAGES}, ("gpt-3.5-turbo-0613",), 129, True
    ),
    "cookbook messages gpt-4-0613": Figure(
        COOKBOOK, "chat", {"messages": COOKBOOK_MESSAGES}, ("gpt-4-0613",), 129, True
    ),
    "cookbook messages gpt-4o": Figure(COOKBOOK, "chat", {"messages": COOKBOOK_MESSAGES}, ("gpt-4o",), 124, True),
    "cookbook messages gpt-4o-mini": Figure(
        COOKBOOK, "chat", {"messages": COOKBOOK_MESSAGES}, ("gpt-4o-mini",), 124, True
    ),
    "cookbook tools gpt-3.5-turbo": Figure(
        COOKBOOK,
        "chat",
        {"messages": WEATHER_MESSAGES, "tools": [{"type": "function", "function": WEATHER}]},
        ("gpt-3.5-turbo",),
        105,
        True,
    ),
    "cookbook tools gpt-4": Figure(
        COOKBOOK,
        "chat",
        {"messages": WEATHER_MESSAGES, "tools": [{"type": "function", "function": WEATHER}]},
        ("gpt-4",),
        105,
        True,
    ),
    "cookbook tools gpt-4o": Figure(
        COOKBOOK,
        "chat",
        {"messages": WEATHER_MESSAGES, "tools": [{"type": "function", "function": WEATHER}]},
        ("gpt-4o",),
        101,
        True,
    ),
    "cookbook tools gpt-4o-mini": Figure(
        COOKBOOK,
        "chat",
        {"messages": WEATHER_MESSAGES, "tools": [{"type": "function", "function": WEATHER}]},
        ("gpt-4o-mini",),
        101,
        True,
    ),
    # -- API reference, POST /chat/completions ------------------------------------------
    # "Default": the response now names gpt-5.4, a name the example's figure
    # predates; 19 is the cookbook framing on either encoding, with a developer
    # message.  Exact on a verified family, a bound on gpt-5.
    "reference chat Default": Figure(
        API_REFERENCE,
        "chat",
        {
            "messages": [
                {"role": "developer", "content": "You are a helpful assistant."},
                {"role": "user", "content": "Hello!"},
            ]
        },
        ("gpt-4o-mini", "gpt-4o"),
        19,
        True,
    ),
    "reference chat Default on gpt-5": Figure(
        API_REFERENCE,
        "chat",
        {
            "messages": [
                {"role": "developer", "content": "You are a helpful assistant."},
                {"role": "user", "content": "Hello!"},
            ]
        },
        ("gpt-5",),
        19,
        False,
    ),
    # "Image input": 1117.  No image size makes it the tile rule plus the chat
    # framing (1117 - 13 = 1104 is not 85 + 170 * tiles), so a message with an
    # image is a bound; the URL's size is unknown here: the worst case.
    "reference chat Image input": Figure(
        API_REFERENCE,
        "chat",
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "What is in this image?"},
                        {"type": "image_url", "image_url": {"url": BOARDWALK}},
                    ],
                }
            ],
            "max_tokens": 300,
        },
        ("gpt-4o", "gpt-5"),
        1117,
        False,
    ),
    # "Functions": 82 on gpt-4o-mini (no system message, tool_choice "auto").
    "reference chat Functions": Figure(
        API_REFERENCE,
        "chat",
        {
            "messages": [{"role": "user", "content": "What is the weather like in Boston today?"}],
            "tools": [{"type": "function", "function": REFERENCE_WEATHER}],
            "tool_choice": "auto",
        },
        ("gpt-4o-mini",),
        82,
        True,
    ),
    "reference chat Logprobs": Figure(
        API_REFERENCE,
        "chat",
        {"messages": [{"role": "user", "content": "Hello!"}], "logprobs": True, "top_logprobs": 2},
        ("gpt-4o-mini",),
        9,
        True,
    ),
    # -- API reference, POST /completions and POST /embeddings --------------------------
    "reference completions No streaming": Figure(
        API_REFERENCE,
        "completion",
        {"prompt": "Say this is a test", "max_tokens": 7, "temperature": 0},
        ("gpt-3.5-turbo-instruct",),
        5,
        True,
    ),
    "reference embeddings": Figure(
        API_REFERENCE,
        "embedding",
        {"input": "The food was delicious and the waiter...", "encoding_format": "float"},
        ("text-embedding-ada-002",),
        8,
        True,
    ),
    # -- API reference, POST /responses: bounds on every family ---------------------------
    "reference responses Text input": Figure(
        API_REFERENCE,
        "responses",
        {"input": "Tell me a three sentence bedtime story about a unicorn."},
        RESPONSES_MODELS,
        36,
        False,
    ),
    "reference responses Image input": Figure(
        API_REFERENCE,
        "responses",
        {
            "input": [
                {
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": "what is in this image?"},
                        {"type": "input_image", "image_url": BOARDWALK},
                    ],
                }
            ]
        },
        RESPONSES_MODELS[:3],
        328,
        False,
    ),
    "reference responses Streaming": Figure(
        API_REFERENCE,
        "responses",
        {"instructions": "You are a helpful assistant.", "input": "Hello!", "stream": True},
        RESPONSES_MODELS,
        37,
        False,
    ),
    "reference responses Functions": Figure(
        API_REFERENCE,
        "responses",
        {
            "input": "What is the weather like in Boston today?",
            "tools": [
                {
                    "type": "function",
                    **REFERENCE_WEATHER,
                    "parameters": {**REFERENCE_WEATHER["parameters"], "required": ["location", "unit"]},
                }
            ],
            "tool_choice": "auto",
        },
        RESPONSES_MODELS,
        291,
        False,
    ),
    # "Reasoning": the request names o3-mini, the response o1-2024-12-17.
    "reference responses Reasoning": Figure(
        API_REFERENCE,
        "responses",
        {"input": "How much wood would a woodchuck chuck?", "reasoning": {"effort": "high"}},
        ("o3-mini", "o1", "gpt-5"),
        81,
        False,
    ),
    # POST /responses/input_tokens counts a Responses request without running it.
    "reference responses input_tokens": Figure(
        API_REFERENCE, "responses", {"input": "Tell me a joke."}, ("gpt-5",), 11, False
    ),
}


@pytest.mark.parametrize("name", list(FIGURES))
def test_published_figure(name: str) -> None:
    check(FIGURES[name])


@pytest.mark.parametrize(
    ("example", "body", "published"),
    [
        (
            "Web search",
            {"tools": [{"type": "web_search_preview"}], "input": "What was a positive news story from today?"},
            328,
        ),
        (
            "File search",
            {
                "tools": [{"type": "file_search", "vector_store_ids": ["vs_1234567890"], "max_num_results": 20}],
                "input": "What are the attributes of an ancient brown dragon?",
            },
            18307,
        ),
        (
            "File input",
            {
                "input": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "input_text", "text": "what is in this file?"},
                            {
                                "type": "input_file",
                                "file_url": "https://www.berkshirehathaway.com/letters/2024ltr.pdf",
                                "detail": "auto",
                            },
                        ],
                    }
                ]
            },
            8438,
        ),
    ],
)
def test_published_requests_whose_input_the_request_does_not_show_are_refused(
    example: str, body: dict[str, Any], published: int
) -> None:
    """The API reference's Responses examples that bill input fetched by the
    provider (search results, a file): 328, 18307 and 8438 tokens from a few
    words of request.  No count of the body can bound them: refused."""
    with pytest.raises(InvalidRequest):
        shapes.parse("responses", {**body, "model": "gpt-4.1"})


def chat_framing(body: dict[str, Any], model: str = "gpt-4o") -> int:
    """The exact chat count of a Responses request's text, as if sent to chat."""
    messages = []
    if "instructions" in body:
        messages.append({"role": "developer", "content": body["instructions"]})
    messages.append({"role": "user", "content": body["input"]})
    chat: dict[str, Any] = {"messages": messages}
    if "tools" in body:
        chat["tools"] = [
            {"type": "function", "function": {k: v for k, v in tool.items() if k != "type"}} for tool in body["tools"]
        ]
        chat["tool_choice"] = body.get("tool_choice")
    result = count("chat", chat, model)
    assert result.exact
    return result.tokens


def test_the_hidden_input_allowances_are_twice_what_was_published() -> None:
    """The reasoning of shapes/preamble.py, recomputed from the figures: each
    allowance is at least twice the hidden input its published case shows."""
    base = max(
        FIGURES[name].published - chat_framing(FIGURES[name].body)
        for name in ("reference responses Text input", "reference responses Streaming")
    )
    assert base == 18
    assert preamble.HIDDEN_BASE >= 2 * base
    reasoning = FIGURES["reference responses Reasoning"]
    hidden_reasoning = reasoning.published - chat_framing(reasoning.body)
    assert hidden_reasoning == 64
    assert preamble.HIDDEN_REASONING >= 2 * hidden_reasoning
    functions = FIGURES["reference responses Functions"]
    hidden_tools = functions.published - chat_framing(functions.body) - base
    assert hidden_tools == 191
    assert preamble.HIDDEN_FUNCTION_TOOLS >= 2 * hidden_tools


@pytest.mark.parametrize(
    ("size", "detail", "published"),
    [((1024, 1024), "high", 765), ((2048, 4096), "high", 1105), ((4096, 8192), "low", 85)],
)
def test_vision_guide_image_costs(size: tuple[int, int], detail: str, published: int) -> None:
    """The vision guide's worked examples for gpt-4o: 85 per low-detail image;
    high detail fits 2048 square, scales the short side to 768, 170 a 512 tile
    plus 85."""
    rule = TABLE.resolve("gpt-4o").vision
    assert tokens.image_tokens(rule, shapes.ImageRef(detail, *size)) == published


# hmarr's cases verbatim ({messages, functions?, function_call?}, prompt_tokens),
# checked against the API on gpt-3.5-turbo.  Exact but for anyOf schemas (written
# as JSON), nested descriptions (shown, though gpt-3.5-turbo drops them) and a
# first property without a description (exact here, one token over in
# openai-messages-token-helper's later counts: the larger is kept).
HMARR_CASES: list[tuple[dict[str, Any], int]] = [
    (
        {
            "messages": [
                {
                    "role": "system",
                    "content": COOKBOOK_MESSAGES[0]["content"],
                }
            ]
        },
        25,
    ),
    (
        {
            "messages": [
                {"role": "system", "name": "example_user", "content": "New synergies will help drive top-line growth."}
            ]
        },
        20,
    ),
    (
        {
            "messages": [
                {
                    "role": "system",
                    "name": "example_assistant",
                    "content": "Things working well together will increase revenue.",
                }
            ]
        },
        19,
    ),
    (
        {
            "messages": [
                {
                    "role": "system",
                    "name": "example_user",
                    "content": COOKBOOK_MESSAGES[3]["content"],
                }
            ]
        },
        28,
    ),
    (
        {
            "messages": [
                {
                    "role": "system",
                    "name": "example_assistant",
                    "content": "Let's talk later when we're less busy about how to do better.",
                }
            ]
        },
        26,
    ),
    (
        {
            "messages": [
                {
                    "role": "user",
                    "content": "This late pivot means we don't have time to boil the ocean for the client deliverable.",
                }
            ]
        },
        26,
    ),
    ({"messages": [{"role": "user", "content": "hello"}]}, 8),
    ({"messages": [{"role": "user", "content": "hello world"}]}, 9),
    ({"messages": [{"role": "system", "content": "hello"}]}, 8),
    ({"messages": [{"role": "system", "content": "hello:"}]}, 9),
    (
        {
            "messages": [
                {"role": "system", "content": "# Important: you're the best robot"},
                {"role": "user", "content": "hello robot"},
                {"role": "assistant", "content": "hello world"},
            ]
        },
        27,
    ),
    (
        {
            "messages": [{"role": "user", "content": "hello"}],
            "functions": [{"name": "foo", "parameters": {"type": "object", "properties": {}}}],
        },
        31,
    ),
    (
        {
            "messages": [{"role": "user", "content": "hello"}],
            "functions": [{"name": "foo", "parameters": {"type": "object", "properties": {}}}],
            "function_call": "none",
        },
        32,
    ),
    (
        {
            "messages": [{"role": "user", "content": "hello"}],
            "functions": [{"name": "foo", "parameters": {"type": "object", "properties": {}}}],
            "function_call": "auto",
        },
        31,
    ),
    (
        {
            "messages": [{"role": "user", "content": "hello"}],
            "functions": [{"name": "foo", "parameters": {"type": "object", "properties": {}}}],
            "function_call": {"name": "foo"},
        },
        36,
    ),
    (
        {
            "messages": [{"role": "user", "content": "hello"}],
            "functions": [
                {"name": "foo", "description": "Do a foo", "parameters": {"type": "object", "properties": {}}}
            ],
        },
        36,
    ),
    (
        {
            "messages": [{"role": "user", "content": "hello"}],
            "functions": [
                {
                    "name": "bing_bong",
                    "description": "Do a bing bong",
                    "parameters": {"type": "object", "properties": {"foo": {"type": "string"}}},
                }
            ],
        },
        49,
    ),
    (
        {
            "messages": [{"role": "user", "content": "hello"}],
            "functions": [
                {
                    "name": "bing_bong",
                    "description": "Do a bing bong",
                    "parameters": {
                        "type": "object",
                        "properties": {"foo": {"type": "string"}, "bar": {"type": "number", "description": "A number"}},
                    },
                }
            ],
        },
        57,
    ),
    (
        {
            "messages": [{"role": "user", "content": "hello"}],
            "functions": [
                {
                    "name": "bing_bong",
                    "description": "Do a bing bong",
                    "parameters": {
                        "type": "object",
                        "properties": {
                            "foo": {
                                "type": "object",
                                "properties": {
                                    "bar": {"type": "string", "enum": ["a", "b", "c"]},
                                    "baz": {"type": "boolean"},
                                },
                            }
                        },
                    },
                }
            ],
        },
        68,
    ),
    (
        {
            "messages": [
                {"role": "user", "content": "hello world"},
                {"role": "function", "name": "do_stuff", "content": "{}"},
            ]
        },
        15,
    ),
    (
        {
            "messages": [
                {"role": "user", "content": "hello world"},
                {"role": "function", "name": "do_stuff", "content": '{"foo": "bar", "baz": 1.5}'},
            ]
        },
        28,
    ),
    ({"messages": [{"role": "function", "name": "dance_the_tango", "content": '{"a": { "b" : { "c": false}}}'}]}, 24),
    (
        {
            "messages": [
                {
                    "role": "assistant",
                    "content": "",
                    "function_call": {"name": "do_stuff", "arguments": '{"foo": "bar", "baz": 1.5}'},
                }
            ]
        },
        26,
    ),
    (
        {
            "messages": [
                {
                    "role": "assistant",
                    "content": "",
                    "function_call": {"name": "do_stuff", "arguments": '{"foo":"bar", "baz":\n\n 1.5}'},
                }
            ]
        },
        25,
    ),
    (
        {
            "messages": [
                {"role": "system", "content": "You are an AI assistant trained to foo or bar"},
                {"role": "user", "content": "My name is suzie"},
                {"role": "function", "name": "foo", "content": '{"res":{"kind":"user","name":"suzie"}}'},
                {"role": "user", "content": 'I want to post a message with the text "hello world"'},
                {"role": "function", "name": "foo", "content": '{"res":{"kind":"post","text":"hello world"}}'},
            ],
            "functions": [
                {
                    "name": "foo",
                    "description": "Return the foo or the bar",
                    "parameters": {
                        "type": "object",
                        "properties": {
                            "res": {
                                "anyOf": [
                                    {
                                        "type": "object",
                                        "properties": {
                                            "kind": {"type": "string", "const": "post"},
                                            "text": {"type": "string"},
                                        },
                                        "required": ["kind", "text"],
                                        "additionalProperties": False,
                                    },
                                    {
                                        "type": "object",
                                        "properties": {
                                            "kind": {"type": "string", "const": "user"},
                                            "name": {"type": "string", "enum": ["jane", "suzie", "adam"]},
                                        },
                                        "required": ["kind", "name"],
                                        "additionalProperties": False,
                                    },
                                ],
                                "description": "The foo or the bar",
                            }
                        },
                        "required": ["res"],
                        "additionalProperties": False,
                    },
                }
            ],
            "function_call": {"name": "foo"},
        },
        158,
    ),
    (
        {
            "messages": [{"role": "system", "content": "Hello"}, {"role": "user", "content": "Hi there"}],
            "functions": [
                {
                    "name": "do_stuff",
                    "parameters": {
                        "type": "object",
                        "properties": {
                            "foo": {
                                "anyOf": [
                                    {
                                        "type": "object",
                                        "properties": {
                                            "kind": {"type": "string", "const": "a"},
                                            "baz": {"type": "boolean"},
                                        },
                                    }
                                ]
                            }
                        },
                    },
                }
            ],
        },
        52,
    ),
    (
        {
            "messages": [{"role": "system", "content": "Hello"}, {"role": "user", "content": "Hi there"}],
            "functions": [
                {
                    "name": "do_stuff",
                    "parameters": {
                        "type": "object",
                        "properties": {
                            "foo": {
                                "anyOf": [
                                    {
                                        "type": "object",
                                        "properties": {
                                            "kind": {"type": "string", "const": "a"},
                                            "baz": {"type": "boolean"},
                                        },
                                    },
                                    {
                                        "type": "object",
                                        "properties": {
                                            "kind": {"type": "string", "const": "b"},
                                            "qux": {"type": "number"},
                                        },
                                    },
                                    {
                                        "type": "object",
                                        "properties": {
                                            "kind": {"type": "string", "const": "c"},
                                            "idk": {"type": "string"},
                                        },
                                    },
                                ]
                            }
                        },
                    },
                }
            ],
        },
        80,
    ),
    (
        {
            "messages": [{"role": "system", "content": "Hello"}, {"role": "user", "content": "Hi there"}],
            "functions": [
                {
                    "name": "do_stuff",
                    "parameters": {
                        "type": "object",
                        "properties": {"foo": {"anyOf": [{"type": "string", "const": "a"}, {"type": "number"}]}},
                    },
                }
            ],
        },
        44,
    ),
    (
        {
            "messages": [{"role": "system", "content": "Hello"}, {"role": "user", "content": "Hi there"}],
            "functions": [{"name": "do_stuff", "parameters": {"type": "object", "properties": {}}}],
        },
        35,
    ),
    (
        {
            "messages": [{"role": "system", "content": "Hello:"}, {"role": "user", "content": "Hi there"}],
            "functions": [{"name": "do_stuff", "parameters": {"type": "object", "properties": {}}}],
        },
        35,
    ),
    (
        {
            "messages": [
                {"role": "system", "content": "Hello:"},
                {"role": "system", "content": "Hello"},
                {"role": "user", "content": "Hi there"},
            ],
            "functions": [{"name": "do_stuff", "parameters": {"type": "object", "properties": {}}}],
        },
        40,
    ),
    (
        {
            "messages": [
                {"role": "system", "content": "Hello:"},
                {"role": "system", "content": "Hello"},
                {"role": "user", "content": "Hi there"},
            ],
            "functions": [
                {"name": "do_stuff", "parameters": {"type": "object", "properties": {}}},
                {"name": "do_other_stuff", "parameters": {"type": "object", "properties": {}}},
            ],
        },
        49,
    ),
    (
        {
            "messages": [
                {"role": "system", "content": "Hello:"},
                {"role": "system", "content": "Hello"},
                {"role": "user", "content": "Hi there"},
            ],
            "functions": [
                {"name": "do_stuff", "parameters": {"type": "object", "properties": {}}},
                {"name": "do_other_stuff", "parameters": {"type": "object", "properties": {}}},
            ],
            "function_call": {"name": "do_stuff"},
        },
        55,
    ),
    (
        {
            "messages": [{"role": "user", "content": "hello"}],
            "functions": [
                {
                    "name": "get_recipe",
                    "parameters": {
                        "type": "object",
                        "required": ["ingredients", "instructions", "time_to_cook"],
                        "properties": {
                            "ingredients": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "required": ["name", "unit", "amount"],
                                    "properties": {
                                        "name": {"type": "string"},
                                        "unit": {
                                            "enum": ["grams", "ml", "cups", "pieces", "teaspoons"],
                                            "type": "string",
                                        },
                                        "amount": {"type": "number"},
                                    },
                                },
                            },
                            "instructions": {
                                "type": "array",
                                "items": {"type": "string"},
                                "description": "Steps to prepare the recipe (no numbering)",
                            },
                            "time_to_cook": {
                                "type": "number",
                                "description": "Total time to prepare the recipe in minutes",
                            },
                        },
                    },
                }
            ],
        },
        106,
    ),
    (
        {
            "messages": [{"role": "user", "content": "hello"}],
            "functions": [
                {
                    "name": "function",
                    "description": "description",
                    "parameters": {
                        "type": "object",
                        "properties": {
                            "quality": {
                                "type": "object",
                                "properties": {
                                    "pros": {
                                        "type": "array",
                                        "items": {"type": "string"},
                                        "description": "Write 3 points why this text is well written",
                                    }
                                },
                            }
                        },
                    },
                }
            ],
        },
        46,
    ),
    (
        {
            "messages": [{"role": "user", "content": "hello"}],
            "functions": [
                {
                    "name": "function",
                    "description": "desctiption1",
                    "parameters": {
                        "type": "object",
                        "description": "desctiption2",
                        "properties": {
                            "mainField": {"type": "string", "description": "description3"},
                            "field number one": {
                                "type": "object",
                                "description": "description4",
                                "properties": {
                                    "yesNoField": {
                                        "type": "string",
                                        "description": "description5",
                                        "enum": ["Yes", "No"],
                                    },
                                    "howIsInteresting": {"type": "string", "description": "description6"},
                                    "scoreInteresting": {"type": "number", "description": "description7"},
                                    "isInteresting": {
                                        "type": "string",
                                        "description": "description8",
                                        "enum": ["Yes", "No"],
                                    },
                                },
                            },
                        },
                    },
                }
            ],
        },
        96,
    ),
]
HMARR_BOUNDS = {16, 17, 18, 24, 25, 26, 27, 33, 34, 35}


@pytest.mark.parametrize("index", range(len(HMARR_CASES)))
def test_hmarr_api_count(index: int) -> None:
    request, published = HMARR_CASES[index]
    check(Figure(HMARR, "chat", request, ("gpt-3.5-turbo",), published, index not in HMARR_BOUNDS))


# gpt-tokenizer's cases for gpt-4o: its own renderer's counts (hmarr's rules on
# o200k_base), not stated to be API counts: the guard's count is at or above
# each, and equal where both are exact by the same published evidence.
GPT_TOKENIZER_CASES: list[tuple[dict[str, Any], int]] = [
    (
        {
            "messages": [
                {
                    "role": "system",
                    "content": COOKBOOK_MESSAGES[0]["content"],
                }
            ]
        },
        24,
    ),
    (
        {
            "messages": [
                {"role": "system", "name": "example_user", "content": "New synergies will help drive top-line growth."}
            ]
        },
        20,
    ),
    (
        {
            "messages": [
                {
                    "role": "system",
                    "name": "example_assistant",
                    "content": "Things working well together will increase revenue.",
                }
            ]
        },
        19,
    ),
    (
        {
            "messages": [
                {
                    "role": "system",
                    "name": "example_user",
                    "content": COOKBOOK_MESSAGES[3]["content"],
                }
            ]
        },
        27,
    ),
    (
        {
            "messages": [
                {
                    "role": "system",
                    "name": "example_assistant",
                    "content": "Let's talk later when we're less busy about how to do better.",
                }
            ]
        },
        24,
    ),
    (
        {
            "messages": [
                {
                    "role": "user",
                    "content": "This late pivot means we don't have time to boil the ocean for the client deliverable.",
                }
            ]
        },
        25,
    ),
    ({"messages": [{"role": "user", "content": "hello"}]}, 8),
    ({"messages": [{"role": "user", "content": "hello world"}]}, 9),
    ({"messages": [{"role": "system", "content": "hello"}]}, 8),
    ({"messages": [{"role": "system", "content": "hello:"}]}, 9),
    (
        {
            "messages": [
                {"role": "system", "content": "# Important: you're the best robot"},
                {"role": "user", "content": "hello robot"},
                {"role": "assistant", "content": "hello world"},
            ]
        },
        26,
    ),
    (
        {
            "messages": [{"role": "user", "content": "hello"}],
            "functions": [{"name": "foo", "parameters": {"type": "object", "properties": {}}}],
        },
        31,
    ),
    (
        {
            "messages": [{"role": "user", "content": "hello"}],
            "functions": [{"name": "foo", "parameters": {"type": "object", "properties": {}}}],
            "function_call": "none",
        },
        32,
    ),
    (
        {
            "messages": [{"role": "user", "content": "hello"}],
            "functions": [{"name": "foo", "parameters": {"type": "object", "properties": {}}}],
            "function_call": "auto",
        },
        31,
    ),
    (
        {
            "messages": [{"role": "user", "content": "hello"}],
            "functions": [{"name": "foo", "parameters": {"type": "object", "properties": {}}}],
            "function_call": {"name": "foo"},
        },
        36,
    ),
    (
        {
            "messages": [{"role": "user", "content": "hello"}],
            "functions": [
                {"name": "foo", "description": "Do a foo", "parameters": {"type": "object", "properties": {}}}
            ],
        },
        35,
    ),
    (
        {
            "messages": [{"role": "user", "content": "hello"}],
            "functions": [
                {
                    "name": "bing_bong",
                    "description": "Do a bing bong",
                    "parameters": {"type": "object", "properties": {"foo": {"type": "string"}}},
                }
            ],
        },
        45,
    ),
    (
        {
            "messages": [{"role": "user", "content": "hello"}],
            "functions": [
                {
                    "name": "bing_bong",
                    "description": "Do a bing bong",
                    "parameters": {
                        "type": "object",
                        "properties": {"foo": {"type": "string"}, "bar": {"type": "number", "description": "A number"}},
                    },
                }
            ],
        },
        52,
    ),
    (
        {
            "messages": [{"role": "user", "content": "hello"}],
            "functions": [
                {
                    "name": "bing_bong",
                    "description": "Do a bing bong",
                    "parameters": {
                        "type": "object",
                        "properties": {
                            "foo": {
                                "type": "object",
                                "properties": {
                                    "bar": {"type": "string", "enum": ["a", "b", "c"]},
                                    "baz": {"type": "boolean"},
                                },
                            }
                        },
                    },
                }
            ],
        },
        64,
    ),
    (
        {
            "messages": [
                {"role": "user", "content": "hello world"},
                {"role": "function", "name": "do_stuff", "content": "{}"},
            ]
        },
        16,
    ),
    (
        {
            "messages": [
                {"role": "user", "content": "hello world"},
                {"role": "function", "name": "do_stuff", "content": '{"foo": "bar", "baz": 1.5}'},
            ]
        },
        29,
    ),
    ({"messages": [{"role": "function", "name": "dance_the_tango", "content": '{"a": { "b" : { "c": false}}}'}]}, 25),
    (
        {
            "messages": [
                {
                    "role": "assistant",
                    "content": "",
                    "function_call": {"name": "do_stuff", "arguments": '{"foo": "bar", "baz": 1.5}'},
                }
            ]
        },
        27,
    ),
    (
        {
            "messages": [
                {
                    "role": "assistant",
                    "content": "",
                    "function_call": {"name": "do_stuff", "arguments": '{"foo":"bar", "baz":\n\n 1.5}'},
                }
            ]
        },
        26,
    ),
    (
        {
            "messages": [{"role": "system", "content": "Hello"}, {"role": "user", "content": "Hi there"}],
            "functions": [{"name": "do_stuff", "parameters": {"type": "object", "properties": {}}}],
        },
        36,
    ),
    (
        {
            "messages": [{"role": "system", "content": "Hello:"}, {"role": "user", "content": "Hi there"}],
            "functions": [{"name": "do_stuff", "parameters": {"type": "object", "properties": {}}}],
        },
        36,
    ),
    (
        {
            "messages": [
                {"role": "system", "content": "Hello:"},
                {"role": "system", "content": "Hello"},
                {"role": "user", "content": "Hi there"},
            ],
            "functions": [{"name": "do_stuff", "parameters": {"type": "object", "properties": {}}}],
        },
        41,
    ),
    (
        {
            "messages": [
                {"role": "system", "content": "Hello:"},
                {"role": "system", "content": "Hello"},
                {"role": "user", "content": "Hi there"},
            ],
            "functions": [
                {"name": "do_stuff", "parameters": {"type": "object", "properties": {}}},
                {"name": "do_other_stuff", "parameters": {"type": "object", "properties": {}}},
            ],
        },
        51,
    ),
    (
        {
            "messages": [
                {"role": "system", "content": "Hello:"},
                {"role": "system", "content": "Hello"},
                {"role": "user", "content": "Hi there"},
            ],
            "functions": [
                {"name": "do_stuff", "parameters": {"type": "object", "properties": {}}},
                {"name": "do_other_stuff", "parameters": {"type": "object", "properties": {}}},
            ],
            "function_call": {"name": "do_stuff"},
        },
        58,
    ),
    (
        {
            "messages": [{"role": "user", "content": "hello"}],
            "functions": [
                {
                    "name": "get_recipe",
                    "parameters": {
                        "type": "object",
                        "required": ["ingredients", "instructions", "time_to_cook"],
                        "properties": {
                            "ingredients": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "required": ["name", "unit", "amount"],
                                    "properties": {
                                        "name": {"type": "string"},
                                        "unit": {
                                            "enum": ["grams", "ml", "cups", "pieces", "teaspoons"],
                                            "type": "string",
                                        },
                                        "amount": {"type": "number"},
                                    },
                                },
                            },
                            "instructions": {
                                "type": "array",
                                "items": {"type": "string"},
                                "description": "Steps to prepare the recipe (no numbering)",
                            },
                            "time_to_cook": {
                                "type": "number",
                                "description": "Total time to prepare the recipe in minutes",
                            },
                        },
                    },
                }
            ],
        },
        105,
    ),
    (
        {
            "messages": [{"role": "user", "content": "hello"}],
            "functions": [
                {
                    "name": "function",
                    "description": "description",
                    "parameters": {
                        "type": "object",
                        "properties": {
                            "quality": {
                                "type": "object",
                                "properties": {
                                    "pros": {
                                        "type": "array",
                                        "items": {"type": "string"},
                                        "description": "Write 3 points why this text is well written",
                                    }
                                },
                            }
                        },
                    },
                }
            ],
        },
        45,
    ),
    (
        {
            "messages": [{"role": "user", "content": "hello"}],
            "functions": [
                {
                    "name": "function",
                    "description": "desctiption1",
                    "parameters": {
                        "type": "object",
                        "description": "desctiption2",
                        "properties": {
                            "mainField": {"type": "string", "description": "description3"},
                            "field number one": {
                                "type": "object",
                                "description": "description4",
                                "properties": {
                                    "yesNoField": {
                                        "type": "string",
                                        "description": "description5",
                                        "enum": ["Yes", "No"],
                                    },
                                    "howIsInteresting": {"type": "string", "description": "description6"},
                                    "scoreInteresting": {"type": "number", "description": "description7"},
                                    "isInteresting": {
                                        "type": "string",
                                        "description": "description8",
                                        "enum": ["Yes", "No"],
                                    },
                                },
                            },
                        },
                    },
                }
            ],
        },
        93,
    ),
]


@pytest.mark.parametrize("index", range(len(GPT_TOKENIZER_CASES)))
def test_gpt_tokenizer_count(index: int) -> None:
    request, published = GPT_TOKENIZER_CASES[index]
    result = count("chat", request, "gpt-4o")
    assert result.tokens >= published
    if "functions" not in request and not any(
        m["role"] == "function" or "function_call" in m for m in request["messages"]
    ):
        # Plain messages: the cookbook's framing, exact on both sides.
        assert result == (published, True)


def test_docs_accuracy_names_every_figure() -> None:
    """docs/accuracy.md cites each figure here and the test that reproduces it."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "accuracy.md").read_text()
    cited = re.findall(r"`figure\[([^\]]+)\]`", text)
    for name, figure in FIGURES.items():
        assert any(fnmatch.fnmatchcase(name, pattern) for pattern in cited), name
        assert str(figure.published) in text, name
    for _, published in HMARR_CASES:
        assert str(published) in text


# openai-messages-token-helper's message counts: (message, cl100k_base count,
# gpt-4o count).
OMTH_MESSAGES: list[tuple[dict[str, Any], int, int]] = [
    (
        {
            "role": "system",
            "content": "You are a helpful, pattern-following assistant that translates corporate jargon into plain English.",  # noqa: E501 (published text, verbatim)
        },
        25,
        24,
    ),
    ({"role": "system", "content": "You are a bot."}, 12, 12),
    (
        {
            "role": "system",
            "content": "Assistant helps the company employees with their healthcare plan questions, and questions about the employee handbook. Be brief in your answers.",  # noqa: E501 (published text, verbatim)
        },
        31,
        31,
    ),
    ({"role": "system", "content": "á"}, 8, 8),
    ({"role": "system", "name": "example_user", "content": "New synergies will help drive top-line growth."}, 20, 20),
    ({"role": "user", "content": "Hello, how are you?"}, 13, 13),
    ({"role": "user", "content": "á"}, 8, 8),
    ({"role": "user", "content": "What happens in a performance review?"}, 14, 14),
    ({"role": "user", "content": "Is there a dress code?"}, 13, 13),
    ({"role": "user", "content": "What does a Product Manager do?"}, 14, 14),
    (
        {
            "role": "assistant",
            "content": "During the performance review at Contoso Electronics, the supervisor will discuss the employee's performance over the past year and provide feedback on areas for improvement. They will also provide an opportunity for the employee to discuss their goals and objectives for the upcoming year. The review is a two-way dialogue between managers and employees, and employees will receive a written summary of their performance review which will include a rating of their performance, feedback, and goals and objectives for the upcoming year [employee_handbook-3.pdf].",  # noqa: E501 (published text, verbatim)
        },
        106,
        106,
    ),
    (
        {
            "role": "assistant",
            "content": "The supervisor will discuss the employee's performance and provide feedback on areas for improvement. They will also provide an opportunity for the employee to discuss their goals and objectives for the upcoming year. The review is a two-way dialogue between managers and employees, and employees will receive a written summary of their performance review which will include a rating of their performance, feedback, and goals for the upcoming year [employee_handbook-3.pdf].",  # noqa: E501 (published text, verbatim)
        },
        91,
        91,
    ),
    (
        {
            "role": "assistant",
            "content": "Yes, there is a dress code at Contoso Electronics. Look sharp! [employee_handbook-1.pdf]",
        },
        30,
        30,
    ),
]
# Its function counts (cl100k_base): name, (system message, tools, tool_choice), count.
OMTH_FUNCTIONS: list[tuple[str, dict[str, Any], list[dict[str, Any]], object, int]] = [
    (
        "inner_object",
        {"role": "system", "content": "You are a bot."},
        [
            {
                "type": "function",
                "function": {
                    "name": "data_demonstration",
                    "description": "This is the main function description",
                    "parameters": {
                        "type": "object",
                        "properties": {
                            "object_1": {
                                "type": "object",
                                "description": "The object data type as a property",
                                "properties": {"string1": {"type": "string"}},
                            }
                        },
                        "required": ["object_1"],
                    },
                },
            }
        ],
        "none",
        65,
    ),
    (
        "inner_object_and_string",
        {"role": "system", "content": "You are a bot."},
        [
            {
                "type": "function",
                "function": {
                    "name": "data_demonstration",
                    "description": "This is the main function description",
                    "parameters": {
                        "type": "object",
                        "properties": {
                            "object_1": {
                                "type": "object",
                                "description": "The object data type as a property",
                                "properties": {
                                    "string_2a": {"type": "string", "enum": ["Happy", "Sad"]},
                                    "string_2b": {
                                        "type": "string",
                                        "description": "Description in a second object is lost",
                                    },
                                },
                            },
                            "string_1": {"type": "string", "description": "Not required gets a question mark"},
                        },
                        "required": ["object_1"],
                    },
                },
            }
        ],
        "none",
        103,
    ),
    (
        "inner_object_with_enum_only",
        {"role": "system", "content": "You are a bot."},
        [
            {
                "type": "function",
                "function": {
                    "name": "data_demonstration",
                    "description": "This is the main function description",
                    "parameters": {
                        "type": "object",
                        "properties": {
                            "object_1": {
                                "type": "object",
                                "description": "The object data type as a property",
                                "properties": {"string_2a": {"type": "string", "enum": ["Happy", "Sad"]}},
                            }
                        },
                        "required": ["object_1"],
                    },
                },
            }
        ],
        "none",
        73,
    ),
    (
        "inner_object_with_enum",
        {"role": "system", "content": "You are a bot."},
        [
            {
                "type": "function",
                "function": {
                    "name": "data_demonstration",
                    "description": "This is the main function description",
                    "parameters": {
                        "type": "object",
                        "properties": {
                            "object_1": {
                                "type": "object",
                                "description": "The object data type as a property",
                                "properties": {
                                    "string_2a": {"type": "string", "enum": ["Happy", "Sad"]},
                                    "string_2b": {
                                        "type": "string",
                                        "description": "Description in a second object is lost",
                                    },
                                },
                            }
                        },
                        "required": ["object_1"],
                    },
                },
            }
        ],
        "none",
        89,
    ),
    (
        "search_sources_toolchoice_auto",
        {"role": "system", "content": "You are a bot."},
        [
            {
                "type": "function",
                "function": {
                    "name": "search_sources",
                    "description": "Retrieve sources from the Azure AI Search index",
                    "parameters": {
                        "type": "object",
                        "properties": {
                            "search_query": {
                                "type": "string",
                                "description": "Query string to retrieve documents from azure search eg: 'Health care plan'",  # noqa: E501 (published text, verbatim)
                            }
                        },
                        "required": ["search_query"],
                    },
                },
            }
        ],
        "auto",
        66,
    ),
    (
        "search_sources_toolchoice_none",
        {"role": "system", "content": "You are a bot."},
        [
            {
                "type": "function",
                "function": {
                    "name": "search_sources",
                    "description": "Retrieve sources from the Azure AI Search index",
                    "parameters": {
                        "type": "object",
                        "properties": {
                            "search_query": {
                                "type": "string",
                                "description": "Query string to retrieve documents from azure search eg: 'Health care plan'",  # noqa: E501 (published text, verbatim)
                            }
                        },
                        "required": ["search_query"],
                    },
                },
            }
        ],
        "none",
        67,
    ),
    (
        "search_sources_toolchoice_name",
        {"role": "system", "content": "You are a bot."},
        [
            {
                "type": "function",
                "function": {
                    "name": "search_sources",
                    "description": "Retrieve sources from the Azure AI Search index",
                    "parameters": {
                        "type": "object",
                        "properties": {
                            "search_query": {
                                "type": "string",
                                "description": "Query string to retrieve documents from azure search eg: 'Health care plan'",  # noqa: E501 (published text, verbatim)
                            }
                        },
                        "required": ["search_query"],
                    },
                },
            }
        ],
        {"type": "function", "function": {"name": "search_sources"}},
        75,
    ),
    (
        "integer_enum",
        {"role": "system", "content": "You are a bot."},
        [
            {
                "type": "function",
                "function": {
                    "name": "data_demonstration",
                    "description": "This is the main function description",
                    "parameters": {
                        "type": "object",
                        "properties": {"integer_enum": {"type": "integer", "enum": [-1, 1]}},
                    },
                },
            }
        ],
        "none",
        54,
    ),
    (
        "integer_enum_tool_choice_name",
        {"role": "system", "content": "You are a bot."},
        [
            {
                "type": "function",
                "function": {
                    "name": "data_demonstration",
                    "description": "This is the main function description",
                    "parameters": {
                        "type": "object",
                        "properties": {"integer_enum": {"type": "integer", "enum": [-1, 1]}},
                    },
                },
            }
        ],
        {"type": "function", "function": {"name": "data_demonstration"}},
        64,
    ),
    (
        "no_parameters",
        {"role": "system", "content": "You are a bot."},
        [
            {
                "type": "function",
                "function": {
                    "name": "search_sources",
                    "description": "Retrieve sources from the Azure AI Search index",
                },
            }
        ],
        "auto",
        42,
    ),
    (
        "no_parameters_tool_choice_name",
        {"role": "system", "content": "You are a bot."},
        [
            {
                "type": "function",
                "function": {
                    "name": "search_sources",
                    "description": "Retrieve sources from the Azure AI Search index",
                },
            }
        ],
        {"type": "function", "function": {"name": "search_sources"}},
        51,
    ),
    (
        "no_parameter_description_or_required",
        {"role": "system", "content": "You are a bot."},
        [
            {
                "type": "function",
                "function": {
                    "name": "search_sources",
                    "description": "Retrieve sources from the Azure AI Search index",
                    "parameters": {"type": "object", "properties": {"search_query": {"type": "string"}}},
                },
            }
        ],
        "auto",
        49,
    ),
    (
        "no_parameter_description",
        {"role": "system", "content": "You are a bot."},
        [
            {
                "type": "function",
                "function": {
                    "name": "search_sources",
                    "description": "Retrieve sources from the Azure AI Search index",
                    "parameters": {
                        "type": "object",
                        "properties": {"search_query": {"type": "string"}},
                        "required": ["search_query"],
                    },
                },
            }
        ],
        "auto",
        49,
    ),
    (
        "string_enum",
        {"role": "system", "content": "You are a bot."},
        [
            {
                "type": "function",
                "function": {
                    "name": "summarize_order",
                    "description": "Summarize the customer order request",
                    "parameters": {
                        "type": "object",
                        "properties": {
                            "product_name": {"type": "string", "description": "Product name ordered by customer"},
                            "quantity": {"type": "integer", "description": "Quantity ordered by customer"},
                            "unit": {
                                "type": "string",
                                "enum": ["meals", "days"],
                                "description": "unit of measurement of the customer order",
                            },
                        },
                        "required": ["product_name", "quantity", "unit"],
                    },
                },
            }
        ],
        "none",
        86,
    ),
    (
        "boolean",
        {"role": "system", "content": "You are a bot."},
        [
            {
                "type": "function",
                "function": {
                    "name": "human_escalation",
                    "description": "Check if user wants to escalate to a human",
                    "parameters": {
                        "type": "object",
                        "properties": {
                            "requires_escalation": {
                                "type": "boolean",
                                "description": "If user is showing signs of frustration or anger in the query. Also if the user says they want to talk to a real person and not a chat bot.",  # noqa: E501 (published text, verbatim)
                            }
                        },
                        "required": ["requires_escalation"],
                    },
                },
            }
        ],
        "none",
        89,
    ),
    (
        "array",
        {"role": "system", "content": "You are a bot."},
        [
            {
                "type": "function",
                "function": {
                    "name": "get_coordinates",
                    "description": "Get the latitude and longitude of multiple mailing addresses",
                    "parameters": {
                        "type": "object",
                        "properties": {
                            "addresses": {
                                "type": "array",
                                "description": "The mailing addresses to be located",
                                "items": {"type": "string"},
                            }
                        },
                        "required": ["addresses"],
                    },
                },
            }
        ],
        "none",
        59,
    ),
    (
        "no_type",
        {"role": "system", "content": "You are a bot."},
        [
            {
                "type": "function",
                "function": {
                    "name": "get_no_type",
                    "description": "Get the no type value",
                    "parameters": {
                        "type": "object",
                        "properties": {"no_type_value": {"description": "The no type value to be returned"}},
                        "required": ["no_type_value"],
                    },
                },
            }
        ],
        "none",
        59,
    ),
    (
        "null",
        {"role": "system", "content": "You are a bot."},
        [
            {
                "type": "function",
                "function": {
                    "name": "get_null",
                    "description": "Get the null value",
                    "parameters": {
                        "type": "object",
                        "properties": {"null_value": {"type": "null", "description": "The null value to be returned"}},
                        "required": ["null_value"],
                    },
                },
            }
        ],
        "none",
        55,
    ),
]


@pytest.mark.parametrize("index", range(len(OMTH_MESSAGES)))
def test_openai_messages_token_helper_message_count(index: int) -> None:
    message, cl100k, o200k = OMTH_MESSAGES[index]
    check(Figure(OMTH, "chat", {"messages": [message]}, ("gpt-3.5-turbo", "gpt-4"), cl100k, True))
    check(Figure(OMTH, "chat", {"messages": [message]}, ("gpt-4o",), o200k, True))


# The figures fit cl100k_base (gpt-35-turbo): 9 of them exactly; the rest are
# at most 12 below the count (nested descriptions shown, number enums and a
# description-less first property one over).
OMTH_FUNCTION_BOUNDS = {
    "inner_object",
    "inner_object_and_string",
    "inner_object_with_enum_only",
    "inner_object_with_enum",
    "integer_enum",
    "integer_enum_tool_choice_name",
    "no_parameter_description_or_required",
    "no_parameter_description",
    "no_type",
}


@pytest.mark.parametrize("index", range(len(OMTH_FUNCTIONS)), ids=[case[0] for case in OMTH_FUNCTIONS])
def test_openai_messages_token_helper_function_count(index: int) -> None:
    name, system, tools, tool_choice, published = OMTH_FUNCTIONS[index]
    body = {"messages": [system], "tools": tools, "tool_choice": tool_choice}
    check(Figure(OMTH, "chat", body, ("gpt-3.5-turbo",), published, name not in OMTH_FUNCTION_BOUNDS))


TINY_PNG = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z/C/HgAGgwJ/"
    "lK3Q6wAAAABJRU5ErkJggg=="
)


@pytest.mark.parametrize(
    ("text", "url", "detail", "gpt_4o", "gpt_4o_mini"),
    [
        ("Describe this picture:", TINY_PNG, "auto", 266, 8511),
        ("Describe this picture:", TINY_PNG, None, 266, 8511),
        ("Describe this picture:", TINY_PNG, "low", 96, 2844),
        # Its image_large.png is 1126 x 488 (its PNG header); the guard reads
        # only the header, so a header of that size stands for it.
        ("hi", png(1126, 488), "auto", 603, 19842),
    ],
)
def test_openai_messages_token_helper_image_count(
    text: str, url: str, detail: str | None, gpt_4o: int, gpt_4o_mini: int
) -> None:
    """API counts on gpt-4o and gpt-4o-mini (verify_openai.py names both).
    The guard's count equals each; it stays a bound because the API
    reference's "Image input" example is one token below the same rule."""
    image: dict[str, Any] = {"url": url} if detail is None else {"url": url, "detail": detail}
    body = {
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": text}, {"type": "image_url", "image_url": image}]}
        ]
    }
    for model, published in (("gpt-4o", gpt_4o), ("gpt-4o-mini", gpt_4o_mini)):
        assert count("chat", body, model) == (published, False)


texts = st.text(max_size=60)
chat_messages = st.lists(
    st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant"]), "content": texts}), min_size=1, max_size=4
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(system=st.none() | texts, messages=chat_messages, functions=functions_strategy, use_tools=st.booleans())
def test_bounds_are_never_below_the_exact_count(
    system: str | None, messages: list[dict[str, str]], functions: list[dict[str, Any]], use_tools: bool
) -> None:
    """Where a rendering is known, every bound of the same request is at or
    above it: an unverified family's chat count, a model without a tokenizer,
    and the Responses count of the same messages and tools."""
    prompt = ([{"role": "system", "content": system}] if system is not None else []) + messages
    body: dict[str, Any] = {"messages": prompt}
    if use_tools:
        body["tools"] = [{"type": "function", "function": function} for function in functions]
    exact = count("chat", body, "gpt-4o")
    for model in ("gpt-4.1", "o3-mini", "gpt-5"):
        bound = count("chat", body, model)
        assert bound.exact is False
        assert bound.tokens >= exact.tokens
    ask = shapes.parse("chat", {**body, "model": "gpt-4o"})
    assert tokens.count_input(ask, BYTES_ONLY).tokens >= exact.tokens
    responses: dict[str, Any] = {"input": [{"role": m["role"], "content": m["content"]} for m in messages]}
    if system is not None:
        responses["instructions"] = system
    if use_tools:
        responses["tools"] = [{"type": "function", **function} for function in functions]
    assert count("responses", responses, "gpt-4o").tokens >= exact.tokens
    cl100k = count("chat", body, "gpt-4")
    assert tokens.count_input(ask, BYTES_ONLY).tokens >= cl100k.tokens
