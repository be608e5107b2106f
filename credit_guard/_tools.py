"""Tool and function definitions as OpenAI's models see them.

The models never see the JSON schema.  The definitions are rendered into the
prompt as a TypeScript-like block:

    namespace functions {

    // Get the current weather in a given location
    type get_current_weather = (_: {
    // The city and state, e.g. San Francisco, CA
    location: string,
    unit?: "celsius" | "fahrenheit",
    }) => any;

    } // namespace functions

one ``type name = (_: {...}) => any;`` per function (``() => any`` without
parameters), a ``//`` line for each description (a property's only at the top
level: nested ones are dropped), ``key: type,`` for required and ``key?: type,`` for
optional properties, enums as unions, nested objects inline and indented by
two, arrays as ``T[]``.  Around it sits a fixed framing: ``FRAMING`` tokens,
``SYSTEM_REUSE`` fewer when the prompt already has a system message (the block
joins it instead of opening one), whose text then gains a trailing newline.
The constants are fitted to OpenAI's published counts: the cookbook's
weather-tool example counts 101 on gpt-4o / gpt-4o-mini (o200k_base) and 105 on
gpt-4 / gpt-3.5-turbo (cl100k_base).

Schema constructs whose rendering is not published (``anyOf``, ``oneOf``,
``allOf``, ``$ref``, ``format``, ``const``, ``pattern``, type lists...) are
rendered as their compact JSON text instead, which makes the count a bound
(``exact`` False): JSON text spells out every key, quote and brace the
TypeScript form drops, so it is never shorter in tokens (the property test in
``tests/test_tools.py`` checks this on random schemas).
"""

from __future__ import annotations

from typing import Any

import orjson

from .errors import InvalidRequest

__all__ = ["FRAMING", "SYSTEM_REUSE", "function_definitions", "render", "add_to", "choice_tokens"]

#: Tokens the definitions' framing adds to a chat prompt.
FRAMING = 9
#: Tokens fewer when the prompt already has a system message.
SYSTEM_REUSE = 4
# Keys of a property schema whose effect on the rendering is known.
_KNOWN_KEYS = frozenset({"type", "description", "enum", "properties", "required", "items", "title", "default"})
_KNOWN_TYPES = frozenset({"string", "number", "integer", "boolean", "null", "object", "array"})


def function_definitions(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The functions a chat request defines (``tools`` of type function, or the
    legacy ``functions``), as ``{"name", "description"?, "parameters"?}``.
    Raises ``InvalidRequest`` naming the field for a malformed definition or a
    tool type that cannot be priced."""
    found: list[dict[str, Any]] = []
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise InvalidRequest("'tools' must be a list.", param="tools")
        for index, tool in enumerate(tools):
            param = f"tools[{index}]"
            if not isinstance(tool, dict) or tool.get("type") != "function":
                kind = tool.get("type") if isinstance(tool, dict) else None
                raise InvalidRequest(f"Tools of type {kind!r} cannot be priced by this gateway.", param=param)
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
    definition: dict[str, Any] = {"name": name}
    if description:
        definition["description"] = description
    if parameters is not None:
        definition["parameters"] = parameters
    if function.get("strict") is True:
        # Strict mode compiles the schema into a grammar; what the prompt sees
        # is not published.
        definition["strict"] = True
    return definition


def render(functions: list[dict[str, Any]], *, bound: bool = False) -> tuple[str, bool]:
    """The namespace block, and whether it is the exact rendering.  With
    ``bound``, every property type is written as JSON text (the upper bound
    used for unknown constructs, applied everywhere)."""
    renderer = _Renderer(bound)
    lines = ["namespace functions {", ""]
    for function in functions:
        if function.get("description"):
            lines.append(f"// {function['description']}")
        parameters = function.get("parameters") or {}
        if function.get("strict"):
            renderer.exact = False
        if _has_unknown_keys(parameters, top=True):
            renderer.exact = False
        if parameters.get("properties"):
            lines.append(f"type {function['name']} = (_: {{")
            lines.append(renderer.properties(parameters, 0))
            lines.append("}) => any;")
        else:
            lines.append(f"type {function['name']} = () => any;")
        lines.append("")
    lines.append("} // namespace functions")
    return "\n".join(lines), renderer.exact


def _has_unknown_keys(schema: dict[str, Any], *, top: bool = False) -> bool:
    allowed = _KNOWN_KEYS | ({"additionalProperties", "$schema"} if top else set())
    return any(key not in allowed for key in schema)


class _Renderer:
    def __init__(self, bound: bool) -> None:
        self.bound = bound
        self.exact = not bound

    def properties(self, schema: dict[str, Any], indent: int) -> str:
        lines: list[str] = []
        properties = schema.get("properties") or {}
        required = schema.get("required") or []
        if not isinstance(properties, dict) or not isinstance(required, list):
            self.exact = False
            return " " * indent + _json(schema)
        for name, prop in properties.items():
            if isinstance(prop, dict) and prop.get("description") and indent < 2:
                lines.append(f"// {prop['description']}")
            mark = "" if name in required else "?"
            lines.append(f"{name}{mark}: {self.type(prop, indent)},")
        return "\n".join(" " * indent + line for line in lines)

    def type(self, prop: object, indent: int) -> str:
        if self.bound or not isinstance(prop, dict) or not self._known(prop):
            self.exact = False
            return _json(prop)
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

    def _known(self, prop: dict[str, Any]) -> bool:
        kind = prop.get("type")
        if not isinstance(kind, str) or kind not in _KNOWN_TYPES or _has_unknown_keys(prop):
            return False
        enum = prop.get("enum")
        if enum is not None:
            if kind not in ("string", "number", "integer") or not isinstance(enum, list) or not enum:
                return False
            if kind == "string" and not all(isinstance(v, str) for v in enum):
                return False
            if kind != "string" and not all(isinstance(v, int | float) and not isinstance(v, bool) for v in enum):
                return False
        return not (kind == "object" and not isinstance(prop.get("properties", {}), dict))


def _json(value: object) -> str:
    return orjson.dumps(value).decode()


def choice_tokens(tool_choice: object) -> tuple[list[str], int, bool]:
    """What ``tool_choice`` / ``function_call`` adds: texts, fixed tokens, exact.
    ``"none"`` adds 1; a named function 4 plus its name; ``"auto"`` nothing;
    ``"required"`` is not published (bounded by 4 plus a margin)."""
    if tool_choice is None or tool_choice == "auto":
        return [], 0, True
    if tool_choice == "none":
        return [], 1, True
    if tool_choice == "required":
        return ["required"], 8, False
    if isinstance(tool_choice, dict):
        function = tool_choice.get("function") if "function" in tool_choice else tool_choice
        name = function.get("name") if isinstance(function, dict) else None
        if isinstance(name, str) and name:
            return [name], 4, True
    raise InvalidRequest("'tool_choice' must be 'none', 'auto', 'required' or name a function.", param="tool_choice")


def add_to(builder: Any, functions: list[dict[str, Any]], *, has_system: bool, tool_choice: object) -> None:
    """Add the definitions' rendering and framing to a chat ``shapes._Builder``."""
    text, exact = render(functions)
    names = {function["name"] for function in functions}
    texts, fixed, choice_exact = choice_tokens(tool_choice)
    if texts and fixed == 4 and texts[0] not in names:
        raise InvalidRequest(f"'tool_choice' names {texts[0]!r}, which is not defined.", param="tool_choice")
    builder.texts.append(text)
    builder.texts.extend(texts)
    builder.fixed += FRAMING - (SYSTEM_REUSE if has_system else 0) + fixed
    builder.exact = builder.exact and exact and choice_exact
