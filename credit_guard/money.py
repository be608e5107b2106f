"""Exact money: parsing, store units, rounding and display.

Amounts are `decimal.Decimal` dollars everywhere in the library; no binary float
ever holds one.  Stores keep whole *units* of ``UNIT`` dollars (1e-10) as
integers, so a store never rounds: the rounding happens here, once, with a
direction chosen by the caller.  Amounts a user owes (holds, charges, costs,
shortfalls) round up; amounts a user has (balances) round down.
"""

from __future__ import annotations

import math
from decimal import ROUND_CEILING, ROUND_FLOOR, Context, Decimal, InvalidOperation

__all__ = [
    "UNIT",
    "MAX_UNITS",
    "parse_amount",
    "to_units",
    "units_ceil",
    "units_floor",
    "from_units",
    "display",
    "json_text",
]

# Units are dollars with the point moved this many places.
_PLACES = 10
#: The smallest amount a store keeps, in dollars.
UNIT = Decimal(1).scaleb(-_PLACES)
#: The largest number of units a store keeps on one account (int64 in SQLite and
#: Redis): about $922 million.
MAX_UNITS = 2**63 - 1

# Enough precision for any product of a token count and a per-token price.
_CTX = Context(prec=60)
_ZERO = Decimal(0)


def parse_amount(value: object, *, what: str = "amount") -> Decimal:
    """Read a dollar amount from a string, int or Decimal.

    Floats are refused (``TypeError``): their binary value is not the decimal a
    person wrote.  Non-finite values are refused (``ValueError``).
    """
    if isinstance(value, bool) or isinstance(value, float):
        raise TypeError(f"{what} must be a decimal string, int or Decimal, not {type(value).__name__}")
    if isinstance(value, Decimal):
        amount = value
    elif isinstance(value, int):
        amount = Decimal(value)
    elif isinstance(value, str):
        text = value.strip().lstrip("$")
        try:
            amount = Decimal(text)
        except InvalidOperation:
            raise ValueError(f"{what} is not a decimal number: {value!r}") from None
    else:
        raise TypeError(f"{what} must be a decimal string, int or Decimal, not {type(value).__name__}")
    if not amount.is_finite():
        raise ValueError(f"{what} must be finite: {value!r}")
    return amount


def to_units(amount: Decimal, *, what: str = "amount") -> int:
    """Whole store units for an amount that must be exact at that resolution.

    Used for grants: a grant finer than ``UNIT`` is a mistake, not something to
    round silently.
    """
    units = amount / UNIT
    if units != units.to_integral_value():
        raise ValueError(f"{what} {amount} is finer than the smallest unit ({UNIT} dollars)")
    result = int(units)
    _check_range(result, what)
    return result


def units_ceil(amount: Decimal) -> int:
    """Units for an amount owed (a hold, a charge): rounded up."""
    # Moving the point (scaleb) is exact and cheaper than dividing by UNIT.
    result = math.ceil(amount.scaleb(_PLACES_EXPONENT, _CTX))
    _check_range(result, "amount")
    return result


def units_floor(amount: Decimal) -> int:
    """Units for an amount held by the user: rounded down."""
    result = math.floor(amount.scaleb(_PLACES_EXPONENT, _CTX))
    _check_range(result, "amount")
    return result


def from_units(units: int) -> Decimal:
    """Dollars for a whole number of units, exact."""
    if not units:
        return _NO_UNITS  # the commonest figure (nothing released, no overrun)
    return Decimal(units).scaleb(_UNIT_EXPONENT, _CTX)


_NO_UNITS = Decimal(0).scaleb(-_PLACES)
# The exponents as Decimals: scaleb converts an int to one on every call.
_UNIT_EXPONENT = Decimal(-_PLACES)
_PLACES_EXPONENT = Decimal(_PLACES)


def _check_range(units: int, what: str) -> None:
    if abs(units) > MAX_UNITS:
        raise ValueError(f"{what} is larger than a store can keep (${from_units(MAX_UNITS)})")


def display(amount: Decimal, *, owed: bool) -> str:
    """``$`` text for a message: four decimals, more where the amount is small.

    An amount owed rounds up and one available rounds down.  Below one cent
    the text keeps two significant digits, so no non-zero amount ever reads as
    ``$0.0000``.
    """
    places = 4
    magnitude = abs(amount)
    if magnitude and magnitude < Decimal("0.01"):
        # adjusted() is the exponent of the first significant digit: -3 for 0.00x
        places = max(4, -magnitude.adjusted() + 1)
    quantum = Decimal(1).scaleb(-places)
    rounding = ROUND_CEILING if owed else ROUND_FLOOR
    shown = amount.quantize(quantum, rounding=rounding, context=_CTX)
    return "$" + format(shown, "f")


def json_text(amount: Decimal) -> str:
    """The exact decimal text of an amount, for a JSON number (no exponent)."""
    if amount == _ZERO:
        return "0"
    text = format(amount.normalize(_CTX), "f")
    return text
