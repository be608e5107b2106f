"""Model prices: the table, its loaders, and model-name resolution.

(Types first; loaders and resolution follow.)
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

__all__ = ["ModelPrice", "VisionRule", "TokenBound", "PriceTable", "ModelNotPriced"]


class ModelNotPriced(LookupError):
    """The model name resolves to no entry (or to more than one) of the table."""

    def __init__(self, model: str, reason: str = "not in the price table") -> None:
        super().__init__(f"model {model!r} is {reason}")
        self.model = model
        self.reason = reason


@dataclass(frozen=True, slots=True)
class VisionRule:
    """How a model family counts an image's input tokens (constants from the table).

    ``method``:
      - ``"tiles"`` (gpt-4o family): fit within ``max_side`` square, scale the
        shortest side down to ``short_side``, count ``tile_size`` tiles;
        tokens = ``base_tokens + tile_tokens * tiles``; ``detail: low`` costs
        ``base_tokens``.
      - ``"patches"`` (gpt-4.1-mini family): ``patch_size`` patches capped at
        ``max_patches``, times ``multiplier``.
      - ``"area"`` (Claude): ``width * height / area_divisor``, capped by ``max_tokens``.
      - ``"fixed"``: every image costs ``max_tokens``.
    ``max_tokens`` is the worst case for an image of unknown size where the
    method alone has no bound.
    """

    method: str
    base_tokens: int = 0
    tile_tokens: int = 0
    tile_size: int = 512
    max_side: int = 2048
    short_side: int = 768
    patch_size: int = 32
    max_patches: int = 1536
    multiplier: Decimal = Decimal(1)
    area_divisor: int = 750
    max_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class TokenBound:
    """How to bound the input count of a model whose tokenizer we do not have.

    With ``o200k_ratio`` set: ``ceil(o200k_count * o200k_ratio) + margin``.
    Without: UTF-8 bytes + ``margin`` (a proven bound for byte-level BPE).
    """

    o200k_ratio: Decimal | None = None
    margin: int = 0


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """One priced model.  Prices are exact dollars per token."""

    name: str
    kind: str  # "chat" | "completion" | "embedding" | "responses"
    input_price: Decimal
    output_price: Decimal
    provider: str | None = None
    max_output_tokens: int | None = None
    max_input_tokens: int | None = None
    cached_input_price: Decimal | None = None
    reasoning_output_price: Decimal | None = None
    # "o200k_base" / "cl100k_base" where the provider bills with that tiktoken
    # encoding; None for models we can only bound.
    encoding: str | None = None
    token_bound: TokenBound | None = None
    vision: VisionRule | None = None
