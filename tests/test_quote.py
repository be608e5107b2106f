"""The worst-case quote, the affordable max_tokens and the 402 body."""

from __future__ import annotations

from decimal import Decimal

import orjson
import pytest

from credit_guard.errors import InvalidRequest, error_body
from credit_guard.prices import ModelPrice, Tier
from credit_guard.quote import (
    Suggestions,
    actual_cost,
    affordable_max_tokens,
    cheapest_alternative,
    insufficient_credits,
    make_quote,
)
from credit_guard.shapes import Ask
from credit_guard.usage import Usage

GPT_4O = ModelPrice(
    name="gpt-4o",
    kind="chat",
    provider="openai",
    input_price=Decimal("2.50") / 1_000_000,
    output_price=Decimal("10.00") / 1_000_000,
    max_output_tokens=16384,
    encoding="o200k_base",
)
GPT_4O_MINI = ModelPrice(
    name="gpt-4o-mini",
    kind="chat",
    provider="openai",
    input_price=Decimal("0.15") / 1_000_000,
    output_price=Decimal("0.60") / 1_000_000,
    max_output_tokens=16384,
    encoding="o200k_base",
)


def ask(max_tokens: int | None = 4096, n: int = 1, param: str = "max_tokens") -> Ask:
    return Ask(kind="chat", model="gpt-4o", output_tokens=max_tokens, output_param=param, choices=n)


def test_contract_example_402_body_exactly() -> None:
    quote = make_quote(ask(), GPT_4O, 150)
    assert quote.input_cost == Decimal("0.000375")
    assert quote.max_output_cost == Decimal("0.04096")
    assert quote.max_cost == Decimal("0.041335")
    cheaper = cheapest_alternative(quote, [GPT_4O, GPT_4O_MINI], Decimal("0.02"), lambda p: make_quote(ask(), p, 150))
    assert cheaper == ("gpt-4o-mini", Decimal("0.0024801"))
    error = insufficient_credits(
        quote,
        available=Decimal("0.02"),
        held=Decimal(0),
        cheaper=cheaper,
        billing_url="https://example.com/billing",
    )
    body = orjson.loads(error_body(error, "req_4f2c"))
    assert body == {
        "error": {
            "type": "insufficient_credits",
            "code": "INSUFFICIENT_CREDITS",
            "status": 402,
            "param": "max_tokens",
            "message": "Insufficient credits for this request. Maximum possible cost: $0.0414. "
            "Available balance: $0.0200. Shortfall: $0.0214.",
            "detail": "Your request to gpt-4o requires up to $0.0414 in credits (based on max_tokens=4096), "
            "but you only have $0.0200 available. You need $0.0214 more credits to proceed.",
            "suggestions": [
                "Add $0.0214 or more in credits to your account",
                "Try setting max_tokens to 1962 or less to fit your available balance",
                "Reduce max_tokens from 4096 to lower the maximum possible cost",
                "Use a less expensive model, such as gpt-4o-mini (up to $0.0025 for this request)",
                "Visit https://example.com/billing to add credits",
            ],
            "context": {
                "current_credits": 0.02,
                "required_credits": 0.041335,
                "credit_deficit": 0.021335,
                "requested_model": "gpt-4o",
                "requested_max_tokens": 4096,
                "input_tokens": 150,
                "input_cost": 0.000375,
                "max_output_cost": 0.04096,
                "affordable_max_tokens": 1962,
                "check_type": "reservation",
                "reason": "insufficient_balance",
                "held_credits": 0,
                "priced_model": "gpt-4o",
                "max_output_tokens": 4096,
                "n": 1,
                "input_tokens_exact": True,
            },
            "request_id": "req_4f2c",
        }
    }
    # The amounts are written as their exact decimal text, never via a float.
    raw = error_body(error, "req_4f2c")
    assert b'"required_credits":0.041335,' in raw
    assert b'"credit_deficit":0.021335,' in raw


def test_affordable_max_tokens_is_exact_and_passes_the_check() -> None:
    available = Decimal("0.02")
    quote = make_quote(ask(), GPT_4O, 150)
    fits = affordable_max_tokens(quote, available)
    assert fits == 1962
    assert make_quote(ask(fits), GPT_4O, 150).max_cost <= available
    assert make_quote(ask(fits + 1), GPT_4O, 150).max_cost > available


