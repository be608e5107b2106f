"""The Responses API (``/v1/responses``).

OpenAI does not publish how items are framed: every count here is a bound.
Each item is counted with the chat framing plus a margin, tools and schemas
as their JSON text plus a margin, and the request gets the hidden-input
allowances of ``preamble`` (always the base; reasoning families; function
tools), which published Responses counts show are needed: the chat framing
alone undercounts every published Responses example.
"""

from __future__ import annotations

from typing import Any

from ..errors import InvalidRequest
from . import preamble
from .ask import _JSON_MARGIN, _PER_MESSAGE, _REPLY_PRIMING, Ask, _Builder
from .fields import _bool, _image, _model, _positive_int, _refuse_fields, _service_tier

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
    out.fixed = _REPLY_PRIMING + preamble.responses_allowance(model, function_tools=False)
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
        out.fixed += preamble.HIDDEN_FUNCTION_TOOLS
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
