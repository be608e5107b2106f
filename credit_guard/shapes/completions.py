"""Completions (``/v1/completions``) and embeddings (``/v1/embeddings``)."""

from __future__ import annotations

from typing import Any

from ..errors import InvalidRequest
from .ask import _JSON_MARGIN, MAX_CHOICES, Ask, _Builder
from .fields import OPENAI_FREE, _bool, _model, _positive_int, _service_tier, body_policy

#: The output cap of the completions API when the request sets none.
COMPLETIONS_DEFAULT_MAX_TOKENS = 16

COMPLETION = body_policy(
    priced="model prompt suffix max_tokens n best_of stream service_tier",
    # echo returns the prompt with the completion; it is not billed as output.
    free=OPENAI_FREE + " echo stream_options",
)
EMBEDDING = body_policy(priced="model input dimensions", free="user encoding_format")


def _completion(body: dict[str, Any]) -> Ask:
    model = _model(body)
    if "prompt" not in body:
        raise InvalidRequest("'prompt' is required.", param="prompt")
    out = _Builder()
    COMPLETION.apply(body, out)
    prompts = _prompt_list(body["prompt"], out, "prompt")
    suffix = body.get("suffix")
    if suffix is not None:
        if not isinstance(suffix, str):
            raise InvalidRequest("'suffix' must be a string.", param="suffix")
        out.text(suffix)
        # How the prompt and the suffix are joined is not published.
        out.fixed += _JSON_MARGIN
        out.exact = False
    cap = _positive_int(body, "max_tokens")
    n = _positive_int(body, "n", upper=MAX_CHOICES) or 1
    best_of = _positive_int(body, "best_of", upper=20)
    if best_of is not None and best_of < n:
        raise InvalidRequest("'best_of' must be at least 'n'.", param="best_of")
    service_tier = _service_tier(body)
    out.parts = prompts
    return out.ask(
        "completion",
        model,
        output_tokens=cap,
        output_param="max_tokens",
        # 16 on a completions model; a chat model served here (vLLM, LiteLLM)
        # generates up to its maximum without a cap.
        default_output_tokens=COMPLETIONS_DEFAULT_MAX_TOKENS,
        # best_of completions are generated (and billed) per prompt.
        choices=max(n, best_of or 1) * prompts,
        stream=_bool(body, "stream"),
        service_tier=service_tier,
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
    EMBEDDING.apply(body, out)
    items = _prompt_list(body["input"], out, "input")
    dimensions = body.get("dimensions")
    if dimensions is not None:
        _positive_int(body, "dimensions")
    out.parts = items
    return out.ask("embedding", model, output_tokens=0, output_param=None)
