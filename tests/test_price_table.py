"""Price tables: LiteLLM's map and ours, exact decimals, and name resolution."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from credit_guard.prices import ModelNotPriced, PriceTable, _billed_per_call

from .reference import LITELLM_PRICE_MAP, PINNED_LITELLM_PRICE_MAP, needs_litellm_map, needs_pinned_litellm_map

LITELLM = LITELLM_PRICE_MAP
needs_litellm = needs_litellm_map
# Output billed per image, character, second or video: a token cap does not bound it.
UNBOUNDED_OUTPUT = (
    "output_cost_per_image",
    "output_cost_per_character",
    "output_cost_per_second",
    "output_cost_per_video",
)

OURS = {
    "format": "credit_guard/prices@1",
    "currency": "USD",
    "as_of": "2026-11-01",
    "source": "test",
    "vision_rules": {"t": {"method": "tiles", "base_tokens": 85, "tile_tokens": 170}},
    "models": {
        "gpt-4o": {
            "kind": "chat",
            "provider": "openai",
            "input": "2.50",
            "output": "10.00",
            "max_output_tokens": 16384,
            "encoding": "o200k_base",
            "vision": "t",
        },
        "gpt-4o-mini": {
            "kind": "chat",
            "provider": "openai",
            "input": "0.15",
            "output": "0.60",
            "max_output_tokens": 16384,
            "encoding": "o200k_base",
        },
        "claude-x": {
            "kind": "chat",
            "provider": "anthropic",
            "input": "3",
            "output": "15",
            "max_output_tokens": 64000,
            "token_bound": {"o200k_ratio": "1.5", "margin": 10},
        },
    },
    "aliases": {"my-deployment": "gpt-4o"},
}
TOML = """
format = "credit_guard/prices@1"
currency = "USD"
as_of = "2026-11-01"
source = "test"

[vision_rules.t]
method = "tiles"
base_tokens = 85
tile_tokens = 170

[models.gpt-4o]
kind = "chat"
provider = "openai"
input = "2.50"
output = "10.00"
max_output_tokens = 16384
encoding = "o200k_base"
vision = "t"

[models.gpt-4o-mini]
kind = "chat"
provider = "openai"
input = "0.15"
output = "0.60"
max_output_tokens = 16384
encoding = "o200k_base"

[models.claude-x]
kind = "chat"
provider = "anthropic"
input = "3"
output = "15"
max_output_tokens = 64000
token_bound = { o200k_ratio = "1.5", margin = 10 }

