"""Tool definitions: the namespace rendering, the framing fitted to OpenAI's
published counts, the JSON bound for unknown constructs and the byte bound."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from credit_guard import tokens
from credit_guard._tools import (
    bound_tokens,
    framing_tokens,
    function_definitions,
    render,
    tools_tokens,
)
from credit_guard.errors import InvalidRequest

ENCODINGS = ("cl100k_base", "o200k_base")


def encoding(name: str) -> Any:
    return tokens.get_encoding(name)


def plain_messages(enc: Any, messages: list[dict[str, str]]) -> int:
    """The cookbook's count: 3 per message, 1 per name, 3 for the reply priming."""
    total = 3
    for message in messages:
        total += 3 + sum(len(enc.encode_ordinary(value)) for value in message.values())
        total += 1 if "name" in message else 0
    return total


def prompt(enc: Any, messages: list[dict[str, str]], body: dict[str, Any]) -> tuple[int, bool]:
    """A whole chat prompt the way ``tokens``/``shapes`` will put it together."""
    systems = [m["content"] for m in messages if m["role"] in ("system", "developer")]
    extra, exact = tools_tokens(
        enc,
        function_definitions(body),
        has_system=bool(systems),
        tool_choice=body.get("tool_choice", body.get("function_call")),
        system_content=systems[0] if systems else None,
    )
    return plain_messages(enc, messages) + extra, exact


# The cookbook, How_to_count_tokens_with_tiktoken.ipynb, section 7, verbatim.
WEATHER_TOOLS: list[dict[str, Any]] = [
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
    {"role": "system", "content": "You are a helpful assistant that can answer to questions about the weather."},
    {"role": "user", "content": "What's the weather like in San Francisco?"},
]
MODELS = {"gpt-3.5-turbo": "cl100k_base", "gpt-4": "cl100k_base", "gpt-4o": "o200k_base", "gpt-4o-mini": "o200k_base"}


@pytest.mark.parametrize(
    ("model", "expected"), [("gpt-3.5-turbo", 105), ("gpt-4", 105), ("gpt-4o", 101), ("gpt-4o-mini", 101)]
)
def test_cookbook_weather_tool_counts_as_the_api_reported(model: str, expected: int) -> None:
    enc = encoding(MODELS[model])
    assert prompt(enc, WEATHER_MESSAGES, {"tools": WEATHER_TOOLS}) == (expected, True)
    legacy = {"functions": [WEATHER_TOOLS[0]["function"]]}
    assert prompt(enc, WEATHER_MESSAGES, legacy) == (expected, True)
    # Without the system message's text the newline is bounded, never under.
    bounded, exact = tools_tokens(enc, function_definitions({"tools": WEATHER_TOOLS}), has_system=True)
    assert exact is False
    assert plain_messages(enc, WEATHER_MESSAGES) + bounded >= expected


