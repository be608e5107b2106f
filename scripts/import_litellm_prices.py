"""Regenerate the bundled price table from LiteLLM's model price map.

    python scripts/import_litellm_prices.py MAP.json [--date YYYY-MM-DD] [--out FILE]

Every chat, completion, responses and embedding entry that LiteLLM's map
prices for the bundled providers is written in our format
(``credit_guard/data/prices.json``, prices per 1M tokens as decimal strings):
OpenAI's, Anthropic's, Gemini's (``gemini/x`` as ``x``), Mistral's
(``mistral/x`` as ``x``) and Azure's (``azure/...`` as it is, and Azure's own
``gpt-35-turbo`` names bare too).  ``scripts/prices_supplement.json`` adds the
models still called that the map no longer carries; an entry of the map always
wins over it.  The header of the current table (format, notes, vision rules,
model families) is kept; ``as_of``, ``source``, ``models`` and ``aliases`` are
replaced.  Entries whose name says they bill per call on every request (search
and deep-research models) or per image, character or second are left out, so a
request for them is refused rather than priced by its tokens alone.
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from credit_guard.prices import PriceTable, _bundled_families  # noqa: E402

TABLE = ROOT / "credit_guard" / "data" / "prices.json"
SUPPLEMENT = Path(__file__).with_name("prices_supplement.json")
# LiteLLM provider -> (our provider, the key prefix to drop).
PROVIDERS = {
    "openai": ("openai", ""),
    "text-completion-openai": ("openai", ""),
    "anthropic": ("anthropic", ""),
    "gemini": ("google", "gemini/"),
    "mistral": ("mistral", "mistral/"),
    "azure": ("azure", ""),
}
# Billed per call on every request beyond tokens, or as whichever model a router picks.
LEFT_OUT = re.compile(r"search|deep-research|-tts|lyria|realtime|transcribe|model-router")
MILLION = Decimal(1_000_000)


def per_million(value: Decimal | None) -> str | None:
    if value is None:
        return None
    text = format((value * MILLION).normalize(), "f")
    return text


def select(litellm: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The map's entries for the bundled providers, under the names we bill them by."""
    chosen: dict[str, dict[str, Any]] = {}
    for name, entry in litellm.items():
        if not isinstance(entry, dict) or entry.get("litellm_provider") not in PROVIDERS:
            continue
        if entry.get("mode") not in ("chat", "completion", "responses", "embedding") or LEFT_OUT.search(name):
            continue
        provider, prefix = PROVIDERS[entry["litellm_provider"]]
        if prefix and not name.startswith(prefix):
            continue
        ours = name[len(prefix) :]
        chosen[ours] = dict(entry, litellm_provider=provider)
        tail = ours.removeprefix("azure/")
        if provider == "azure" and tail.startswith("gpt-35-"):
            chosen.setdefault(tail, dict(entry, litellm_provider=provider))
    return chosen


def model_spec(price: Any, rule_names: dict[Any, str]) -> dict[str, Any]:
    spec: dict[str, Any] = {"kind": price.kind, "provider": price.provider}
    for key, value in (
        ("input", price.input_price),
        ("output", price.output_price if price.kind != "embedding" else None),
        ("cached_input", price.cached_input_price),
        ("reasoning_output", price.reasoning_output_price),
        ("cache_write", price.cache_write_price),
        ("cache_write_1h", price.cache_write_1h_price),
    ):
        if value is not None:
            spec[key] = per_million(value)
    above: dict[str, dict[str, str]] = {}
    service: dict[str, dict[str, Any]] = {}
    for tier in price.tiers:
        prices = {
            key: per_million(getattr(tier, key))
            for key in ("input", "output", "cached_input", "cache_write", "cache_write_1h")
            if getattr(tier, key) is not None
        }
        if tier.service_tier is None:
            above[str(tier.above)] = prices
        elif tier.above == 0:
            service.setdefault(tier.service_tier, {}).update(prices)
        else:
            service.setdefault(tier.service_tier, {}).setdefault("above", {})[str(tier.above)] = prices
    if above:
        spec["above"] = above
    if service:
        spec["service_tiers"] = service
    if price.max_output_tokens:
        spec["max_output_tokens"] = price.max_output_tokens
    if price.max_input_tokens:
        spec["max_input_tokens"] = price.max_input_tokens
    if price.encoding:
        spec["encoding"] = price.encoding
    if price.vision is not None:
        spec["vision"] = rule_names[price.vision]
    return spec


def build(litellm: dict[str, Any], current: dict[str, Any], supplement: dict[str, Any], date: str) -> dict[str, Any]:
    families = _bundled_families()
    loaded = PriceTable.from_litellm(select(litellm), families=families)
    rules = PriceTable.from_dict(current)  # validates the header we keep
    del rules
    from credit_guard.prices import _vision_rule

    rule_names = {_vision_rule(n, s): n for n, s in current["vision_rules"].items()}
    models: dict[str, Any] = {}
    for price in sorted(loaded.models(), key=lambda m: (m.provider or "", m.name)):
        # An entry without a maximum output is kept: a request for it must set its own cap.
        models[price.name] = model_spec(price, rule_names)
    for name, spec in supplement["models"].items():
        if name in models:
            print(f"supplement {name}: LiteLLM's map has it, its entry is kept", file=sys.stderr)
            continue
        spec = dict(spec)
        family = next((f for f in families if _matches(name, f.match)), None)
        if family is not None and family.encoding and "encoding" not in spec:
            spec["encoding"] = family.encoding
        if family is not None and family.vision is not None and "vision" not in spec:
            spec["vision"] = rule_names[family.vision]
        models[name] = spec
    aliases = {a: t for a, t in {**current.get("aliases", {}), **supplement.get("aliases", {})}.items() if t in models}
    out = {key: value for key, value in current.items() if key not in ("models", "aliases")}
    out["as_of"] = date
    out["source"] = (
        "LiteLLM's model price map (model_prices_and_context_window.json) of "
        f"{date}: every chat, completion, responses and embedding entry of OpenAI, Anthropic, "
        "Gemini (Google AI), Mistral and Azure OpenAI, standard-tier list prices with their cache, "
        "context-tier and service-tier prices; plus the models it no longer carries at the "
        "providers' published prices (" + "; ".join(supplement["sources"].values()) + "). "
        "Regenerate with scripts/import_litellm_prices.py."
    )
    out["models"] = models
    out["aliases"] = aliases
    return out


def _matches(name: str, pattern: str) -> bool:
    import fnmatch

    return fnmatch.fnmatchcase(name.rsplit("/", 1)[-1].lower(), pattern)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("litellm", type=Path, help="LiteLLM's model_prices_and_context_window.json")
    parser.add_argument("--date", default=datetime.date.today().isoformat(), help="the map's date (as_of)")
    parser.add_argument("--out", type=Path, default=TABLE, help=f"where to write (default {TABLE})")
    args = parser.parse_args(argv)
    litellm = json.loads(args.litellm.read_text(), parse_float=Decimal)
    current = json.loads(TABLE.read_text())
    supplement = json.loads(SUPPLEMENT.read_text())
    table = build(litellm, current, supplement, args.date)
    text = json.dumps(table, indent=1, ensure_ascii=False) + "\n"
    PriceTable.from_dict(json.loads(text, parse_float=Decimal))  # what we write must load
    args.out.write_text(text)
    print(f"{len(table['models'])} models, {len(table['aliases'])} aliases -> {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
