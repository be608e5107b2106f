"""Anthropic Messages (``/v1/messages``): no public tokenizer, always a bound."""

from __future__ import annotations

from typing import Any

from ..errors import InvalidRequest
from .ask import Ask, _Builder
from .fields import _bool, _cache_control, _image, _model, _positive_int


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
    _cache_control(body, out, "")  # automatic caching marks the whole prompt
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
            _cache_control(tool, out, f"tools[{index}]")
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
    _cache_control(block, out, param)
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
        nested = block.get("content")
        for index, item in enumerate(nested if isinstance(nested, list) else ()):
            if isinstance(item, dict):
                _cache_control(item, out, f"{param}.content[{index}]")
        out.json(block)
    else:
        raise InvalidRequest(f"Content blocks of type {kind!r} cannot be priced here.", param=param)
