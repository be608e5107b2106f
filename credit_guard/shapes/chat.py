"""Chat completions (``/v1/chat/completions``).

The chat framing is OpenAI's: 3 tokens per message, 1 more per ``name``, 3 to
prime the reply, and every string field of a message (role, content, name)
encoded as text.  It is exact only on the families published counts verify
(``preamble.chat_verified``); other OpenAI families get an allowance for
hidden input.  Renderings OpenAI does not publish (tool calls in the history,
``response_format`` schemas) are counted from their JSON text plus a margin
and make the count inexact; constructs verified on cl100k_base only (function
results, a legacy ``function_call`` in the history, some tool framings) are
exact there and bounded elsewhere.
"""

from __future__ import annotations

from typing import Any

from .. import _tools
from ..errors import InvalidRequest
from . import preamble
from .ask import _JSON_MARGIN, _PER_MESSAGE, _PER_NAME, _REPLY_PRIMING, MAX_CHOICES, Ask, _Builder, json_text
from .fields import (
    ANTHROPIC_VARIANTS,
    OPENAI_FREE,
    WEB_SEARCH,
    Refused,
    _bool,
    _cache_control,
    _image,
    _model,
    _positive_int,
    _service_tier,
    body_policy,
    policy,
)

_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
# Roles whose message of a role and a text is framed as plainly as it reads.
_PLAIN_ROLES = _ROLES - {"function"}
# hmarr's API counts on gpt-3.5-turbo (openai-chat-tokens, tests/token-counts.test.ts):
# a function-role message bills 2 fewer than the plain framing, and an
# assistant's function_call 3 more than its name and arguments.
_FUNCTION_RESULT_SAVING = 2
_FUNCTION_CALL = 3

BODY = body_policy(
    priced="model messages max_tokens max_completion_tokens n stream stream_options tools functions tool_choice "
    "function_call response_format service_tier modalities cache_control",
    # reasoning_effort and verbosity change how much is generated, but all of
    # it (reasoning included) stays under the output cap that is held.
    free=OPENAI_FREE + " reasoning_effort verbosity",
    refused={
        "web_search_options": WEB_SEARCH,
        "audio": Refused("audio output is billed per audio token"),
        "prediction": Refused("predicted outputs bill rejected prediction tokens as output beyond the cap"),
        # vLLM renders the prompt with a template the request supplies: it can
        # repeat the messages any number of times.
        "chat_template": Refused("a template sent with the request can render the prompt any number of times"),
        # vLLM generates best_of (or a beam of) sequences and reports the usage
        # of those it returns only.
        "best_of": Refused("sequences generated but not returned are not in the usage", (None, 1)),
        "use_beam_search": Refused("beams generated but not returned are not in the usage", (None, False)),
        **ANTHROPIC_VARIANTS,
    },
)
MESSAGE = policy(
    priced="role content name refusal tool_calls function_call tool_call_id",
    refused={"audio": Refused("audio in the history is billed per audio token")},
)
PARTS = {
    "text": policy(priced="type text"),
    "refusal": policy(priced="type refusal"),
    "image_url": policy(priced="type image_url"),
}
IMAGE_URL = policy(priced="url detail")
# include_usage decides whether the guard asks for the usage itself.
STREAM_OPTIONS = policy(priced="include_usage", free="include_obfuscation continuous_usage_stats")
# Tool definitions: what the rendering does not show is still sent upstream,
# where a template may render the whole definition.
TOOL = policy(priced="type function cache_control")
FUNCTION = policy(priced="name description parameters strict cache_control")
# Content part types that bill as audio or as documents.
_REFUSED_PARTS = {
    "input_audio": "audio is billed per audio token",
    "audio": "audio is billed per audio token",
    "file": "files are billed per page as text and images",
}