[aliases]
my-deployment = "gpt-4o"
"""


@needs_litellm
def test_every_priced_entry_of_litellms_map_loads() -> None:
    table = PriceTable.from_file(LITELLM)
    raw = json.loads(LITELLM.read_text())
    wanted = {"chat", "completion", "responses", "embedding"}
    expected = {
        name
        for name, entry in raw.items()
        if isinstance(entry, dict)
        and entry.get("mode") in wanted
        and entry.get("input_cost_per_token") is not None
        and (entry.get("mode") == "embedding" or entry.get("output_cost_per_token") is not None)
        and not any(key.startswith(UNBOUNDED_OUTPUT) and value for key, value in entry.items())
        and not _billed_per_call(name, entry)
    }
    loaded = {m.name for m in table.models()}
    assert loaded == expected
    assert len(loaded) > 3000
    for kind in wanted:
        assert table.models(kind), kind
    # Entries left out are exactly those that cannot bound a worst case.
    skipped = {
        name
        for name, entry in raw.items()
        if isinstance(entry, dict) and entry.get("mode") in wanted and name not in loaded
    }
    for name in skipped:
        entry = raw[name]
        assert (
            entry.get("input_cost_per_token") is None
            or entry.get("output_cost_per_token") is None
            or any(key.startswith(UNBOUNDED_OUTPUT) and value for key, value in entry.items())
            or _billed_per_call(name, entry)
        )


@needs_litellm
def test_litellm_gpt_4o_prices_equal_the_published_ones() -> None:
    table = PriceTable.from_file(LITELLM)
    gpt_4o = table.resolve("gpt-4o")
    mini = table.resolve("gpt-4o-mini")
    assert (gpt_4o.input_price, gpt_4o.output_price) == (Decimal("2.50") / 10**6, Decimal("10.00") / 10**6)
    assert (mini.input_price, mini.output_price) == (Decimal("0.15") / 10**6, Decimal("0.60") / 10**6)
    assert gpt_4o.cached_input_price == Decimal("1.25") / 10**6
    assert gpt_4o.encoding == "o200k_base"
    assert gpt_4o.vision is not None and gpt_4o.vision.base_tokens == 85
    assert table.resolve("gpt-4").encoding == "cl100k_base"
    assert table.resolve("claude-sonnet-4-5").encoding is None


def test_float_noise_is_cleaned_from_litellm_prices() -> None:
    data = json.loads(
        '{"m": {"mode": "chat", "input_cost_per_token": 5.0000000000000004e-08,'
        ' "output_cost_per_token": 1.1428571428571428e-06, "max_output_tokens": 10}}',
        parse_float=Decimal,
    )
    price = PriceTable.from_dict(data).resolve("m")
    assert price.input_price == Decimal("5E-8")
    assert str(price.input_price) == "5E-8"
    assert price.output_price == Decimal("0.00000114285714285714")


def test_our_json_and_toml_load_identically(tmp_path: Path) -> None:
    (tmp_path / "p.json").write_text(json.dumps(OURS))
    (tmp_path / "p.toml").write_text(TOML)
    from_json = PriceTable.from_file(tmp_path / "p.json")
    from_toml = PriceTable.from_file(tmp_path / "p.toml")
    assert from_json.models() == from_toml.models()
    price = from_json.resolve("gpt-4o")
    assert price.input_price == Decimal("0.0000025")
    assert from_json.resolve("claude-x").token_bound is not None
    assert from_json.resolve("my-deployment") == price


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"input": "-1"}, "not negative"),
        ({"input": "NaN"}, "finite"),
        ({"input": "abc"}, "not a decimal"),
        ({"kind": "image"}, "unknown kind"),
        ({"encoding": "p50k"}, "unknown encoding"),
        ({"vision": "nope"}, "unknown vision rule"),
        ({"max_output_tokens": 0}, "positive integer"),
    ],
)
def test_invalid_tables_name_the_model_and_field(change: dict[str, object], message: str) -> None:
    data = json.loads(json.dumps(OURS))
    data["models"]["gpt-4o"].update(change)
    with pytest.raises(ValueError, match=message) as caught:
        PriceTable.from_dict(data)
    assert "gpt-4o" in str(caught.value)


def test_a_float_price_in_our_format_is_refused() -> None:
    data = json.loads(json.dumps(OURS))
    data["models"]["gpt-4o"]["input"] = 2.5
    with pytest.raises(ValueError, match="float"):
        PriceTable.from_dict(data)


@pytest.mark.parametrize(
    ("name", "resolved"),
    [
        ("gpt-4o", "gpt-4o"),
        ("openai/gpt-4o", "gpt-4o"),
        ("my-deployment", "gpt-4o"),
        ("openai/my-deployment", "gpt-4o"),
        ("GPT-4o", "gpt-4o"),
    ],
)
def test_resolution(name: str, resolved: str) -> None:
    assert PriceTable.from_dict(OURS).resolve(name).name == resolved


@pytest.mark.parametrize(
    "name",
    [
        "gpt-4",
        "gpt-4o-turbo",
        "o1",
        "",
        "gpt-4o-2024-08-06-extra",
        "x" * 300,
        # A snapshot or deployment the table does not list is never priced as its alias.
        "gpt-4o-2024-08-06",
        "gpt-4o-latest",
        "azure/gpt-4o-mini-2024-07-18",
        "azure/gpt-4o",
        "anthropic/gpt-4o",
    ],
)
def test_unknown_names_are_never_guessed(name: str) -> None:
    with pytest.raises(ModelNotPriced):
        PriceTable.from_dict(OURS).resolve(name)


def test_ambiguous_names_are_refused() -> None:
    data = json.loads(json.dumps(OURS))
    data["models"]["GPT-4O"] = dict(data["models"]["gpt-4o"], input="9")
    table = PriceTable.from_dict(data)
    with pytest.raises(ModelNotPriced, match="ambiguous|not in the price table"):
        table.resolve("Gpt-4o")


def test_alternatives_share_kind_provider_and_encoding_cheapest_first() -> None:
    table = PriceTable.default()
    alternatives = table.alternatives(table.resolve("gpt-4o"))
    names = [m.name for m in alternatives]
    assert "gpt-4o-mini" in names
    assert "gpt-4o" not in names
    assert all(m.provider == "openai" and m.encoding == "o200k_base" and m.kind == "chat" for m in alternatives)
    prices = [m.output_price for m in alternatives]
    assert prices == sorted(prices)


def test_the_bundled_table_has_date_source_and_complete_entries() -> None:
    table = PriceTable.default()
    assert table.as_of and table.source
    providers = {m.provider for m in table.models()}
    assert {"openai", "anthropic", "google", "mistral"} <= providers
    for model in table.models():
        if model.input_price == 0 and model.output_price == 0:
            continue  # free as listed (Gemma on the Gemini API)
        assert model.input_price > 0, model.name
        if model.kind != "embedding":
            assert model.output_price > 0, model.name
        if model.provider == "openai" and model.name.startswith(("gpt-4", "gpt-3.5", "gpt-5", "o1", "o3", "o4")):
            assert model.encoding in ("o200k_base", "cl100k_base"), model.name
    # An entry without a maximum output is priced only with the request's own cap.
    assert table.resolve("gpt-4o").max_output_tokens


@needs_pinned_litellm_map
def test_the_bundled_table_is_what_the_import_script_writes() -> None:
    """No hand edit drifts from the map: the script regenerates the table byte for byte."""
    import importlib.util

    script = Path(__file__).resolve().parents[1] / "scripts" / "import_litellm_prices.py"
    spec = importlib.util.spec_from_file_location("import_litellm_prices", script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    bundled_path = Path(__file__).resolve().parents[1] / "credit_guard" / "data" / "prices.json"
    bundled = json.loads(bundled_path.read_text())
    litellm = json.loads(PINNED_LITELLM_PRICE_MAP.read_text(), parse_float=Decimal)
    supplement = json.loads(module.SUPPLEMENT.read_text())
    rebuilt = module.build(litellm, bundled, supplement, bundled["as_of"])
    assert rebuilt == bundled
