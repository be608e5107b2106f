"""The embedded default store: one SQLite file, safe for several processes.

Every state change runs inside a ``BEGIN IMMEDIATE`` transaction, so
check-and-hold is atomic across every process that opens the file (uvicorn
``--workers 4``): SQLite admits one writer at a time and each waits up to
``busy_timeout`` for its turn.  Changes that arrive while the writer is busy
share its next transaction (group commit): one ``fsync`` for many, and no
change returns before its transaction is committed.
The file runs in WAL mode.  All SQLite work happens on one worker thread per
store object, never on the event loop.

Tables: ``accounts`` (granted, spent and held, in integer units of
``money.UNIT``), ``api_keys`` (SHA-256 digests, never keys in clear), ``holds``
(with expiry) and ``ledger``: an append-only line for every grant, hold,
settle, release and expiry, with the account's figures after it, so a balance
can be explained line by line.  The schema is versioned; ``MIGRATIONS`` bring an
older file up to date when it is opened.

Holds expire lazily: every transaction on an account first expires its overdue
holds, and ``expire()`` does it for all accounts.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import sqlite3
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar, cast

import anyio
import anyio.to_thread

from .._ids import random_hex
from ..money import from_units, parse_amount, to_units, units_ceil
from ..records import UsageQuery, UsageRecord, UsageRow, check_group, day_of, day_start, group_rows
from .base import (
    DEFAULT_HOLD_TTL,
    Balance,
    Grant,
    Hold,
    IdempotencyConflict,
    Insufficient,
    Settlement,
    StoreUnavailable,
    release_unreceived,
)

__all__ = ["SQLiteStore", "MIGRATIONS", "SCHEMA_VERSION"]

T = TypeVar("T")


def _execute(db: sqlite3.Connection, schema: str) -> None:
    # One statement at a time: executescript() would commit the migration's
    # transaction half-way.
    for statement in schema.split(";"):
        if statement.strip():
            db.execute(statement)


def _v1(db: sqlite3.Connection) -> None:
    _execute(db, _V1_SCHEMA)


_V1_SCHEMA = """
        CREATE TABLE accounts (
            id TEXT PRIMARY KEY,
            granted INTEGER NOT NULL DEFAULT 0,
            spent INTEGER NOT NULL DEFAULT 0,
            held INTEGER NOT NULL DEFAULT 0,
            created REAL NOT NULL
        );
        CREATE TABLE api_keys (
            digest TEXT PRIMARY KEY,
            prefix TEXT NOT NULL,
            account TEXT NOT NULL,
            created REAL NOT NULL,
            revoked REAL
        );
        CREATE INDEX api_keys_account ON api_keys(account);
        CREATE TABLE holds (
            id TEXT PRIMARY KEY,
            account TEXT NOT NULL,
            units INTEGER NOT NULL,
            expires_at REAL NOT NULL,
            status TEXT NOT NULL,
            charged INTEGER NOT NULL DEFAULT 0,
            created REAL NOT NULL,
            finished REAL
        );
        CREATE INDEX holds_live ON holds(account, expires_at) WHERE status = 'held';
        CREATE INDEX holds_overdue ON holds(expires_at) WHERE status = 'held';
        CREATE TABLE ledger (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            at REAL NOT NULL,
            account TEXT NOT NULL,
            kind TEXT NOT NULL,
            units INTEGER NOT NULL,
            hold TEXT,
            available INTEGER NOT NULL,
            held INTEGER NOT NULL,
            spent INTEGER NOT NULL,
            granted INTEGER NOT NULL
        );
        CREATE INDEX ledger_account ON ledger(account, seq);
