"""Tool and function definitions as OpenAI's models see them.

The models never see the JSON schema.  The definitions are rendered into the
prompt as a TypeScript-like block:

    namespace functions {

    // Get the current weather in a given location
    type get_current_weather = (_: {
    // The city and state, e.g. San Francisco, CA
    location: string,
    // The unit of temperature to return
    unit?: "celsius" | "fahrenheit",
    }) => any;

    } // namespace functions

one ``type name = (_: {...}) => any;`` per function (``() => any`` without
properties), a ``//`` line for each description, ``key: type,``
for required and ``key?: type,`` for optional properties, string enums as
``"a" | "b"``, nested objects inline and indented by two, arrays as ``T[]``.
This is the rendering hmarr/openai-chat-tokens reverse-engineered against the
API (``src/functions.ts``; its test cases are API counts on gpt-3.5-turbo).

Two parts of it are not settled by any published count, and are written the
larger way with ``exact`` False: descriptions of nested properties (hmarr's
counts show gpt-3.5-turbo dropping them; the renderers of hmarr and of
gpt-tokenizer drop them; nothing shows what later models do, and OpenAI's
own TypeScript-style renderer for gpt-oss, openai-harmony, shows them as
indented ``//`` lines, repeats an object's description after its key
(``where: // Place``) and shows the parameters' own description
(``(_: // text``): all counted), and the closing brace of an object nested two deep or more (hmarr
writes it unindented, gpt-tokenizer indented; we write it indented).

Around the block sits a fixed framing (``Framing``, per encoding in
``FRAMINGS``): ``definitions`` tokens, ``system_reuse`` fewer when the prompt
already has a system message (the block joins it instead of opening one),
whose text then gains a trailing newline.  The constants are fitted to
OpenAI's published counts: the cookbook's weather-tool example
(``How_to_count_tokens_with_tiktoken.ipynb``) counts 101 on gpt-4o /
gpt-4o-mini (o200k_base) and 105 on gpt-4 / gpt-3.5-turbo (cl100k_base), the
API reference's chat "Functions" example 82 on gpt-4o-mini, and the
API-checked cases of hmarr/openai-chat-tokens and
openai-messages-token-helper count exactly on cl100k_base where ``exact`` is
True (docs/accuracy.md lists them all).  Where those figures disagree for a
construct (a first property without a description, number enums), the larger
count is kept and ``exact`` is False.

Schema constructs whose rendering is not published (``anyOf``, ``oneOf``,
``allOf``, ``$ref``, ``format``, ``default``, ``title``, ``const``, ``pattern``,
bounds, type lists, ``strict`` functions...) are rendered as their compact JSON
text instead (local ``$ref``s inlined), which makes the count a bound
(``exact`` False): JSON spells out every key, quote and brace the TypeScript
form drops and keeps every description, so it is never shorter in tokens.  The
property tests in ``tests/test_tools.py`` check this on random schemas whose
rendering is known.
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple, Protocol

import orjson

from .errors import InvalidRequest

__all__ = [
    "FRAMING",
    "FRAMINGS",
    "SYSTEM_REUSE",
    "Framing",
    "add_to",
    "bound_tokens",
    "choice_tokens",
    "framing_tokens",
    "function_definitions",
    "render",
    "tools_tokens",
]


class Framing(NamedTuple):
    """Fixed tokens around the rendered definitions: one reading of the
    published counts, for one encoding."""

    #: Added whenever definitions are present (the block's own system message
    #: and its headers).
    definitions: int
    #: Taken off when the prompt already has a system message, which the block joins.
    system_reuse: int
    #: ``tool_choice`` / ``function_call`` ``"auto"`` given explicitly.
    choice_auto: int
    #: ``"none"``.
    choice_none: int
    #: A named function in the legacy form (``function_call: {"name"}``), on
    #: top of the name's own tokens.
    choice_named: int
    #: A named function in the tools form (``tool_choice: {"type": "function",
    #: "function": {"name"}}``), on top of the name's own tokens.
    choice_named_tool: int
    #: ``"required"``, on top of the longest name's tokens: never published.
    choice_required: int


# Every reading of the framing that the published counts leave open, per
# encoding.  A count takes the largest reading, and is exact only where all
# readings agree and the tool_choice form is verified on that encoding.
#
# cl100k_base: hmarr's API counts on gpt-3.5-turbo (legacy ``functions``) fix
# one reading: +9, -4 with a system message, explicit "auto" +0, "none" +1, a
# function named in ``function_call`` +4 plus its name; the cookbook's weather
# example (105) agrees.  openai-messages-token-helper's API counts with
# ``tools`` agree on all of it, and show a function named in ``tool_choice``
# costing +7 plus its name (three cases).
# o200k_base: two published counts.  The cookbook's weather example (system
# message, no tool_choice) is 101 on gpt-4o and gpt-4o-mini: definitions minus
# system_reuse is 5.  The API reference's chat "Functions" example (no system
# message, tool_choice "auto") is 82 on gpt-4o-mini: definitions plus the
# explicit "auto" is 10.  Either definitions is 10 (and the system message
# saves 5), or "auto" given explicitly costs 1; nothing published tells them
# apart, so both are kept.  "none" and named functions are not published on
# o200k_base: cl100k_base's costs plus one.
# "required" is published nowhere: the tools form of a named function's cost
# for the longest name, plus 8.
FRAMINGS: dict[str, tuple[Framing, ...]] = {
    "cl100k_base": (Framing(9, 4, 0, 1, 4, 7, 15),),
    "o200k_base": (Framing(10, 5, 0, 2, 5, 8, 16), Framing(9, 4, 1, 2, 5, 8, 16)),
}
# tool_choice forms whose cost a published count verifies, per encoding.
_VERIFIED_CHOICES: dict[str, frozenset[str]] = {
    "cl100k_base": frozenset({"absent", "auto", "none", "named", "named_tool"}),
    "o200k_base": frozenset({"absent", "auto"}),
}
_READINGS = [reading for readings in FRAMINGS.values() for reading in readings]
# For an encoding outside the table: the largest additions, the smallest saving.
_WORST = Framing(*(max(values) for values in zip(*_READINGS, strict=True)))
_WORST = _WORST._replace(system_reuse=min(reading.system_reuse for reading in _READINGS))

#: The framing ``shapes`` adds at most, on any encoding.
FRAMING = _WORST.definitions
#: Tokens fewer, at least, when the prompt already has a system message.
SYSTEM_REUSE = _WORST.system_reuse

# Keys of a property schema whose effect on the rendering is known.  Anything
# else (``default`` is known to be rendered, as a trailing ``// default: x``
# comment, but not exactly how) makes the property a bound.
_KNOWN_KEYS = frozenset({"type", "description", "enum", "properties", "required", "items"})
# Keys of ``parameters`` itself the rendering is known to ignore or use.
_TOP_KEYS = frozenset({"type", "description", "properties", "required", "additionalProperties", "$schema"})
_KNOWN_TYPES = frozenset({"string", "number", "integer", "boolean", "null", "object", "array"})
# What a trailing newline can add to a text: it joins the text's last
# pre-token, and BPE may split that run differently ("*=*=" is 1 token,
# "*=*=\n" 3).  Two is the most seen over random punctuation-heavy texts on
# both encodings (tests/test_tools.py); pass the text to count it exactly.
_NEWLINE_BOUND = 2
# Tokens per nested object on encodings where its layout is not verified
# (``_nested_margin``).
_NESTED_MARGIN = 2
# Inlining local ``$ref``s can grow a schema exponentially; past this many
# inlined schema nodes in one request it is refused rather than priced.
_MAX_REF_EXPANSIONS = 20_000


class _Encoding(Protocol):
    name: str

    def encode_ordinary(self, text: str) -> list[int]: ...


def function_definitions(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The functions a chat request defines (``tools`` of type function, or the
    legacy ``functions``), as ``{"name", "description"?, "parameters"?, "strict"?}``.
    Raises ``InvalidRequest`` naming the field for a malformed definition or a
    tool type that cannot be priced (anything but ``"function"``)."""
    found: list[dict[str, Any]] = []
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise InvalidRequest("'tools' must be a list.", param="tools")
        for index, tool in enumerate(tools):
            param = f"tools[{index}]"
            if not isinstance(tool, dict):
                raise InvalidRequest("A tool must be an object.", param=param)
            if tool.get("type") != "function":
                raise InvalidRequest(
                    f"Tools of type {tool.get('type')!r} cannot be priced by this gateway.", param=f"{param}.type"
                )
            found.append(_definition(tool.get("function"), f"{param}.function"))
    functions = body.get("functions")
    if functions is not None:
        if not isinstance(functions, list):
            raise InvalidRequest("'functions' must be a list.", param="functions")
        for index, function in enumerate(functions):
            found.append(_definition(function, f"functions[{index}]"))
    return found