def test_cookbook_plain_messages_still_count_exactly() -> None:
    # The cookbook's figures for its example without tools: 129 on gpt-3.5-turbo
    # and gpt-4, 124 on gpt-4o and gpt-4o-mini.
    messages = [
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
    for name, expected in (("cl100k_base", 129), ("o200k_base", 124)):
        assert prompt(encoding(name), messages, {}) == (expected, True)


# hmarr/openai-chat-tokens' test cases (tests/token-counts.test.ts): prompt
# tokens of gpt-3.5-turbo (cl100k_base) as the API reported them.
NO_PROPS = {"type": "object", "properties": {}}
HELLO = [{"role": "user", "content": "hello"}]
HELLO_SYSTEM = [{"role": "system", "content": "Hello"}, {"role": "user", "content": "Hi there"}]
COLON_SYSTEM = [{"role": "system", "content": "Hello:"}, {"role": "user", "content": "Hi there"}]
TWO_SYSTEMS = [{"role": "system", "content": "Hello:"}, *HELLO_SYSTEM]
RECIPE = {
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
                        "unit": {"enum": ["grams", "ml", "cups", "pieces", "teaspoons"], "type": "string"},
                        "amount": {"type": "number"},
                    },
                },
            },
            "instructions": {
                "type": "array",
                "items": {"type": "string"},
                "description": "Steps to prepare the recipe (no numbering)",
            },
            "time_to_cook": {"type": "number", "description": "Total time to prepare the recipe in minutes"},
        },
    },
}
DEEP_DESCRIPTIONS = {
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
                    "yesNoField": {"type": "string", "description": "description5", "enum": ["Yes", "No"]},
                    "howIsInteresting": {"type": "string", "description": "description6"},
                    "scoreInteresting": {"type": "number", "description": "description7"},
                    "isInteresting": {"type": "string", "description": "description8", "enum": ["Yes", "No"]},
                },
            },
        },
    },
}
HMARR_CASES: list[tuple[list[dict[str, str]], dict[str, Any], int]] = [
    (HELLO, {"functions": [{"name": "foo", "parameters": NO_PROPS}]}, 31),
    (HELLO, {"functions": [{"name": "foo", "description": "Do a foo", "parameters": NO_PROPS}]}, 36),
    (
        HELLO,
        {
            "functions": [
                {
                    "name": "bing_bong",
                    "description": "Do a bing bong",
                    "parameters": {"type": "object", "properties": {"foo": {"type": "string"}}},
                }
            ]
        },
        49,
    ),
    (
        HELLO,
        {
            "functions": [
                {
                    "name": "bing_bong",
                    "description": "Do a bing bong",
                    "parameters": {
                        "type": "object",
                        "properties": {
                            "foo": {"type": "string"},
                            "bar": {"type": "number", "description": "A number"},
                        },
                    },
                }
            ]
        },
        57,
    ),
    (
        HELLO,
        {
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
            ]
        },
        68,
    ),
    (HELLO_SYSTEM, {"functions": [{"name": "do_stuff", "parameters": NO_PROPS}]}, 35),
    (COLON_SYSTEM, {"functions": [{"name": "do_stuff", "parameters": NO_PROPS}]}, 35),
    (TWO_SYSTEMS, {"functions": [{"name": "do_stuff", "parameters": NO_PROPS}]}, 40),
    (
        TWO_SYSTEMS,
        {
            "functions": [
                {"name": "do_stuff", "parameters": NO_PROPS},
                {"name": "do_other_stuff", "parameters": NO_PROPS},
            ]
        },
        49,
    ),
    (
        TWO_SYSTEMS,
        {
            "functions": [
                {"name": "do_stuff", "parameters": NO_PROPS},
                {"name": "do_other_stuff", "parameters": NO_PROPS},
            ],
            "function_call": {"name": "do_stuff"},
        },
        55,
    ),
    (HELLO, {"functions": [RECIPE]}, 106),
    (
        HELLO,
        {
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
            ]
        },
        46,
    ),
    (HELLO, {"functions": [DEEP_DESCRIPTIONS]}, 96),
]


@pytest.mark.parametrize(("messages", "body", "expected"), HMARR_CASES)
def test_api_counts_reverse_engineered_by_hmarr(
    messages: list[dict[str, str]], body: dict[str, Any], expected: int
) -> None:
    enc = encoding("cl100k_base")
    # Exact, or a bound where later published counts disagree (a first
    # property without a description) or the rendering is larger (nested
    # descriptions); tests/test_accuracy.py holds every case.
    count, exact = prompt(enc, messages, body)
    assert count == expected if exact else count >= expected
    tools: dict[str, Any] = {"tools": [{"type": "function", "function": f} for f in body["functions"]]}
    if "function_call" in body:
        # Named in the tools form: 3 more (openai-messages-token-helper's counts).
        tools["tool_choice"] = {"type": "function", "function": body["function_call"]}
        assert prompt(enc, messages, tools) == (count + 3, exact)
    else:
        assert prompt(enc, messages, tools) == (count, exact)


# hmarr's cases with anyOf (API counts on gpt-3.5-turbo): we bound them.
ANY_OF_CASES = [
    ({"foo": {"anyOf": [{"type": "object", "properties": {"kind": {"type": "string", "const": "a"}}}]}}, 52),
    ({"foo": {"anyOf": [{"type": "string", "const": "a"}, {"type": "number"}]}}, 44),
]


@pytest.mark.parametrize(("properties", "api"), ANY_OF_CASES)
def test_any_of_is_bounded_above_what_the_api_counted(properties: dict[str, Any], api: int) -> None:
    # The first case had "baz": {"type": "boolean"} next to kind; it only adds, so add it.
    properties = copy.deepcopy(properties)
    first = properties["foo"]["anyOf"][0]
    if first["type"] == "object":
        first["properties"]["baz"] = {"type": "boolean"}
    body = {"functions": [{"name": "do_stuff", "parameters": {"type": "object", "properties": properties}}]}
    count, exact = prompt(encoding("cl100k_base"), HELLO_SYSTEM, body)
    assert exact is False
    assert count >= api