"""


def _v2(db: sqlite3.Connection) -> None:
    # A note on each ledger line: why credits were granted, which request spent them.
    db.execute("ALTER TABLE ledger ADD COLUMN note TEXT")


def _v3(db: sqlite3.Connection) -> None:
    # Usage records, and their per-day rollup at the grain (account, day, key, model).
    _execute(db, _V3_SCHEMA)


_V3_SCHEMA = """
        CREATE TABLE usage_records (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            request_id TEXT NOT NULL,
            hold TEXT NOT NULL,
            account TEXT NOT NULL,
            key TEXT NOT NULL,
            model TEXT NOT NULL,
            route TEXT NOT NULL,
            input_tokens INTEGER NOT NULL,
            output_tokens INTEGER NOT NULL,
            cached_tokens INTEGER NOT NULL,
            held INTEGER NOT NULL,
            charged INTEGER NOT NULL,
            outcome TEXT NOT NULL,
            started_at REAL NOT NULL,
            ended_at REAL NOT NULL
        );
        CREATE INDEX usage_records_account ON usage_records(account, ended_at);
        CREATE INDEX usage_records_ended ON usage_records(ended_at);
        CREATE TABLE usage_daily (
            account TEXT NOT NULL,
            day TEXT NOT NULL,
            key TEXT NOT NULL,
            model TEXT NOT NULL,
            requests INTEGER NOT NULL,
            input_tokens INTEGER NOT NULL,
            output_tokens INTEGER NOT NULL,
            cached_tokens INTEGER NOT NULL,
            held INTEGER NOT NULL,
            charged INTEGER NOT NULL,
            PRIMARY KEY (account, day, key, model)
        ) WITHOUT ROWID;
        CREATE INDEX usage_daily_day ON usage_daily(day);
        CREATE TABLE usage_daily_models (
            day TEXT NOT NULL,
            model TEXT NOT NULL,
            requests INTEGER NOT NULL,
            input_tokens INTEGER NOT NULL,
            output_tokens INTEGER NOT NULL,
            cached_tokens INTEGER NOT NULL,
            held INTEGER NOT NULL,
            charged INTEGER NOT NULL,
            PRIMARY KEY (day, model)
        ) WITHOUT ROWID;
        CREATE TABLE grants_seen (
            account TEXT NOT NULL,
            idempotency_key TEXT NOT NULL,
            units INTEGER NOT NULL,
            at REAL NOT NULL,
            PRIMARY KEY (account, idempotency_key)
        )