def _definition(function: object, param: str) -> dict[str, Any]:
    if not isinstance(function, dict):
        raise InvalidRequest("A function definition must be an object.", param=param)
    name = function.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidRequest("A function needs a non-empty string 'name'.", param=f"{param}.name")
    description = function.get("description")
    if description is not None and not isinstance(description, str):
        raise InvalidRequest("'description' must be a string.", param=f"{param}.description")
    parameters = function.get("parameters")
    if parameters is not None and not isinstance(parameters, dict):
        raise InvalidRequest("'parameters' must be a JSON schema object.", param=f"{param}.parameters")
    strict = function.get("strict")
    if strict is not None and not isinstance(strict, bool):
        raise InvalidRequest("'strict' must be a boolean.", param=f"{param}.strict")
    definition: dict[str, Any] = {"name": name}
    if description:
        definition["description"] = description
    if parameters is not None:
        definition["parameters"] = parameters
    if strict:
        # Strict mode compiles the schema into a grammar; what the prompt
        # sees then is not published.
        definition["strict"] = True
    return definition


def render(functions: list[dict[str, Any]], *, bound: bool = False) -> tuple[str, bool]:
    """The namespace block, and whether it is the exact rendering (False when
    some construct was written as its JSON bound).  With ``bound``, every
    property type is written as JSON text: the bound for unknown constructs,
    applied everywhere.  Raises ``InvalidRequest`` for a schema whose local
    ``$ref``s expand too far to price."""
    text, exact, _ = _render(functions, bound)
    return text, exact