def _chat(body: dict[str, Any]) -> Ask:
    model = _model(body)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("'messages' must be a non-empty list.", param="messages")
    out = _Builder()
    BODY.apply(body, out)
    modalities = body.get("modalities")
    if modalities is not None and (not isinstance(modalities, list) or any(m != "text" for m in modalities)):
        raise InvalidRequest("Only text output ('modalities': ['text']) can be priced.", param="modalities")
    # (Optional fields are looked at where present: most bodies have few.)
    service_tier = _service_tier(body) if "service_tier" in body else None
    # Gateways pass cache_control marks on to Anthropic wherever they stand:
    # on the body (automatic caching), a message, a part or a tool.
    if "cache_control" in body:
        _cache_control(body, out, "")
    functions: list[dict[str, Any]] = []
    if "tools" in body or "functions" in body:
        functions = _tools.function_definitions(body)
        _tool_fields(body, out)
    _add_messages(out, messages, pad_system=bool(functions))
    allowance = preamble.chat_allowance(model)
    if allowance:
        out.fixed += allowance
        out.exact = False
    if functions:
        start = len(out.texts)
        has_system = _has_system(messages)
        if not has_system and _has_system(messages, "developer"):
            # Whether tool definitions join a developer message as they join a
            # system message is not published: no saving is taken.
            out.exact = False
        _tools.add_to(out, functions, has_system=has_system, tool_choice=_tool_choice(body))
        # A model without a public tokenizer (Claude, Gemini behind an
        # OpenAI-compatible upstream) receives the definitions as JSON, with
        # every field the rendering leaves out.
        sent = {name: body[name] for name in ("tools", "functions", "tool_choice", "function_call") if name in body}
        out.swap_when_bounded(start, json_text(sent))
    elif ("tool_choice" in body or "function_call" in body) and _tool_choice(body) not in (None, "none", "auto"):
        raise InvalidRequest("'tool_choice' names a tool but no tools are defined.", param="tool_choice")
    if "response_format" in body:
        _response_format(body, out)

    cap, param = _output_cap(body)
    choices = (_positive_int(body, "n", upper=MAX_CHOICES) or 1) if "n" in body else 1
    stream = _bool(body, "stream") if "stream" in body else False
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise InvalidRequest("'stream_options' must be an object.", param="stream_options")
    if options:
        STREAM_OPTIONS.apply(options, out, "stream_options")
    include_usage = bool(options and options.get("include_usage") is True)
    return out.ask(
        "chat",
        model,
        output_tokens=cap,
        output_param=param,
        choices=choices,
        stream=stream,
        include_usage=include_usage,
        service_tier=service_tier,
        # A provider tokenizer renders the messages itself (tokens.count_input).
        source=body,
    )


def _tool_fields(body: dict[str, Any], out: _Builder) -> None:
    """Apply the tool policies to definitions ``_tools`` has already checked."""
    for index, tool in enumerate(body.get("tools") or ()):
        TOOL.apply(tool, out, f"tools[{index}]")
        _cache_control(tool, out, f"tools[{index}]")
        if isinstance(tool.get("function"), dict):
            FUNCTION.apply(tool["function"], out, f"tools[{index}].function")
            _cache_control(tool["function"], out, f"tools[{index}].function")
    for index, function in enumerate(body.get("functions") or ()):
        FUNCTION.apply(function, out, f"functions[{index}]")
        _cache_control(function, out, f"functions[{index}]")


def _output_cap(body: dict[str, Any]) -> tuple[int | None, str]:
    """The output cap and the field that sets it.  With both fields set, the
    larger one is held: upstreams differ on which one wins."""
    newer = _positive_int(body, "max_completion_tokens")
    legacy = _positive_int(body, "max_tokens")
    if legacy is not None and (newer is None or legacy > newer):
        return legacy, "max_tokens"
    if newer is not None or "max_completion_tokens" in body:
        return newer, "max_completion_tokens"
    return None, "max_tokens"


def _has_system(messages: list[Any], role: str = "system") -> bool:
    return any(isinstance(m, dict) and m.get("role") == role for m in messages)


def _tool_choice(body: dict[str, Any]) -> object:
    if "tool_choice" in body:
        return body["tool_choice"]
    call = body.get("function_call")
    if body.get("tools") and isinstance(call, dict) and "function" not in call:
        # Next to ``tools`` a legacy call is priced as the tools form (the dearer).
        return {"type": "function", "function": call}
    return call


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


