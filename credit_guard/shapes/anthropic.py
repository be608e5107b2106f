"""Anthropic Messages (``/v1/messages``): no public tokenizer, always a bound.

Texts are counted as their UTF-8 bytes (``tokens.count_input``); system blocks,
tool definitions and tool_use / tool_result blocks as the full JSON text the
provider receives (every field, ``cache_control`` included).  With tools, the
``tool_choice`` type goes into the ``Ask`` so that the tool-use system prompt
Anthropic adds is priced for the resolved model (``credit_guard._anthropic``).
"""

from __future__ import annotations

from typing import Any

from .._anthropic import TOOL_CHOICES
from ..errors import InvalidRequest
from .ask import Ask, ImageRef, _Builder
from .fields import (
    ANTHROPIC_VARIANTS,
    WEB_SEARCH,
    Refused,
    _bool,
    _cache_control,
    _image,
    _model,
    _positive_int,
    body_policy,
    policy,
)

# tool_choice is priced: it picks the size of the tool-use system prompt
# Anthropic adds (``_anthropic.tool_prompt_tokens``).
BODY = body_policy(
    priced="model messages max_tokens system tools tool_choice stream service_tier cache_control",
    # thinking tokens bill as output and stay under max_tokens, which is held.
    free="temperature top_p top_k stop_sequences metadata thinking",
    refused={
        "mcp_servers": Refused("MCP servers bill their tools' calls and results outside this request", (None, [])),
        "container": Refused("code execution containers are billed per session"),
        **ANTHROPIC_VARIANTS,
    },
)
MESSAGE = policy(priced="role content")
# Client tools (their JSON text is counted whole); the policy refuses a "Type"
# that a case-blind upstream would read as a server tool's type.
TOOL = policy(priced="type name description input_schema cache_control")
BLOCKS = {
    "text": policy(priced="type text cache_control"),
    "image": policy(priced="type source cache_control"),
    "thinking": policy(priced="type thinking signature"),
    "redacted_thinking": policy(priced="type data"),
    "tool_use": policy(priced="type id name input cache_control"),
    "tool_result": policy(priced="type tool_use_id content is_error cache_control"),
}
# Block types that bill in ways no token price expresses.
_REFUSED_BLOCKS = {
    "document": "documents are billed per page as text and images",
    "container_upload": "code execution containers are billed per session",
    "server_tool_use": "server tools are billed per use",
    "web_search_tool_result": WEB_SEARCH.why,
    "web_fetch_tool_result": "server tools are billed per use",
    "code_execution_tool_result": "code execution is billed per session",
    "mcp_tool_use": "MCP tools bill outside this request",
    "mcp_tool_result": "MCP tools bill outside this request",
}
# Anthropic's service tiers: "auto" (the default) and "standard_only" bill at
# the listed prices.
_TIERS = (None, "auto", "standard_only")


def _anthropic(body: dict[str, Any]) -> Ask:
    model = _model(body)
    cap = _positive_int(body, "max_tokens")
    if cap is None:
        raise InvalidRequest("'max_tokens' is required.", param="max_tokens")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("'messages' must be a non-empty list.", param="messages")
    out = _Builder()
    BODY.apply(body, out)
    if body.get("service_tier") not in _TIERS:
        raise InvalidRequest(f"'service_tier' {body['service_tier']!r} cannot be priced here.", param="service_tier")
    out.exact = False  # no public tokenizer for Claude: always a bound
    _cache_control(body, out, "")  # automatic caching marks the whole prompt
    system = body.get("system")
    if isinstance(system, str):
        out.text(system)
        out.parts += 1
    elif isinstance(system, list):
        out.parts += 1
        for index, block in enumerate(system):
            if not isinstance(block, dict) or block.get("type") != "text" or not isinstance(block.get("text"), str):
                raise InvalidRequest("Each system block must be a text block.", param=f"system[{index}]")
            _cache_control(block, out, f"system[{index}]")
            out.json(_unmarked(block))
    elif system is not None:
        raise InvalidRequest("'system' must be a string or a list of text blocks.", param="system")
    for index, message in enumerate(messages):
        param = f"messages[{index}]"
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            raise InvalidRequest("Each message needs a 'role' of 'user' or 'assistant'.", param=param)
        MESSAGE.apply(message, out, param)
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
    tool_choice = _tool_choice(body.get("tool_choice")) if tools else None
    if tools is not None:
        if not isinstance(tools, list):
            raise InvalidRequest("'tools' must be a list.", param="tools")
        for index, tool in enumerate(tools):
            if not isinstance(tool, dict) or "input_schema" not in tool or tool.get("type") not in (None, "custom"):
                raise InvalidRequest(
                    "Only client tools (with an 'input_schema') can be priced; server tools bill per use.",
                    param=f"tools[{index}]",
                )
            TOOL.apply(tool, out, f"tools[{index}]")
            _cache_control(tool, out, f"tools[{index}]")
            out.json(_unmarked(tool))
    return out.ask(
        "anthropic",
        model,
        output_tokens=cap,
        output_param="max_tokens",
        stream=_bool(body, "stream"),
        include_usage=True,
        exact=False,
        tool_choice=tool_choice,
    )


