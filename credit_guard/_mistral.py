"""Mistral models counted with Mistral's own tokenizers and chat templates.

``mistral-common`` (the optional ``mistral`` extra) ships Mistral's tokenizer
files in its wheel: nothing is downloaded.  A chat body is rendered by its
``ChatCompletionRequest.from_openai`` and ``encode_chat_completion`` exactly as
Mistral's templates render it, and the tokens are counted.

Which counts are *exact* was checked against ``usage.prompt_tokens`` the API
returned for recorded requests (the table in ``docs/accuracy.md``): the
tekken tokenizer with the v3 template reproduces them for ``mistral-large-latest``,
``mistral-small-latest``, ``magistral-medium-latest`` and ``pixtral-12b-latest``
(user and assistant text, content chunks, tool definitions, tool calls and
tool results).  Those families count exactly, unless the request holds what no
recorded figure covered:

- system messages: later templates wrap them in two control tokens where v3
  joins them with a blank line, so 2 tokens per system message are added;
- ``name`` fields, a ``response_format`` schema, a forcing ``tool_choice``,
  tool definition fields other than name, description and parameters
  (``strict``...): their JSON text in UTF-8 bytes is added.

Dated model names that ``mistral-common`` maps to an older tokenizer
(``mistral-large-2407``, ``codestral-2405``...) are counted with that tokenizer
plus a margin per message: a bound.  Anything else (another family, a body the
renderer refuses, images, the extra not installed) gives None, and the caller
uses the byte bound.

Tokenizers load on first use in a background thread (a tekken file takes about
a second and 100 MB): until one is loaded, requests get the byte bound.
``warm()`` loads them at once.
"""

from __future__ import annotations

import json
import threading
from typing import Any, NamedTuple

__all__ = ["MistralCount", "available", "check", "count_chat", "tokenizer_key", "tools_json_bytes", "warm"]

# Families whose counts were checked against published usage figures.
_VERIFIED = ("mistral-large", "mistral-small", "magistral", "pixtral-12b")
# Dated names mistral-common maps to a tokenizer: (version, tekken).  They
# take precedence over the family prefixes above.
_DATED: dict[str, tuple[str, bool]] = {
    "mistral-tiny-2312": ("v2", False),
    "mistral-tiny-2407": ("v3", False),
    "mistral-small-2312": ("v2", False),
    "mistral-small-2402": ("v2", False),
    "mistral-small-2409": ("v3", True),
    "mistral-medium-2312": ("v1", False),
    "mistral-large-2402": ("v2", False),
    "mistral-large-2407": ("v3", False),
    "mistral-large-2411": ("v7", False),
    "open-mixtral-8x22b-2404": ("v3", False),
    "open-mistral-nemo-2407": ("v3", True),
    "ministral-8b-2410": ("v3", True),
    "codestral-2405": ("v3", False),
    "codestral-mamba-2407": ("v3", False),
    "pixtral-12b-2409": ("v3", True),
}
# Families mistral-common maps to tekken by their dated names, counted as a bound.
_TEKKEN_BOUND = ("open-mistral-nemo", "ministral-8b")
#: Tokens added per message where the template is not the checked one.
MESSAGE_MARGIN = 4
#: Tokens added per system message to the v3 rendering (later templates wrap it).
SYSTEM_MARGIN = 2


class MistralCount(NamedTuple):
    """A count from Mistral's tokenizer: ``exact`` where the rendering was
    checked against the API's own figures, otherwise an upper bound."""

    tokens: int
    exact: bool


_lock = threading.Lock()
_loaded: dict[tuple[str, bool], Any] = {}
_loading: set[tuple[str, bool]] = set()
_failed: set[tuple[str, bool]] = set()


def available() -> bool:
    """Whether ``mistral-common`` can be imported."""
    try:
        import mistral_common  # noqa: F401
    except ImportError:
        return False
    return True


def _bare(model: str) -> str:
    return model.rsplit("/", 1)[-1].lower()


def tokenizer_key(model: str) -> tuple[tuple[str, bool], bool] | None:
    """((tokenizer version, tekken), verified) for a Mistral model name, or None
    where no Mistral tokenizer is known to be the one it bills with."""
    name = _bare(model)
    if name in _DATED:
        return _DATED[name], False
    if name.startswith(_VERIFIED):
        return ("v3", True), True
    if name.startswith(_TEKKEN_BOUND):
        return ("v3", True), False
    return None


def _load(key: tuple[str, bool]) -> None:
    version, tekken = key
    try:
        from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

        loader = getattr(MistralTokenizer, version)
        tokenizer = loader(is_tekken=True) if tekken else loader()
    except Exception:  # missing extra, missing sentencepiece, damaged file: the byte bound
        with _lock:
            _failed.add(key)
            _loading.discard(key)
        return
    with _lock:
        _loaded[key] = tokenizer
        _loading.discard(key)


