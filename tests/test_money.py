"""Exact money: parsing, units, rounding and display."""

from __future__ import annotations

import math
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from credit_guard.money import (
    MAX_UNITS,
    UNIT,
    display,
    from_units,
    json_text,
    parse_amount,
    to_units,
    units_ceil,
    units_floor,
)


def test_parse_refuses_floats_and_non_finite() -> None:
    with pytest.raises(TypeError):
        parse_amount(0.1)
    with pytest.raises(TypeError):
        parse_amount(True)
    with pytest.raises(ValueError):
        parse_amount("NaN")
    with pytest.raises(ValueError):
        parse_amount("Infinity")
    with pytest.raises(ValueError):
        parse_amount("ten")
    assert parse_amount("$0.02") == Decimal("0.02")
    assert parse_amount(3) == Decimal(3)


def test_units_round_trip_and_rounding_direction() -> None:
    assert to_units(Decimal("0.02")) == 200_000_000
    assert from_units(200_000_000) == Decimal("0.02")
    with pytest.raises(ValueError):
        to_units(Decimal("1e-11"))
    tiny = Decimal("1.5e-10")
    assert units_ceil(tiny) == 2
    assert units_floor(tiny) == 1
    assert units_ceil(Decimal("0.0000001428571428571428571")) == 1429
    with pytest.raises(ValueError):
        to_units(from_units(MAX_UNITS) + 1)


@pytest.mark.parametrize(
    ("amount", "owed", "text"),
    [
        ("0.041335", True, "$0.0414"),
        ("0.02", False, "$0.0200"),
        ("0.021335", True, "$0.0214"),
        ("0.0024801", True, "$0.0025"),
        ("0.00003", False, "$0.000030"),
        ("0.0000123", True, "$0.000013"),
        ("0.0000129", False, "$0.000012"),
        ("0.000375", True, "$0.00038"),
        ("0", False, "$0.0000"),
        ("12.34567", False, "$12.3456"),
    ],
)
def test_display(amount: str, owed: bool, text: str) -> None:
    assert display(Decimal(amount), owed=owed) == text


def test_no_non_zero_amount_displays_as_zero() -> None:
    for exponent in range(1, 12):
        value = Decimal(1).scaleb(-exponent)
        assert display(value, owed=False) != "$0.0000"
        assert display(value, owed=True) != "$0.0000"


def test_json_text_is_plain_exact_decimal() -> None:
    assert json_text(Decimal("0.0200000000")) == "0.02"
    assert json_text(Decimal("1E-7")) == "0.0000001"
    assert json_text(Decimal("100")) == "100"
    assert json_text(Decimal("-0.5")) == "-0.5"


@settings(max_examples=500)
@given(units=st.integers(-MAX_UNITS, MAX_UNITS), places=st.integers(0, 30), coefficient=st.integers(-(10**25), 10**25))
def test_units_move_the_point_exactly(units: int, places: int, coefficient: int) -> None:
    """Units and dollars convert as a division and a product by UNIT would."""
    assert from_units(units) == Decimal(units) * UNIT
    assert units_ceil(from_units(units)) == units
    amount = Decimal(coefficient).scaleb(-places)
    exact = amount / UNIT
    if abs(exact) <= MAX_UNITS:
        assert units_ceil(amount) == math.ceil(exact)
        assert units_floor(amount) == math.floor(exact)
