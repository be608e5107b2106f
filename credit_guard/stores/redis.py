"""The distributed store: Redis, shared by any number of gateway replicas.

Every state change is one Lua script (loaded once, called by SHA), so
check-and-hold, settle, release, extend and grant are atomic across processes
and machines.  Each script first expires the account's overdue holds (by
Redis's own clock), so no sweeper process is needed for correctness: a hold
whose process died is back in ``available`` the next time the account is
touched, and ``balance`` is always right.

Amounts are integer units of ``money.UNIT``, never floats (no ``INCRBYFLOAT``).
Lua numbers are doubles, exact only to 2**53, while units reach 2**63; so the
scripts never do arithmetic on amounts in Lua: they pass the decimal strings to
``HINCRBY``, whose arithmetic is int64 inside Redis, and look only at the *sign*
of what it returns, which a double gets right at any size.  Reserve is
``HINCRBY available -amount``, and if the result is negative, ``HINCRBY`` it back.

Keys of one account share the hash tag ``{cg:<account>}``, so every script
touches one slot and the store works on Redis Cluster:

    {cg:A}:acct          hash: available, held, spent, granted
    {cg:A}:holds         sorted set: live hold ids by expiry
    {cg:A}:hold:<id>     hash: units, status, charged (kept ``retention`` seconds once finished)
    {cg:A}:ledger        stream: every grant, hold, settle, release, expiry (capped)
    {cg:key:<digest>}    string: the account of an API key (SHA-256 digest)

Failover: Redis replicates asynchronously.  If a primary fails, writes it
acknowledged but had not yet sent to the replica are lost: a hold (the request
then ran unheld: the balance did not cover it on the new primary only if other
holds also vanished), or a settle (the hold then reappears and expires after
its TTL, returning money that was spent: the ledger of the old primary is the
record to reconcile from).  Nothing is double-spent by the store itself, and
no amount is corrupted, but the last second of writes can be lost.  To narrow
the window, run with AOF ``appendfsync always`` and pass ``wait_replicas=1``,
which makes every script wait for one replica to acknowledge (``WAIT``) before
the store answers; a ``WAIT`` that times out raises ``StoreUnavailable``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import anyio
import orjson

from .._ids import random_hex
from ..money import from_units, parse_amount, to_units, units_ceil
from ..records import OUTCOMES, UsageQuery, UsageRecord, UsageRow, check_group, day_start, group_rows
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

__all__ = ["RedisStore"]

# The most script calls sent in one pipeline.
_BATCH = 128

_PRELUDE = """
local acct, holds, prefix, ledger, usage, days = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local now = tonumber(ARGV[1])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local retention = ARGV[2]
local ledger_cap = ARGV[3]
local usage_cap = tonumber(ARGV[4])
local function figure(name)
  return redis.call('HGET', acct, name) or '0'
end
local function log(kind, units, hold, note)
  redis.call('XADD', ledger, 'MAXLEN', '~', ledger_cap, '*',
    'at', tostring(now), 'kind', kind, 'amount', units, 'hold', hold or '', 'note', note or '',
    'available', figure('available'), 'held', figure('held'), 'spent', figure('spent'), 'granted', figure('granted'))
end
local function add(field, units)
  if units ~= '0' then redis.call('HINCRBY', acct, field, units) end
end
local function sub(field, units)
  if units ~= '0' then return redis.call('HINCRBY', acct, field, '-' .. units) end
  return tonumber(figure(field))