def weather_function(**changes: Any) -> dict[str, Any]:
    function: dict[str, Any] = copy.deepcopy(WEATHER_TOOLS[0]["function"])
    function.update(changes)
    return function


RENDERINGS: list[tuple[str, list[dict[str, Any]], str]] = [
    (
        "weather",
        [weather_function()],
        "namespace functions {\n\n"
        "// Get the current weather in a given location\n"
        "type get_current_weather = (_: {\n"
        "// The city and state, e.g. San Francisco, CA\n"
        "location: string,\n"
        "// The unit of temperature to return\n"
        'unit?: "celsius" | "fahrenheit",\n'
        "}) => any;\n\n"
        "} // namespace functions",
    ),
    (
        "no parameters",
        [{"name": "ping"}, {"name": "pong", "description": "Reply", "parameters": NO_PROPS}],
        "namespace functions {\n\ntype ping = () => any;\n\n"
        "// Reply\ntype pong = () => any;\n\n} // namespace functions",
    ),
    (
        "required and optional, numbers, booleans, null",
        [
            {
                "name": "f",
                "parameters": {
                    "type": "object",
                    "properties": {
                        "a": {"type": "integer", "description": "A"},
                        "b": {"type": "number"},
                        "c": {"type": "boolean"},
                        "d": {"type": "null"},
                    },
                    "required": ["a", "c"],
                },
            }
        ],
        "namespace functions {\n\ntype f = (_: {\n// A\na: number,\nb?: number,\nc: boolean,\nd?: null,\n}) => any;"
        "\n\n} // namespace functions",
    ),
]


@pytest.mark.parametrize(("case", "functions", "expected"), RENDERINGS, ids=[case for case, _, _ in RENDERINGS])
def test_exact_renderings(case: str, functions: list[dict[str, Any]], expected: str) -> None:
    assert render(functions) == (expected, True)
    for name in ENCODINGS:
        enc = encoding(name)
        count, exact = tools_tokens(enc, functions, has_system=False)
        fixed, verified = framing_tokens(name, "absent", has_system=False)
        # Without a system message o200k_base's framing is not settled (10 or 9).
        assert (fixed, verified) == ((9, True) if name == "cl100k_base" else (10, False))
        assert (count, exact) == (len(enc.encode_ordinary(expected)) + fixed, verified)


def test_nested_descriptions_and_deep_braces_are_counted_as_bounds() -> None:
    functions = [
        {
            "name": "f",
            "parameters": {
                "type": "object",
                "properties": {
                    "tags": {"type": "array", "items": {"type": "string"}, "description": "Labels"},
                    "where": {
                        "type": "object",
                        "description": "Place",
                        "properties": {
                            "city": {"type": "string", "description": "City"},
                            "geo": {
                                "type": "object",
                                "properties": {"lat": {"type": "number", "description": "Latitude"}},
                                "required": ["lat"],
                            },
                        },
                        "required": ["city"],
                    },
                },
                "required": ["tags"],
            },
        }
    ]
    assert render(functions) == (
        "namespace functions {\n\ntype f = (_: {\n"
        "// Labels\n"
        "tags: string[],\n"
        "// Place\n"
        "where?: // Place\n{\n"
        "  // City\n"
        "  city: string,\n"
        "  geo?: {\n"
        "    // Latitude\n"
        "    lat: number,\n"
        "  },\n"
        "},\n"
        "}) => any;\n\n} // namespace functions",
        False,
    )
    # Each part alone makes the rendering a bound.
    alone = copy.deepcopy(functions)
    where = alone[0]["parameters"]["properties"]["where"]
    del where["description"], where["properties"]["city"]["description"]
    del where["properties"]["geo"]["properties"]["lat"]["description"]
    assert render(alone)[1] is False  # the brace of geo, two deep
    del where["properties"]["geo"]
    assert render(alone)[1] is True
    where["description"] = "Place"
    assert render(alone)[1] is False  # an object's description, repeated


def test_tools_and_legacy_functions_are_the_same_definitions() -> None:
    functions = [weather_function(), {"name": "ping", "description": "Ping"}]
    tools = [{"type": "function", "function": f} for f in functions]
    assert function_definitions({"tools": tools}) == function_definitions({"functions": functions})
    assert function_definitions({}) == []


