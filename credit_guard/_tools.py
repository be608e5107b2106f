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
properties), a ``//`` line for each description (a property's only at the top
level of the parameters: nested ones are dropped), ``key: type,``
for required and ``key?: type,`` for optional properties, string enums as
``"a" | "b"``, nested objects inline and indented by two, arrays as ``T[]``.
This is the rendering hmarr/openai-chat-tokens reverse-engineered against the
API (``src/functions.ts``; its test cases are API counts on gpt-3.5-turbo).

Around the block sits a fixed framing (``Framing``, per encoding in
``FRAMINGS``): ``definitions`` tokens, ``system_reuse`` fewer when the prompt
already has a system message (the block joins it instead of opening one),
whose text then gains a trailing newline.  The constants are fitted to
OpenAI's published counts: the cookbook's weather-tool example
(``How_to_count_tokens_with_tiktoken.ipynb``) counts 101 on gpt-4o /
gpt-4o-mini (o200k_base) and 105 on gpt-4 / gpt-3.5-turbo (cl100k_base), and
hmarr's API-checked cases count exactly on cl100k_base.

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
    "function_definitions",
    "render",
    "tools_tokens",
]


class Framing(NamedTuple):
    """Fixed tokens around the rendered definitions, for one encoding."""

    #: Added whenever definitions are present (the block's own system message
    #: and its headers).
    definitions: int
    #: Taken off when the prompt already has a system message, which the block joins.
    system_reuse: int
    #: ``tool_choice`` / ``function_call`` ``"none"``.
    choice_none: int
    #: A named function, on top of the name's own tokens.
    choice_named: int
    #: ``"required"``: not published; an upper bound (``choice_named`` plus a margin).
    choice_required: int


# Evidence, cl100k_base: hmarr/openai-chat-tokens' cases, checked against the
# API on gpt-3.5-turbo (+9, -4 with a system message, "none" +1, a named
# function +4 plus its name), and the cookbook's weather example = 105.
# o200k_base: the same constants give the cookbook's 101 on gpt-4o and
# gpt-4o-mini; nothing published tells them apart further.
FRAMINGS: dict[str, Framing] = {
    "cl100k_base": Framing(definitions=9, system_reuse=4, choice_none=1, choice_named=4, choice_required=9),
    "o200k_base": Framing(definitions=9, system_reuse=4, choice_none=1, choice_named=4, choice_required=9),
}
# For an encoding outside the table: the largest additions, the smallest saving.
_WORST = Framing(*(max(values) for values in zip(*FRAMINGS.values(), strict=True)))
_WORST = _WORST._replace(system_reuse=min(f.system_reuse for f in FRAMINGS.values()))

#: The framing ``shapes`` adds (the same in both encodings).
FRAMING = FRAMINGS["o200k_base"].definitions
#: Tokens fewer when the prompt already has a system message.
SYSTEM_REUSE = FRAMINGS["o200k_base"].system_reuse

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
    renderer = _Renderer(bound)
    lines = ["namespace functions {", ""]
    for function in functions:
        lines.extend(renderer.function(function))
        lines.append("")
    lines.append("} // namespace functions")
    return "\n".join(lines), renderer.exact


class _Renderer:
    def __init__(self, bound: bool) -> None:
        self.bound = bound
        self.exact = not bound
        self.expansions = 0
        self.root: dict[str, Any] = {}
        self.strict = False

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
        for name, prop in properties.items():
            if isinstance(prop, dict) and isinstance(prop.get("description"), str) and indent < 2:
                if prop["description"]:
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
                return " | ".join(str(value) for value in prop["enum"])
            return "number"
        if kind in ("boolean", "null"):
            return str(kind)
        if kind == "object":
            return "\n".join(["{", self.properties(prop, indent + 2), "}"])
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


