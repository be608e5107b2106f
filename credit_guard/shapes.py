"""Request bodies of every priced API turned into one normalized ``Ask``.

``parse(kind, body)`` validates the fields that decide the price and reduces the
body to what ``tokens.count_input`` counts: the texts the model reads, the
fixed framing tokens around them, the images, and the output cap.  Everything
that can change the bill is either priced or refused with ``InvalidRequest``
naming the field; nothing is priced at zero because it was not understood.
Fields that cannot change the bill (temperature, user, metadata...) pass.

The chat framing is OpenAI's: 3 tokens per message, 1 more per ``name``, 3 to
prime the reply, and every string field of a message (role, content, name)
encoded as text.  Renderings OpenAI does not publish (tool calls in the
history, ``response_format`` schemas, the Responses API's items) are counted
from their JSON text plus a margin and make the count inexact.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from . import _tools
from ._images import image_size
from .errors import InvalidRequest

__all__ = ["Ask", "ImageRef", "parse", "KINDS"]

KINDS = ("chat", "completion", "embedding", "responses", "anthropic")

#: The most choices (``n``) a request may ask for.
MAX_CHOICES = 128
# Chat framing (OpenAI cookbook).
_PER_MESSAGE = 3
_PER_NAME = 1
_REPLY_PRIMING = 3
# Margin added to each piece counted from JSON text instead of its (unpublished)
# rendering.
_JSON_MARGIN = 16
_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})


@dataclass(frozen=True, slots=True)
class ImageRef:
    """One input image.  ``width``/``height`` are known only for inline base64
    images whose header was read; ``detail`` is ``"low"``, ``"high"`` or ``"auto"``."""

    detail: str = "auto"
    width: int | None = None
    height: int | None = None


@dataclass(frozen=True, slots=True)
class Ask:
    """What one request asks for, as far as its price goes.

    ``kind``: one of ``KINDS``.  ``output_tokens`` is the request's own output
    cap (None if it sets none) and ``output_param`` the field that sets it.
    ``choices`` is how many outputs the cap applies to.  ``stream`` is true for
    a streamed response; ``include_usage`` when a chat stream asked for usage.
    The rest is what ``tokens.count_input`` counts: ``texts`` (encoded),
    ``fixed_tokens`` (framing), ``images``, ``parts`` (messages or items, for
    the per-part margin of bounded models), and ``exact`` (False where a
    rendering is bounded rather than known).
    """

    kind: str
    model: str
    output_tokens: int | None = None
    output_param: str | None = None
    choices: int = 1
    stream: bool = False
    include_usage: bool = False
    texts: tuple[str, ...] = ()
    fixed_tokens: int = 0
    images: tuple[ImageRef, ...] = ()
    parts: int = 0
    exact: bool = True


class _Builder:
    """Collects the counting payload while a body is walked."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.fixed = 0
        self.images: list[ImageRef] = []
        self.parts = 0
        self.exact = True

    def text(self, value: str) -> None:
        if value:
            self.texts.append(value)

    def json(self, value: Any) -> None:
        """A piece whose rendering is unknown: its JSON text plus a margin."""
        self.texts.append(orjson.dumps(value).decode())
        self.fixed += _JSON_MARGIN
        self.exact = False

    def ask(self, kind: str, model: str, **fields: Any) -> Ask:
        """The ``Ask`` with this payload (``fields``: the output cap and the rest)."""
        return Ask(
            kind=kind,
            model=model,
            texts=tuple(self.texts),
            fixed_tokens=self.fixed,
            images=tuple(self.images),
            parts=self.parts,
            exact=fields.pop("exact", self.exact),
            **fields,
        )


def parse(kind: str, body: object) -> Ask:
    """The ``Ask`` of a request body of shape ``kind``.  Raises ``InvalidRequest``
    with ``param`` naming the field for anything that cannot be priced."""
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.", param=None)
    parser = _PARSERS.get(kind)
    if parser is None:
        raise ValueError(f"unknown request shape {kind!r}")
    return parser(body)


# -- field checks --------------------------------------------------------------


