"""The worst-case quote of a request, the affordable ``max_tokens``, the 402,
and the actual cost of reported usage.

    required = input_cost + max_output_cost
    input_cost = input_price * input_tokens   (+ cache writes, below)
    max_output_cost = output_price * max_output_tokens * n

``max_output_tokens`` is the request's own cap (``max_completion_tokens`` /
``max_tokens`` / ``max_output_tokens``), the model's maximum output where the
request sets none, and never more than that maximum (no more can be produced).

The prices are the ones the provider bills this request at
(``ModelPrice.rates``): the requested ``service_tier``'s (refused where the
table has none), and the context tier the input reaches (for input and
output alike).  A request that marks any ``cache_control`` may write all of
its input to the cache: the hold prices the input at the cache-write price of
the longest TTL it asks for.  The settle (``actual_cost``) charges what the
usage reports: cached reads, 5-minute and 1-hour writes, reasoning, at the
tier the reported input reached.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal
from typing import Any

from .errors import InsufficientCredits, InvalidRequest
from .money import display
from .prices import STANDARD_TIERS, ModelPrice, Rates, TierNotPriced
from .shapes import Ask
from .usage import Usage

__all__ = [
    "Quote",
    "Suggestions",
    "actual_cost",
    "affordable_max_tokens",
    "cheapest_alternative",
    "insufficient_credits",
    "make_quote",
]

_ZERO = Decimal(0)


# Not frozen: a frozen dataclass's __init__ costs several times more, and one is
# made on every priced request.  A value all the same: nothing changes one.
@dataclass(slots=True, unsafe_hash=True)
class Quote:
    """The worst case of one request.  Costs are exact dollars."""

    model: str  # as the request named it
    price: ModelPrice  # what it resolved to
    kind: str
    input_tokens: int
    input_exact: bool
    max_output_tokens: int  # per choice, as priced
    requested_max_tokens: int | None  # the request's own cap, as sent
    output_param: str  # the field a client sets to change the cap
    output_source: str  # "request", "model_max" (request set none) or "capped" (above the model's max)
    choices: int
    input_cost: Decimal
    max_output_cost: Decimal
    rates: Rates | None = None  # the prices applied (None: the entry's base prices)
    service_tier: str | None = None  # as the request asked
    cache_ttl: str | None = None  # the longest cache write the request may cause

    @property
    def max_cost(self) -> Decimal:
        return self.input_cost + self.max_output_cost

    @property
    def output_price(self) -> Decimal:
        rates = self.rates or self.price.rates()
        return rates.max_output

    def as_json(self) -> dict[str, Any]:
        """The quote as ``credit-guard quote`` prints it (amounts as Decimal)."""
        return {
            "model": self.model,
            "priced_as": self.price.name,
            "kind": self.kind,
            "input_tokens": self.input_tokens,
            "input_tokens_exact": self.input_exact,
            "max_output_tokens": self.max_output_tokens,
            "n": self.choices,
            "input_cost": self.input_cost,
            "max_output_cost": self.max_output_cost,
            "max_cost": self.max_cost,
        }


def request_rates(ask: Ask, price: ModelPrice, input_tokens: int) -> Rates:
    """The prices ``ask`` is billed at with this input.  Raises
    ``InvalidRequest`` (param ``service_tier``) for a service tier the table
    does not price."""
    try:
        return price.rates(ask.service_tier, input_tokens)
    except TierNotPriced as exc:
        offered = ", ".join(price.service_tiers()) or "none"
        raise InvalidRequest(
            f"'service_tier' {ask.service_tier!r} cannot be priced: {exc} (priced tiers beyond the "
            f"standard one: {offered}).",
            param="service_tier",
        ) from None


def make_quote(ask: Ask, price: ModelPrice, input_tokens: int, input_exact: bool = True) -> Quote:
    """Price ``ask``'s worst case.

    Raises ``InvalidRequest`` when the request sets no output cap and the
    table knows no maximum output for the model (the worst case is unbounded),
    or asks for a service tier the table does not price (param ``service_tier``).
    """
    rates = request_rates(ask, price, input_tokens)
    output_param = ask.output_param or _default_output_param(ask.kind)
    requested = ask.output_tokens
    if requested is None and price.kind == ask.kind:
        # The endpoint's own default cap binds only its own kind of model.
        requested = ask.default_output_tokens
    model_max = price.max_output_tokens
    if ask.kind == "embedding":
        max_out, source = 0, "request"
    elif requested is None:
        if model_max is None:
            raise InvalidRequest(
                f"The price table has no maximum output for {ask.model}: set {output_param} "
                "so the request's maximum cost is known.",
                param=output_param,
            )
        max_out, source = model_max, "model_max"
    elif model_max is not None and requested > model_max:
        max_out, source = model_max, "capped"
    else:
        max_out, source = requested, "request"
    # Reasoning tokens bill as output and count against the same cap; where the
    # table prices them apart, the dearer of the two bounds the worst case.
    max_output_cost = rates.max_output * max_out * ask.choices
    input_cost = rates.input * input_tokens
    if ask.cache_ttl is not None:
        # Any marked prefix may be written; the whole input bounds them all.
        input_cost = (rates.cache_write_1h if ask.cache_ttl == "1h" else rates.cache_write) * input_tokens
    # In the order of the fields (positional: a call with keywords costs twice as much).
    return Quote(
        ask.model,
        price,
        ask.kind,
        input_tokens,
        input_exact,
        max_out,
        requested,
        output_param,
        source,
        ask.choices,
        input_cost,
        max_output_cost,
        rates,
        ask.service_tier,
        ask.cache_ttl,
    )


def actual_cost(quote: Quote, usage: Usage) -> Decimal:
    """The cost of reported usage, exact: at the service tier the response
    says it was served at where the table prices it (the requested one
    otherwise) and the context tier the reported input reached; cached reads at the cached price,
    cache writes at the 5-minute or 1-hour write price (all at the 1-hour one
    where the request asked for it and the usage does not split them),
    reasoning output at the reasoning price.  Where the request asked for
    caching and the usage does not say what was written (or the guard counted
    the usage itself), all uncached input is charged as written.  Counts that
    cannot be parts of their total are read as reported beside it (the reading
    that bills more): more cached tokens than input, more reasoning than output;
    a part is never billed twice, and never dropped."""
    price = quote.price
    tier = quote.service_tier
    served = usage.service_tier
    if served is not None and (served in STANDARD_TIERS or served in price.service_tiers()):
        # The tier the provider says it served (and bills) the request at.
        tier = served
    input_tokens, output_tokens = usage.input_tokens, usage.output_tokens
    cached = usage.cached_tokens
    if cached > input_tokens:
        # More read from the cache than the whole input: the input was
        # reported without the reads (clipping would bill them as nothing).
        input_tokens += cached
    reasoning = usage.reasoning_tokens
    if reasoning > output_tokens:
        # Likewise, output reported without its reasoning.
        output_tokens += reasoning
    rates = price.rates(tier, input_tokens, strict=False)
    writes = min(usage.cache_write_tokens, input_tokens - cached)
    if quote.cache_ttl is not None and not usage.cache_reported:
        # Caching was asked for and the response does not say what it wrote:
        # all the input not read from the cache may have been.
        writes = input_tokens - cached
    if usage.cache_write_1h_tokens or usage.cache_write_5m_tokens:
        long_writes = min(usage.cache_write_1h_tokens, writes)
    else:
        long_writes = writes if quote.cache_ttl == "1h" else 0
    cost = rates.input * (input_tokens - cached - writes) + rates.output * (output_tokens - reasoning)
    # The other parts only where there are any (most answers have none).
    if cached:
        cost += rates.cached_input * cached
    if writes:
        cost += rates.cache_write * (writes - long_writes) + rates.cache_write_1h * long_writes
    if reasoning:
        cost += rates.reasoning_output * reasoning
    return cost


def _default_output_param(kind: str) -> str:
    if kind == "responses":
        return "max_output_tokens"
    return "max_tokens"


def affordable_max_tokens(quote: Quote, available: Decimal) -> int | None:
    """The largest output cap whose worst case fits ``available`` exactly.

    ``floor((available - input_cost) / (output_price * n))``, never above the
    model's maximum output; None where not even one output token fits or the
    request has no output to cap.
    """
    per_token = quote.output_price * quote.choices
    room = available - quote.input_cost
    if quote.kind == "embedding" or room < per_token or per_token <= _ZERO:
        return None
    tokens = int((room / per_token).to_integral_value(rounding=ROUND_FLOOR))
    model_max = quote.price.max_output_tokens
    if model_max is not None:
        tokens = min(tokens, model_max)
    return tokens if tokens >= 1 else None


@dataclass(frozen=True, slots=True)
class Suggestions:
    """The texts of the 402's suggestions.  Placeholders: ``{shortfall}``,
    ``{param}``, ``{affordable}``, ``{requested}``, ``{model}``, ``{cost}``,
    ``{url}``, ``{input_cost}``."""

    add_credits: str = "Add {shortfall} or more in credits to your account"
    set_max_tokens: str = "Try setting {param} to {affordable} or less to fit your available balance"
    reduce_max_tokens: str = "Reduce {param} from {requested} to lower the maximum possible cost"
    set_a_cap: str = "Set {param} to lower the maximum possible cost"
    cheaper_model: str = "Use a less expensive model, such as {model} (up to {cost} for this request)"
    cheaper_generic: str = "Use a less expensive model"
    shorten_input: str = "Shorten the input: it alone costs {input_cost}"
    wait_in_flight: str = "Wait for your other requests in flight to finish, then retry"
    billing: str = "Visit {url} to add credits"


def insufficient_credits(
    quote: Quote,
    *,
    available: Decimal,
    held: Decimal,
    cheaper: tuple[str, Decimal] | None = None,
    billing_url: str | None = None,
    suggestions: Suggestions | None = None,
) -> InsufficientCredits:
    """The 402 of ``error-contract.md`` for a quote the balance cannot cover.

    ``available`` is what the account could hold now, ``held`` what its other
    holds keep aside; ``cheaper`` the cheapest other model (name, worst case)
    that would afford this request.
    """
    texts = suggestions or Suggestions()
    required = quote.max_cost
    deficit = required - available
    affordable = affordable_max_tokens(quote, available)
    if quote.input_cost > available:
        reason = "input_exceeds_balance"
    elif available + held >= required:
        reason = "in_flight_holds"
    else:
        reason = "insufficient_balance"

    cost_text = display(required, owed=True)
    have_text = display(available, owed=False)
    short_text = display(deficit, owed=True)
    basis = _basis(quote)
    message = (
        f"Insufficient credits for this request. Maximum possible cost: {cost_text}. "
        f"Available balance: {have_text}. Shortfall: {short_text}."
    )
    detail = (
        f"Your request to {quote.model} requires up to {cost_text} in credits ({basis}), "
        f"but you only have {have_text} available. You need {short_text} more credits to proceed."
    )
    if reason == "in_flight_holds":
        detail += " Other requests of yours in flight hold the rest of your balance until they finish."

    fill = {
        "shortfall": short_text,
        "param": quote.output_param,
        "affordable": affordable,
        "requested": quote.requested_max_tokens,
        "url": billing_url,
        "input_cost": display(quote.input_cost, owed=True),
    }
    lines: list[str] = []
    if reason == "in_flight_holds":
        lines.append(texts.wait_in_flight.format(**fill))
    lines.append(texts.add_credits.format(**fill))
    if affordable is not None:
        lines.append(texts.set_max_tokens.format(**fill))
        if quote.requested_max_tokens is not None:
            lines.append(texts.reduce_max_tokens.format(**fill))
        else:
            lines.append(texts.set_a_cap.format(**fill))
    elif quote.kind != "embedding" or quote.input_cost > available:
        lines.append(texts.shorten_input.format(**fill))
    if cheaper is not None:
        lines.append(texts.cheaper_model.format(model=cheaper[0], cost=display(cheaper[1], owed=True), **fill))
    else:
        lines.append(texts.cheaper_generic.format(**fill))
    if billing_url:
        lines.append(texts.billing.format(**fill))

    context: dict[str, Any] = {
        "current_credits": available,
        "required_credits": required,
        "credit_deficit": deficit,
        "requested_model": quote.model,
        "requested_max_tokens": quote.requested_max_tokens,
        "input_tokens": quote.input_tokens,
        "input_cost": quote.input_cost,
        "max_output_cost": quote.max_output_cost,
        "affordable_max_tokens": affordable,
        "check_type": "reservation",
        "reason": reason,
        "held_credits": held,
        "priced_model": quote.price.name,
        "max_output_tokens": quote.max_output_tokens,
        "n": quote.choices,
        "input_tokens_exact": quote.input_exact,
    }
    return InsufficientCredits(
        message,
        param=quote.output_param,
        detail=detail,
        suggestions=lines,
        context=context,
    )


def _basis(quote: Quote) -> str:
    param = quote.output_param
    if quote.kind == "embedding":
        basis = f"{quote.input_tokens} input tokens"
    elif quote.output_source == "model_max":
        basis = f"the model's maximum output of {quote.max_output_tokens} tokens, since no {param} was set"
    elif quote.output_source == "capped":
        basis = (
            f"{param}={quote.requested_max_tokens}, capped at the model's maximum output of "
            f"{quote.max_output_tokens} tokens"
        )
    else:
        basis = f"{param}={quote.max_output_tokens}"
    if quote.choices > 1:
        basis += f" and n={quote.choices}"
    return "based on " + basis + "".join(f", {note}" for note in _price_notes(quote))


def _price_notes(quote: Quote) -> list[str]:
    """What the prices of this quote are, where they are not the base ones."""
    notes = []
    if quote.service_tier is not None and quote.service_tier not in STANDARD_TIERS:
        notes.append(f"at the {quote.service_tier} service tier's prices")
    reached = [t.above for t in quote.price.tiers if 0 < t.above < quote.input_tokens]
    if reached:
        notes.append(f"at the prices of input above {max(reached)} tokens")
    if quote.cache_ttl is not None:
        notes.append(f"with all input priced as a {quote.cache_ttl} prompt-cache write (cache_control)")
    return notes


def cheapest_alternative(
    quote: Quote,
    candidates: Iterable[ModelPrice],
    available: Decimal,
    requote: Callable[[ModelPrice], Quote | None],
) -> tuple[str, Decimal] | None:
    """The cheapest candidate whose worst case for this same request fits
    ``available``: (name, worst case).  ``requote`` prices the request on a
    candidate (None where it cannot)."""
    best: tuple[str, Decimal] | None = None
    for candidate in candidates:
        if candidate.name == quote.price.name:
            continue
        other = requote(candidate)
        if other is None or other.max_cost > available or other.max_cost >= quote.max_cost:
            continue
        if best is None or other.max_cost < best[1]:
            best = (candidate.name, other.max_cost)
    return best
