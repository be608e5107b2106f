"""Usage records: where the credits went.

Each priced request that reached the app leaves one ``UsageRecord`` when its
hold ends: who (account, key label), what (model, route, tokens), the money
(held, charged) and how the hold ended (``outcome``).  A store that keeps
records (``keeps_usage = True``) writes it in the same transaction (SQLite) or
script (Redis) as the settle or release it describes, and adds it to a per-day
rollup at the grain (account, day, key, model), so totals over a year are read
from the rollup, not from the raw records.

Outcomes:

    settled       charged from the usage, the rest of the hold released
    overrun       charged more than was held (the upstream reported more)
    released      nothing charged (the app failed, or the upstream answered an error)
    client_left   the client went away before the end; charged per ``on_abort``
    expired       the hold was never ended (the process died); written by the
                  store when it expires the hold: request id, key, model and
                  route are then unknown (the hold id and ``-``)
    late          a settle that arrived after its hold had expired: it charges
                  in full and holds nothing; the hold's ``expired`` record is
                  already there, so a late record is not counted as a request

Amounts are ``Decimal`` dollars here, integer units inside the stores.  Times
are Unix seconds (UTC); days are UTC dates.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal

__all__ = [
    "GROUPS",
    "OUTCOMES",
    "UsageRecord",
    "UsageRow",
    "UsageQuery",
    "day_of",
    "day_start",
    "group_rows",
    "key_label",
    "parse_day",
]

OUTCOMES = ("settled", "overrun", "released", "client_left", "expired", "late")
#: What a summary can group by.
GROUPS = ("day", "model", "key", "account")
#: Route and label text kept in a record is cut to this many characters.
TEXT_MAX = 200


def key_label(api_key: str) -> str:
    """A non-secret name for an API key: the prefix the stores list it by (its
    first 7 and last 4 characters; 3 for a short key).  Never the key."""
    return f"{api_key[:7]}...{api_key[-4:]}" if len(api_key) > 16 else api_key[:3] + "..."


# Not frozen: a frozen dataclass's __init__ costs several times more, and one
# is made on every priced request.  Treat it as a value all the same.
@dataclass(slots=True)
class UsageRecord:
    """One request's use of credits.

    The caller of ``settle``/``release`` fills in what it knows (request id,
    key label, model, route, tokens, ``started_at``, ``outcome``); the store
    fills in ``account``, ``held``, ``charged`` and ``ended_at`` from the hold
    it ends, and turns the outcome into ``late`` when the hold had expired.
    """

    request_id: str
    key: str = "-"
    model: str = "-"
    route: str = "-"
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    outcome: str = "settled"
    started_at: float = 0.0
    account: str = ""
    hold: str = ""
    held: Decimal = Decimal(0)
    charged: Decimal = Decimal(0)
    ended_at: float = 0.0

    def __post_init__(self) -> None:
        if self.outcome not in OUTCOMES:
            raise ValueError(f"unknown usage record outcome {self.outcome!r}")

    def as_json(self) -> dict[str, object]:
        """The record for JSON: amounts as ``Decimal`` (written as exact
        numbers by ``errors.dumps``), times as ISO 8601 UTC."""
        return {
            "request_id": self.request_id,
            "account": self.account,
            "key": self.key,
            "model": self.model,
            "route": self.route,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cached_tokens": self.cached_tokens,
            "held": self.held,
            "charged": self.charged,
            "outcome": self.outcome,
            "started_at": iso(self.started_at),
            "ended_at": iso(self.ended_at),
        }


@dataclass(slots=True)
class UsageRow:
    """One group of a summary: ``group`` is the day (``YYYY-MM-DD``), model,
    key label or account.  ``requests`` does not count ``late`` records."""

    group: str
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    held: Decimal = field(default_factory=Decimal)
    charged: Decimal = field(default_factory=Decimal)

    def as_json(self, by: str) -> dict[str, object]:
        return {
            by: self.group,
            "requests": self.requests,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cached_tokens": self.cached_tokens,
            "held": self.held,
            "charged": self.charged,
        }


@dataclass(frozen=True, slots=True)
class UsageQuery:
    """Filters for records and summaries.  ``since`` and ``until`` are UTC
    days, both included; None is open."""

    account: str | None = None
    key: str | None = None
    model: str | None = None
    since: dt.date | None = None
    until: dt.date | None = None

    def start(self) -> float | None:
        """The first second in range (Unix), or None."""
        return None if self.since is None else day_start(self.since)

    def end(self) -> float | None:
        """The first second after the range (Unix), or None."""
        return None if self.until is None else day_start(self.until + dt.timedelta(days=1))

    def matches(self, record: UsageRecord) -> bool:
        start, end = self.start(), self.end()
        return (
            (self.account is None or record.account == self.account)
            and (self.key is None or record.key == self.key)
            and (self.model is None or record.model == self.model)
            and (start is None or record.ended_at >= start)
            and (end is None or record.ended_at < end)
        )


def parse_day(text: str) -> dt.date:
    """A UTC day from ``YYYY-MM-DD``; ``ValueError`` otherwise."""
    try:
        return dt.date.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"not a day (YYYY-MM-DD): {text!r}") from None


def day_of(when: float) -> str:
    """The UTC day of a Unix time, as ``YYYY-MM-DD``."""
    return dt.datetime.fromtimestamp(when, dt.timezone.utc).date().isoformat()


def day_start(day: dt.date) -> float:
    """The Unix time of a UTC day's first second."""
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc).timestamp()


def iso(when: float) -> str:
    return dt.datetime.fromtimestamp(when, dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def check_group(by: str) -> str:
    if by not in GROUPS:
        raise ValueError(f"group by one of {', '.join(GROUPS)}, not {by!r}")
    return by


def group_rows(
    cells: Iterable[tuple[str, str, str, str, int, int, int, int, int, int]],
    by: str,
) -> list[UsageRow]:
    """Sum rollup cells ``(day, account, key, model, requests, input, output,
    cached, held_units, charged_units)`` into rows grouped ``by``, ordered by
    group."""
    from .money import from_units

    index = {"day": 0, "account": 1, "key": 2, "model": 3}[check_group(by)]
    sums: dict[str, list[int]] = {}
    for cell in cells:
        total = sums.setdefault(str(cell[index]), [0, 0, 0, 0, 0, 0])
        figures = cell[4:]
        for i in range(6):
            total[i] += int(figures[i])
    return [
        UsageRow(name, t[0], t[1], t[2], t[3], from_units(t[4]), from_units(t[5])) for name, t in sorted(sums.items())
    ]


def record_cells(
    records: Iterable[UsageRecord],
) -> Iterable[tuple[str, str, str, str, int, int, int, int, int, int]]:
    """Rollup cells for raw records (stores that sum records on the fly)."""
    from .money import units_ceil

    for r in records:
        yield (
            day_of(r.ended_at),
            r.account,
            r.key,
            r.model,
            0 if r.outcome == "late" else 1,
            r.input_tokens,
            r.output_tokens,
            r.cached_tokens,
            units_ceil(r.held),
            units_ceil(r.charged),
        )


def completed(
    record: UsageRecord, *, account: str, hold: str, held_units: int, charged_units: int, ended_at: float, late: bool
) -> UsageRecord:
    """The caller's record with the store's figures filled in."""
    from dataclasses import replace

    from .money import from_units

    return replace(
        record,
        account=account,
        hold=hold,
        held=from_units(0 if late else held_units),
        charged=from_units(charged_units),
        ended_at=ended_at,
        outcome="late" if late else record.outcome,
    )