@pytest.mark.parametrize("n", [1, 2, 3, 7])
@pytest.mark.parametrize("balance", ["0.001", "0.0123457", "0.5", "0.0004"])
def test_affordable_max_tokens_boundary_with_n(n: int, balance: str) -> None:
    available = Decimal(balance)
    quote = make_quote(ask(16000, n), GPT_4O, 150)
    fits = affordable_max_tokens(quote, available)
    if fits is None:
        assert make_quote(ask(1, n), GPT_4O, 150).max_cost > available
    else:
        assert make_quote(ask(fits, n), GPT_4O, 150).max_cost <= available
        assert fits == GPT_4O.max_output_tokens or make_quote(ask(fits + 1, n), GPT_4O, 150).max_cost > available


def test_affordable_is_null_when_even_the_input_is_unaffordable() -> None:
    quote = make_quote(ask(), GPT_4O, 150)
    error = insufficient_credits(quote, available=Decimal("0.0001"), held=Decimal(0))
    context = error.fields["context"]
    assert context["affordable_max_tokens"] is None
    assert context["reason"] == "input_exceeds_balance"
    suggestions = error.fields["suggestions"]
    assert not any("Try setting" in s for s in suggestions)
    assert any(s.startswith("Shorten the input") for s in suggestions)
    assert any(s.startswith("Add $0.0413 or more") for s in suggestions)  # 0.041335 - 0.0001, rounded up
    assert not any("Visit" in s for s in suggestions)  # no billing URL configured


def test_in_flight_reason_when_other_holds_use_the_room() -> None:
    quote = make_quote(ask(), GPT_4O, 150)
    error = insufficient_credits(quote, available=Decimal("0.02"), held=Decimal("0.03"))
    assert error.fields["context"]["reason"] == "in_flight_holds"
    assert error.fields["suggestions"][0].startswith("Wait for your other requests")


def test_no_max_tokens_prices_the_model_maximum_and_says_so() -> None:
    quote = make_quote(ask(None), GPT_4O, 150)
    assert quote.max_output_tokens == 16384
    assert quote.output_source == "model_max"
    error = insufficient_credits(quote, available=Decimal("0.02"), held=Decimal(0))
    assert "model's maximum output of 16384 tokens, since no max_tokens was set" in error.fields["detail"]
    assert error.fields["context"]["requested_max_tokens"] is None
    assert "Set max_tokens to lower the maximum possible cost" in error.fields["suggestions"]


def test_a_cap_above_the_model_maximum_is_priced_at_the_maximum() -> None:
    quote = make_quote(ask(100_000), GPT_4O, 150)
    assert quote.max_output_tokens == 16384
    assert quote.output_source == "capped"


def test_no_cap_and_no_model_maximum_is_refused() -> None:
    unbounded = ModelPrice(name="m", kind="chat", input_price=Decimal("1e-6"), output_price=Decimal("1e-6"))
    with pytest.raises(InvalidRequest) as caught:
        make_quote(ask(None), unbounded, 10)
    assert caught.value.param == "max_tokens"


def test_max_completion_tokens_is_named_in_the_402() -> None:
    quote = make_quote(ask(4096, param="max_completion_tokens"), GPT_4O, 150)
    error = insufficient_credits(quote, available=Decimal("0.02"), held=Decimal(0))
    assert error.param == "max_completion_tokens"
    assert "Try setting max_completion_tokens to 1962 or less" in error.fields["suggestions"][1]
    assert "(based on max_completion_tokens=4096)" in error.fields["detail"]


def test_n_multiplies_the_output_worst_case() -> None:
    quote = make_quote(ask(1000, n=3), GPT_4O, 150)
    assert quote.max_output_cost == Decimal("0.03")
    error = insufficient_credits(quote, available=Decimal("0.02"), held=Decimal(0))
    assert "(based on max_tokens=1000 and n=3)" in error.fields["detail"]


