"""An in-process credit store: exact, atomic, and gone with the process.

Good for tests, single-process gateways and demos.  Every method runs without
awaiting anything while it changes state, and under a lock, so it is atomic on
one event loop and across threads.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import heapq
import marshal
import operator
import threading
import time
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

from .._ids import random_hex
from .._kept import Fifo, Kept, Log
from ..money import from_units, parse_amount, to_units, units_ceil
from ..records import UsageQuery, UsageRecord, UsageRow, completed, day_start, group_rows, record_cells
from .base import DEFAULT_HOLD_TTL, Balance, Grant, Hold, IdempotencyConflict, Insufficient, Settlement

__all__ = ["MemoryStore"]

# Finished holds remembered for idempotent repeats.
_FINISHED_KEPT = 100_000
#: Usage records kept by default (the oldest go first).
USAGE_KEPT = 10_000


# What the store keeps of its past (records, finished and expired holds) is
# kept out of the garbage collector's sight: each entry is packed into bytes
# (``marshal``: exact for every string and number; a finished hold into one
# int) in a ``Kept``, whose plain dicts the collector stops walking, so the
# hundred thousand entries kept cost a full collection of the host's heap
# nothing (walked, they cost 7 ms and more per collection, on whatever request
# was in flight).
# A record: its own fields (``_fields``, in its order), then account, hold,
# held units, charged units, ended at, late.
_KeptRecord = tuple[tuple[Any, ...], str, str, int, int, float, bool]
# A finished hold: status, charged units, held units, late.
_Done = tuple[str, int, int, bool]


def _pack_done(status: str, charged: int, held: int, late: bool) -> int:
    """A ``_Done`` as one int (units fit in 64 bits: ``money.MAX_UNITS``):
    made on every settle, it costs far less than packing a tuple."""
    return (charged << 64 | held) << 2 | late << 1 | (status == "settled")


def _unpack_done(packed: int) -> _Done:
    status = "settled" if packed & 1 else "released"
    late = bool(packed & 2)
    units = packed >> 2
    return status, units >> 64, units & (1 << 64) - 1, late


def _pack(value: tuple[Any, ...]) -> bytes | tuple[Any, ...]:
    """``value`` as bytes; itself where it holds what marshal cannot write
    (a caller's own type in a record: kept, only walked by the collector)."""
    try:
        return marshal.dumps(value, 2)
    except ValueError:
        return value


def _unpack(packed: bytes | tuple[Any, ...]) -> Any:
    return marshal.loads(packed) if isinstance(packed, bytes) else packed


# A record's own fields, in its order, as one tuple (made in C).
_fields: Callable[[UsageRecord], tuple[Any, ...]] = operator.attrgetter(
    "request_id", "key", "model", "route", "input_tokens", "output_tokens", "cached_tokens", "outcome", "started_at"
)


# A live hold: (account, units, expires_at, created), a plain tuple rather than
# an object of a class of its own.  It lives as long as its request, across
# the app's whole run: a tuple of strings and numbers is one the host's
# garbage collector stops tracking at its first pass (an object would be
# carried into its oldest generation, bringing its full passes sooner).
_Live = tuple[str, int, float, float]


class MemoryStore:
    """Credits in a dict.

    ``MemoryStore({"acct_1": "0.02"})`` starts ``acct_1`` with $0.02 granted.
    ``keys`` maps API keys to accounts (kept as SHA-256 digests, never in clear).
    ``clock`` returns Unix seconds (tests pass their own to drive expiry).
    ``usage_kept``: usage records kept in memory; the oldest are dropped first,
    so summaries cover only the records still kept.
    """

    #: Writes usage records when ``settle``/``release`` are given one.
    keeps_usage = True

    def __init__(
        self,
        balances: Mapping[str, Decimal | str | int] | None = None,
        *,
        keys: Mapping[str, str] | None = None,
        clock: object = None,
        usage_kept: int = USAGE_KEPT,
    ) -> None:
        if usage_kept < 0:
            raise ValueError("usage_kept must not be negative")
        # Packed ``_KeptRecord``s by sequence number: made into finished
        # UsageRecords only when read, to keep settles cheap.
        self._records: Log[bytes | tuple[Any, ...]] = Log(usage_kept)
        self._clock = clock if callable(clock) else time.time
        self._lock = threading.Lock()
        # Each account's units, in three dicts of ints: the collector never
        # tracks such a dict, where an object per account would be walked by
        # every full collection of the host's heap.  An account is known from
        # its first grant or hold (``_granted`` has it, with 0 at least).
        self._granted: dict[str, int] = {}
        self._spent: dict[str, int] = {}
        self._held: dict[str, int] = {}
        self._live: dict[str, _Live] = {}
        # (expires_at, hold id) of every live hold, a heap: the overdue are
        # found at its top, whatever the number of holds in flight.  Entries
        # of holds since ended or extended stay until they surface (``_stale``
        # counts them) or the heap is rebuilt.
        self._due: list[tuple[float, str]] = []
        self._stale = 0
        # Finished holds (a ``_Done`` packed by ``_pack_done``), for idempotent repeats.
        self._finished: Fifo[str, int] = Fifo(_FINISHED_KEPT)
        # An expired hold's account and units, packed (a late settle still charges it).
        self._expired: Kept[str, bytes | tuple[Any, ...]] = Kept()
        self._keys: dict[str, str] = {}
        self._grants_seen: dict[tuple[str, str], int] = {}
        self._prefixes: dict[str, str] = {}
        for account, amount in (balances or {}).items():
            units = to_units(parse_amount(amount, what=f"balance of {account}"), what="balance")
            if units < 0:
                raise ValueError(f"balance of {account} must not be negative")
            self._granted[account] = units
        for key, account in (keys or {}).items():
            self._add_key(key, account)

    # -- keys ---------------------------------------------------------------

    def _add_key(self, api_key: str, account: str) -> str:
        prefix = f"{api_key[:7]}...{api_key[-4:]}" if len(api_key) > 16 else api_key[:3] + "..."
        self._keys[_digest(api_key)] = account
        self._prefixes[_digest(api_key)] = prefix
        return prefix

    async def add_key(self, api_key: str, account: str) -> str:
        """Map an API key to an account; returns its non-secret prefix."""
        return self._add_key(api_key, account)

    async def revoke_key(self, key_or_prefix: str) -> int:
        """Revoke a key, given whole or by its prefix; returns how many."""
        digests = [d for d, p in self._prefixes.items() if d == _digest(key_or_prefix) or p == key_or_prefix]
        for digest in digests:
            self._keys.pop(digest, None)
            self._prefixes.pop(digest, None)
        return len(digests)

    async def list_keys(self, account: str | None = None) -> list[dict[str, object]]:
        return [
            {"prefix": self._prefixes[d], "account": a, "created": None, "revoked": None}
            for d, a in self._keys.items()
            if account is None or a == account
        ]

    async def account_for_key(self, api_key: str) -> str | None:
        return self._keys.get(_digest(api_key))

    async def account_exists(self, account: str) -> bool:
        with self._lock:
            return account in self._granted or account in self._keys.values()

    async def accounts(self) -> list[str]:
        with self._lock:
            return sorted(set(self._granted) | set(self._keys.values()))

    # -- the contract -------------------------------------------------------

    async def reserve(self, account: str, amount: Decimal, *, ttl: float = DEFAULT_HOLD_TTL) -> Hold | Insufficient:
        units = units_ceil(amount)
        if units < 0:
            raise ValueError("a hold must not be negative")
        now = self._clock()
        with self._lock:
            self._expire_due(now)
            held = self._held.get(account, 0)
            available = self._granted.get(account, 0) - self._spent.get(account, 0) - held
            if units > available:
                return Insufficient(
                    account=account,
                    requested=from_units(units),
                    available=from_units(max(available, 0)),
                    held=from_units(held),
                )
            self._held[account] = held + units
            self._granted.setdefault(account, 0)
            hold_id = "hold_" + random_hex(16)
            expires_at = now + ttl
            self._live[hold_id] = (account, units, expires_at, now)
            heapq.heappush(self._due, (expires_at, hold_id))
        # id, account, amount, expires_at, available (positional: a call with keywords costs twice as much)
        return Hold(hold_id, account, from_units(units), expires_at, from_units(available - units))

    async def settle(self, hold: Hold, actual: Decimal, *, record: UsageRecord | None = None) -> Settlement:
        charge = units_ceil(actual)
        if charge < 0:
            raise ValueError("an actual cost must not be negative")
        return self._finish(hold, charge, record)

    async def release(self, hold: Hold, *, record: UsageRecord | None = None) -> Settlement:
        return self._finish(hold, None, record)

    async def extend(self, hold: Hold, ttl: float) -> bool:
        now = self._clock()
        with self._lock:
            self._expire_due(now)
            live = self._live.get(hold.id)
            if live is None:
                return False
            account, units, _, created = live
            expires_at = now + ttl
            self._live[hold.id] = (account, units, expires_at, created)
            heapq.heappush(self._due, (expires_at, hold.id))
            self._stale += 1  # the hold's earlier entry
            return True

    async def balance(self, account: str) -> Balance:
        with self._lock:
            self._expire_due(self._clock())
            return self._balance(account)

    async def grant(self, account: str, amount: Decimal | str | int) -> Balance:
        units = to_units(parse_amount(amount, what="grant"), what="grant")
        with self._lock:
            self._expire_due(self._clock())
            if units < 0 and self._available(account) + units < 0:
                raise ValueError("cannot take back more than is available")
            self._granted[account] = self._granted.get(account, 0) + units
            return self._balance(account)

    async def grant_once(
        self, account: str, amount: Decimal | str | int, idempotency_key: str, *, note: str | None = None
    ) -> Grant:
        """``grant`` once per (account, ``idempotency_key``): a repeat changes
        nothing; the same key with another amount raises ``IdempotencyConflict``."""
        units = to_units(parse_amount(amount, what="grant"), what="grant")
        with self._lock:
            seen = self._grants_seen.get((account, idempotency_key))
            if seen is not None:
                if seen != units:
                    raise IdempotencyConflict("this idempotency key already granted another amount")
                return Grant(self._balance(account), True)
            if units < 0 and self._available(account) + units < 0:
                raise ValueError("cannot take back more than is available")
            self._granted[account] = self._granted.get(account, 0) + units
            self._grants_seen[(account, idempotency_key)] = units
            return Grant(self._balance(account), False)

    async def expire(self) -> int:
        """Expire every overdue hold now; returns how many."""
        with self._lock:
            return self._expire_due(self._clock())

    # -- usage records ---------------------------------------------------------

    async def usage_records(self, query: UsageQuery | None = None, *, limit: int = 100) -> list[UsageRecord]:
        """Kept records matching ``query``, newest first (at most ``limit``)."""
        query = query or UsageQuery()
        found = [r for r in self._finished_records() if query.matches(r)]
        found.reverse()
        found.sort(key=lambda r: r.ended_at, reverse=True)
        return found[:limit]

    async def usage_summary(self, query: UsageQuery | None = None, *, by: str = "day") -> list[UsageRow]:
        """Kept records matching ``query``, summed per ``by`` (see ``records.GROUPS``)."""
        query = query or UsageQuery()
        return group_rows(record_cells(r for r in self._finished_records() if query.matches(r)), by)

    def _finished_records(self) -> list[UsageRecord]:
        with self._lock:
            kept = [_unpack(packed) for _, packed in self._records.items()]
        return [
            completed(
                UsageRecord(*fields), account=a, hold=h, held_units=held, charged_units=charged, ended_at=at, late=late
            )
            for fields, a, h, held, charged, at, late in kept
        ]

    async def prune_usage(self, before: dt.date, *, account: str | None = None) -> int:
        """Drop records (of ``account``, or all) that ended before the UTC day
        ``before``; returns how many."""
        cutoff = day_start(before)
        dropped = 0
        with self._lock:
            for seq, packed in self._records.items():
                record = _unpack(packed)
                if record[5] < cutoff and (account is None or record[1] == account):
                    self._records.remove(seq)
                    dropped += 1
        return dropped

    async def aclose(self) -> None:
        return None

    # -- internals ----------------------------------------------------------

    def _finish(self, hold: Hold, charge: int | None, record: UsageRecord | None) -> Settlement:
        with self._lock:
            now = self._clock()
            self._expire_due(now)
            # A hold id is live, finished, expired or unknown: the live, the
            # commonest, are looked up first.
            live = self._live.pop(hold.id, None)
            if live is not None:
                self._stale += 1  # its entry in the heap
                account, units, _, _ = live
                self._held[account] -= units
                charged = 0 if charge is None else charge
                if charged:
                    self._spent[account] = self._spent.get(account, 0) + charged
                result = Settlement.of_units(hold.id, "released" if charge is None else "settled", charged, units)
                if record is not None:
                    self._record((_fields(record), account, hold.id, units, charged, now, False))
                done = _pack_done(result.status, charged, units, False)
            else:
                finished = self._finished.get(hold.id)
                if finished is not None:
                    status, charged, held, late = _unpack_done(finished)
                    return Settlement.of_units(hold.id, status, charged, held, late=late, repeat=True)
                packed = self._expired.pop(hold.id)
                if packed is None:
                    # Never made here, or forgotten long ago: nothing to change.
                    return Settlement(hold.id, "unknown", Decimal(0), Decimal(0), Decimal(0), repeat=True)
                expired: tuple[str, int] = _unpack(packed)
                if charge is None:
                    # Releasing an expired hold changes nothing; a late settle
                    # may still charge it.
                    self._expired.put(hold.id, packed)
                    return Settlement(hold.id, "expired", Decimal(0), Decimal(0), Decimal(0))
                else:
                    # The hold went back to available when it expired; the work
                    # was still done, so charge it now.
                    self._spent[expired[0]] = self._spent.get(expired[0], 0) + charge
                    # Nothing is held any more: all of the charge is overrun.
                    result = Settlement.of_units(hold.id, "settled", charge, 0, late=True)
                    if record is not None:
                        self._record((_fields(record), expired[0], hold.id, 0, charge, now, True))
                    done = _pack_done("settled", charge, 0, True)
            self._finished.add(hold.id, done)
            return result

    def _expire_due(self, now: float) -> int:
        """Expire every hold overdue at ``now``; how many."""
        due = self._due
        if (not due or due[0][0] > now) and self._stale <= 1024:
            return 0  # nothing due, nothing to rebuild: most calls
        expired = 0
        while due and due[0][0] <= now:
            _, hold_id = heapq.heappop(due)
            live = self._live.get(hold_id)
            if live is not None and live[2] <= now:  # its expires_at
                self._expire_one(hold_id, now)
                expired += 1
            else:
                self._stale -= 1  # ended or extended since
        if self._stale > 1024 and self._stale > len(self._live):
            # Mostly ended holds: rebuilt from the live ones.
            self._due = [(expires_at, hold_id) for hold_id, (_, _, expires_at, _) in self._live.items()]
            heapq.heapify(self._due)
            self._stale = 0
        return expired

    def _expire_one(self, hold_id: str, now: float) -> None:
        account, units, _, created = self._live.pop(hold_id)
        self._held[account] -= units
        expired = UsageRecord(hold_id, outcome="expired", started_at=created)
        self._record((_fields(expired), account, hold_id, units, 0, now, False))
        self._expired.put(hold_id, _pack((account, units)))
        while len(self._expired) > _FINISHED_KEPT:
            self._expired.pop_oldest()

    def _available(self, account: str) -> int:
        return self._granted.get(account, 0) - self._spent.get(account, 0) - self._held.get(account, 0)

    def _balance(self, account: str) -> Balance:
        granted, spent, held = self._granted.get(account, 0), self._spent.get(account, 0), self._held.get(account, 0)
        return Balance(
            available=from_units(granted - spent - held),
            held=from_units(held),
            spent=from_units(spent),
            granted=from_units(granted),
        )

    def _record(self, record: _KeptRecord) -> None:
        if self._records.limit:
            self._records.append(_pack(record))


def _digest(api_key: str) -> str:
    return hashlib.sha256(api_key.encode("utf-8")).hexdigest()