def _render(functions: list[dict[str, Any]], bound: bool = False) -> tuple[str, bool, int]:
    """``render``'s text and exactness, and how many object-typed properties
    (nested objects) it holds."""
    renderer = _Renderer(bound)
    lines = ["namespace functions {", ""]
    for function in functions:
        lines.extend(renderer.function(function))
        lines.append("")
    lines.append("} // namespace functions")
    return "\n".join(lines), renderer.exact, renderer.nested


def _nested_margin(encoding: str, nested: int) -> tuple[int, bool]:
    """Tokens added for ``nested`` objects on ``encoding``, and whether their
    layout is verified there.  hmarr's counts verify it on cl100k_base; on
    any other encoding nothing published shows a nested object, and
    openai-harmony lays them out wider (4-space indents, the closing brace
    indented, spaces before a repeated description), which costs up to 2
    tokens more per nested object (tests/test_tools.py)."""
    if not nested or encoding == "cl100k_base":
        return 0, True
    return _NESTED_MARGIN * nested, False


class _Renderer:
    def __init__(self, bound: bool) -> None:
        self.bound = bound
        self.exact = not bound
        self.expansions = 0
        self.root: dict[str, Any] = {}
        self.strict = False
        self.nested = 0

    def function(self, function: dict[str, Any]) -> list[str]:
        lines: list[str] = []
        if function.get("description"):
            lines.append(self.comment(function["description"]))
        parameters = function.get("parameters") or {}
        self.root = parameters
        self.strict = bool(function.get("strict"))
        if self.strict:
            self.exact = False
        unknown = {key: value for key, value in parameters.items() if key not in _TOP_KEYS}
        if parameters.get("type", "object") != "object":
            unknown["type"] = parameters["type"]
        if unknown:
            self.exact = False
            lines.append(f"// {self.json(unknown)}")
        if parameters.get("properties"):
            top = parameters.get("description")
            if isinstance(top, str) and top:
                # Dropped by gpt-3.5-turbo (hmarr's counts), shown by
                # openai-harmony before the brace: counted.
                self.exact = False
                lines.append(f"type {function['name']} = (_: {self.comment(top)}")
                lines.append("{")
            else:
                lines.append(f"type {function['name']} = (_: {{")
            lines.append(self.properties(parameters, 0))
            lines.append("}) => any;")
        else:
            lines.append(f"type {function['name']} = () => any;")
        return lines

    def properties(self, schema: dict[str, Any], indent: int) -> str:
        lines: list[str] = []
        properties = schema.get("properties") or {}
        required = schema.get("required") or []
        if not isinstance(properties, dict) or not isinstance(required, list):
            self.exact = False
            return " " * indent + self.json(schema)
        first = next(iter(properties.values()), None)
        if indent == 0 and not (isinstance(first, dict) and first.get("description")):
            # hmarr's counts (gpt-3.5-turbo, functions) bill such a first
            # property as rendered; openai-messages-token-helper's (tools) one
            # token fewer.  The larger is counted.
            self.exact = False
        for name, prop in properties.items():
            if isinstance(prop, dict) and isinstance(prop.get("description"), str) and prop["description"]:
                if indent:
                    # gpt-3.5-turbo dropped the descriptions of nested
                    # properties (hmarr's API counts); whether later models
                    # show them is not published, so they are counted.
                    self.exact = False
                lines.append(self.comment(prop["description"]))
            mark = "" if name in required else "?"
            lines.append(f"{name}{mark}: {self.type(prop, indent)},")
        return "\n".join(" " * indent + line for line in lines)

    def type(self, prop: object, indent: int) -> str:
        if self.bound or self.strict or not isinstance(prop, dict) or not _known(prop):
            self.exact = False
            return self.json(prop)
        kind = prop["type"]
        if kind == "string":
            if "enum" in prop:
                return " | ".join(f'"{value}"' for value in prop["enum"])
            return "string"
        if kind in ("number", "integer"):
            if "enum" in prop:
                # openai-messages-token-helper's API count for [-1, 1] is one
                # token below this rendering: a bound.
                self.exact = False
                return " | ".join(str(value) for value in prop["enum"])
            return "number"
        if kind in ("boolean", "null"):
            return str(kind)
        if kind == "object":
            self.nested += 1
            if indent:
                # Where the closing brace of an object nested this deep goes
                # (its own indent, or none) no published count shows.
                self.exact = False
            opening = "{"
            if prop.get("description"):
                # OpenAI's gpt-oss renderer (openai-harmony) writes an object's
                # description after its key (an array's items' too); hmarr's
                # counts show gpt-3.5-turbo not doing so.  The larger is counted.
                self.exact = False
                opening = f"{self.comment(prop['description'])}\n{{"
            return "\n".join([opening, self.properties(prop, indent + 2), " " * indent + "}"])
        if "items" in prop:
            return f"{self.type(prop['items'], indent)}[]"
        return "any[]"

    def comment(self, description: str) -> str:
        if "\n" in description or "\r" in description:
            # Whether later lines get their own "// " is not published; they might.
            self.exact = False
            return "\n".join(f"// {line}" for line in description.splitlines())
        return f"// {description}"

    def json(self, value: object) -> str:
        inlined = self.inline(value, ())
        # JSON lists an enum tighter than the union the rendering writes
        # ('"a","b"' against '"a" | "b"'), so each enum's union is added too.
        unions = "".join(f" // {_union(values)}" for values in _enums(inlined))
        return _dumps(inlined) + unions

    def inline(self, value: object, seen: tuple[str, ...]) -> object:
        """``value`` with local ``$ref``s replaced by what they point at (a
        renderer that expands them shows the target, maybe many times)."""
        if isinstance(value, list):
            return [self.inline(item, seen) for item in value]
        if not isinstance(value, dict):
            return value
        ref = value.get("$ref")
        if seen:
            self.expansions += 1
            if self.expansions > _MAX_REF_EXPANSIONS:
                raise InvalidRequest("The tool schema's '$ref's expand too far to price.", param="tools")
        out = {key: self.inline(item, seen) for key, item in value.items()}
        if isinstance(ref, str) and ref not in seen:
            target = _pointer(self.root, ref)
            if target is not None:
                out["$ref"] = self.inline(target, (*seen, ref))
        return out


