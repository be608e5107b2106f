"""Model prices: the table, its loaders, and model-name resolution.

Two formats load:

- **ours** (JSON or TOML), for people: prices per **million** tokens as decimal
  strings, with the table's date and source, vision rules, model families and
  aliases (``credit_guard/data/prices.json`` is one);
- **LiteLLM's** ``model_prices_and_context_window.json`` as it is: every chat,
  completion, responses and embedding entry.  Its per-token prices are read
  from the JSON text as decimals (never through a float) and rounded to 15
  significant digits, which removes the binary-float noise the file carries
  (``5.0000000000000004e-08`` is ``5E-8``).

Resolution (``resolve``) never lends one entry's price to another name:

1. the exact name (an entry of the table always wins);
2. a user alias, or one of the table's own aliases (the table says the two
   names bill the same);
3. a provider prefix naming the entry's own provider (``openai/gpt-4o``,
   ``gemini/gemini-2.5-pro``; ``azure/...`` never falls back to OpenAI's price);
4. a bare name that is the tail of exactly one priced provider-prefixed key
   (``mistral-large-latest`` -> ``mistral/mistral-large-latest`` in LiteLLM's
   map), or of several that bill the same;
5. the same name in another case, where that is unique.

Anything else is ``ModelNotPriced``, naming the closest priced names: a dated
snapshot that is not in the table (``gpt-4o-2024-05-13`` bills twice
``gpt-4o``) is refused, never priced as its undated alias.

Beyond input and output, an entry can carry the prices the bill has: cached
reads, cache writes (5-minute and 1-hour), context tiers (input above N
tokens), and service tiers (``flex``, ``priority``); ``ModelPrice.rates``
picks the ones that apply to a request.
"""

from __future__ import annotations

import bisect
import fnmatch
import json
import re
import sys
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Context, Decimal, InvalidOperation
from importlib import resources
from pathlib import Path
from typing import Any

__all__ = [
    "ModelPrice",
    "Rates",
    "Tier",
    "VisionRule",
    "TokenBound",
    "PriceTable",
    "ModelNotPriced",
    "TierNotPriced",
    "STANDARD_TIERS",
]

#: ``service_tier`` values billed at the table's standard prices.
STANDARD_TIERS = frozenset({"auto", "default", "standard"})


class ModelNotPriced(LookupError):
    """The model name resolves to no entry (or to more than one) of the table.
    ``alternatives``: the closest priced names (or the candidates of an
    ambiguous name)."""

    def __init__(self, model: str, reason: str = "not in the price table", alternatives: Iterable[str] = ()) -> None:
        self.alternatives = tuple(alternatives)
        if self.alternatives and "closest" not in reason and "could be" not in reason:
            reason = f"{reason}; closest priced: {', '.join(self.alternatives)}"
        super().__init__(f"model {model!r} is {reason}")
        self.model = model
        self.reason = reason


class TierNotPriced(LookupError):
    """The table has no price for this service tier (or for it at this input
    size): the request cannot be priced as the provider bills it."""

    def __init__(self, model: str, service_tier: str, above: int | None = None) -> None:
        where = f" above {above} input tokens" if above else ""
        super().__init__(f"the price table has no {service_tier!r} service tier price for {model}{where}")
        self.model = model
        self.service_tier = service_tier
        self.above = above


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
      - ``"crop-tiles"`` (Gemini): one tile when both sides are at most
        ``short_side``; otherwise fit within ``max_side`` square and cut into
        square tiles of the shorter side / 1.5 (between ``tile_size / 3`` and
        ``tile_size``); tokens = ``tile_tokens * tiles``.
      - ``"area"`` (Claude): the larger of ``width * height / area_divisor`` and
        the ``patch_size`` patches, capped by ``max_tokens``.
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
class Tier:
    """Prices that replace an entry's base prices: for a ``service_tier``
    (None: standard) and/or for input above ``above`` tokens (0: from the
    first token).  Exact dollars per token; None where the source gives none."""

    service_tier: str | None
    above: int
    input: Decimal
    output: Decimal
    cached_input: Decimal | None = None
    cache_write: Decimal | None = None
    cache_write_1h: Decimal | None = None