def _tokenizer(key: tuple[str, bool], *, wait: bool) -> Any:
    tokenizer = _loaded.get(key)
    if tokenizer is not None or key in _failed:
        return tokenizer
    with _lock:
        if key in _loaded or key in _failed:
            return _loaded.get(key)
        start = key not in _loading
        _loading.add(key)
    if wait:
        _load(key)
        return _loaded.get(key)
    if start:
        threading.Thread(target=_load, args=(key,), name="credit-guard-mistral-tokenizer", daemon=True).start()
    return None


def warm(models: tuple[str, ...] = ("mistral-large-latest",)) -> bool:
    """Load the tokenizers of ``models`` now (call from a worker thread).
    False where ``mistral-common`` or a tokenizer file is missing."""
    ok = True
    for model in models:
        found = tokenizer_key(model)
        if found is None or _tokenizer(found[0], wait=True) is None:
            ok = False
    return ok


def check(body: dict[str, Any]) -> None:
    """Refuse what makes Mistral add a prompt of its own: ``prompt_mode``
    ("reasoning" adds Mistral's reasoning system prompt, whose size is not
    published).  Raises ``InvalidRequest``."""
    if body.get("prompt_mode") is not None:
        from .errors import InvalidRequest

        raise InvalidRequest(
            "'prompt_mode' adds a system prompt of Mistral's own whose size is not published; it cannot be priced.",
            param="prompt_mode",
        )


#: Load a tokenizer not yet loaded before counting, instead of in the
#: background (the byte bound meanwhile): set in processes that never run an
#: event loop, such as the workers that price large bodies (``offload.py``).
WAIT_FOR_TOKENIZERS = False


def count_chat(body: dict[str, Any], model: str, *, wait: bool | None = None) -> MistralCount | None:
    """The input tokens of a chat completions ``body`` on Mistral's ``model``,
    or None where Mistral's tokenizer cannot count it (see the module doc).
    With ``wait``, a tokenizer not yet loaded is loaded now instead of in the
    background."""
    found = tokenizer_key(model)
    if found is None:
        return None
    key, verified = found
    tokenizer = _tokenizer(key, wait=WAIT_FOR_TOKENIZERS if wait is None else wait)
    if tokenizer is None:
        return None
    messages = body.get("messages")
    if not isinstance(messages, list):
        return None
    try:
        from mistral_common.protocol.instruct.request import ChatCompletionRequest

        request = ChatCompletionRequest.from_openai(messages, tools=body.get("tools") or None)
        tokens = len(tokenizer.encode_chat_completion(request).tokens)
    except Exception:  # a body Mistral's renderer refuses: the caller's byte bound
        return None
    # The checked template with one difference: the system messages' wrapping.
    systems = sum(1 for m in messages if isinstance(m, dict) and m.get("role") in ("system", "developer"))
    extra = SYSTEM_MARGIN * systems
    names = [m["name"] for m in messages if isinstance(m, dict) and m.get("name") is not None]
    unmodelled: list[object] = [names] if names else []
    fmt = body.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") not in (None, "text"):
        unmodelled.append(fmt)
    if body.get("tool_choice") not in (None, "auto", "none"):
        unmodelled.append(body.get("tool_choice"))
    unmodelled += _tool_extras(body.get("tools"))
    extra += sum(len(json.dumps(piece).encode()) for piece in unmodelled)
    if not verified:
        # A tokenizer mistral-common names for the model, on a template no
        # recorded figure checked: a margin per message.
        extra += MESSAGE_MARGIN * (len(messages) + 1)
    return MistralCount(tokens + extra, verified and not systems and not unmodelled)


def _tool_extras(tools: object) -> list[object]:
    """Fields of tool definitions the checked template does not write
    (``strict``...): counted as their JSON text, in case the API does."""
    extras: list[object] = []
    for tool in tools if isinstance(tools, list) else ():
        if not isinstance(tool, dict):
            continue
        extras += [{k: v} for k, v in tool.items() if k not in ("type", "function")]
        function = tool.get("function")
        if isinstance(function, dict):
            extras += [{k: v} for k, v in function.items() if k not in ("name", "description", "parameters")]
    return extras


def tools_json_bytes(body: dict[str, Any]) -> int:
    """UTF-8 bytes of the tool definitions as Mistral's templates write them
    (``json.dumps`` with its default separators): what the byte bound adds for
    them, since the OpenAI rendering it otherwise counts is shorter."""
    tools = body.get("tools")
    if not tools:
        return 0
    try:
        return len(json.dumps(tools).encode())
    except (TypeError, ValueError):
        return len(repr(tools).encode())