def _unmarked(block: dict[str, Any]) -> dict[str, Any]:
    """``block`` as counted: its ``cache_control`` mark is priced as a cache
    write (``_cache_control``), not read by the model."""
    if "cache_control" not in block:
        return block
    return {key: value for key, value in block.items() if key != "cache_control"}


def _tool_choice(value: object) -> str:
    """The ``tool_choice`` type ("" when absent): it decides the size of the
    tool-use system prompt."""
    if value is None:
        return ""
    kind = value.get("type") if isinstance(value, dict) else None
    if kind not in TOOL_CHOICES:
        raise InvalidRequest(
            f"'tool_choice' must be an object with a 'type' of {', '.join(TOOL_CHOICES)}.", param="tool_choice"
        )
    return str(kind)


def _anthropic_block(block: object, out: _Builder, param: str) -> None:
    if not isinstance(block, dict):
        raise InvalidRequest("Each content block must be an object.", param=param)
    _cache_control(block, out, param)
    kind = block.get("type")
    if isinstance(kind, str) and kind in _REFUSED_BLOCKS:
        raise InvalidRequest(f"Content blocks of type {kind!r} cannot be priced: {_REFUSED_BLOCKS[kind]}.", param=param)
    known = BLOCKS.get(kind) if isinstance(kind, str) else None
    if known is not None:
        known.apply(block, out, param)
    if kind == "text":
        if not isinstance(block.get("text"), str):
            raise InvalidRequest("A text block needs a string 'text'.", param=param)
        out.text(block["text"])
    elif kind in ("thinking", "redacted_thinking"):
        out.text(str(block.get("thinking", block.get("data", ""))))
    elif kind == "image":
        out.images.append(_image_block(block, param))
    elif kind in ("tool_use", "tool_result"):
        if kind == "tool_result":
            _tool_result(block.get("content"), out, param)
        nested = block.get("content")
        for index, item in enumerate(nested if isinstance(nested, list) else ()):
            if isinstance(item, dict):
                _cache_control(item, out, f"{param}.content[{index}]")
        out.json(_unmarked(block))
    else:
        raise InvalidRequest(f"Content blocks of type {kind!r} cannot be priced here.", param=param)


def _tool_result(content: object, out: _Builder, param: str) -> None:
    """A tool result's content blocks: images are priced as images, text is in
    the block's JSON text (counted by the caller), anything else is refused."""
    if not isinstance(content, list):
        return
    for index, block in enumerate(content):
        where = f"{param}.content[{index}]"
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "image" and isinstance(block, dict):
            out.images.append(_image_block(block, where))
        elif kind != "text":
            reason = _REFUSED_BLOCKS.get(str(kind), "only text and images can be priced in a tool result")
            raise InvalidRequest(f"Content blocks of type {kind!r} cannot be priced: {reason}.", param=where)


def _image_block(block: dict[str, Any], param: str) -> ImageRef:
    source = block.get("source")
    if not isinstance(source, dict):
        raise InvalidRequest("An image block needs a 'source'.", param=param)
    if source.get("type") == "base64" and isinstance(source.get("data"), str):
        url = f"data:{source.get('media_type', 'image/png')};base64,{source['data'][:8192]}"
        return _image(url, "auto", param)
    if source.get("type") == "url":
        return _image(source.get("url"), "auto", param)
    raise InvalidRequest("Only base64 and url image sources can be priced.", param=param)