@dataclass(frozen=True, slots=True)
class Rates:
    """The per-token prices that apply to one request, every one known.

    Where the table gives none: cached reads cost the input price, 5-minute
    cache writes 1.25 times and 1-hour writes 2 times the input price
    (Anthropic's published multipliers), reasoning the output price."""

    input: Decimal
    output: Decimal
    cached_input: Decimal
    cache_write: Decimal
    cache_write_1h: Decimal
    reasoning_output: Decimal
    #: The dearest price an output token can have (reasoning or not): read on
    #: every quote, computed once.
    max_output: Decimal = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "max_output", max(self.output, self.reasoning_output))


_WRITE_5M = Decimal("1.25")
_WRITE_1H = Decimal(2)


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """One priced model.  Prices are exact dollars per token.

    ``input_price`` .. ``cache_write_1h_price`` are the standard tier's prices
    from the first token; ``tiers`` the ones that replace them (context tiers,
    service tiers).  ``rates`` gives the prices of one request."""

    name: str
    kind: str  # "chat" | "completion" | "embedding" | "responses"
    input_price: Decimal
    output_price: Decimal
    provider: str | None = None
    max_output_tokens: int | None = None
    max_input_tokens: int | None = None
    cached_input_price: Decimal | None = None
    reasoning_output_price: Decimal | None = None
    #: The model may reason in tokens it bills as output but never shows (o-series,
    #: gpt-5, thinking models): a client that leaves early owes more than it saw.
    reasoning: bool = False
    # "o200k_base" / "cl100k_base" where the provider bills with that tiktoken
    # encoding; None for models we can only bound.
    encoding: str | None = None
    token_bound: TokenBound | None = None
    vision: VisionRule | None = None
    #: Other per-model prices the source carries (per image...).
    extra: Mapping[str, Decimal] = field(default_factory=dict, compare=False)
    cache_write_price: Decimal | None = None
    cache_write_1h_price: Decimal | None = None
    tiers: tuple[Tier, ...] = ()
    #: ``rates()`` at the standard tier below every context tier: what nearly
    #: every request is priced at, computed once.
    _standard: Rates = field(init=False, repr=False, compare=False)
    #: The standard tier's context tiers (prices above an input size).
    _context: tuple[Tier, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        base = Tier(
            None,
            0,
            self.input_price,
            self.output_price,
            self.cached_input_price,
            self.cache_write_price,
            self.cache_write_1h_price,
        )
        object.__setattr__(self, "_standard", self._rates_of(base))
        object.__setattr__(self, "_context", tuple(t for t in self.tiers if t.service_tier is None and t.above > 0))

    def service_tiers(self) -> list[str]:
        """The service tiers (beyond the standard one) the table prices."""
        return sorted({t.service_tier for t in self.tiers if t.service_tier is not None and t.above == 0})

    def rates(self, service_tier: str | None = None, input_tokens: int = 0, *, strict: bool = True) -> Rates:
        """The prices of a request at ``service_tier`` whose input is
        ``input_tokens`` (a context tier applies to input *above* its
        threshold, to input and output alike).

        Raises ``TierNotPriced`` where the table has no price for the service
        tier, or (``strict``) none for it at this input size.  Not ``strict``
        (settling usage already incurred), a missing service-tier context
        price is the dearer of the tier's own and the standard context price.
        """
        tier = None if service_tier is None or service_tier in STANDARD_TIERS else service_tier
        if tier is None:
            reached = _reached(self._context, None, input_tokens) if self._context else None
            return self._standard if reached is None else self._rates_of(reached)
        base = Tier(
            None,
            0,
            self.input_price,
            self.output_price,
            self.cached_input_price,
            self.cache_write_price,
            self.cache_write_1h_price,
        )
        if tier is not None:
            own_base = next((t for t in self.tiers if t.service_tier == tier and t.above == 0), None)
            if own_base is None:
                raise TierNotPriced(self.name, tier)
            base = own_base
        chosen = _reached(self.tiers, tier, input_tokens) or base
        if tier is not None:
            standard = _reached(self.tiers, None, input_tokens)
            if standard is not None and chosen.above < standard.above:
                if strict:
                    raise TierNotPriced(self.name, tier, standard.above)
                chosen = _dearer(chosen, standard)
        if chosen is base and tier is None:
            return self._standard
        return self._rates_of(chosen)

    def _rates_of(self, chosen: Tier) -> Rates:
        reasoning = self.reasoning_output_price
        return Rates(
            input=chosen.input,
            output=chosen.output,
            cached_input=chosen.cached_input if chosen.cached_input is not None else chosen.input,
            cache_write=chosen.cache_write if chosen.cache_write is not None else chosen.input * _WRITE_5M,
            cache_write_1h=chosen.cache_write_1h if chosen.cache_write_1h is not None else chosen.input * _WRITE_1H,
            reasoning_output=max(chosen.output, reasoning) if reasoning is not None else chosen.output,
        )


def _reached(tiers: Iterable[Tier], service_tier: str | None, input_tokens: int) -> Tier | None:
    """The context tier of ``service_tier`` with the highest threshold the input exceeds."""
    best = None
    for t in tiers:
        if t.service_tier == service_tier and 0 < t.above < input_tokens and (best is None or t.above > best.above):
            best = t
    return best


def _dearer(a: Tier, b: Tier) -> Tier:
    def most(x: Decimal | None, y: Decimal | None) -> Decimal | None:
        return None if x is None or y is None else max(x, y)

    return Tier(
        a.service_tier,
        max(a.above, b.above),
        max(a.input, b.input),
        max(a.output, b.output),
        most(a.cached_input, b.cached_input),
        most(a.cache_write, b.cache_write),
        most(a.cache_write_1h, b.cache_write_1h),
    )


# -- loading -------------------------------------------------------------------

OUR_FORMAT = "credit_guard/prices@1"
KINDS = ("chat", "completion", "embedding", "responses")
ENCODINGS = ("cl100k_base", "o200k_base")
_MILLION = Decimal(1_000_000)
_NOISE = Context(prec=15)
_LITELLM_MODES = {
    "chat": "chat",
    "completion": "completion",
    "embedding": "embedding",
    "responses": "responses",
}
_DATE_SUFFIX = re.compile(r"(?:[-@](?:\d{4}-\d{2}-\d{2}|\d{8}|\d{4})|-latest)$")
_CACHE_LIMIT = 4096


def _decimal(value: object, where: str) -> Decimal:
    if isinstance(value, bool) or value is None:
        raise ValueError(f"{where}: a price must be a decimal number, not {value!r}")
    if isinstance(value, float):
        raise ValueError(f"{where}: a price must be written as a decimal string, not a float")
    try:
        amount = Decimal(str(value)) if not isinstance(value, Decimal) else value
    except InvalidOperation:
        raise ValueError(f"{where}: {value!r} is not a decimal number") from None
    if not amount.is_finite() or amount < 0:
        raise ValueError(f"{where}: a price must be finite and not negative, not {value}")
    return amount


def _flag(value: object, where: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{where}: must be true or false")
    return value


def _count(value: object, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, Decimal) and value == value.to_integral_value():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{where}: must be a positive integer, not {value!r}")
    return value


def _vision_rule(name: str, spec: Mapping[str, Any]) -> VisionRule:
    if not isinstance(spec, Mapping) or spec.get("method") not in ("tiles", "crop-tiles", "patches", "area", "fixed"):
        raise ValueError(f"vision rule {name!r}: 'method' must be tiles, crop-tiles, patches, area or fixed")
    values: dict[str, Any] = {}
    for key in (
        "base_tokens",
        "tile_tokens",
        "tile_size",
        "max_side",
        "short_side",
        "patch_size",
        "max_patches",
    ):
        if key in spec:
            values[key] = _count(spec[key], f"vision rule {name!r}.{key}") if spec[key] else 0
    if "area_divisor" in spec:
        values["area_divisor"] = _count(spec["area_divisor"], f"vision rule {name!r}.area_divisor")
    if "max_tokens" in spec:
        values["max_tokens"] = _count(spec["max_tokens"], f"vision rule {name!r}.max_tokens")
    if "multiplier" in spec:
        values["multiplier"] = _decimal(spec["multiplier"], f"vision rule {name!r}.multiplier")
    return VisionRule(method=spec["method"], **values)


def _token_bound(spec: object, where: str) -> TokenBound:
    if not isinstance(spec, Mapping):
        raise ValueError(f"{where}: 'token_bound' must be an object")
    ratio = spec.get("o200k_ratio")
    margin = spec.get("margin", 0)
    return TokenBound(
        o200k_ratio=None if ratio is None else _decimal(ratio, f"{where}.o200k_ratio"),
        margin=int(_count(margin, f"{where}.margin") or 0) if margin else 0,
    )


@dataclass(frozen=True, slots=True)
class _Family:
    match: str
    vision: VisionRule | None
    encoding: str | None
    token_bound: TokenBound | None


class PriceTable:
    """Model prices, and the resolution of the names requests use.

    Build one with ``from_file``, ``from_dict``, ``from_litellm`` or
    ``default()``; all validate everything at load and raise ``ValueError``
    naming the model and field that is wrong.
    """

    def __init__(
        self,
        models: Iterable[ModelPrice],
        *,
        aliases: Mapping[str, str] | None = None,
        as_of: str | None = None,
        source: str | None = None,
        left_out: Iterable[str] = (),
    ) -> None:
        self._models: dict[str, ModelPrice] = {}
        for model in models:
            self._models[model.name] = model
        self._aliases: dict[str, str] = {}
        for alias, target in (aliases or {}).items():
            if target not in self._models:
                raise ValueError(f"alias {alias!r} points at {target!r}, which is not in the table")
            self._aliases[alias] = target
        self.as_of = as_of
        self.source = source
        # Names the source prices but this table cannot (billed per call): they
        # are refused, never resolved to another entry by a fallback.
        self._left_out_names = tuple(name for name in left_out if name not in self._models)
        self._left_out = {name.lower() for name in self._left_out_names}
        self._folded: dict[str, str | None] = {}
        for name in self._models:
            key = name.lower()
            self._folded[key] = None if key in self._folded and self._folded[key] != name else name
        # Provider-prefixed keys by their tail (``mistral/x`` under ``x``), and
        # every name's tail, sorted, for the closest names of a refusal.
        self._by_tail: dict[str, list[str]] = {}
        for name in [*self._models, *self._left_out_names]:
            prefix, sep, tail = name.partition("/")
            if sep and tail and tail not in self._models:
                self._by_tail.setdefault(tail, []).append(name)
        self._tails = sorted((name.partition("/")[2] or name).lower() + "\0" + name for name in self._models)
        self._cache: dict[str, ModelPrice | ModelNotPriced] = {}
        self._cache_lock = threading.Lock()
        self._groups: dict[tuple[str, str | None, str | None], list[ModelPrice]] = {}
        for model in self._models.values():
            if model.name.startswith("ft:") or "/" in model.name and model.name.split("/", 1)[1] in self._models:
                continue
            self._groups.setdefault((model.kind, model.provider, model.encoding), []).append(model)
        for group in self._groups.values():
            group.sort(key=lambda m: (m.output_price, m.input_price, m.name))

    def __getstate__(self) -> dict[str, Any]:
        # Sent whole to the processes that price large bodies (offload.py).
        state = self.__dict__.copy()
        state["_cache"] = {}
        del state["_cache_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._cache_lock = threading.Lock()

    # -- constructors ------------------------------------------------------

    @classmethod
    def from_file(cls, path: str | Path, *, aliases: Mapping[str, str] | None = None) -> PriceTable:
        """Load a table in our format (JSON or TOML, by extension) or LiteLLM's."""
        path = Path(path)
        text = path.read_bytes()
        if path.suffix.lower() == ".toml":
            if sys.version_info >= (3, 11):
                import tomllib
            else:  # pragma: no cover - Python 3.10
                import tomli as tomllib  # type: ignore[import-not-found, no-redef, unused-ignore]

            data: Any = tomllib.loads(text.decode("utf-8"), parse_float=Decimal)
        else:
            try:
                data = json.loads(text, parse_float=Decimal)
            except ValueError as exc:
                raise ValueError(f"{path}: not valid JSON: {exc}") from None
        table = cls.from_dict(data)
        return table.with_aliases(aliases) if aliases else table

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PriceTable:
        """A table from parsed data, in our format or LiteLLM's (told apart by
        our ``format`` key)."""
        if not isinstance(data, Mapping):
            raise ValueError("a price table must be an object")
        if data.get("format") == OUR_FORMAT:
            return cls._from_ours(data)
        if "format" in data and isinstance(data["format"], str):
            raise ValueError(f"unknown price table format {data['format']!r}; expected {OUR_FORMAT!r}")
        return cls.from_litellm(data)

    @classmethod
    def _from_ours(cls, data: Mapping[str, Any]) -> PriceTable:
        currency = data.get("currency", "USD")
        if currency != "USD":
            raise ValueError(f"only USD prices are supported, not {currency!r}")
        rules = {name: _vision_rule(name, spec) for name, spec in (data.get("vision_rules") or {}).items()}
        models_data = data.get("models")
        if not isinstance(models_data, Mapping) or not models_data:
            raise ValueError("'models' must be a non-empty object")
        models = []
        for name, spec in models_data.items():
            where = f"model {name!r}"
            if not isinstance(spec, Mapping):
                raise ValueError(f"{where}: must be an object")
            kind = spec.get("kind", "chat")
            if kind not in KINDS:
                raise ValueError(f"{where}: unknown kind {kind!r} (one of {', '.join(KINDS)})")
            encoding = spec.get("encoding")
            if encoding is not None and encoding not in ENCODINGS:
                raise ValueError(f"{where}: unknown encoding {encoding!r} (one of {', '.join(ENCODINGS)})")
            vision = spec.get("vision")
            if vision is not None and vision not in rules:
                raise ValueError(f"{where}: unknown vision rule {vision!r}")
            if "input" not in spec:
                raise ValueError(f"{where}: 'input' (dollars per 1M tokens) is required")
            if kind != "embedding" and "output" not in spec:
                raise ValueError(f"{where}: 'output' (dollars per 1M tokens) is required")

            def per_token(key: str, spec: Mapping[str, Any] = spec, where: str = where) -> Decimal | None:
                if spec.get(key) is None:
                    return None
                return _decimal(spec[key], f"{where}.{key}") / _MILLION

            models.append(
                ModelPrice(
                    name=name,
                    kind=kind,
                    provider=spec.get("provider"),
                    input_price=per_token("input") or Decimal(0),
                    output_price=per_token("output") or Decimal(0),
                    cached_input_price=per_token("cached_input"),
                    reasoning_output_price=per_token("reasoning_output"),
                    cache_write_price=per_token("cache_write"),
                    cache_write_1h_price=per_token("cache_write_1h"),
                    tiers=_our_tiers(spec, where),
                    reasoning=_flag(spec.get("reasoning", False), f"{where}.reasoning"),
                    max_output_tokens=_count(spec.get("max_output_tokens"), f"{where}.max_output_tokens"),
                    max_input_tokens=_count(spec.get("max_input_tokens"), f"{where}.max_input_tokens"),
                    encoding=encoding,
                    token_bound=_token_bound(spec["token_bound"], where) if "token_bound" in spec else None,
                    vision=rules[vision] if vision is not None else None,
                )
            )
        return cls(models, aliases=data.get("aliases"), as_of=data.get("as_of"), source=data.get("source"))

    @classmethod
    def from_litellm(cls, data: Mapping[str, Any], *, families: Iterable[_Family] | None = None) -> PriceTable:
        """LiteLLM's model price map: every chat, completion, responses and
        embedding entry with an input price.  Encodings, vision rules and token
        bounds come from the bundled table's model families (LiteLLM's file has
        none)."""
        families = list(families) if families is not None else _bundled_families()
        models = []
        left_out = []
        for name, entry in data.items():
            if name == "sample_spec" or not isinstance(entry, Mapping):
                continue
            kind = _LITELLM_MODES.get(str(entry.get("mode")))
            if kind is None or entry.get("input_cost_per_token") is None:
                continue
            where = f"model {name!r}"
            input_price = _clean(entry["input_cost_per_token"], f"{where}.input_cost_per_token")
            output = entry.get("output_cost_per_token")
            output_price = _clean(output, f"{where}.output_cost_per_token") if output is not None else Decimal(0)
            if kind != "embedding" and output is None:
                continue  # a chat entry without an output price cannot bound its worst case
            if any(key.startswith(_UNBOUNDED_OUTPUT) and _is_number(v) and v for key, v in entry.items()):
                continue  # output billed per image, character or second: no token cap bounds it
            if _billed_per_call(name, entry):
                left_out.append(name)  # every request pays a fee no token price expresses
                continue
            extra = {
                key: _clean(value, f"{where}.{key}")
                for key, value in entry.items()
                if key.endswith("_per_image") and _is_number(value)
            }
            base, tiers = _litellm_tiers(entry, where)
            cached = entry.get("cache_read_input_token_cost")
            reasoning = entry.get("output_cost_per_reasoning_token")
            max_output = entry.get("max_output_tokens", entry.get("max_tokens"))
            family = _family_of(name, families)
            models.append(
                ModelPrice(
                    name=name,
                    kind=kind,
                    provider=entry.get("litellm_provider"),
                    input_price=input_price,
                    output_price=output_price,
                    cached_input_price=_clean(cached, where) if _is_number(cached) else None,
                    reasoning_output_price=_clean(reasoning, where) if _is_number(reasoning) else None,
                    reasoning=entry.get("supports_reasoning") is True,
                    max_output_tokens=_int_or_none(max_output),
                    max_input_tokens=_int_or_none(entry.get("max_input_tokens")),
                    encoding=family.encoding if family else None,
                    token_bound=family.token_bound if family else None,
                    vision=family.vision if family and entry.get("supports_vision") else None,
                    extra=extra,
                    cache_write_price=base.cache_write,
                    cache_write_1h_price=base.cache_write_1h,
                    tiers=tiers,
                )
            )
        return cls(models, left_out=left_out)

    @classmethod
    def default(cls) -> PriceTable:
        """The bundled table (``credit_guard/data/prices.json``), loaded once."""
        global _DEFAULT
        if _DEFAULT is None:
            data = json.loads(_bundled_text(), parse_float=Decimal)
            _DEFAULT = cls.from_dict(data)
        return _DEFAULT

    def with_aliases(self, aliases: Mapping[str, str]) -> PriceTable:
        """A copy with more aliases (e.g. Azure deployment names)."""
        return PriceTable(
            self._models.values(),
            aliases={**self._aliases, **aliases},
            as_of=self.as_of,
            source=self.source,
            left_out=self._left_out_names,
        )

    # -- lookups -----------------------------------------------------------

    def __len__(self) -> int:
        return len(self._models)

    def __contains__(self, name: object) -> bool:
        return name in self._models

    def get(self, name: str) -> ModelPrice | None:
        return self._models.get(name)

    def models(self, kind: str | None = None) -> list[ModelPrice]:
        return [m for m in self._models.values() if kind is None or m.kind == kind]

    def alternatives(self, price: ModelPrice) -> list[ModelPrice]:
        """Candidates for a cheaper model: the same kind, provider and encoding,
        cheapest first (fine-tunes and provider-prefixed copies left out)."""
        group = self._groups.get((price.kind, price.provider, price.encoding), [])
        return [m for m in group if m.name != price.name]

    def resolve(self, model: str) -> ModelPrice:
        """The entry a requested model name is priced as.  Raises
        ``ModelNotPriced`` for an unknown or ambiguous name."""
        cached = self._cache.get(model)
        if cached is None:
            cached = self._resolve(model)
            with self._cache_lock:
                if len(self._cache) >= _CACHE_LIMIT:
                    self._cache.clear()
                self._cache[model] = cached
        if isinstance(cached, ModelNotPriced):
            raise ModelNotPriced(cached.model, cached.reason, cached.alternatives)
        return cached

    def _resolve(self, model: str) -> ModelPrice | ModelNotPriced:
        if not model or len(model) > 256:
            return ModelNotPriced(model[:256], "not a model name")
        found = self._models.get(model)
        if found is not None:
            return found
        if model in self._aliases:
            return self._models[self._aliases[model]]
        if model.lower() in self._left_out:
            return ModelNotPriced(model, "billed per call beyond its tokens, which this table cannot price")
        prefix, sep, tail = model.partition("/")
        if sep and tail:
            target = self._models.get(tail) or self._models.get(self._aliases.get(tail, ""))
            if target is not None and _same_provider(prefix, target.provider):
                return target
        keys = self._by_tail.get(model)
        if keys:
            # A bare name is called at its maker's own API where the table has it.
            own = [name for name in keys if name.partition("/")[0] in _MAKERS]
            keys = own or keys
            if any(name.lower() in self._left_out for name in keys):
                return ModelNotPriced(model, "billed per call beyond its tokens, which this table cannot price")
            distinct = {_bill(self._models[name]) for name in keys}
            if len(distinct) > 1:
                return ModelNotPriced(model, f"ambiguous: it could be {' or '.join(sorted(keys))}", sorted(keys))
            return self._models[sorted(keys)[0]]
        folded = self._folded.get(model.lower())
        if folded:
            return self._models[folded]
        if model.lower() in self._folded:
            same = sorted(n for n in self._models if n.lower() == model.lower())
            return ModelNotPriced(model, f"ambiguous: it could be {' or '.join(same)}", same)
        return ModelNotPriced(model, "not in the price table", self.closest(model))

    def closest(self, model: str, limit: int = 5) -> list[str]:
        """Priced names nearest to ``model``: those sharing its longest
        ``-``-separated stem (its date or version dropped first)."""
        stem = _DATE_SUFFIX.sub("", model.partition("/")[2] or model).lower()
        while stem:
            at = bisect.bisect_left(self._tails, stem)
            found: list[str] = []
            while at < len(self._tails) and self._tails[at].startswith(stem) and len(found) < 64:
                found.append(self._tails[at].split("\0", 1)[1])
                at += 1
            if found:
                found.sort(key=lambda name: (len(name) - len(stem), name))
                return found[:limit]
            stem = stem.rpartition("-")[0]
        return []


def _bill(price: ModelPrice) -> tuple[object, ...]:
    """What makes two entries bill alike."""
    return (
        price.kind,
        price.input_price,
        price.output_price,
        price.cached_input_price,
        price.reasoning_output_price,
        price.cache_write_price,
        price.cache_write_1h_price,
        price.max_output_tokens,
        price.tiers,
    )


# A provider prefix and the providers whose entries it may name.
_PREFIX_PROVIDERS = {
    "openai": {"openai", "text-completion-openai"},
    "anthropic": {"anthropic"},
    "gemini": {"google", "gemini"},
    "google": {"google", "gemini"},
    "mistral": {"mistral"},
    "azure": {"azure"},
}


# Prefixes of the makers' own APIs (the others resell models: azure, bedrock...).
_MAKERS = frozenset({"openai", "anthropic", "gemini", "mistral", "deepseek", "xai", "cohere", "perplexity"})


def _same_provider(prefix: str, provider: str | None) -> bool:
    return provider is not None and provider in _PREFIX_PROVIDERS.get(prefix.lower(), {prefix.lower()})


_DEFAULT: PriceTable | None = None

# -- tiers ---------------------------------------------------------------------

_SERVICE_TIERS = ("flex", "priority")
_TIER_FIELDS = ("input", "output", "cached_input", "cache_write", "cache_write_1h")
# LiteLLM's keys: a dimension, then an optional context threshold, then an
# optional service tier (``input_cost_per_token_above_200k_tokens_priority``).
_LITELLM_KEY = re.compile(
    r"^(?P<dim>input_cost_per_token|output_cost_per_token|cache_read_input_token_cost"
    r"|cache_creation_input_token_cost(?:_above_1hr)?)"
    r"(?:_above_(?P<k>\d+)k_tokens)?(?:_(?P<tier>flex|priority))?$"
)
_LITELLM_DIMS = {
    "input_cost_per_token": "input",
    "output_cost_per_token": "output",
    "cache_read_input_token_cost": "cached_input",
    "cache_creation_input_token_cost": "cache_write",
    "cache_creation_input_token_cost_above_1hr": "cache_write_1h",
}
_UNBOUNDED_OUTPUT = (
    "output_cost_per_image",
    "output_cost_per_character",
    "output_cost_per_second",
    "output_cost_per_video",
)


# Models that bill beyond their tokens on every request, whatever it asks: they
# search the web on each call (OpenAI's search models, deep research, Perplexity),
# speak or listen, or bill as whichever model a router picks.
_PER_CALL_NAMES = re.compile(
    r"(?:^|[-_/.])search(?:$|[-_.])|deep-research|-tts|lyria|realtime|transcribe|model[-_]router"
)
# Fees per request, or per citation token, on top of the token prices.
_PER_CALL_FEES = ("input_cost_per_request", "citation_cost_per_token")


def _billed_per_call(name: str, entry: Mapping[str, Any]) -> bool:
    """Whether every request to this LiteLLM entry pays a fee no token price
    expresses (such an entry is left out: a request for it is refused)."""
    if _PER_CALL_NAMES.search(name.lower()):
        return True
    if any(not isinstance(entry.get(key), (bool, str)) and entry.get(key) for key in _PER_CALL_FEES):
        return True
    # Perplexity's models search on every request, at a per-query price.
    return entry.get("litellm_provider") == "perplexity" and bool(entry.get("search_context_cost_per_query"))


def _litellm_tiers(entry: Mapping[str, Any], where: str) -> tuple[Tier, tuple[Tier, ...]]:
    """An entry's standard base prices and the tiers that replace them.  A tier
    needs both an input and an output price, or it is left out (and a request
    for it refused)."""
    found: dict[tuple[str | None, int], dict[str, Decimal]] = {}
    for key, value in entry.items():
        match = _LITELLM_KEY.match(key)
        if match is None or not _is_number(value):
            continue
        above = int(match["k"]) * 1000 if match["k"] else 0
        found.setdefault((match["tier"], above), {})[_LITELLM_DIMS[match["dim"]]] = _clean(value, f"{where}.{key}")
    return _tiers_from(found)


def _tiers_from(found: Mapping[tuple[str | None, int], Mapping[str, Decimal]]) -> tuple[Tier, tuple[Tier, ...]]:
    standard = found.get((None, 0), {})
    base = Tier(
        None,
        0,
        standard.get("input", Decimal(0)),
        standard.get("output", Decimal(0)),
        standard.get("cached_input"),
        standard.get("cache_write"),
        standard.get("cache_write_1h"),
    )
    tiers = []
    for (service_tier, above), values in sorted(found.items(), key=lambda kv: (kv[0][0] or "", kv[0][1])):
        if (service_tier, above) == (None, 0) or "input" not in values or "output" not in values:
            continue
        if service_tier is not None and (service_tier, 0) not in found:
            continue
        tiers.append(Tier(service_tier, above, **{name: values.get(name) for name in _TIER_FIELDS}))  # type: ignore[arg-type]
    return base, tuple(tiers)


def _our_tiers(spec: Mapping[str, Any], where: str) -> tuple[Tier, ...]:
    """``above`` (input tokens -> prices) and ``service_tiers`` (name -> prices,
    with their own ``above``) of our format, per 1M tokens."""
    found: dict[tuple[str | None, int], dict[str, Decimal]] = {}

    def read(prices: object, service_tier: str | None, above: int, at: str) -> None:
        if not isinstance(prices, Mapping):
            raise ValueError(f"{at}: must be an object")
        for key in prices:
            if key not in _TIER_FIELDS and key != "above":
                raise ValueError(f"{at}: unknown price {key!r} (one of {', '.join(_TIER_FIELDS)})")
        values = {k: _decimal(prices[k], f"{at}.{k}") / _MILLION for k in _TIER_FIELDS if prices.get(k) is not None}
        if "input" not in values or "output" not in values:
            raise ValueError(f"{at}: 'input' and 'output' are required")
        found[(service_tier, above)] = values

    def read_above(spec: object, service_tier: str | None, at: str) -> None:
        if spec is None:
            return
        if not isinstance(spec, Mapping):
            raise ValueError(f"{at}: must map input token counts to prices")
        for threshold, prices in spec.items():
            if not str(threshold).isdigit() or int(threshold) < 1:
                raise ValueError(f"{at}: {threshold!r} is not a positive token count")
            read(prices, service_tier, int(threshold), f"{at}.{threshold}")

    read_above(spec.get("above"), None, f"{where}.above")
    service = spec.get("service_tiers") or {}
    if not isinstance(service, Mapping):
        raise ValueError(f"{where}.service_tiers: must be an object")
    for name, prices in service.items():
        if name not in _SERVICE_TIERS:
            raise ValueError(f"{where}.service_tiers: unknown tier {name!r} (one of {', '.join(_SERVICE_TIERS)})")
        read(prices, name, 0, f"{where}.service_tiers.{name}")
        read_above(prices.get("above"), name, f"{where}.service_tiers.{name}.above")
    found[(None, 0)] = {"input": Decimal(0), "output": Decimal(0)}
    return _tiers_from(found)[1]


def _bundled_text() -> bytes:
    return resources.files("credit_guard").joinpath("data").joinpath("prices.json").read_bytes()


def _bundled_families() -> list[_Family]:
    data = json.loads(_bundled_text(), parse_float=Decimal)
    rules = {name: _vision_rule(name, spec) for name, spec in (data.get("vision_rules") or {}).items()}
    families = []
    for spec in data.get("families") or ():
        families.append(
            _Family(
                match=spec["match"],
                vision=rules[spec["vision"]] if spec.get("vision") else None,
                encoding=spec.get("encoding"),
                token_bound=_token_bound(spec["token_bound"], spec["match"]) if "token_bound" in spec else None,
            )
        )
    return families


def _family_of(name: str, families: Iterable[_Family]) -> _Family | None:
    bare = name.rsplit("/", 1)[-1].lower()
    if bare.startswith("ft:"):
        bare = bare[3:]
    for family in families:
        if fnmatch.fnmatchcase(bare, family.match):
            return family
    return None


def _is_number(value: object) -> bool:
    return isinstance(value, (int, Decimal)) and not isinstance(value, bool)


def _int_or_none(value: object) -> int | None:
    if isinstance(value, (int, Decimal)) and not isinstance(value, bool) and value >= 1:
        return int(value)
    return None


def _clean(value: object, where: str) -> Decimal:
    """A LiteLLM per-token price, with its binary-float noise removed."""
    amount = _decimal(value, where)
    return _NOISE.plus(amount).normalize() if amount else Decimal(0)


__all__ += ["OUR_FORMAT"]