# (encoding, has_system, choice form) -> framing tokens, verified.
FRAMING_TABLE = [
    ("cl100k_base", False, "absent", 9, True),
    ("cl100k_base", False, "auto", 9, True),
    ("cl100k_base", False, "none", 10, True),
    ("cl100k_base", False, "named", 13, True),
    ("cl100k_base", False, "named_tool", 16, True),
    ("cl100k_base", False, "required", 24, False),
    ("cl100k_base", True, "absent", 5, True),
    ("cl100k_base", True, "named", 9, True),
    # o200k_base: definitions 10 / saving 5, or explicit "auto" +1 with 9 / 4.
    ("o200k_base", False, "absent", 10, False),
    ("o200k_base", False, "auto", 10, True),
    ("o200k_base", True, "absent", 5, True),
    ("o200k_base", True, "auto", 6, False),
    ("o200k_base", False, "none", 12, False),
    ("o200k_base", False, "named", 15, False),
    ("o200k_base", False, "named_tool", 18, False),
    ("o200k_base", False, "required", 26, False),
    ("p50k_base", False, "absent", 10, False),
    ("p50k_base", True, "absent", 6, False),
]


@pytest.mark.parametrize(("name", "has_system", "kind", "fixed", "verified"), FRAMING_TABLE)
def test_framing_takes_the_largest_reading(name: str, has_system: bool, kind: str, fixed: int, verified: bool) -> None:
    assert framing_tokens(name, kind, has_system=has_system) == (fixed, verified)


@pytest.mark.parametrize("name", ENCODINGS)
def test_tool_choice_adds_its_tokens(name: str) -> None:
    enc = encoding(name)
    functions = [weather_function(), {"name": "a_much_longer_function_name"}]
    system = WEATHER_MESSAGES[0]["content"]
    base, base_exact = tools_tokens(enc, functions, has_system=True, system_content=system)
    assert base_exact is True
    named = len(enc.encode_ordinary("get_current_weather"))
    longest = len(enc.encode_ordinary("a_much_longer_function_name"))
    cl100k = name == "cl100k_base"
    for choice, extra, exact in [
        (None, 0, True),
        ("auto", 0 if cl100k else 1, cl100k),
        ("none", 1 if cl100k else 2, cl100k),
        ({"type": "function", "function": {"name": "get_current_weather"}}, named + (7 if cl100k else 8), cl100k),
        ({"name": "get_current_weather"}, named + (4 if cl100k else 5), cl100k),
        ("required", longest + (15 if cl100k else 16), False),
    ]:
        assert tools_tokens(enc, functions, has_system=True, tool_choice=choice, system_content=system) == (
            base + extra,
            exact,
        )
    assert tools_tokens(enc, [], has_system=True, tool_choice="none") == (0, True)


@pytest.mark.parametrize(
    "choice",
    [
        {"type": "function", "function": {"name": "undefined"}},
        {"name": ""},
        "sometimes",
        {"type": "allowed_tools", "allowed_tools": {"mode": "auto", "tools": []}},
        {"type": "custom", "custom": {"name": "get_current_weather"}},
        7,
    ],
)
def test_bad_tool_choice_is_refused(choice: object) -> None:
    with pytest.raises(InvalidRequest) as caught:
        tools_tokens(encoding("o200k_base"), [weather_function()], has_system=False, tool_choice=choice)
    assert caught.value.param == "tool_choice"
    with pytest.raises(InvalidRequest):
        bound_tokens([weather_function()], tool_choice=choice)


def test_a_named_choice_without_tools_is_refused() -> None:
    with pytest.raises(InvalidRequest) as caught:
        tools_tokens(encoding("o200k_base"), [], has_system=False, tool_choice="required")
    assert caught.value.param == "tool_choice"