def _known(prop: dict[str, Any]) -> bool:
    kind = prop.get("type")
    if not isinstance(kind, str) or kind not in _KNOWN_TYPES or any(key not in _KNOWN_KEYS for key in prop):
        return False
    if prop.get("description") is not None and not isinstance(prop["description"], str):
        return False
    enum = prop.get("enum")
    if enum is not None:
        if kind not in ("string", "number", "integer") or not isinstance(enum, list) or not enum:
            return False
        if kind == "string" and not all(isinstance(v, str) and _dumps(v) == f'"{v}"' for v in enum):
            # A value JSON would escape: whether the renderer escapes it is not known.
            return False
        if kind != "string" and not all(isinstance(v, int) and not isinstance(v, bool) for v in enum):
            # Floats: whether the renderer writes 1e+20, 1e20 or all the digits is not known.
            return False
    if kind == "object" and not isinstance(prop.get("properties", {}), dict):
        return False
    return not (kind == "array" and "items" in prop and not isinstance(prop["items"], dict))


def _enums(value: object) -> list[list[Any]]:
    if isinstance(value, list):
        return [found for item in value for found in _enums(item)]
    if not isinstance(value, dict):
        return []
    found = [value["enum"]] if isinstance(value.get("enum"), list) else []
    return found + [inner for item in value.values() for inner in _enums(item)]