end
-- A usage record: a sorted-set member (by end time) and the day's rollup.
-- ``meta`` is the caller's JSON object text without its closing brace.
local function record(id, meta, dim, held, charged, outcome, tin, tout, tcached)
  redis.call('ZADD', usage, now, meta .. ',"hold":"' .. id .. '","held":"' .. held .. '","charged":"' .. charged
    .. '","outcome":"' .. outcome .. '","ended_at":' .. string.format('%.17g', now) .. '}')
  if redis.call('ZCARD', usage) > usage_cap then
    redis.call('ZREMRANGEBYRANK', usage, 0, -usage_cap - 1)
  end
  local day = math.floor(now / 86400)
  local rollup = days .. ':' .. day
  redis.call('ZADD', days, day, day)
  if outcome ~= 'late' then redis.call('HINCRBY', rollup, 'r' .. dim, 1) end
  redis.call('HINCRBY', rollup, 'i' .. dim, tin)
  redis.call('HINCRBY', rollup, 'o' .. dim, tout)
  redis.call('HINCRBY', rollup, 'c' .. dim, tcached)
  redis.call('HINCRBY', rollup, 'h' .. dim, held)
  redis.call('HINCRBY', rollup, 'x' .. dim, charged)
end
local function expire()
  local ids = redis.call('ZRANGEBYSCORE', holds, '-inf', now)
  for _, id in ipairs(ids) do
    local key = prefix .. id
    if redis.call('HGET', key, 'status') == 'held' then
      local units = redis.call('HGET', key, 'units')
      sub('held', units)
      add('available', units)
      redis.call('HSET', key, 'status', 'expired')
      redis.call('EXPIRE', key, retention)
      log('expire', units, id)
      local started = redis.call('HGET', key, 'created') or '0'
      record(id, '{"request_id":"' .. id .. '","key":"-","model":"-","route":"-","input_tokens":0,'
        .. '"output_tokens":0,"cached_tokens":0,"started_at":' .. started, '["-","-"]', units, '0', 'expired',
        0, 0, 0)
    end
    redis.call('ZREM', holds, id)
  end
  return #ids
end
"""

_RESERVE = (
    _PRELUDE
    + """
expire()
local id, units, ttl = ARGV[5], ARGV[6], tonumber(ARGV[7])
if sub('available', units) < 0 then
  add('available', units)
  return {0, figure('available'), figure('held')}
end
add('held', units)
local expires = now + ttl
redis.call('HSET', prefix .. id, 'units', units, 'status', 'held', 'charged', '0',
  'created', string.format('%.17g', now))
redis.call('ZADD', holds, expires, id)
log('hold', units, id)
return {1, figure('available'), tostring(expires)}
"""
)

_FINISH = (
    _PRELUDE
    + """
expire()
local id, charge, meta, dim, tokens_in, tokens_out, tokens_cached, outcome =
  ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9], ARGV[10], ARGV[11], ARGV[12]
local key = prefix .. id
local status = redis.call('HGET', key, 'status')
if not status then return {'unknown', '0', '0', 1} end
local units = redis.call('HGET', key, 'units')
if status == 'settled' or status == 'released' then
  if redis.call('HGET', key, 'late') == '1' then status = 'late' end
  return {status, units, redis.call('HGET', key, 'charged'), 1}
end
if status == 'expired' then
  if charge == '' then return {'expired', units, '0', 0} end
  sub('available', charge)
  add('spent', charge)
  redis.call('HSET', key, 'status', 'settled', 'charged', charge, 'late', '1')
  log('settle', charge, id, 'late')
  if meta ~= '' then record(id, meta, dim, '0', charge, 'late', tokens_in, tokens_out, tokens_cached) end
  return {'late', units, charge, 0}
end
sub('held', units)
add('available', units)
redis.call('ZREM', holds, id)
if charge == '' then
  redis.call('HSET', key, 'status', 'released')
  log('release', units, id)
  status = 'released'
  charge = '0'
else
  sub('available', charge)
  add('spent', charge)
  redis.call('HSET', key, 'status', 'settled', 'charged', charge)
  log('settle', charge, id)
  status = 'settled'
end
redis.call('EXPIRE', key, retention)
if meta ~= '' then record(id, meta, dim, units, charge, outcome, tokens_in, tokens_out, tokens_cached) end
return {status, units, charge, 0}
"""
)

_EXTEND = (
    _PRELUDE
    + """
expire()
local id, ttl = ARGV[5], tonumber(ARGV[6])
if redis.call('HGET', prefix .. id, 'status') ~= 'held' then return 0 end
redis.call('ZADD', holds, 'XX', now + ttl, id)
return 1
"""
)

_BALANCE = (
    _PRELUDE
    + """