def choice_tokens(tool_choice: object, framing: Framing = FRAMINGS["o200k_base"]) -> tuple[list[str], int, bool]:
    """What ``tool_choice`` / ``function_call`` adds: texts, fixed tokens, exact.
    ``"none"`` adds ``choice_none``; a named function ``choice_named`` plus its
    name; ``"auto"`` or absent nothing; ``"required"`` is not published (bounded
    by ``choice_required``).  Raises ``InvalidRequest`` (param ``tool_choice``)
    for anything else."""
    if tool_choice is None or tool_choice == "auto":
        return [], 0, True
    if tool_choice == "none":
        return [], framing.choice_none, True
    if tool_choice == "required":
        return [], framing.choice_required, False
    if isinstance(tool_choice, dict) and tool_choice.get("type", "function") == "function":
        function = tool_choice.get("function") if "function" in tool_choice else tool_choice
        name = function.get("name") if isinstance(function, dict) else None
        if isinstance(name, str) and name:
            return [name], framing.choice_named, True
    raise InvalidRequest("'tool_choice' must be 'none', 'auto', 'required' or name a function.", param="tool_choice")


def _checked_choice(
    functions: list[dict[str, Any]], tool_choice: object, framing: Framing
) -> tuple[list[str], int, bool]:
    texts, fixed, exact = choice_tokens(tool_choice, framing)
    if texts and texts[0] not in {function["name"] for function in functions}:
        raise InvalidRequest(f"'tool_choice' names {texts[0]!r}, which is not defined.", param="tool_choice")
    if not functions and fixed and tool_choice != "none":
        raise InvalidRequest("'tool_choice' asks for a tool but no tools are defined.", param="tool_choice")
    return texts, fixed, exact


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
    first system message: ``system_reuse`` fewer tokens, and that message's
    text gains a newline.  Pass its text as ``system_content`` to count the
    newline exactly; without it the newline is bounded by two tokens (an
    empirical bound, see ``_NEWLINE_BOUND``) and the count is not exact.  An
    encoding outside ``FRAMINGS`` gets the largest constants and ``exact``
    False.  Raises ``InvalidRequest`` for a ``tool_choice`` that is malformed,
    names an undefined function, or asks for a tool when there are none."""
    framing = FRAMINGS.get(encoding.name)
    exact = framing is not None
    framing = framing or _WORST
    texts, fixed, choice_exact = _checked_choice(functions, tool_choice, framing)
    if not functions:
        # "none" with no tools is what no tools means: nothing is rendered.
        return 0, True
    text, rendered_exact = render(functions)
    count = len(encoding.encode_ordinary(text)) + framing.definitions + fixed
    count += sum(len(encoding.encode_ordinary(t)) for t in texts)
    if has_system:
        count -= framing.system_reuse
        if system_content is None:
            count += _NEWLINE_BOUND
            exact = False
        else:
            padded = len(encoding.encode_ordinary(system_content + "\n"))
            count += padded - len(encoding.encode_ordinary(system_content))
    return count, exact and rendered_exact and choice_exact


def bound_tokens(functions: list[dict[str, Any]], *, tool_choice: object = None) -> int:
    """An upper bound on ``tools_tokens`` for any byte-level BPE encoding,
    without a tokenizer: the UTF-8 bytes of the rendering (every token covers
    at least one byte) plus the largest framing, no system-message saving and
    the bound for the system message's newline.  Raises ``InvalidRequest`` as
    ``tools_tokens`` does."""
    texts, fixed, _ = _checked_choice(functions, tool_choice, _WORST)
    if not functions:
        return 0
    text, _ = render(functions)
    size = sum(len(t.encode("utf-8", "surrogatepass")) for t in (text, *texts))
    return size + _WORST.definitions + _NEWLINE_BOUND + fixed


def add_to(builder: Any, functions: list[dict[str, Any]], *, has_system: bool, tool_choice: object) -> None:
    """Add the definitions' rendering and framing to a chat ``shapes._Builder``
    (which pads the system message itself)."""
    text, exact = render(functions)
    texts, fixed, choice_exact = _checked_choice(functions, tool_choice, FRAMINGS["o200k_base"])
    builder.texts.append(text)
    builder.texts.extend(texts)
    builder.fixed += FRAMING - (SYSTEM_REUSE if has_system else 0) + fixed
    builder.exact = builder.exact and exact and choice_exact