def test_reasoning_price_above_output_price_bounds_the_worst_case() -> None:
    reasoning = ModelPrice(
        name="r",
        kind="chat",
        input_price=Decimal("1e-6"),
        output_price=Decimal("2e-6"),
        reasoning_output_price=Decimal("3e-6"),
        max_output_tokens=1000,
    )
    assert make_quote(ask(100), reasoning, 0).max_output_cost == Decimal("0.0003")


def test_suggestion_texts_are_configurable() -> None:
    quote = make_quote(ask(), GPT_4O, 150)
    texts = Suggestions(add_credits="Top up {shortfall} at least")
    error = insufficient_credits(quote, available=Decimal("0.02"), held=Decimal(0), suggestions=texts)
    assert error.fields["suggestions"][0] == "Top up $0.0214 at least"


def test_cheaper_model_is_only_one_that_fits() -> None:
    quote = make_quote(ask(), GPT_4O, 150)
    none_fit = cheapest_alternative(quote, [GPT_4O_MINI], Decimal("0.001"), lambda p: make_quote(ask(), p, 150))
    assert none_fit is None
    error = insufficient_credits(quote, available=Decimal("0.001"), held=Decimal(0), cheaper=none_fit)
    assert "Use a less expensive model" in error.fields["suggestions"]


def _m(value: str) -> Decimal:
    return Decimal(value) / 1_000_000


TIERED = ModelPrice(
    name="tiered",
    kind="chat",
    input_price=_m("1"),
    output_price=_m("10"),
    cached_input_price=_m("0.1"),
    max_output_tokens=1000,
    tiers=(Tier(None, 100, _m("2"), _m("15")), Tier("priority", 0, _m("3"), _m("30"))),
)


def test_a_context_tier_prices_input_and_output_and_the_affordable_cap() -> None:
    at_edge = make_quote(ask(10), TIERED, 100)
    assert (at_edge.input_cost, at_edge.max_output_cost) == (_m("1") * 100, _m("10") * 10)
    above = make_quote(ask(10), TIERED, 101)
    assert (above.input_cost, above.max_output_cost) == (_m("2") * 101, _m("15") * 10)
    available = above.input_cost + _m("15") * 7
    assert affordable_max_tokens(above, available) == 7
    assert make_quote(ask(7), TIERED, 101).max_cost <= available < make_quote(ask(8), TIERED, 101).max_cost


def test_a_service_tier_without_a_price_is_refused_naming_the_field() -> None:
    def tiered(tier: str) -> Ask:
        return Ask(kind="chat", model="tiered", output_tokens=10, output_param="max_tokens", service_tier=tier)

    assert make_quote(tiered("priority"), TIERED, 100).max_cost == _m("3") * 100 + _m("30") * 10
    for tier, tokens in (("priority", 101), ("flex", 1), ("scale", 1)):
        with pytest.raises(InvalidRequest) as caught:
            make_quote(tiered(tier), TIERED, tokens)
        assert caught.value.param == "service_tier" and "priority" in caught.value.message


def test_cache_marks_hold_the_input_at_the_write_price() -> None:
    five = Ask(kind="anthropic", model="c", output_tokens=10, output_param="max_tokens", cache_ttl="5m")
    hour = Ask(kind="anthropic", model="c", output_tokens=10, output_param="max_tokens", cache_ttl="1h")
    # No write prices in the table: Anthropic's multipliers, 1.25x and 2x.
    assert make_quote(five, GPT_4O, 1000).input_cost == _m("2.50") * Decimal("1.25") * 1000
    assert make_quote(hour, GPT_4O, 1000).input_cost == _m("2.50") * 2 * 1000


def test_actual_cost_never_bills_a_token_twice_or_below_its_price() -> None:
    quote = make_quote(ask(10), TIERED, 10)
    # More cached and written than input: the input is the most that is billed.
    odd = Usage(input_tokens=50, output_tokens=5, cached_tokens=40, cache_write_tokens=30, cache_reported=True)
    assert actual_cost(quote, odd) == _m("0.1") * 40 + _m("1.25") * 10 + _m("10") * 5
    # The reported input crosses the context tier: all of it at the tier's price.
    assert actual_cost(quote, Usage(input_tokens=101, output_tokens=1)) == _m("2") * 101 + _m("15")
    assert actual_cost(quote, Usage(input_tokens=0, output_tokens=0)) == 0