local expired = expire()
return {figure('available'), figure('held'), figure('spent'), figure('granted'), expired}
"""
)

_GRANT = (
    _PRELUDE
    + """
expire()
local units, negative, note, once = ARGV[5], ARGV[6] == '1', ARGV[7], ARGV[8]
if once ~= '' then
  local signed = (negative and '-' or '') .. units
  local seen = redis.call('HGET', acct .. ':grants', once)
  if seen then
    if seen ~= signed then return {-1} end
    return {2, figure('available'), figure('held'), figure('spent'), figure('granted')}
  end
end
if negative then
  if sub('available', units) < 0 then
    add('available', units)
    return {0}
  end
  sub('granted', units)
  log('grant', '-' .. units, nil, note)
  if once ~= '' then redis.call('HSET', acct .. ':grants', once, '-' .. units) end
else
  add('available', units)
  add('granted', units)
  log('grant', units, nil, note)
  if once ~= '' then redis.call('HSET', acct .. ':grants', once, units) end
end
return {1, figure('available'), figure('held'), figure('spent'), figure('granted')}
"""
)


_PRUNE = (
    _PRELUDE
    + """
local cutoff, before_day = tonumber(ARGV[5]), tonumber(ARGV[6])
local removed = redis.call('ZREMRANGEBYSCORE', usage, '-inf', '(' .. cutoff)
for _, day in ipairs(redis.call('ZRANGEBYSCORE', days, '-inf', '(' .. before_day)) do
  redis.call('DEL', days .. ':' .. day)