"""


#: Schema migrations, applied in order; the schema's version is their count.
MIGRATIONS: Sequence[Callable[[sqlite3.Connection], None]] = (_v1, _v2, _v3)
SCHEMA_VERSION = len(MIGRATIONS)


class _Change:
    """One change waiting for the writer, and what came of it."""

    __slots__ = ("fn", "result", "error", "done")

    def __init__(self, fn: Callable[[sqlite3.Connection], Any]) -> None:
        self.fn = fn
        self.result: Any = None
        self.error: BaseException | None = None
        self.done = False


def _digest(api_key: str) -> str:
    return hashlib.sha256(api_key.encode("utf-8")).hexdigest()


def _prefix(api_key: str) -> str:
    """A short, non-secret name for a key: its first 7 and last 4 characters."""
    return f"{api_key[:7]}...{api_key[-4:]}" if len(api_key) > 16 else api_key[:3] + "..."


class SQLiteStore:
    """Credits in one SQLite file (created on first use).

    ``busy_timeout``: seconds a transaction waits for another process's write
    before ``StoreUnavailable``.  ``synchronous``: SQLite's setting; ``"FULL"``
    (default) survives power loss, ``"NORMAL"`` is faster and survives a
    process crash.  ``clock`` returns Unix seconds (tests drive expiry with it).
    ``batch_size``: the most changes that share one transaction (group
    commit, see ``_run``); 1 gives every change a transaction of its own.
    """

    #: Writes usage records when ``settle``/``release`` are given one.
    keeps_usage = True

    def __init__(
        self,
        path: str | Path,
        *,
        busy_timeout: float = 10.0,
        synchronous: str = "FULL",
        clock: Callable[[], float] | None = None,
        batch_size: int = 64,
    ) -> None:
        if synchronous.upper() not in ("FULL", "NORMAL", "EXTRA"):
            raise ValueError("synchronous must be FULL, NORMAL or EXTRA")
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.path = str(path)
        self._busy_timeout = busy_timeout
        self._synchronous = synchronous.upper()
        self._clock = clock or time.time
        self._db: sqlite3.Connection | None = None
        self._limiter = anyio.CapacityLimiter(1)
        self._closed = False
        # Group commit: changes waiting for the writer, and whether it is busy.
        self._pending: list[_Change] = []
        self._writing = False
        self._batch_done = anyio.Event()
        self._batch_size = batch_size

    # -- plumbing -------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        if self._closed:
            raise StoreUnavailable("the store is closed")
        if self._db is None:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=self._busy_timeout, isolation_level=None, check_same_thread=False)
            db.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout * 1000)}")
            db.execute("PRAGMA journal_mode = WAL")
            db.execute(f"PRAGMA synchronous = {self._synchronous}")
            _migrate(db)
            self._db = db
        return self._db

    async def _run(
        self, fn: Callable[[sqlite3.Connection], T], *, undo: Callable[[T], Awaitable[object]] | None = None
    ) -> T:
        """Run ``fn`` in a write transaction and return its result once that
        transaction is committed (on disk, under ``synchronous=FULL``).

        Group commit: the changes asked for while the writer is busy wait for
        it and then share one transaction, each in a savepoint of its own, so
        one ``fsync`` serves them all.  A change that raises is rolled back to
        its savepoint and raises for its caller alone; a failure of the
        transaction itself (a lock held past ``busy_timeout``, a full disk)
        raises ``StoreUnavailable`` for every change in it, none of which took
        effect.  The first caller to find the writer idle drives it; the
        others wait for their turn, and whichever of them wakes first drives
        the next batch, so a caller that leaves (cancelled) never strands the
        rest.

        A caller cancelled once the writer has taken its change does not get
        its result; ``undo`` is given that result once it is committed (a
        hold no one received is released), under a shield."""
        item = _Change(fn)
        self._pending.append(item)
        try:
            while not item.done:
                if self._writing:
                    done = self._batch_done
                    await done.wait()
                    continue
                self._writing = True
                self._batch_done = anyio.Event()
                batch, self._pending = self._pending[: self._batch_size], self._pending[self._batch_size :]
                try:
                    await anyio.to_thread.run_sync(self._commit, batch, limiter=self._limiter)
                finally:
                    # Cancelled before the worker thread took the batch (run_sync
                    # checkpoints first): its changes go back to the head of the
                    # queue for the next writer (this caller's own is dropped below).
                    self._pending[:0] = [change for change in batch if not change.done]
                    self._writing = False
                    self._batch_done.set()
        except anyio.get_cancelled_exc_class():
            # Taken by the writer: its change is being committed, or is (a
            # cancellation can land after the batch's end woke this caller).
            if undo is not None and item not in self._pending:
                with anyio.CancelScope(shield=True):
                    await self._undo(item, undo)
            raise
        finally:
            if not item.done and item in self._pending:
                # Cancelled before the writer took it: it never runs.
                self._pending.remove(item)
        if item.error is not None:
            raise item.error
        return cast(T, item.result)

    async def _undo(self, item: _Change, undo: Callable[[Any], Awaitable[object]]) -> None:
        """``undo`` of ``item``'s result, once the batch the writer is
        committing with it is done (nothing where it failed); ``undo`` must
        not raise."""
        while not item.done:
            if item in self._pending:
                return  # put back before the writer took it: it never runs
            await self._batch_done.wait()
        if item.error is None:
            await undo(item.result)

    def _commit(self, batch: list[_Change]) -> None:
        """One transaction for ``batch`` (in the writer thread)."""
        try:
            db = self._connect()
            db.execute("BEGIN IMMEDIATE")
            try:
                self._apply(db, batch)
                if db.in_transaction:
                    db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        except (sqlite3.DatabaseError, StoreUnavailable) as exc:
            failure = exc if isinstance(exc, StoreUnavailable) else StoreUnavailable(f"SQLite store {self.path}: {exc}")
            for item in batch:
                item.result, item.error = None, failure
        except BaseException as exc:
            for item in batch:
                item.result, item.error = None, exc
            raise
        finally:
            for item in batch:
                item.done = True

    def _apply(self, db: sqlite3.Connection, batch: list[_Change]) -> None:
        """Each change of ``batch`` in a savepoint of its own (none where it is
        alone: its transaction is its savepoint).  A change's own failure rolls
        back that change; SQLite's failures (locked, I/O) propagate and fail
        the transaction.

        The batch is first applied without savepoints (two statements a change
        saved): where no change fails, as nearly always, that is the result.
        Where one does, the transaction is rolled back and the batch applied
        again, a savepoint each (nothing of the first attempt was committed or
        returned)."""
        if len(batch) > 1:
            try:
                for item in batch:
                    item.result = item.fn(db)
                return
            except sqlite3.IntegrityError:
                pass  # a change's own failure: see below
            except sqlite3.DatabaseError:
                raise
            except Exception:
                pass
            db.execute("ROLLBACK")
            db.execute("BEGIN IMMEDIATE")
        self._apply_each(db, batch)

    def _apply_each(self, db: sqlite3.Connection, batch: list[_Change]) -> None:
        alone = len(batch) == 1
        for item in batch:
            if not alone:
                db.execute("SAVEPOINT change")
            error: BaseException | None = None
            try:
                item.result = item.fn(db)
            except sqlite3.IntegrityError as exc:
                error = StoreUnavailable(f"SQLite store {self.path}: {exc}")
            except sqlite3.DatabaseError:
                raise
            except Exception as exc:
                error = exc
            if error is not None:
                item.result, item.error = None, error
                db.execute("ROLLBACK" if alone else "ROLLBACK TO change")
            if not alone:
                db.execute("RELEASE change")

    # -- helpers inside a transaction -----------------------------------------

    def _figures(self, db: sqlite3.Connection, account: str) -> tuple[int, int, int]:
        row = db.execute("SELECT granted, spent, held FROM accounts WHERE id = ?", (account,)).fetchone()
        return (0, 0, 0) if row is None else (int(row[0]), int(row[1]), int(row[2]))

    def _ensure(self, db: sqlite3.Connection, account: str, now: float) -> None:
        db.execute("INSERT OR IGNORE INTO accounts (id, created) VALUES (?, ?)", (account, now))

    def _log(
        self,
        db: sqlite3.Connection,
        now: float,
        account: str,
        kind: str,
        units: int,
        hold: str | None = None,
        note: str | None = None,
        figures: tuple[int, int, int] | None = None,
    ) -> None:
        """A ledger line, with the account's figures after the change (read
        again, unless the caller, who changed them, gives them)."""
        granted, spent, held = figures or self._figures(db, account)
        db.execute(
            "INSERT INTO ledger (at, account, kind, units, hold, available, held, spent, granted, note)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (now, account, kind, units, hold, granted - spent - held, held, spent, granted, note),
        )

    def _expire_account(self, db: sqlite3.Connection, account: str, now: float) -> int:
        overdue = db.execute(
            "SELECT id, units, created FROM holds WHERE account = ? AND status = 'held' AND expires_at <= ?",
            (account, now),
        ).fetchall()
        for hold_id, units, created in overdue:
            db.execute("UPDATE holds SET status = 'expired', finished = ? WHERE id = ?", (now, hold_id))
            db.execute("UPDATE accounts SET held = held - ? WHERE id = ?", (units, account))
            self._log(db, now, account, "expire", units, hold_id)
            self._record(
                db, UsageRecord(hold_id, outcome="expired", started_at=created), account, hold_id, units, 0, now
            )
        return len(overdue)

    def _record(
        self,
        db: sqlite3.Connection,
        record: UsageRecord,
        account: str,
        hold: str,
        held: int,
        charged: int,
        now: float,
    ) -> None:
        """Write a usage record and add it to its day's rollup (inside the
        transaction that ends the hold)."""
        db.execute(
            "INSERT INTO usage_records (request_id, hold, account, key, model, route, input_tokens, output_tokens,"
            " cached_tokens, held, charged, outcome, started_at, ended_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                record.request_id,
                hold,
                account,
                record.key,
                record.model,
                record.route,
                record.input_tokens,
                record.output_tokens,
                record.cached_tokens,
                held,
                charged,
                record.outcome,
                record.started_at,
                now,
            ),
        )
        db.execute(
            "INSERT INTO usage_daily (account, day, key, model, requests, input_tokens, output_tokens,"
            " cached_tokens, held, charged) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (account, day, key, model) DO UPDATE SET requests = requests + excluded.requests,"
            " input_tokens = input_tokens + excluded.input_tokens,"
            " output_tokens = output_tokens + excluded.output_tokens,"
            " cached_tokens = cached_tokens + excluded.cached_tokens,"
            " held = held + excluded.held, charged = charged + excluded.charged",
            (
                account,
                day_of(now),
                record.key,
                record.model,
                0 if record.outcome == "late" else 1,
                record.input_tokens,
                record.output_tokens,
                record.cached_tokens,
                held,
                charged,
            ),
        )
        # Every account's day per model: totals over all accounts read a few
        # rows a day instead of one per account.
        db.execute(
            "INSERT INTO usage_daily_models (day, model, requests, input_tokens, output_tokens, cached_tokens,"
            " held, charged) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (day, model) DO UPDATE SET requests = requests + excluded.requests,"
            " input_tokens = input_tokens + excluded.input_tokens,"
            " output_tokens = output_tokens + excluded.output_tokens,"
            " cached_tokens = cached_tokens + excluded.cached_tokens,"
            " held = held + excluded.held, charged = charged + excluded.charged",
            (
                day_of(now),
                record.model,
                0 if record.outcome == "late" else 1,
                record.input_tokens,
                record.output_tokens,
                record.cached_tokens,
                held,
                charged,
            ),
        )

    # -- the contract ------------------------------------------------------------

    async def reserve(self, account: str, amount: Decimal, *, ttl: float = DEFAULT_HOLD_TTL) -> Hold | Insufficient:
        units = units_ceil(amount)
        if units < 0:
            raise ValueError("a hold must not be negative")

        def work(db: sqlite3.Connection) -> Hold | Insufficient:
            now = self._clock()
            self._expire_account(db, account, now)
            row = db.execute("SELECT granted, spent, held FROM accounts WHERE id = ?", (account,)).fetchone()
            granted, spent, held = (0, 0, 0) if row is None else (int(row[0]), int(row[1]), int(row[2]))
            available = granted - spent - held
            if units > available:
                return Insufficient(account, from_units(units), from_units(max(available, 0)), from_units(held))
            if row is None:
                self._ensure(db, account, now)
            hold_id = "hold_" + random_hex(16)
            db.execute(
                "INSERT INTO holds (id, account, units, expires_at, status, created) VALUES (?, ?, ?, ?, 'held', ?)",
                (hold_id, account, units, now + ttl, now),
            )
            db.execute("UPDATE accounts SET held = held + ? WHERE id = ?", (units, account))
            self._log(db, now, account, "hold", units, hold_id, figures=(granted, spent, held + units))
            return Hold(hold_id, account, from_units(units), now + ttl, from_units(available - units))

        return await self._run(work, undo=self._unreceived)

    async def _unreceived(self, result: Hold | Insufficient) -> None:
        """A hold made for a caller cancelled meanwhile: released at once."""
        if isinstance(result, Hold):
            await release_unreceived(self, result)

    async def settle(self, hold: Hold, actual: Decimal, *, record: UsageRecord | None = None) -> Settlement:
        charge = units_ceil(actual)
        if charge < 0:
            raise ValueError("an actual cost must not be negative")
        return await self._run(lambda db: self._finish(db, hold, charge, record))

    async def release(self, hold: Hold, *, record: UsageRecord | None = None) -> Settlement:
        return await self._run(lambda db: self._finish(db, hold, None, record))

    def _finish(self, db: sqlite3.Connection, hold: Hold, charge: int | None, record: UsageRecord | None) -> Settlement:
        now = self._clock()
        self._expire_account(db, hold.account, now)
        row = db.execute(
            "SELECT h.account, h.units, h.status, h.charged, a.granted, a.spent, a.held"
            " FROM holds AS h JOIN accounts AS a ON a.id = h.account WHERE h.id = ?",
            (hold.id,),
        ).fetchone()
        if row is None:
            return Settlement(hold.id, "unknown", Decimal(0), Decimal(0), Decimal(0), repeat=True)
        account, units, status, charged_before, granted, spent, held = row
        if status in ("settled", "released"):
            return Settlement.of_units(hold.id, status, charged_before, units, repeat=True)
        if status == "settled_late":
            # Settled after it expired, so all of the charge was overrun (a
            # file written before this status existed says "settled" and
            # answers a repeat as settled in time).
            return Settlement.of_units(hold.id, "settled", charged_before, 0, late=True, repeat=True)
        if status == "expired":
            if charge is None:
                return Settlement(hold.id, "expired", Decimal(0), Decimal(0), Decimal(0))
            # The work was done after the hold lapsed: charge it all the same.
            db.execute(
                "UPDATE holds SET status = 'settled_late', charged = ?, finished = ? WHERE id = ?",
                (charge, now, hold.id),
            )
            db.execute("UPDATE accounts SET spent = spent + ? WHERE id = ?", (charge, account))
            self._log(db, now, account, "settle", charge, hold.id, "late", figures=(granted, spent + charge, held))
            if record is not None:
                self._record(db, replace(record, outcome="late"), account, hold.id, 0, charge, now)
            return Settlement.of_units(hold.id, "settled", charge, 0, late=True)
        taken = 0 if charge is None else charge
        new_status = "released" if charge is None else "settled"
        db.execute(
            "UPDATE holds SET status = ?, charged = ?, finished = ? WHERE id = ?",
            (new_status, taken, now, hold.id),
        )
        db.execute("UPDATE accounts SET held = held - ?, spent = spent + ? WHERE id = ?", (units, taken, account))
        self._log(
            db,
            now,
            account,
            "release" if charge is None else "settle",
            units if charge is None else taken,
            hold.id,
            figures=(granted, spent + taken, held - units),
        )
        if record is not None:
            self._record(db, record, account, hold.id, units, taken, now)
        return Settlement.of_units(hold.id, new_status, taken, units)

    async def extend(self, hold: Hold, ttl: float) -> bool:
        def work(db: sqlite3.Connection) -> bool:
            now = self._clock()
            self._expire_account(db, hold.account, now)
            cursor = db.execute(
                "UPDATE holds SET expires_at = ? WHERE id = ? AND status = 'held'", (now + ttl, hold.id)
            )
            return cursor.rowcount == 1

        return await self._run(work)

    async def balance(self, account: str) -> Balance:
        def work(db: sqlite3.Connection) -> Balance:
            self._expire_account(db, account, self._clock())
            granted, spent, held = self._figures(db, account)
            return Balance(from_units(granted - spent - held), from_units(held), from_units(spent), from_units(granted))

        return await self._run(work)

    async def grant(self, account: str, amount: Decimal | str | int, *, note: str | None = None) -> Balance:
        units = to_units(parse_amount(amount, what="grant"), what="grant")

        def work(db: sqlite3.Connection) -> Balance:
            now = self._clock()
            self._expire_account(db, account, now)
            granted, spent, held = self._figures(db, account)
            if units < 0 and granted - spent - held + units < 0:
                raise ValueError("cannot take back more than is available")
            self._ensure(db, account, now)
            db.execute("UPDATE accounts SET granted = granted + ? WHERE id = ?", (units, account))
            self._log(db, now, account, "grant", units, None, note)
            granted += units
            return Balance(from_units(granted - spent - held), from_units(held), from_units(spent), from_units(granted))

        return await self._run(work)

    async def grant_once(
        self, account: str, amount: Decimal | str | int, idempotency_key: str, *, note: str | None = None
    ) -> Grant:
        """``grant`` once per (account, ``idempotency_key``), the key recorded in
        the grant's transaction: a repeat changes nothing; the same key with
        another amount raises ``IdempotencyConflict``."""
        units = to_units(parse_amount(amount, what="grant"), what="grant")

        def work(db: sqlite3.Connection) -> Grant:
            now = self._clock()
            self._expire_account(db, account, now)
            seen = db.execute(
                "SELECT units FROM grants_seen WHERE account = ? AND idempotency_key = ?", (account, idempotency_key)
            ).fetchone()
            granted, spent, held = self._figures(db, account)
            if seen is not None:
                if int(seen[0]) != units:
                    raise IdempotencyConflict("this idempotency key already granted another amount")
                return Grant(_figures_balance(granted, spent, held), True)
            if units < 0 and granted - spent - held + units < 0:
                raise ValueError("cannot take back more than is available")
            self._ensure(db, account, now)
            db.execute("UPDATE accounts SET granted = granted + ? WHERE id = ?", (units, account))
            db.execute(
                "INSERT INTO grants_seen (account, idempotency_key, units, at) VALUES (?, ?, ?, ?)",
                (account, idempotency_key, units, now),
            )
            self._log(db, now, account, "grant", units, None, note)
            return Grant(_figures_balance(granted + units, spent, held), False)

        return await self._run(work)

    async def accounts(self) -> list[str]:
        """Every account the store knows, sorted."""

        def work(db: sqlite3.Connection) -> list[str]:
            return [str(row[0]) for row in db.execute("SELECT id FROM accounts ORDER BY id")]

        return await self._read(work)

    async def expire(self) -> int:
        """Expire every overdue hold now; returns how many."""

        def work(db: sqlite3.Connection) -> int:
            now = self._clock()
            accounts = [
                row[0]
                for row in db.execute(
                    "SELECT DISTINCT account FROM holds WHERE status = 'held' AND expires_at <= ?", (now,)
                )
            ]
            return sum(self._expire_account(db, account, now) for account in accounts)

        return await self._run(work)

    # -- keys ---------------------------------------------------------------------

    async def add_key(self, api_key: str, account: str) -> str:
        """Store ``api_key`` (as its digest) for ``account``; returns its prefix."""
        if not api_key or len(api_key) < 8:
            raise ValueError("an API key must have at least 8 characters")

        def work(db: sqlite3.Connection) -> str:
            now = self._clock()
            self._ensure(db, account, now)
            db.execute(
                "INSERT OR REPLACE INTO api_keys (digest, prefix, account, created, revoked) VALUES (?, ?, ?, ?, NULL)",
                (_digest(api_key), _prefix(api_key), account, now),
            )
            return _prefix(api_key)

        return await self._run(work)

    async def revoke_key(self, key_or_prefix: str) -> int:
        """Revoke a key, given whole or by its listed prefix; returns how many."""

        def work(db: sqlite3.Connection) -> int:
            now = self._clock()
            cursor = db.execute(
                "UPDATE api_keys SET revoked = ? WHERE revoked IS NULL AND (digest = ? OR prefix = ?)",
                (now, _digest(key_or_prefix), key_or_prefix),
            )
            return cursor.rowcount

        return await self._run(work)

    async def list_keys(self, account: str | None = None) -> list[dict[str, Any]]:
        """Keys with their prefix, account and dates; never the key itself."""

        def work(db: sqlite3.Connection) -> list[dict[str, Any]]:
            query = "SELECT prefix, account, created, revoked FROM api_keys"
            rows = (
                db.execute(query + " WHERE account = ? ORDER BY created", (account,))
                if account is not None
                else db.execute(query + " ORDER BY created")
            )
            return [{"prefix": p, "account": a, "created": c, "revoked": r} for p, a, c, r in rows]

        return await self._run(work)

    async def account_for_key(self, api_key: str) -> str | None:
        def work(db: sqlite3.Connection) -> str | None:
            row = db.execute(
                "SELECT account FROM api_keys WHERE digest = ? AND revoked IS NULL", (_digest(api_key),)
            ).fetchone()
            return None if row is None else str(row[0])

        return await self._run(work)

    async def account_exists(self, account: str) -> bool:
        # add_key and grant both create the account's row.
        return await self._run(
            lambda db: db.execute("SELECT 1 FROM accounts WHERE id = ?", (account,)).fetchone() is not None
        )

    async def history(self, account: str, *, limit: int = 100) -> list[dict[str, Any]]:
        """The account's ledger, oldest first (the last ``limit`` lines)."""

        def work(db: sqlite3.Connection) -> list[dict[str, Any]]:
            rows = db.execute(
                "SELECT seq, at, kind, units, hold, available, held, spent, granted, note FROM ledger"
                " WHERE account = ? ORDER BY seq DESC LIMIT ?",
                (account, limit),
            ).fetchall()
            return [
                {
                    "seq": seq,
                    "at": at,
                    "kind": kind,
                    "amount": from_units(units),
                    "hold": hold,
                    "available": from_units(available),
                    "held": from_units(held),
                    "spent": from_units(spent),
                    "granted": from_units(granted),
                    "note": note,
                }
                for seq, at, kind, units, hold, available, held, spent, granted, note in reversed(rows)
            ]

        return await self._run(work)

    # -- usage records ------------------------------------------------------------

    async def usage_records(self, query: UsageQuery | None = None, *, limit: int = 100) -> list[UsageRecord]:
        """Records matching ``query``, newest first (at most ``limit``)."""
        where, params = _where(query or UsageQuery(), "ended_at", lambda d: day_start(d))

        def work(db: sqlite3.Connection) -> list[UsageRecord]:
            rows = db.execute(
                "SELECT request_id, key, model, route, input_tokens, output_tokens, cached_tokens, outcome,"
                " started_at, account, hold, held, charged, ended_at FROM usage_records"
                f"{where} ORDER BY ended_at DESC, seq DESC LIMIT ?",
                (*params, limit),
            ).fetchall()
            return [
                UsageRecord(
                    request_id=r[0],
                    key=r[1],
                    model=r[2],
                    route=r[3],
                    input_tokens=r[4],
                    output_tokens=r[5],
                    cached_tokens=r[6],
                    outcome=r[7],
                    started_at=r[8],
                    account=r[9],
                    hold=r[10],
                    held=from_units(r[11]),
                    charged=from_units(r[12]),
                    ended_at=r[13],
                )
                for r in rows
            ]

        return await self._read(work)

    async def usage_summary(self, query: UsageQuery | None = None, *, by: str = "day") -> list[UsageRow]:
        """Records matching ``query`` summed per ``by`` (see ``records.GROUPS``),
        read from the per-day rollup."""
        check_group(by)
        query = query or UsageQuery()
        where, params = _where(query, "day", lambda d: d.isoformat())
        if query.account is None and query.key is None and by in ("day", "model"):
            table, account, key = "usage_daily_models", "'*'", "'*'"
        else:
            table, account, key = "usage_daily", "account", "key"

        def work(db: sqlite3.Connection) -> list[UsageRow]:
            rows = db.execute(
                f"SELECT day, {account}, {key}, model, SUM(requests), SUM(input_tokens), SUM(output_tokens),"
                f" SUM(cached_tokens), SUM(held), SUM(charged) FROM {table}{where}"
                f" GROUP BY {by}",
                params,
            ).fetchall()
            return group_rows(rows, by)

        return await self._read(work)

    async def prune_usage(self, before: dt.date, *, account: str | None = None) -> int:
        """Delete records (of ``account``, or all) that ended before the UTC day
        ``before``, and the rollups of those days; returns how many records."""
        only = "" if account is None else " AND account = ?"
        extra: tuple[str, ...] = () if account is None else (account,)

        def work(db: sqlite3.Connection) -> int:
            count = db.execute(f"DELETE FROM usage_records WHERE ended_at < ?{only}", (day_start(before), *extra))
            db.execute(f"DELETE FROM usage_daily WHERE day < ?{only}", (before.isoformat(), *extra))
            # The totals over every account for those days, rebuilt from what is left.
            db.execute("DELETE FROM usage_daily_models WHERE day < ?", (before.isoformat(),))
            db.execute(
                "INSERT INTO usage_daily_models SELECT day, model, SUM(requests), SUM(input_tokens),"
                " SUM(output_tokens), SUM(cached_tokens), SUM(held), SUM(charged) FROM usage_daily"
                " WHERE day < ? GROUP BY day, model",
                (before.isoformat(),),
            )
            return int(count.rowcount)

        return await self._run(work)

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        # Reads take no write lock: a query never delays a settle.
        def work() -> T:
            db = self._connect()
            try:
                db.execute("BEGIN")
                try:
                    return fn(db)
                finally:
                    db.execute("COMMIT")
            except sqlite3.DatabaseError as exc:
                raise StoreUnavailable(f"SQLite store {self.path}: {exc}") from exc

        return await anyio.to_thread.run_sync(work, limiter=self._limiter)

    async def aclose(self) -> None:
        def work() -> None:
            if self._db is not None:
                self._db.close()
                self._db = None

        self._closed = True
        await anyio.to_thread.run_sync(work, limiter=self._limiter)


