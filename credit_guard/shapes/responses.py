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
from .fields import OPENAI_FREE, Refused, _bool, _image, _model, _positive_int, _service_tier, body_policy, policy

_NOT_HERE = "is billed as input but is not in this request"
# tool_choice is not free: it is counted (a forced tool adds prompt tokens).
BODY = body_policy(
    priced="model input instructions max_output_tokens stream tools text service_tier",
    # reasoning (effort, summary) changes how much is generated, but all of it
    # stays under the output cap; include only adds fields to the response;
    # max_tool_calls limits built-in tools, which are refused; truncation can
    # only drop input.
    free=OPENAI_FREE + " reasoning include max_tool_calls truncation stream_options",
    refused={
        "previous_response_id": Refused(f"the earlier conversation {_NOT_HERE}"),
        "conversation": Refused(f"the stored conversation {_NOT_HERE}"),
        "background": Refused("a background response reports its usage later, outside this request", (None, False)),
        "prompt": Refused(f"a stored prompt template {_NOT_HERE}"),
    },
)
MESSAGE = policy(priced="type role content", free="id status")
# A function tool (its JSON text is counted whole); the policy refuses a "Type"
# that a case-blind upstream would read as a built-in tool's type.
TOOL = policy(priced="type name description parameters strict")
TEXT = policy(priced="format", free="verbosity")
PARTS = {
    "input_text": policy(priced="type text"),
    "output_text": policy(priced="type text"),
    "text": policy(priced="type text"),
    "refusal": policy(priced="type refusal"),
    "input_image": policy(priced="type image_url detail", refused={"file_id": Refused(f"a stored file {_NOT_HERE}")}),
}
# Content part types that bill as audio or as documents.
_REFUSED_PARTS = {
    "input_file": "files are billed per page as text and images",
    "input_audio": "audio is billed per audio token",
}


def _responses(body: dict[str, Any]) -> Ask:
    model = _model(body)
    out = _Builder()
    BODY.apply(body, out)
    service_tier = _service_tier(body)
    # OpenAI does not publish how items are framed: chat framing plus a margin
    # per item, so the count is a bound.
    out.fixed += _REPLY_PRIMING + preamble.responses_allowance(model, function_tools=False)
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
    if tools is not None:
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
            TOOL.apply(tool, out, f"tools[{index}]")
            out.json(tool)
    text = body.get("text")
    if isinstance(text, dict):
        TEXT.apply(text, out, "text")
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
        service_tier=service_tier,
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
        MESSAGE.apply(item, out, param)
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
            if isinstance(ptype, str) and ptype in _REFUSED_PARTS:
                raise InvalidRequest(
                    f"Content parts of type {ptype!r} cannot be priced: {_REFUSED_PARTS[ptype]}.", param=where
                )
            known = PARTS.get(ptype) if isinstance(ptype, str) else None
            if known is None:
                raise InvalidRequest(f"Content parts of type {ptype!r} cannot be priced here.", param=where)
            known.apply(part, out, where)
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
        _tool_output(item.get("output"), out, param)
        out.json(item)
    else:
        raise InvalidRequest(f"Input items of type {kind!r} cannot be priced here.", param=f"{param}.type")


def _tool_output(output: object, out: _Builder, param: str) -> None:
    """A function call's output given as content parts: its images are priced
    as images and its files refused (its JSON text is counted by the caller)."""
    if not isinstance(output, list):
        return
    for index, part in enumerate(output):
        where = f"{param}.output[{index}]"
        ptype = part.get("type") if isinstance(part, dict) else None
        if ptype == "input_image" and isinstance(part, dict):
            if part.get("image_url") is None:
                raise InvalidRequest("Only images given by 'image_url' can be priced.", param=where)
            out.images.append(_image(part.get("image_url"), part.get("detail"), where))
        elif ptype not in ("input_text", "output_text", "text"):
            raise InvalidRequest(f"Output parts of type {ptype!r} cannot be priced here.", param=where)