end
redis.call('ZREMRANGEBYSCORE', days, '-inf', '(' .. before_day)
return removed
"""
)

#: The set of accounts (outside any account's slot): added to on the first
#: reserve or grant of an account in each process.
_ACCOUNTS = "cg:accounts"


class _Call:
    """One script call waiting for its turn to be sent."""

    __slots__ = ("script", "keys", "args", "done", "result", "error")

    def __init__(self, script: Any, keys: list[str], args: list[str]) -> None:
        self.script = script
        self.keys = keys
        self.args = args
        self.done = False
        self.result: Any = None
        self.error: BaseException | None = None


class RedisStore:
    """Credits in Redis.

    ``client``: a ``redis://`` URL or a ``redis.asyncio.Redis`` client (the
    store closes only a client it made; one made from a URL uses a blocking pool
    of ``max_connections``, waiting up to ``pool_timeout`` seconds for one).  ``retention``: seconds a finished
    hold's record is kept for idempotent repeats.  ``wait_replicas``: replicas
    each write waits for (see the module docstring on failover).  ``clock``
    overrides Redis's clock (tests only).  ``usage_cap``: raw usage records
    kept per account (the oldest go first; the per-day rollups keep the totals).
    """

    #: Writes usage records when ``settle``/``release`` are given one.
    keeps_usage = True

    def __init__(
        self,
        client: Any,
        *,
        socket_timeout: float = 2.0,
        max_connections: int = 64,
        pool_timeout: float = 10.0,
        retention: int = 7 * 24 * 3600,
        ledger_cap: int = 100_000,
        usage_cap: int = 100_000,
        wait_replicas: int = 0,
        wait_timeout_ms: int = 1000,
        clock: Callable[[], float] | None = None,
    ) -> None:
        try:
            import redis.asyncio as aioredis
            from redis import exceptions
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError("RedisStore needs redis-py: pip install 'credit-guard[redis]'") from exc
        if isinstance(client, str):
            # A blocking pool: a burst of requests waits for a connection
            # instead of failing with "too many connections".
            pool = aioredis.BlockingConnectionPool.from_url(
                client,
                max_connections=max_connections,
                timeout=pool_timeout,
                socket_timeout=socket_timeout,
                socket_connect_timeout=socket_timeout,
                # A connection idle this long is checked (PING) before use, so one
                # left stale by a Redis restart is replaced instead of failing.
                # Scripts are never retried blindly: a lost reply could repeat a grant.
                health_check_interval=1,
                decode_responses=True,
            )
            self._client = aioredis.Redis.from_pool(pool)
            self._owns = True
        else:
            self._client = client
            self._owns = False
        self._errors = (
            exceptions.ConnectionError,
            exceptions.TimeoutError,
            exceptions.BusyLoadingError,
            exceptions.ReadOnlyError,
            OSError,
        )
        self._retention = str(int(retention))
        self._ledger_cap = str(int(ledger_cap))
        if usage_cap < 1:
            raise ValueError("usage_cap must be at least 1")
        self._usage_cap = str(int(usage_cap))
        # Accounts this process has already put in the usage index.
        self._indexed: set[str] = set()
        self._wait_replicas = wait_replicas
        self._wait_timeout = wait_timeout_ms
        self._clock = clock
        self._reserve = self._client.register_script(_RESERVE)
        self._finish = self._client.register_script(_FINISH)
        self._extend = self._client.register_script(_EXTEND)
        self._balance = self._client.register_script(_BALANCE)
        self._grant = self._client.register_script(_GRANT)
        self._prune = self._client.register_script(_PRUNE)

        self._no_script = exceptions.NoScriptError
        # Pipelined on one Redis only: a cluster client routes each call
        # itself, and WAIT must follow the write on its own connection.
        self._pipelined = isinstance(self._client, aioredis.Redis) and not wait_replicas
        # Script calls asked for while a batch is on its way (see _call).
        self._pending: list[_Call] = []
        self._sending = False
        # Set when the batch on its way is answered; made by the first caller to wait.
        self._batch_done: asyncio.Event | None = None

    # -- plumbing ------------------------------------------------------------

    @staticmethod
    def _keys(account: str) -> list[str]:
        tag = "{cg:" + account + "}"
        return [tag + ":acct", tag + ":holds", tag + ":hold:", tag + ":ledger", tag + ":usage", tag + ":udays"]

    def _argv(self, *extra: object) -> list[str]:
        now = "" if self._clock is None else repr(self._clock())
        return [now, self._retention, self._ledger_cap, self._usage_cap, *[str(e) for e in extra]]

    async def _call(self, script: Any, account: str, *extra: object) -> Any:
        """Run one script and return its reply.

        The calls asked for while another is on its way wait for it and are
        then sent together, pipelined on one connection (each script still
        atomic on its own): the client's own work per call, not Redis,
        bounds a busy gateway, and a pipeline costs it a fraction of a call
        each.  A lone call goes as it is.  The first caller to find no batch
        on its way sends one; whichever waiting caller wakes first sends the
        next, so a caller that leaves (cancelled) never strands the rest; a
        batch once sent is read to its end, so every call in it learns its
        reply.  A connection that fails fails every call of its batch with
        ``StoreUnavailable``."""
        if not self._pipelined:
            return await self._call_alone(script, account, *extra)
        item = _Call(script, self._keys(account), self._argv(*extra))
        self._pending.append(item)
        try:
            while not item.done:
                if self._sending:
                    if self._batch_done is None:
                        self._batch_done = asyncio.Event()
                    await self._batch_done.wait()
                    continue
                self._sending = True
                batch, self._pending = self._pending[:_BATCH], self._pending[_BATCH:]
                try:
                    if len(batch) == 1:
                        # The caller's own call alone: cancelling it is the caller's affair.
                        await self._send(batch)
                    else:
                        with anyio.CancelScope(shield=True):
                            await self._send(batch)
                finally:
                    self._sending = False
                    done, self._batch_done = self._batch_done, None
                    if done is not None:
                        done.set()
        finally:
            if not item.done and item in self._pending:
                # Cancelled before it was sent: it never runs.
                self._pending.remove(item)
        if item.error is not None:
            raise item.error
        return item.result

    async def _send(self, batch: list[_Call]) -> None:
        try:
            if len(batch) == 1:
                item = batch[0]
                item.result = await item.script(keys=item.keys, args=item.args)
                item.done = True
                return
            pipe = self._client.pipeline(transaction=False)
            for item in batch:
                pipe.evalsha(item.script.sha, len(item.keys), *item.keys, *item.args)
            replies = await pipe.execute(raise_on_error=False)
            for item, reply in zip(batch, replies, strict=True):
                if isinstance(reply, self._no_script):
                    # Redis lost its scripts (a restart, SCRIPT FLUSH): this
                    # call ran nothing, so it is sent again, loading the script.
                    reply = await item.script(keys=item.keys, args=item.args)
                if isinstance(reply, Exception):
                    item.error = reply
                else:
                    item.result = reply
                item.done = True
        except self._errors as exc:
            failure = StoreUnavailable(f"Redis: {exc}")
            failure.__cause__ = exc
            for item in batch:
                if not item.done:
                    item.error = failure
        except BaseException as exc:
            for item in batch:
                if not item.done:
                    item.error = exc
            if not isinstance(exc, Exception):
                raise
        finally:
            for item in batch:
                item.done = True

    async def _call_alone(self, script: Any, account: str, *extra: object) -> Any:
        try:
            result = await script(keys=self._keys(account), args=self._argv(*extra))
            if self._wait_replicas:
                acked = await self._client.wait(self._wait_replicas, self._wait_timeout)
                if acked < self._wait_replicas:
                    raise StoreUnavailable(f"only {acked} of {self._wait_replicas} replicas acknowledged the write")
            return result
        except self._errors as exc:
            raise StoreUnavailable(f"Redis: {exc}") from exc

    @staticmethod
    def _int(value: Any) -> int:
        return int(value) if value not in (None, "") else 0

    # -- the contract ----------------------------------------------------------

    async def reserve(self, account: str, amount: Decimal, *, ttl: float = DEFAULT_HOLD_TTL) -> Hold | Insufficient:
        units = units_ceil(amount)
        if units < 0:
            raise ValueError("a hold must not be negative")
        hold_id = "hold_" + random_hex(16)
        await self._index(account)
        try:
            result = await self._call(self._reserve, account, hold_id, units, repr(float(ttl)))
        except asyncio.CancelledError:
            # Cancelled once the script may have run: a hold no one received
            # is released by its id (where it was never made, nothing changes).
            with anyio.CancelScope(shield=True):
                await release_unreceived(self, Hold(hold_id, account, from_units(units), 0.0))
            raise
        if int(result[0]) == 0:
            available = self._int(result[1])
            return Insufficient(
                account, from_units(units), from_units(max(available, 0)), from_units(self._int(result[2]))
            )
        return Hold(hold_id, account, from_units(units), float(result[2]), from_units(self._int(result[1])))

    async def settle(self, hold: Hold, actual: Decimal, *, record: UsageRecord | None = None) -> Settlement:
        charge = units_ceil(actual)
        if charge < 0:
            raise ValueError("an actual cost must not be negative")
        return self._settlement(hold, await self._call(self._finish, hold.account, hold.id, charge, *_meta(record)))

    async def release(self, hold: Hold, *, record: UsageRecord | None = None) -> Settlement:
        return self._settlement(hold, await self._call(self._finish, hold.account, hold.id, "", *_meta(record)))

    def _settlement(self, hold: Hold, result: Any) -> Settlement:
        status, units, charged, repeat = (
            str(result[0]),
            self._int(result[1]),
            self._int(result[2]),
            bool(int(result[3])),
        )
        if status == "unknown":
            return Settlement(hold.id, "unknown", Decimal(0), Decimal(0), Decimal(0), repeat=True)
        if status == "expired":
            return Settlement(hold.id, "expired", Decimal(0), Decimal(0), Decimal(0))
        if status == "late":
            # Settled after it expired (now, or the first time where this is a
            # repeat): nothing was held by then, all of the charge is overrun.
            return Settlement.of_units(hold.id, "settled", charged, 0, late=True, repeat=repeat)
        return Settlement.of_units(hold.id, status, charged, units, repeat=repeat)

    async def extend(self, hold: Hold, ttl: float) -> bool:
        return bool(int(await self._call(self._extend, hold.account, hold.id, repr(float(ttl)))))

    async def balance(self, account: str) -> Balance:
        result = await self._call(self._balance, account)
        available, held, spent, granted = (self._int(v) for v in result[:4])
        return Balance(from_units(available), from_units(held), from_units(spent), from_units(granted))

    async def grant(self, account: str, amount: Decimal | str | int, *, note: str | None = None) -> Balance:
        return (await self._granting(account, amount, note, "")).balance

    async def grant_once(
        self, account: str, amount: Decimal | str | int, idempotency_key: str, *, note: str | None = None
    ) -> Grant:
        """``grant`` once per (account, ``idempotency_key``), the key recorded by
        the grant's own script: a repeat changes nothing; the same key with
        another amount raises ``IdempotencyConflict``."""
        if not idempotency_key:
            raise ValueError("an idempotency key must not be empty")
        return await self._granting(account, amount, note, idempotency_key)

    async def _granting(self, account: str, amount: Decimal | str | int, note: str | None, once: str) -> Grant:
        units = to_units(parse_amount(amount, what="grant"), what="grant")
        await self._index(account)
        result = await self._call(self._grant, account, abs(units), "1" if units < 0 else "0", note or "", once)
        if int(result[0]) == 0:
            raise ValueError("cannot take back more than is available")
        if int(result[0]) == -1:
            raise IdempotencyConflict("this idempotency key already granted another amount")
        available, held, spent, granted = (self._int(v) for v in result[1:5])
        balance = Balance(from_units(available), from_units(held), from_units(spent), from_units(granted))
        return Grant(balance, int(result[0]) == 2)

    async def _index(self, account: str) -> None:
        # Once per account and process: listings and queries over every account find it.
        if account not in self._indexed:
            try:
                await self._client.sadd(_ACCOUNTS, account)
            except self._errors as exc:
                raise StoreUnavailable(f"Redis: {exc}") from exc
            self._indexed.add(account)

    async def expire(self, accounts: list[str] | None = None) -> int:
        """Expire overdue holds of ``accounts`` now (scripts do it anyway on
        every touch); returns how many."""
        total = 0
        for account in accounts or []:
            result = await self._call(self._balance, account)
            total += int(result[4])
        return total

    # -- keys ---------------------------------------------------------------------

    @staticmethod
    def _key_name(api_key: str) -> str:
        return "{cg:key:" + hashlib.sha256(api_key.encode("utf-8")).hexdigest() + "}"

    async def add_key(self, api_key: str, account: str) -> str:
        if not api_key or len(api_key) < 8:
            raise ValueError("an API key must have at least 8 characters")
        prefix = f"{api_key[:7]}...{api_key[-4:]}" if len(api_key) > 16 else api_key[:3] + "..."
        name = self._key_name(api_key)
        try:
            await self._client.hset(
                name,
                mapping={"account": account, "prefix": prefix, "created": repr(time.time()), "revoked": ""},
            )
            await self._client.sadd("cg:keys", name)
        except self._errors as exc:
            raise StoreUnavailable(f"Redis: {exc}") from exc
        return prefix

    async def account_for_key(self, api_key: str) -> str | None:
        try:
            account, revoked = await self._client.hmget(self._key_name(api_key), ["account", "revoked"])
        except self._errors as exc:
            raise StoreUnavailable(f"Redis: {exc}") from exc
        return None if not account or revoked else str(account)

    async def list_keys(self, account: str | None = None) -> list[dict[str, Any]]:
        try:
            names = sorted(await self._client.smembers("cg:keys"))
            rows = []
            for name in names:
                info = await self._client.hgetall(name)
                if info and (account is None or info.get("account") == account):
                    rows.append(
                        {
                            "prefix": info.get("prefix"),
                            "account": info.get("account"),
                            "created": float(info.get("created") or 0),
                            "revoked": float(info["revoked"]) if info.get("revoked") else None,
                        }
                    )
        except self._errors as exc:
            raise StoreUnavailable(f"Redis: {exc}") from exc
        return sorted(rows, key=lambda r: r["created"])

    async def revoke_key(self, key_or_prefix: str) -> int:
        try:
            revoked = 0
            direct = self._key_name(key_or_prefix)
            for name in sorted(await self._client.smembers("cg:keys")):
                info = await self._client.hgetall(name)
                if info and not info.get("revoked") and (name == direct or info.get("prefix") == key_or_prefix):
                    await self._client.hset(name, "revoked", repr(time.time()))
                    revoked += 1
        except self._errors as exc:
            raise StoreUnavailable(f"Redis: {exc}") from exc
        return revoked

    async def account_exists(self, account: str) -> bool:
        try:
            if await self._client.exists(self._keys(account)[0]):
                return True
        except self._errors as exc:
            raise StoreUnavailable(f"Redis: {exc}") from exc
        return any(row["account"] == account for row in await self.list_keys(account))

    async def accounts(self) -> list[str]:
        """Accounts with figures (found by ``SCAN``: on Redis Cluster, those of
        the node the client talks to) and accounts with keys."""
        found: set[str] = set()
        try:
            async for name in self._client.scan_iter(match="{cg:*}:acct", count=1000):
                found.add(str(name)[len("{cg:") : -len("}:acct")])
        except self._errors as exc:
            raise StoreUnavailable(f"Redis: {exc}") from exc
        found.update(str(row["account"]) for row in await self.list_keys())
        return sorted(found)

    async def history(self, account: str, *, limit: int = 100) -> list[dict[str, Any]]:
        try:
            entries = await self._client.xrevrange(self._keys(account)[3], count=limit)
        except self._errors as exc:
            raise StoreUnavailable(f"Redis: {exc}") from exc
        rows = []
        for seq, fields in reversed(list(entries or [])):
            record: dict[Any, Any] = dict(fields or {})
            rows.append(
                {
                    "seq": seq,
                    "at": float(record["at"]),
                    "kind": record["kind"],
                    "amount": from_units(int(record["amount"])),
                    "hold": record["hold"] or None,
                    "available": from_units(int(record["available"])),
                    "held": from_units(int(record["held"])),
                    "spent": from_units(int(record["spent"])),
                    "granted": from_units(int(record["granted"])),
                    "note": record["note"] or None,
                }
            )
        return rows

    # -- usage records ------------------------------------------------------------

    async def _accounts(self, query: UsageQuery) -> list[str]:
        if query.account is not None:
            return [query.account]
        try:
            return sorted(str(name) for name in await self._client.smembers(_ACCOUNTS))
        except self._errors as exc:
            raise StoreUnavailable(f"Redis: {exc}") from exc

    async def usage_records(self, query: UsageQuery | None = None, *, limit: int = 100) -> list[UsageRecord]:
        """Kept records matching ``query``, newest first (at most ``limit``).
        Without an account, every account's records are read: slower."""
        query = query or UsageQuery()
        start, end = query.start(), query.end()
        low = "-inf" if start is None else repr(start)
        high = "+inf" if end is None else "(" + repr(end)
        found: list[UsageRecord] = []
        page = max(limit, 500)
        try:
            for account in await self._accounts(query):
                name = self._keys(account)[4]
                offset = 0
                taken = 0
                while taken < limit:
                    members = await self._client.zrevrangebyscore(name, high, low, start=offset, num=page)
                    for member in members:
                        record = _parse_record(account, str(member))
                        if query.matches(record):
                            found.append(record)
                            taken += 1
                    if len(members) < page:
                        break
                    offset += page
        except self._errors as exc:
            raise StoreUnavailable(f"Redis: {exc}") from exc
        found.sort(key=lambda r: r.ended_at, reverse=True)
        return found[:limit]

    async def usage_summary(self, query: UsageQuery | None = None, *, by: str = "day") -> list[UsageRow]:
        """Records matching ``query`` summed per ``by`` (see ``records.GROUPS``),
        read from the per-day rollups."""
        check_group(by)
        query = query or UsageQuery()
        low = "-inf" if query.since is None else str(_day_number(query.since))
        high = "+inf" if query.until is None else str(_day_number(query.until))
        cells: list[tuple[str, str, str, str, int, int, int, int, int, int]] = []
        try:
            for account in await self._accounts(query):
                keys = self._keys(account)
                day_numbers = [str(n) for n in await self._client.zrangebyscore(keys[5], low, high)]
                if not day_numbers:
                    continue
                async with self._client.pipeline(transaction=False) as pipe:
                    for number in day_numbers:
                        pipe.hgetall(keys[5] + ":" + number)
                    rollups = await pipe.execute()
                for number, rollup in zip(day_numbers, rollups, strict=True):
                    cells.extend(_cells(account, int(number), rollup, query))
        except self._errors as exc:
            raise StoreUnavailable(f"Redis: {exc}") from exc
        return group_rows(cells, by)

    async def prune_usage(self, before: dt.date, *, account: str | None = None) -> int:
        """Delete records (of ``account``, or every account) that ended before
        the UTC day ``before``, and the rollups of those days; returns how many
        records."""
        removed = 0
        for name in await self._accounts(UsageQuery(account=account)):
            removed += int(await self._call(self._prune, name, repr(day_start(before)), _day_number(before)))
        return removed

    async def aclose(self) -> None:
        if self._owns:
            await self._client.aclose()