def _union(values: list[Any]) -> str:
    return " | ".join(_dumps(value) for value in values)


def _dumps(value: object) -> str:
    """Compact JSON text; a lone surrogate (which orjson refuses) is escaped."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return json.dumps(value, separators=(",", ":"))


def _pointer(root: dict[str, Any], ref: str) -> object:
    """The target of a local JSON pointer (``#/$defs/x``) in ``root``, or None."""
    if ref == "#":
        return root
    if not ref.startswith("#/"):
        return None
    node: object = root
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node


def _choice_kind(tool_choice: object) -> tuple[str, str | None]:
    """The form of ``tool_choice`` (absent, auto, none, required, named for
    the legacy ``{"name"}``, named_tool for ``{"type", "function"}``) and the
    name it gives.  Raises ``InvalidRequest`` (param ``tool_choice``) for
    anything else."""
    if tool_choice is None:
        return "absent", None
    if tool_choice in ("auto", "none", "required"):
        return str(tool_choice), None
    if isinstance(tool_choice, dict) and tool_choice.get("type", "function") == "function":
        tool_form = "function" in tool_choice
        function = tool_choice.get("function") if tool_form else tool_choice
        name = function.get("name") if isinstance(function, dict) else None
        if isinstance(name, str) and name:
            return ("named_tool" if tool_form else "named"), name
    raise InvalidRequest("'tool_choice' must be 'none', 'auto', 'required' or name a function.", param="tool_choice")


def _choice_cost(reading: Framing, kind: str) -> int:
    return {
        "absent": 0,
        "auto": reading.choice_auto,
        "none": reading.choice_none,
        "named": reading.choice_named,
        "named_tool": reading.choice_named_tool,
        "required": reading.choice_required,
    }[kind]


def choice_tokens(functions: list[dict[str, Any]], tool_choice: object) -> tuple[str, list[str]]:
    """The form of ``tool_choice`` / ``function_call`` and the texts it adds (a
    named function's name; for ``"required"``, the longest defined name).
    Raises ``InvalidRequest`` (param ``tool_choice``) for a malformed choice,
    one naming an undefined function, or one asking for a tool when there are
    none."""
    kind, name = _choice_kind(tool_choice)
    if name is not None and name not in {function["name"] for function in functions}:
        raise InvalidRequest(f"'tool_choice' names {name!r}, which is not defined.", param="tool_choice")
    if not functions and kind in ("named", "named_tool", "required"):
        raise InvalidRequest("'tool_choice' asks for a tool but no tools are defined.", param="tool_choice")
    if kind == "required":
        longest = max((function["name"] for function in functions), key=lambda n: len(n.encode("utf-8", "replace")))
        return kind, [longest]
    return kind, [name] if name is not None else []


def framing_tokens(encoding: str, kind: str, *, has_system: bool) -> tuple[int, bool]:
    """The framing tokens definitions add on ``encoding`` with a tool_choice of
    form ``kind`` (from ``choice_tokens``): the largest reading, and whether
    the published counts verify it (every reading agrees and the form is
    verified there).  An encoding outside ``FRAMINGS`` gets the largest
    constants and False."""
    readings = FRAMINGS.get(encoding, (_WORST,))
    values = {
        reading.definitions - (reading.system_reuse if has_system else 0) + _choice_cost(reading, kind)
        for reading in readings
    }
    verified = encoding in FRAMINGS and len(values) == 1 and kind in _VERIFIED_CHOICES[encoding]
    return max(values), verified


def tools_tokens(
    encoding: _Encoding,
    functions: list[dict[str, Any]],
    *,
    has_system: bool,
    tool_choice: object = None,
    system_content: str | None = None,
) -> tuple[int, bool]:
    """The prompt tokens that ``functions`` (from ``function_definitions``) and
    ``tool_choice`` (``body.get("tool_choice", body.get("function_call"))``) add
    to a chat prompt whose messages are counted the plain cookbook way (3 per
    message, 1 per name, 3 for the reply priming), and whether that is exact.

    Includes the framing and, with ``has_system``, its interaction with the
    first system message: fewer tokens, and that message's text gains a
    newline.  Pass its text as ``system_content`` to count the newline
    exactly; without it the newline is bounded by two tokens (an empirical
    bound, see ``_NEWLINE_BOUND``) and the count is not exact.  Raises
    ``InvalidRequest`` as ``choice_tokens`` does."""
    kind, texts = choice_tokens(functions, tool_choice)
    if not functions:
        # "none" with no tools is what no tools means: nothing is rendered.
        return 0, True
    text, rendered_exact, nested = _render(functions)
    fixed, exact = framing_tokens(encoding.name, kind, has_system=has_system)
    margin, layout_exact = _nested_margin(encoding.name, nested)
    count = len(encoding.encode_ordinary(text)) + fixed + margin
    exact = exact and layout_exact
    count += sum(len(encoding.encode_ordinary(t)) for t in texts)
    if has_system:
        if system_content is None:
            count += _NEWLINE_BOUND
            exact = False
        else:
            padded = len(encoding.encode_ordinary(system_content + "\n"))
            count += padded - len(encoding.encode_ordinary(system_content))
    return count, exact and rendered_exact


def bound_tokens(functions: list[dict[str, Any]], *, tool_choice: object = None) -> int:
    """An upper bound on ``tools_tokens`` for any byte-level BPE encoding,
    without a tokenizer: the UTF-8 bytes of the rendering (every token covers
    at least one byte) plus the largest framing, no system-message saving and
    the bound for the system message's newline.  Raises ``InvalidRequest`` as
    ``tools_tokens`` does."""
    kind, texts = choice_tokens(functions, tool_choice)
    if not functions:
        return 0
    text, _, nested = _render(functions)
    size = sum(len(t.encode("utf-8", "surrogatepass")) for t in (text, *texts))
    fixed, _ = framing_tokens("", kind, has_system=False)
    return size + fixed + _NEWLINE_BOUND + _nested_margin("", nested)[0]


def add_to(builder: Any, functions: list[dict[str, Any]], *, has_system: bool, tool_choice: object) -> None:
    """Add the definitions' rendering and framing to a chat ``shapes._Builder``
    (which pads the system message itself): the largest framing over
    encodings, the difference saved on each encoding that bills less, and
    exactness narrowed to the encodings where the framing is verified."""
    text, exact, nested = _render(functions)
    kind, texts = choice_tokens(functions, tool_choice)
    builder.texts.append(text)
    builder.texts.extend(texts)
    largest = framing_tokens("", kind, has_system=has_system)[0] + _nested_margin("", nested)[0]
    builder.fixed += largest
    verified = []
    for encoding in FRAMINGS:
        value, framing_exact = framing_tokens(encoding, kind, has_system=has_system)
        margin, layout_exact = _nested_margin(encoding, nested)
        builder.save(encoding, largest - value - margin)
        if framing_exact and layout_exact:
            verified.append(encoding)
    builder.exact_only_on(*verified)
    builder.exact = builder.exact and exact