def _figures_balance(granted: int, spent: int, held: int) -> Balance:
    return Balance(from_units(granted - spent - held), from_units(held), from_units(spent), from_units(granted))


def _where(query: UsageQuery, column: str, bound: Callable[[dt.date], object]) -> tuple[str, tuple[object, ...]]:
    """A WHERE clause for ``query``: on ``column`` for the time range, with
    ``bound`` turning a day into that column's value."""
    clauses: list[str] = []
    params: list[object] = []
    for name, value in (("account", query.account), ("key", query.key), ("model", query.model)):
        if value is not None:
            clauses.append(f"{name} = ?")
            params.append(value)
    if query.since is not None:
        clauses.append(f"{column} >= ?")
        params.append(bound(query.since))
    if query.until is not None:
        clauses.append(f"{column} < ?")
        params.append(bound(query.until + dt.timedelta(days=1)))
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), tuple(params)


def _migrate(db: sqlite3.Connection) -> None:
    db.execute("BEGIN IMMEDIATE")
    try:
        db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = db.execute("SELECT version FROM schema_version").fetchone()
        version = 0 if row is None else int(row[0])
        if version > SCHEMA_VERSION:
            raise StoreUnavailable(
                f"the credit store file has schema version {version}, newer than this credit_guard ({SCHEMA_VERSION})"
            )
        for migration in MIGRATIONS[version:]:
            migration(db)
        if row is None:
            db.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
        else:
            db.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION,))
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