BAD_SHAPES: list[tuple[dict[str, Any], str]] = [
    ({"tools": {"type": "function"}}, "tools"),
    ({"tools": ["get"]}, "tools[0]"),
    ({"tools": [{"type": "custom", "custom": {"name": "x"}}]}, "tools[0].type"),
    ({"tools": [{"type": "function", "function": weather_function()}, {"type": "web_search"}]}, "tools[1].type"),
    ({"tools": [{"type": "function"}]}, "tools[0].function"),
    ({"tools": [{"type": "function", "function": {"name": ""}}]}, "tools[0].function.name"),
    ({"tools": [{"type": "function", "function": {"name": 3}}]}, "tools[0].function.name"),
    ({"tools": [{"type": "function", "function": {"name": "f", "description": 1}}]}, "tools[0].function.description"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": []}}]}, "tools[0].function.parameters"),
    ({"tools": [{"type": "function", "function": {"name": "f", "strict": "yes"}}]}, "tools[0].function.strict"),
    ({"functions": "f"}, "functions"),
    ({"functions": [{"description": "no name"}]}, "functions[0].name"),
    ({"functions": [{"name": "f", "parameters": "{}"}]}, "functions[0].parameters"),
]


@pytest.mark.parametrize(("body", "param"), BAD_SHAPES)
def test_bad_shapes_are_refused_naming_the_field(body: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        function_definitions(body)
    assert caught.value.param == param


def test_runaway_refs_are_refused() -> None:
    # Each level refers twice to the next: 2**30 copies if inlined naively.
    defs = {
        f"d{i}": {
            "type": "object",
            "properties": {"a": {"$ref": f"#/$defs/d{i + 1}"}, "b": {"$ref": f"#/$defs/d{i + 1}"}},
        }
        for i in range(30)
    }
    parameters = {"type": "object", "$defs": defs, "properties": {"x": {"$ref": "#/$defs/d0"}}}
    with pytest.raises(InvalidRequest):
        render([{"name": "f", "parameters": parameters}])


KNOWN_CLOSEST = weather_function()
UNKNOWN_VARIANTS: list[tuple[str, dict[str, Any]]] = [
    ("anyOf", {"anyOf": [{"type": "string"}, {"type": "number"}]}),
    ("oneOf", {"oneOf": [{"type": "string"}, {"type": "null"}]}),
    ("allOf", {"allOf": [{"type": "string"}]}),
    ("type list", {"type": ["string", "null"]}),
    ("format", {"type": "string", "format": "date-time"}),
    ("default", {"type": "string", "default": "Paris"}),
    ("title", {"type": "string", "title": "Location"}),
    ("const", {"type": "string", "const": "Paris"}),
    ("pattern", {"type": "string", "pattern": "^[A-Z]"}),
    ("float enum", {"type": "number", "enum": [0.5, 1e20]}),
    ("escaped enum", {"type": "string", "enum": ['say "hi"']}),
    ("$ref", {"$ref": "#/$defs/place"}),
]


@pytest.mark.parametrize(("case", "schema"), UNKNOWN_VARIANTS, ids=[case for case, _ in UNKNOWN_VARIANTS])
def test_unknown_constructs_are_bounds_above_the_closest_known_rendering(case: str, schema: dict[str, Any]) -> None:
    unknown = weather_function()
    location = unknown["parameters"]["properties"]["location"]
    location.pop("type")
    location.update(schema)
    unknown["parameters"]["$defs"] = {"place": {"type": "string", "description": "A city, in full"}}
    text, exact = render([unknown])
    assert exact is False
    system = WEATHER_MESSAGES[0]["content"]
    for name in ENCODINGS:
        enc = encoding(name)
        bound, bound_exact = tools_tokens(enc, [unknown], has_system=True, system_content=system)
        known, known_exact = tools_tokens(enc, [KNOWN_CLOSEST], has_system=True, system_content=system)
        assert (bound_exact, known_exact) == (False, True)
        assert bound > known


def test_refs_are_inlined_into_the_bound() -> None:
    place = {"type": "object", "properties": {"city": {"type": "string", "description": "x" * 200}}}
    parameters = {
        "type": "object",
        "$defs": {"place": place},
        "properties": {"a": {"$ref": "#/$defs/place"}, "b": {"$ref": "#/$defs/place"}},
    }
    text, exact = render([{"name": "f", "parameters": parameters}])
    assert exact is False
    # Once in $defs, once for each reference.
    assert text.count("x" * 200) == 3


def test_other_unknowns_flip_exact() -> None:
    for function in [
        weather_function(strict=True),
        weather_function(description="two\nlines"),
        {"name": "f", "parameters": {"type": "object", "title": "F", "properties": {}}},
        {"name": "f", "parameters": {"type": "string"}},
    ]:
        assert render(function_definitions({"functions": [function]}))[1] is False
    enc = encoding("o200k_base")
    strict = function_definitions({"functions": [weather_function(strict=True)]})
    assert tools_tokens(enc, strict, has_system=False)[0] > tools_tokens(enc, [weather_function()], has_system=False)[0]


class _Other:
    name = "p50k_base"

    def encode_ordinary(self, text: str) -> list[int]:
        return list(encoding("cl100k_base").encode_ordinary(text))


def test_an_encoding_outside_the_table_is_not_exact() -> None:
    count, exact = tools_tokens(_Other(), [weather_function()], has_system=False)
    assert exact is False
    assert count >= tools_tokens(encoding("cl100k_base"), [weather_function()], has_system=False)[0]


# Random schemas whose rendering is known: nested objects, arrays, enums,
# scalars, descriptions (any text on one line), required lists.
descriptions = st.text(st.characters(exclude_characters="\r\n\x85\u2028\u2029\x1c\x1d\x1e\x0b\x0c"), max_size=30)
keys = st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=12)
enum_words = st.text(st.characters(exclude_categories=["Cc", "Cs"], exclude_characters='"\\'), min_size=1, max_size=10)


def _object(props: dict[str, Any], required: list[bool], description: str | None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": props}
    schema["required"] = [key for key, keep in zip(props, required, strict=False) if keep]
    if description is not None:
        schema["description"] = description
    return schema


def _with_description(schema: dict[str, Any], description: str | None) -> dict[str, Any]:
    return schema if description is None else {**schema, "description": description}


schemas: st.SearchStrategy[dict[str, Any]] = st.deferred(
    lambda: st.one_of(
        st.builds(
            _with_description,
            st.fixed_dictionaries({"type": st.sampled_from(["string", "number", "integer", "boolean", "null"])}),
            st.none() | descriptions,
        ),
        st.builds(
            _with_description,
            st.fixed_dictionaries({"type": st.just("string"), "enum": st.lists(enum_words, min_size=1, max_size=5)}),
            st.none() | descriptions,
        ),
        st.fixed_dictionaries(
            {
                "type": st.sampled_from(["integer", "number"]),
                "enum": st.lists(st.integers(-(10**12), 10**12), min_size=1, max_size=5),
            }
        ),
        st.builds(
            _with_description,
            st.fixed_dictionaries({"type": st.just("array"), "items": schemas}),
            st.none() | descriptions,
        ),
        st.just({"type": "array"}),
        st.builds(
            _object,
            st.dictionaries(keys, schemas, min_size=1, max_size=4),
            st.lists(st.booleans(), max_size=4),
            st.none() | descriptions,
        ),
    )
)
functions_strategy = st.lists(
    st.builds(
        lambda name, description, props, required: {
            "name": name,
            **({"description": description} if description else {}),
            "parameters": _object(props, required, None),
        },
        st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,20}", fullmatch=True),
        descriptions,
        st.dictionaries(keys, schemas, max_size=5),
        st.lists(st.booleans(), max_size=5),
    ),
    min_size=1,
    max_size=3,
)


# Long enums: JSON writes '"0","0"' (2 tokens a value) where the rendering
# writes '"0" | "0"' (4); the plain JSON bound failed on these.
LONG_ENUMS = [
    {"name": "A", "parameters": {"type": "object", "properties": {"0": {"type": "string", "enum": ["0"] * 5}}}},
    {"name": "B", "parameters": {"type": "object", "properties": {"n": {"type": "integer", "enum": list(range(9))}}}},
]


def reference(functions: list[dict[str, Any]], *, nested: bool, brace_indent: bool) -> str:
    """The namespace block as other renderers write it: hmarr's
    (openai-chat-tokens 0.2.8, ``formatFunctionDefinitions``: nested
    descriptions dropped, closing braces unindented), gpt-tokenizer's (4.0.0,
    ``functionCalling.ts``: closing braces at the object's indent), and either
    with nested descriptions shown."""

    def properties(schema: dict[str, Any], indent: int) -> list[str]:
        lines = []
        for key, prop in (schema.get("properties") or {}).items():
            if prop.get("description") and (indent < 2 or nested):
                lines.append(" " * indent + f"// {prop['description']}")
            mark = "" if key in (schema.get("required") or []) else "?"
            lines.append(" " * indent + f"{key}{mark}: {kind(prop, indent)},")
        return lines

    def kind(prop: dict[str, Any], indent: int) -> str:
        if prop["type"] == "string" and "enum" in prop:
            return " | ".join(f'"{value}"' for value in prop["enum"])
        if prop["type"] in ("number", "integer"):
            return " | ".join(str(value) for value in prop["enum"]) if "enum" in prop else "number"
        if prop["type"] == "object":
            closing = " " * indent if brace_indent else ""
            return "\n".join(["{", *properties(prop, indent + 2), closing + "}"])
        if prop["type"] == "array":
            return f"{kind(prop['items'], indent)}[]" if "items" in prop else "any[]"
        return str(prop["type"])

    lines = ["namespace functions {", ""]
    for function in functions:
        if function.get("description"):
            lines.append(f"// {function['description']}")
        if function["parameters"].get("properties"):
            lines += [f"type {function['name']} = (_: {{", *properties(function["parameters"], 0), "}) => any;"]
        else:
            lines.append(f"type {function['name']} = () => any;")
        lines.append("")
    lines.append("} // namespace functions")
    return "\n".join(lines)


def harmony(functions: list[dict[str, Any]]) -> str:
    """The namespace block laid out as openai-harmony 0.0.8 (OpenAI's renderer
    for gpt-oss) writes it, as its output for HARMONY_FIXTURES shows: nested
    properties indented by four per level, every description shown, an
    object's description repeated after its key (indented to the next level),
    closing braces at the inner level, the parameters' description after
    ``(_: ``."""

    def properties(schema: dict[str, Any], level: int) -> list[str]:
        lines = []
        for key, prop in (schema.get("properties") or {}).items():
            pad = " " * (4 * level)
            if prop.get("description"):
                lines.append(pad + f"// {prop['description']}")
            mark = "" if key in (schema.get("required") or []) else "?"
            lines.append(pad + f"{key}{mark}: {kind(prop, level)},")
        return lines

    def kind(prop: dict[str, Any], level: int) -> str:
        if prop["type"] == "string" and "enum" in prop:
            return " | ".join(f'"{value}"' for value in prop["enum"])
        if prop["type"] in ("number", "integer"):
            return " | ".join(str(value) for value in prop["enum"]) if "enum" in prop else "number"
        if prop["type"] == "object":
            inner = " " * (4 * (level + 1))
            head = f"{inner}// {prop['description']}\n{{" if prop.get("description") else "{"
            return "\n".join([head, *properties(prop, level + 1), inner + "}"])
        if prop["type"] == "array":
            return f"{kind(prop['items'], level)}[]" if "items" in prop else "any[]"
        return str(prop["type"])

    lines = ["namespace functions {", ""]
    for function in functions:
        if function.get("description"):
            lines.append(f"// {function['description']}")
        parameters = function["parameters"]
        if parameters.get("properties"):
            head = f"(_: // {parameters['description']}\n{{" if parameters.get("description") else "(_: {"
            lines += [f"type {function['name']} = {head}", *properties(parameters, 0), "}) => any;"]
        else:
            lines.append(f"type {function['name']} = () => any;")
        lines.append("")
    lines.append("} // namespace functions")
    return "\n".join(lines)


# openai-harmony 0.0.8's own output (render_conversation of a developer message
# with these function tools, HARMONY_GPT_OSS; the namespace block cut out).
HARMONY_FIXTURES: list[tuple[dict[str, Any], str]] = [
    (
        DEEP_DESCRIPTIONS,
        "namespace functions {\n\n// desctiption1\ntype function = (_: // desctiption2\n{\n// description3\n"
        "mainField?: string,\n// description4\nfield number one?:     // description4\n{\n    // description5\n"
        '    yesNoField?: "Yes" | "No",\n    // description6\n    howIsInteresting?: string,\n'
        "    // description7\n    scoreInteresting?: number,\n    // description8\n"
        '    isInteresting?: "Yes" | "No",\n    },\n}) => any;\n\n} // namespace functions',
    ),
    (
        {
            "name": "f",
            "description": "F",
            "parameters": {
                "type": "object",
                "properties": {
                    "a": {
                        "type": "object",
                        "description": "A",
                        "properties": {
                            "b": {
                                "type": "object",
                                "description": "B",
                                "properties": {
                                    "c": {
                                        "type": "object",
                                        "properties": {"d": {"type": "string", "description": "D"}},
                                    },
                                    "e": {
                                        "type": "array",
                                        "items": {"type": "object", "properties": {"f": {"type": "number"}}},
                                    },
                                },
                                "required": ["c"],
                            }
                        },
                    },
                    "g": {
                        "type": "array",
                        "description": "G",
                        "items": {"type": "object", "description": "GI", "properties": {"h": {"type": "boolean"}}},
                    },
                },
                "required": ["a"],
            },
        },
        "namespace functions {\n\n// F\ntype f = (_: {\n// A\na:     // A\n{\n    // B\n    b?:         // B\n{\n"
        "        c: {\n            // D\n            d?: string,\n            },\n        e?: {\n"
        "            f?: number,\n            }[],\n        },\n    },\n// G\ng?:     // GI\n{\n"
        "    h?: boolean,\n    }[],\n}) => any;\n\n} // namespace functions",
    ),
]


@pytest.mark.parametrize(("function", "text"), HARMONY_FIXTURES, ids=["deep descriptions", "three levels"])
def test_counts_are_never_below_openai_harmonys_rendering(function: dict[str, Any], text: str) -> None:
    assert harmony([function]) == text
    enc = encoding("o200k_base")
    count, exact = tools_tokens(enc, [function], has_system=False)
    assert exact is False
    fixed, _ = framing_tokens("o200k_base", "absent", has_system=False)
    assert count >= len(enc.encode_ordinary(text)) + fixed


def test_the_reference_renderer_is_ours_where_ours_is_exact() -> None:
    for body in (case[1] for case in HMARR_CASES):
        functions = function_definitions(body)
        text, exact = render(functions)
        if exact:
            assert text == reference(functions, nested=False, brace_indent=False)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(functions=functions_strategy)
@example(functions=LONG_ENUMS[:1])
@example(functions=LONG_ENUMS[1:])
def test_bounds_are_never_below_any_known_rendering(functions: list[dict[str, Any]]) -> None:
    """Our rendering (nested descriptions shown, objects' descriptions
    repeated, deep braces indented) and its JSON bound are never fewer tokens
    than hmarr's rendering (API-checked on gpt-3.5-turbo), gpt-tokenizer's,
    or either with nested descriptions shown; and where ours is exact it is
    hmarr's text."""
    ours, exact = render(functions)
    bound_text, bound_exact = render(functions, bound=True)
    assert bound_exact is False
    references = {
        reference(functions, nested=nested, brace_indent=brace) for nested in (False, True) for brace in (False, True)
    }
    if exact:
        assert ours == reference(functions, nested=False, brace_indent=False)
    for name in ENCODINGS:
        enc = encoding(name)
        count = len(enc.encode_ordinary(ours))
        assert len(enc.encode_ordinary(bound_text)) >= count
        for text in references:
            assert count >= len(enc.encode_ordinary(text))
    # As counted on o200k_base (with the nested-object margin): at or above
    # openai-harmony's layout too.
    enc = encoding("o200k_base")
    fixed, _ = framing_tokens("o200k_base", "absent", has_system=False)
    counted, _ = tools_tokens(enc, functions, has_system=False)
    assert counted - fixed >= len(enc.encode_ordinary(harmony(functions)))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(functions=functions_strategy, data=st.data())
def test_an_unknown_key_anywhere_only_adds(functions: list[dict[str, Any]], data: st.DataObject) -> None:
    """The bound as used: one property gains an unknown key, and the count
    never drops below the known schema's exact count."""
    changed = copy.deepcopy(functions)
    function = data.draw(st.sampled_from(changed))
    props = function["parameters"]["properties"]
    if props:
        prop = props[data.draw(st.sampled_from(sorted(props)))]
        prop[data.draw(st.sampled_from(["format", "default", "title", "minimum", "examples"]))] = ""
    else:
        function["parameters"]["anyOf"] = []
    for name in ENCODINGS:
        enc = encoding(name)
        known, _ = tools_tokens(enc, functions, has_system=False)
        bound, bound_exact = tools_tokens(enc, changed, has_system=False)
        assert bound_exact is False
        assert bound >= known


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    functions=functions_strategy,
    system=st.none() | st.text(max_size=40),
    choice=st.sampled_from([None, "auto", "none", "required", "named"]),
)
def test_the_byte_bound_is_never_below_the_count(
    functions: list[dict[str, Any]], system: str | None, choice: str | None
) -> None:
    tool_choice: object = {"name": functions[0]["name"]} if choice == "named" else choice
    ceiling = bound_tokens(functions, tool_choice=tool_choice)
    for name in ENCODINGS:
        count, _ = tools_tokens(
            encoding(name), functions, has_system=system is not None, tool_choice=tool_choice, system_content=system
        )
        assert count <= ceiling


@settings(max_examples=300, deadline=None)
@given(text=st.text(st.sampled_from(" \t\n.:;!?)]}\"'#*-_=a1é\u3000"), max_size=12) | st.text(max_size=30))
def test_the_system_newline_costs_at_most_two_tokens(text: str) -> None:
    """The bound used when the system message's text is not given (one is
    not enough: "*=*=" is 1 token, "*=*=\\n" 3)."""
    for name in ENCODINGS:
        enc = encoding(name)
        assert len(enc.encode_ordinary(text + "\n")) - len(enc.encode_ordinary(text)) <= 2
    assert len(encoding("cl100k_base").encode_ordinary("*=*=\n")) == 3