def _add_messages(out: _Builder, messages: list[Any], *, pad_system: bool = False) -> None:
    """Chat framing.  With ``pad_system`` (tool definitions present), the first
    system message's text gains a trailing newline, as OpenAI renders it."""
    out.fixed += _REPLY_PRIMING
    for index, message in enumerate(messages):
        if type(message) is dict and len(message) == 2:
            # Most of a conversation: a role and its text, nothing else.
            role = message.get("role")
            content = message.get("content")
            if (
                type(content) is str
                and type(role) is str
                and role in _PLAIN_ROLES
                and not (pad_system and role in ("system", "developer"))
            ):
                out.parts += 1
                out.fixed += _PER_MESSAGE
                out.text(role)
                out.text(content)
                continue
        param = f"messages[{index}]"
        if not isinstance(message, dict):
            raise InvalidRequest("Each message must be an object.", param=param)
        role = message.get("role")
        if not isinstance(role, str) or role not in _ROLES:
            raise InvalidRequest(f"Unknown message role {role!r}.", param=f"{param}.role")
        MESSAGE.apply(message, out, param)
        out.parts += 1
        out.fixed += _PER_MESSAGE
        _cache_control(message, out, param)
        out.text(role)
        if role == "function":
            # A function result bills 2 fewer than other messages on
            # gpt-3.5-turbo (hmarr's API counts); on o200k_base nothing is
            # published, so it is counted as a plain message there.
            out.save("cl100k_base", _FUNCTION_RESULT_SAVING)
            out.exact_only_on("cl100k_base")
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
            out.exact = False  # how a refusal in the history is rendered is not published
        call = message.get("function_call")
        if isinstance(call, dict) and set(call) <= {"name", "arguments"}:
            _function_call(call, out, f"{param}.function_call")
        elif call is not None:
            out.json(call)
        if message.get("tool_calls") is not None:
            out.json(message["tool_calls"])
        if message.get("tool_call_id") is not None:
            if not isinstance(message["tool_call_id"], str):
                raise InvalidRequest("'tool_call_id' must be a string.", param=f"{param}.tool_call_id")
            out.text(message["tool_call_id"])
            out.fixed += _JSON_MARGIN
            out.exact = False


def _function_call(call: dict[str, Any], out: _Builder, param: str) -> None:
    """A legacy ``function_call`` in the history: its name and arguments as
    text plus 3 tokens on gpt-3.5-turbo (hmarr's API counts); elsewhere not
    published, so a margin is added there."""
    for key in ("name", "arguments"):
        value = call.get(key)
        if value is not None and not isinstance(value, str):
            raise InvalidRequest(f"'{key}' must be a string.", param=f"{param}.{key}")
        out.text(value or "")
    out.fixed += _FUNCTION_CALL + _JSON_MARGIN
    out.save("cl100k_base", _JSON_MARGIN)
    out.exact_only_on("cl100k_base")


def _chat_content(content: object, out: _Builder, param: str) -> None:
    if content is None:
        return
    if isinstance(content, str):
        out.text(content)
        return
    if not isinstance(content, list):
        raise InvalidRequest("'content' must be a string or a list of content parts.", param=param)
    texts = sum(1 for part in content if isinstance(part, dict) and part.get("type") in ("text", "refusal"))
    if texts > 1:
        # How text parts are joined is not published: a bound of one token
        # per join (a separator such as a newline is one token).
        out.fixed += texts - 1
        out.exact = False
    for index, part in enumerate(content):
        where = f"{param}[{index}]"
        if not isinstance(part, dict):
            raise InvalidRequest("Each content part must be an object.", param=where)
        _cache_control(part, out, where)  # gateways pass it on to Anthropic
        kind = part.get("type")
        if isinstance(kind, str) and kind in _REFUSED_PARTS:
            why = _REFUSED_PARTS[kind]
            raise InvalidRequest(f"Content parts of type {kind!r} cannot be priced: {why}.", param=where)
        known = PARTS.get(kind) if isinstance(kind, str) else None
        if known is None:
            raise InvalidRequest(f"Unknown content part type {kind!r}.", param=where)
        known.apply(part, out, where)
        if kind in ("text", "refusal"):
            text = part.get(kind)
            if not isinstance(text, str):
                raise InvalidRequest(f"A {kind} part needs a string '{kind}'.", param=where)
            out.text(text)
            if kind == "refusal":
                out.exact = False
        elif kind == "image_url":
            image = part.get("image_url")
            if isinstance(image, str):
                image = {"url": image}
            if not isinstance(image, dict):
                raise InvalidRequest("An image_url part needs an 'image_url' object.", param=where)
            IMAGE_URL.apply(image, out, f"{where}.image_url")
            out.images.append(_image(image.get("url"), image.get("detail"), where))
            # The tile rule is verified image by image (the vision guide), but
            # the API reference's "Image input" example bills 1117 where the
            # rule and the chat framing count 1118: the framing of a message
            # holding an image is not known exactly.
            out.exact = False