def _meta(record: UsageRecord | None) -> list[str]:
    """The finish script's record arguments ("" when there is no record)."""
    if record is None:
        return ["", "", "0", "0", "0", ""]
    if record.outcome not in OUTCOMES:
        # The outcome is written into the record's JSON text by the script.
        raise ValueError(f"unknown usage record outcome {record.outcome!r}")
    meta = orjson.dumps(
        {
            "request_id": record.request_id,
            "key": record.key,
            "model": record.model,
            "route": record.route,
            "input_tokens": record.input_tokens,
            "output_tokens": record.output_tokens,
            "cached_tokens": record.cached_tokens,
            "started_at": record.started_at,
        }
    ).decode()
    dim = orjson.dumps([record.key, record.model]).decode()
    return [
        meta[:-1],
        dim,
        str(record.input_tokens),
        str(record.output_tokens),
        str(record.cached_tokens),
        record.outcome,
    ]


def _parse_record(account: str, member: str) -> UsageRecord:
    data = orjson.loads(member)
    return UsageRecord(
        request_id=str(data["request_id"]),
        key=str(data["key"]),
        model=str(data["model"]),
        route=str(data["route"]),
        input_tokens=int(data["input_tokens"]),
        output_tokens=int(data["output_tokens"]),
        cached_tokens=int(data["cached_tokens"]),
        outcome=str(data["outcome"]),
        started_at=float(data["started_at"]),
        account=account,
        hold=str(data["hold"]),
        held=from_units(int(data["held"])),
        charged=from_units(int(data["charged"])),
        ended_at=float(data["ended_at"]),
    )


def _day_number(day: dt.date) -> int:
    return int(day_start(day)) // 86400


def _cells(
    account: str, number: int, rollup: dict[str, str], query: UsageQuery
) -> list[tuple[str, str, str, str, int, int, int, int, int, int]]:
    """Rollup cells of one account's day hash (fields ``<metric>["key","model"]``)."""
    metrics = "riochx"
    sums: dict[str, list[int]] = {}
    for name, value in rollup.items():
        sums.setdefault(name[1:], [0] * 6)[metrics.index(name[0])] = int(value)
    day = (dt.date(1970, 1, 1) + dt.timedelta(days=number)).isoformat()
    cells = []
    for dim, t in sums.items():
        key, model = orjson.loads(dim)
        if (query.key is None or key == query.key) and (query.model is None or model == query.model):
            cells.append((day, account, str(key), str(model), t[0], t[1], t[2], t[3], t[4], t[5]))
    return cells
