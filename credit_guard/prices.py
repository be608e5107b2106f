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

Resolution (``resolve``) tries, in order: the exact name, a user alias, the name
without a provider prefix (``openai/gpt-4o``), then the name without a date
suffix (``gpt-4o-2024-08-06``, ``claude-3-5-sonnet-20241022``, ``gpt-4-0613``),
and last the same case-insensitively where that is unique.  Anything else, or
a name two entries could claim at different prices, is ``ModelNotPriced``:
never a guess.
"""

from __future__ import annotations

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
    #: The model may reason in tokens it bills as output but never shows (o-series,
    #: gpt-5, thinking models): a client that leaves early owes more than it saw.
    reasoning: bool = False
    # "o200k_base" / "cl100k_base" where the provider bills with that tiktoken
    # encoding; None for models we can only bound.
    encoding: str | None = None
    token_bound: TokenBound | None = None
    vision: VisionRule | None = None
    #: Other per-model prices the source carries (per image, per cache write...).
    extra: Mapping[str, Decimal] = field(default_factory=dict, compare=False)


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
_PROVIDER_PREFIX = re.compile(r"^[A-Za-z0-9_.-]+/")
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
    if not isinstance(spec, Mapping) or spec.get("method") not in ("tiles", "patches", "area", "fixed"):
        raise ValueError(f"vision rule {name!r}: 'method' must be tiles, patches, area or fixed")
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
        self._folded: dict[str, str | None] = {}
        for name in self._models:
            key = name.lower()
            self._folded[key] = None if key in self._folded and self._folded[key] != name else name
        self._cache: dict[str, ModelPrice | ModelNotPriced] = {}
        self._cache_lock = threading.Lock()
        self._groups: dict[tuple[str, str | None, str | None], list[ModelPrice]] = {}
        for model in self._models.values():
            if model.name.startswith("ft:") or "/" in model.name and model.name.split("/", 1)[1] in self._models:
                continue
            self._groups.setdefault((model.kind, model.provider, model.encoding), []).append(model)
        for group in self._groups.values():
            group.sort(key=lambda m: (m.output_price, m.input_price, m.name))

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
            extra = {
                key: _clean(value, f"{where}.{key}")
                for key, value in entry.items()
                if (key.endswith("_per_image") or key.startswith("cache_creation")) and _is_number(value)
            }
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
                )
            )
        return cls(models)

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
            self._models.values(), aliases={**self._aliases, **aliases}, as_of=self.as_of, source=self.source
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
            raise ModelNotPriced(cached.model, cached.reason)
        return cached

    def _resolve(self, model: str) -> ModelPrice | ModelNotPriced:
        if not model or len(model) > 256:
            return ModelNotPriced(model[:256], "not a model name")
        found = self._models.get(model)
        if found is not None:
            return found
        if model in self._aliases:
            return self._models[self._aliases[model]]
        candidates: list[str] = []
        stripped = _PROVIDER_PREFIX.sub("", model)
        for name in dict.fromkeys([stripped, _DATE_SUFFIX.sub("", stripped), _DATE_SUFFIX.sub("", model)]):
            if name != model and name in self._models:
                candidates.append(name)
            elif name != model and name in self._aliases:
                candidates.append(self._aliases[name])
        if not candidates:
            folded = self._folded.get(model.lower())
            if folded:
                candidates.append(folded)
        distinct = {self._models[name] for name in candidates}
        if len({(m.input_price, m.output_price, m.max_output_tokens) for m in distinct}) > 1:
            return ModelNotPriced(model, f"ambiguous: it could be {' or '.join(sorted(set(candidates)))}")
        if candidates:
            return self._models[candidates[0]]
        return ModelNotPriced(model, "not in the price table")


_DEFAULT: PriceTable | None = None


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
