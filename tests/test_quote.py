"""The worst-case quote, the affordable max_tokens and the 402 body."""

from __future__ import annotations

from decimal import Decimal

import orjson
import pytest

from credit_guard.errors import InvalidRequest, error_body
from credit_guard.prices import ModelPrice
from credit_guard.quote import (
    Suggestions,
    affordable_max_tokens,
    cheapest_alternative,
    insufficient_credits,
    make_quote,
)
from credit_guard.shapes import Ask

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
