"""The credit store contract.

Every backend (memory, SQLite, Redis) keeps, per account, four figures that obey

    available + held + spent == granted

after any interleaving of calls, crashes and expiries.  Amounts cross this
interface as ``Decimal`` dollars; inside, a store keeps whole units of
``money.UNIT`` and rounds nothing itself: ``reserve`` and ``settle`` round the
amount up to a unit before they touch the balance (see ``money.units_ceil``).

``reserve`` is the one atomic check-and-hold.  ``settle`` and ``release`` are
idempotent: the second call on a hold changes nothing and reports what the first
did.  A hold that is neither settled nor released expires ``ttl`` seconds after
it was made (or last extended) and its amount returns to ``available``.  A settle
that arrives after its hold expired still charges the actual cost: the upstream
did the work, so the money is spent (``Settlement.late`` says so).

Usage records (``records.py``): a store with ``keeps_usage = True`` also takes
``settle(hold, actual, record=UsageRecord)`` and ``release(hold, record=...)``
and writes the record in the same transaction as the change it describes (only
the first time: a repeat writes nothing); it writes an ``expired`` record itself
when a hold expires; and it answers ``usage_records``, ``usage_summary`` and
``prune_usage``.  A store without the flag is called without records.  Such a
store also lists its accounts (``accounts``) and grants once per idempotency
key (``grant_once``: the key is recorded in the grant's own transaction).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol, runtime_checkable

from ..money import from_units

__all__ = [
    "Balance",
    "CreditStore",
    "Grant",
    "Hold",
    "IdempotencyConflict",
    "Insufficient",
    "Settlement",
    "StoreUnavailable",
    "DEFAULT_HOLD_TTL",
]

#: Seconds a hold lives without being extended, unless the caller says otherwise.
DEFAULT_HOLD_TTL = 300.0

logger = logging.getLogger("credit_guard")


class StoreUnavailable(Exception):
    """The store could not be reached or did not answer; nothing was changed
    that the caller can rely on (a reserve that raised this holds nothing the
    caller knows of, and expires if it did reach the store)."""


@dataclass(frozen=True, slots=True)
class Balance:
    """An account's figures in dollars.  ``available`` can be negative only after
    a settle overran its hold."""

    available: Decimal
    held: Decimal
    spent: Decimal
    granted: Decimal


# Not frozen: a frozen dataclass's __init__ costs several times more, and one is
# made on every priced request.  A value all the same: nothing changes one.
@dataclass(slots=True, unsafe_hash=True)
class Hold:
    """A successful reservation: ``amount`` (rounded up to a store unit) is held
    on ``account`` until settled, released, or ``expires_at`` (Unix seconds)."""

    id: str
    account: str
    amount: Decimal
    expires_at: float
    #: The account's available balance right after this hold (None where the
    #: store does not report it).
    available: Decimal | None = None


# Not frozen: a frozen dataclass's __init__ costs several times more, and one is
# made on every priced request.  A value all the same: nothing changes one.
@dataclass(slots=True, unsafe_hash=True)
class Insufficient:
    """A refused reservation.  ``available`` is what the account could hold now;
    ``held`` is what other holds keep aside (if ``available + held`` covers the
    amount, the shortage is transient)."""

    account: str
    requested: Decimal
    available: Decimal
    held: Decimal


# Not frozen: a frozen dataclass's __init__ costs several times more, and one is
# made on every priced request.  A value all the same: nothing changes one.
@dataclass(slots=True, unsafe_hash=True)
class Settlement:
    """What finishing a hold did.

    ``status`` is ``"settled"``, ``"released"`` or ``"expired"`` (a release of a
    hold that had already expired).  ``charged`` is what was taken from the
    account, ``released`` what went back to ``available``.  ``overrun`` is the
    part of ``charged`` above the hold's amount.  ``late`` is true when the hold
    had expired before this settle charged it.  ``repeat`` is true when the hold
    had already been finished and this call changed nothing.
    """

    hold_id: str
    status: str
    charged: Decimal
    released: Decimal
    overrun: Decimal
    late: bool = False
    repeat: bool = False

    @classmethod
    def of_units(
        cls, hold_id: str, status: str, charged: int, held: int, *, late: bool = False, repeat: bool = False
    ) -> Settlement:
        """A hold of ``held`` units that ended charging ``charged``: what
        went back is what the charge left of the hold, the overrun what it
        took beyond it."""
        released = held - charged
        overrun = 0
        if released < 0:
            released, overrun = 0, -released
        return cls(hold_id, status, from_units(charged), from_units(released), from_units(overrun), late, repeat)


@dataclass(frozen=True, slots=True)
class Grant:
    """What an idempotent grant did: the balance after it, and whether this
    idempotency key had already granted (then nothing changed)."""

    balance: Balance
    repeat: bool


class IdempotencyConflict(ValueError):
    """An idempotency key already granted a different amount (or account)."""


@runtime_checkable
class CreditStore(Protocol):
    """Where credits live.  All methods may raise ``StoreUnavailable``."""

    async def reserve(self, account: str, amount: Decimal, *, ttl: float = DEFAULT_HOLD_TTL) -> Hold | Insufficient:
        """Atomically hold ``amount`` if ``available`` covers it, else refuse.
        An unknown account has nothing available."""
        ...

    async def settle(self, hold: Hold, actual: Decimal) -> Settlement:
        """Charge ``actual`` (rounded up to a unit, may exceed the hold) and
        return the rest of the hold.  Idempotent."""
        ...

    async def release(self, hold: Hold) -> Settlement:
        """Return the whole hold to ``available``; charge nothing.  Idempotent."""
        ...

    async def extend(self, hold: Hold, ttl: float) -> bool:
        """Push a live hold's expiry to ``ttl`` seconds from now.  False when the
        hold is already finished or expired."""
        ...

    async def balance(self, account: str) -> Balance:
        """The account's figures; an unknown account is all zeros."""
        ...

    async def grant(self, account: str, amount: Decimal | str | int) -> Balance:
        """Add credits (creating the account when new).  A negative amount takes
        credits back, but never below zero available."""
        ...

    async def account_for_key(self, api_key: str) -> str | None:
        """The account an API key belongs to, or None.  Stores without keys
        return None."""
        ...

    async def account_exists(self, account: str) -> bool:
        """Whether the store knows ``account``: it was granted credits or
        given a key.  (``balance`` cannot tell: an unknown account is all zeros.)"""
        ...

    async def accounts(self) -> list[str]:
        """Every account the store knows, sorted."""
        ...

    async def aclose(self) -> None:
        """Release connections.  The store may not be used afterwards."""
        ...


async def release_unreceived(store: CreditStore, hold: Hold) -> None:
    """Release ``hold``, made for a caller that was cancelled before it
    received it.  Never raises (it runs as that cancellation propagates): a
    hold the store cannot release is logged and expires after its TTL."""
    try:
        await store.release(hold)
    except Exception:
        logger.exception("credit_guard.unreceived_hold_kept hold=%s: it will expire", hold.id)