def _model(body: dict[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise InvalidRequest("'model' is required and must be a non-empty string.", param="model")
    return model


def _positive_int(body: dict[str, Any], name: str, *, upper: int | None = None) -> int | None:
    if name not in body or body[name] is None:
        return None
    value = body[name]
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequest(f"'{name}' must be a positive integer, not {_describe(value)}.", param=name)
    if value < 1:
        raise InvalidRequest(f"'{name}' must be at least 1, not {value}.", param=name)
    if upper is not None and value > upper:
        raise InvalidRequest(f"'{name}' must be at most {upper}, not {value}.", param=name)
    return value


def _describe(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, float):
        return f"the number {value!r}"
    if isinstance(value, str):
        return "a string"
    return type(value).__name__ if value is not None else "null"


def _bool(body: dict[str, Any], name: str) -> bool:
    value = body.get(name, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise InvalidRequest(f"'{name}' must be a boolean.", param=name)
    return value


def _refuse_fields(body: dict[str, Any], fields: dict[str, str]) -> None:
    for name, why in fields.items():
        if body.get(name) not in (None, False, [], {}):
            raise InvalidRequest(f"'{name}' cannot be priced by this gateway: {why}.", param=name)


def _service_tier(body: dict[str, Any]) -> None:
    tier = body.get("service_tier")
    if tier not in (None, "auto", "default", "flex"):
        raise InvalidRequest(
            f"'service_tier' {tier!r} is billed above the listed prices and cannot be priced here.",
            param="service_tier",
        )


def _image(url: object, detail: object, param: str) -> ImageRef:
    if not isinstance(url, str) or not url:
        raise InvalidRequest("An image needs a non-empty 'url'.", param=param)
    if detail is None:
        detail = "auto"
    if detail not in ("low", "high", "auto"):
        raise InvalidRequest("'detail' must be 'low', 'high' or 'auto'.", param=param)
    size = image_size(url) if url.startswith("data:") else None
    if size is None:
        return ImageRef(detail=str(detail))
    return ImageRef(detail=str(detail), width=size[0], height=size[1])


# -- chat completions ----------------------------------------------------------

_CHAT_REFUSED = {
    "audio": "audio output is billed per audio token",
    "prediction": "predicted outputs bill rejected prediction tokens as output beyond the cap",
    "web_search_options": "web search is billed per call",
}


def _chat(body: dict[str, Any]) -> Ask:
    model = _model(body)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("'messages' must be a non-empty list.", param="messages")
    _refuse_fields(body, _CHAT_REFUSED)
    modalities = body.get("modalities")
    if modalities is not None and (not isinstance(modalities, list) or any(m != "text" for m in modalities)):
        raise InvalidRequest("Only text output ('modalities': ['text']) can be priced.", param="modalities")
    _service_tier(body)
    functions = _tools.function_definitions(body)
    out = _builder_for_chat(messages, pad_system=bool(functions))
    if functions:
        _tools.add_to(out, functions, has_system=_has_system(messages), tool_choice=_tool_choice(body))
    elif _tool_choice(body) not in (None, "none", "auto"):
        raise InvalidRequest("'tool_choice' names a tool but no tools are defined.", param="tool_choice")
    _response_format(body, out)

    cap = _positive_int(body, "max_completion_tokens")
    param = "max_completion_tokens"
    if cap is None:
        cap = _positive_int(body, "max_tokens")
        param = "max_tokens" if cap is not None or "max_completion_tokens" not in body else param
    choices = _positive_int(body, "n", upper=MAX_CHOICES) or 1
    stream = _bool(body, "stream")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise InvalidRequest("'stream_options' must be an object.", param="stream_options")
    include_usage = bool(options and options.get("include_usage") is True)
    return out.ask(
        "chat",
        model,
        output_tokens=cap,
        output_param=param,
        choices=choices,
        stream=stream,
        include_usage=include_usage,
    )


def _has_system(messages: list[Any]) -> bool:
    return any(isinstance(m, dict) and m.get("role") in ("system", "developer") for m in messages)


def _tool_choice(body: dict[str, Any]) -> object:
    if "tool_choice" in body:
        return body["tool_choice"]
    return body.get("function_call")


def _response_format(body: dict[str, Any], out: _Builder) -> None:
    fmt = body.get("response_format")
    if fmt is None:
        return
    if not isinstance(fmt, dict) or not isinstance(fmt.get("type"), str):
        raise InvalidRequest("'response_format' must be an object with a 'type'.", param="response_format")
    if fmt["type"] == "json_schema":
        # The schema is shown to the model in a rendering OpenAI does not publish.
        out.json(fmt.get("json_schema"))
    elif fmt["type"] not in ("text", "json_object"):
        raise InvalidRequest(f"Unknown response_format type {fmt['type']!r}.", param="response_format")


def _builder_for_chat(messages: list[Any], *, pad_system: bool = False) -> _Builder:
    """Chat framing.  With ``pad_system`` (tool definitions present), the first
    system message's text gains a trailing newline, as OpenAI renders it."""
    out = _Builder()
    out.fixed = _REPLY_PRIMING
    for index, message in enumerate(messages):
        param = f"messages[{index}]"
        if not isinstance(message, dict):
            raise InvalidRequest("Each message must be an object.", param=param)
        role = message.get("role")
        if role not in _ROLES:
            raise InvalidRequest(f"Unknown message role {role!r}.", param=f"{param}.role")
        out.parts += 1
        out.fixed += _PER_MESSAGE
        out.text(role)
        content = message.get("content")
        if pad_system and role in ("system", "developer"):
            pad_system = False
            if isinstance(content, str):
                content += "\n"
            else:
                out.exact = False
        _chat_content(content, out, f"{param}.content")
        name = message.get("name")
        if name is not None:
            if not isinstance(name, str):
                raise InvalidRequest("'name' must be a string.", param=f"{param}.name")
            out.text(name)
            out.fixed += _PER_NAME
        if message.get("refusal") is not None:
            if not isinstance(message["refusal"], str):
                raise InvalidRequest("'refusal' must be a string.", param=f"{param}.refusal")
            out.text(message["refusal"])
        for key in ("tool_calls", "function_call", "audio"):
            if message.get(key) is not None:
                if key == "audio":
                    raise InvalidRequest("Audio in the history cannot be priced.", param=f"{param}.audio")
                out.json(message[key])
        if message.get("tool_call_id") is not None:
            if not isinstance(message["tool_call_id"], str):
                raise InvalidRequest("'tool_call_id' must be a string.", param=f"{param}.tool_call_id")
            out.text(message["tool_call_id"])
            out.fixed += _JSON_MARGIN
            out.exact = False
    return out


def _chat_content(content: object, out: _Builder, param: str) -> None:
    if content is None:
        return
    if isinstance(content, str):
        out.text(content)
        return
    if not isinstance(content, list):
        raise InvalidRequest("'content' must be a string or a list of content parts.", param=param)
    for index, part in enumerate(content):
        where = f"{param}[{index}]"
        if not isinstance(part, dict):
            raise InvalidRequest("Each content part must be an object.", param=where)
        kind = part.get("type")
        if kind in ("text", "refusal"):
            text = part.get(kind)
            if not isinstance(text, str):
                raise InvalidRequest(f"A {kind} part needs a string '{kind}'.", param=where)
            out.text(text)
        elif kind == "image_url":
            image = part.get("image_url")
            if isinstance(image, str):
                image = {"url": image}
            if not isinstance(image, dict):
                raise InvalidRequest("An image_url part needs an 'image_url' object.", param=where)
            out.images.append(_image(image.get("url"), image.get("detail"), where))
        elif kind in ("input_audio", "file", "audio"):
            raise InvalidRequest(f"Content parts of type {kind!r} cannot be priced by this gateway.", param=where)
        else:
            raise InvalidRequest(f"Unknown content part type {kind!r}.", param=where)


# -- completions ---------------------------------------------------------------

#: The output cap of the completions API when the request sets none.
COMPLETIONS_DEFAULT_MAX_TOKENS = 16


def _completion(body: dict[str, Any]) -> Ask:
    model = _model(body)
    if "prompt" not in body:
        raise InvalidRequest("'prompt' is required.", param="prompt")
    out = _Builder()
    prompts = _prompt_list(body["prompt"], out, "prompt")
    suffix = body.get("suffix")
    if suffix is not None:
        if not isinstance(suffix, str):
            raise InvalidRequest("'suffix' must be a string.", param="suffix")
        out.text(suffix)
    cap = _positive_int(body, "max_tokens")
    n = _positive_int(body, "n", upper=MAX_CHOICES) or 1
    best_of = _positive_int(body, "best_of", upper=20)
    if best_of is not None and best_of < n:
        raise InvalidRequest("'best_of' must be at least 'n'.", param="best_of")
    _service_tier(body)
    out.parts = prompts
    return out.ask(
        "completion",
        model,
        output_tokens=cap if cap is not None else COMPLETIONS_DEFAULT_MAX_TOKENS,
        output_param="max_tokens",
        # best_of completions are generated (and billed) per prompt.
        choices=max(n, best_of or 1) * prompts,
        stream=_bool(body, "stream"),
    )


def _prompt_list(value: object, out: _Builder, param: str, *, limit: int = 2048) -> int:
    """Add a prompt (string, strings, token array or token arrays); returns how
    many prompts it holds."""
    if isinstance(value, str):
        out.text(value)
        return 1
    if not isinstance(value, list) or not value:
        raise InvalidRequest(f"'{param}' must be a string, a list of strings or token arrays.", param=param)
    if len(value) > limit:
        raise InvalidRequest(f"'{param}' may hold at most {limit} items.", param=param)
    if all(_is_token(t) for t in value):
        out.fixed += len(value)
        return 1
    for index, item in enumerate(value):
        if isinstance(item, str):
            out.text(item)
        elif isinstance(item, list) and all(_is_token(t) for t in item):
            out.fixed += len(item)
        else:
            raise InvalidRequest(f"'{param}' items must be strings or token arrays.", param=f"{param}[{index}]")
    return len(value)


def _is_token(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


# -- embeddings ----------------------------------------------------------------


def _embedding(body: dict[str, Any]) -> Ask:
    model = _model(body)
    if "input" not in body:
        raise InvalidRequest("'input' is required.", param="input")
    out = _Builder()
    items = _prompt_list(body["input"], out, "input")
    dimensions = body.get("dimensions")
    if dimensions is not None:
        _positive_int(body, "dimensions")
    out.parts = items
    return out.ask("embedding", model, output_tokens=0, output_param=None)


# -- Responses API --------------------------------------------------------------

_RESPONSES_REFUSED = {
    "previous_response_id": "the earlier conversation is billed as input but is not in this request",
    "conversation": "the stored conversation is billed as input but is not in this request",
    "background": "a background response reports its usage later, outside this request",
    "prompt": "a stored prompt template is billed as input but is not in this request",
}


def _responses(body: dict[str, Any]) -> Ask:
    model = _model(body)
    _refuse_fields(body, _RESPONSES_REFUSED)
    _service_tier(body)
    out = _Builder()
    # OpenAI does not publish how items are framed: chat framing plus a margin
    # per item, so the count is a bound.
    out.fixed = _REPLY_PRIMING
    out.exact = False
    instructions = body.get("instructions")
    if instructions is not None:
        if not isinstance(instructions, str):
            raise InvalidRequest("'instructions' must be a string.", param="instructions")
        out.text(instructions)
        out.fixed += _PER_MESSAGE + _JSON_MARGIN
        out.parts += 1
    items = body.get("input")
    if isinstance(items, str):
        out.text(items)
        out.fixed += _PER_MESSAGE + _JSON_MARGIN
        out.parts += 1
    elif isinstance(items, list) and items:
        for index, item in enumerate(items):
            _response_item(item, out, f"input[{index}]")
    else:
        raise InvalidRequest("'input' must be a string or a non-empty list of items.", param="input")
    tools = body.get("tools")
    if tools:
        if not isinstance(tools, list):
            raise InvalidRequest("'tools' must be a list.", param="tools")
        for index, tool in enumerate(tools):
            if not isinstance(tool, dict) or tool.get("type") != "function":
                kind = tool.get("type") if isinstance(tool, dict) else None
                raise InvalidRequest(
                    f"Tools of type {kind!r} are billed per call and cannot be priced here.",
                    param=f"tools[{index}]",
                )
            out.json(tool)
    text = body.get("text")
    if isinstance(text, dict) and isinstance(text.get("format"), dict) and text["format"].get("type") == "json_schema":
        out.json(text["format"])
    cap = _positive_int(body, "max_output_tokens")
    return out.ask(
        "responses",
        model,
        output_tokens=cap,
        output_param="max_output_tokens",
        stream=_bool(body, "stream"),
        include_usage=True,
        exact=False,
    )


def _response_item(item: object, out: _Builder, param: str) -> None:
    if not isinstance(item, dict):
        raise InvalidRequest("Each input item must be an object.", param=param)
    kind = item.get("type", "message")
    out.parts += 1
    out.fixed += _PER_MESSAGE + _JSON_MARGIN
    if kind == "message":
        role = item.get("role")
        if role not in ("user", "assistant", "system", "developer"):
            raise InvalidRequest(f"Unknown input role {role!r}.", param=f"{param}.role")
        out.text(role)
        content = item.get("content")
        if isinstance(content, str):
            out.text(content)
            return
        if not isinstance(content, list):
            raise InvalidRequest("'content' must be a string or a list of parts.", param=f"{param}.content")
        for index, part in enumerate(content):
            where = f"{param}.content[{index}]"
            if not isinstance(part, dict):
                raise InvalidRequest("Each content part must be an object.", param=where)
            ptype = part.get("type")
            if ptype in ("input_text", "output_text", "text", "refusal"):
                text = part.get("text", part.get("refusal"))
                if not isinstance(text, str):
                    raise InvalidRequest("A text part needs a string 'text'.", param=where)
                out.text(text)
            elif ptype == "input_image":
                if part.get("image_url") is None:
                    raise InvalidRequest("Only images given by 'image_url' can be priced.", param=where)
                out.images.append(_image(part.get("image_url"), part.get("detail"), where))
            else:
                raise InvalidRequest(f"Content parts of type {ptype!r} cannot be priced here.", param=where)
    elif kind in ("function_call", "function_call_output"):
        out.json(item)
    else:
        raise InvalidRequest(f"Input items of type {kind!r} cannot be priced here.", param=f"{param}.type")


# -- Anthropic Messages ---------------------------------------------------------


def _anthropic(body: dict[str, Any]) -> Ask:
    model = _model(body)
    cap = _positive_int(body, "max_tokens")
    if cap is None:
        raise InvalidRequest("'max_tokens' is required.", param="max_tokens")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("'messages' must be a non-empty list.", param="messages")
    out = _Builder()
    out.exact = False  # no public tokenizer for Claude: always a bound
    system = body.get("system")
    if isinstance(system, str):
        out.text(system)
        out.parts += 1
    elif isinstance(system, list):
        out.parts += 1
        for index, block in enumerate(system):
            _anthropic_block(block, out, f"system[{index}]")
    elif system is not None:
        raise InvalidRequest("'system' must be a string or a list of text blocks.", param="system")
    for index, message in enumerate(messages):
        param = f"messages[{index}]"
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            raise InvalidRequest("Each message needs a 'role' of 'user' or 'assistant'.", param=param)
        out.parts += 1
        content = message.get("content")
        if isinstance(content, str):
            out.text(content)
        elif isinstance(content, list):
            for number, block in enumerate(content):
                _anthropic_block(block, out, f"{param}.content[{number}]")
        else:
            raise InvalidRequest("'content' must be a string or a list of blocks.", param=f"{param}.content")
    tools = body.get("tools")
    if tools:
        if not isinstance(tools, list):
            raise InvalidRequest("'tools' must be a list.", param="tools")
        for index, tool in enumerate(tools):
            if not isinstance(tool, dict) or "input_schema" not in tool or tool.get("type") not in (None, "custom"):
                raise InvalidRequest(
                    "Only client tools (with an 'input_schema') can be priced; server tools bill per use.",
                    param=f"tools[{index}]",
                )
            out.json(tool)
    return out.ask(
        "anthropic",
        model,
        output_tokens=cap,
        output_param="max_tokens",
        stream=_bool(body, "stream"),
        include_usage=True,
        exact=False,
    )


def _anthropic_block(block: object, out: _Builder, param: str) -> None:
    if not isinstance(block, dict):
        raise InvalidRequest("Each content block must be an object.", param=param)
    kind = block.get("type")
    if kind == "text":
        if not isinstance(block.get("text"), str):
            raise InvalidRequest("A text block needs a string 'text'.", param=param)
        out.text(block["text"])
    elif kind in ("thinking", "redacted_thinking"):
        out.text(str(block.get("thinking", block.get("data", ""))))
    elif kind == "image":
        source = block.get("source")
        if not isinstance(source, dict):
            raise InvalidRequest("An image block needs a 'source'.", param=param)
        if source.get("type") == "base64" and isinstance(source.get("data"), str):
            url = f"data:{source.get('media_type', 'image/png')};base64,{source['data'][:8192]}"
            out.images.append(_image(url, "auto", param))
        elif source.get("type") == "url":
            out.images.append(_image(source.get("url"), "auto", param))
        else:
            raise InvalidRequest("Only base64 and url image sources can be priced.", param=param)
    elif kind in ("tool_use", "tool_result"):
        out.json(block)
    else:
        raise InvalidRequest(f"Content blocks of type {kind!r} cannot be priced here.", param=param)


_PARSERS: dict[str, Callable[[dict[str, Any]], Ask]] = {
    "chat": _chat,
    "completion": _completion,
    "embedding": _embedding,
    "responses": _responses,
    "anthropic": _anthropic,
}
