"""Pricing large bodies in other processes: ``PricingPool``.

Parsing a body of several megabytes holds the GIL for tens of milliseconds
(orjson, then the standard library's duplicate-key pass), and a thread does not
help: the event loop waits for the GIL all the same.  A body at least
``CreditGuard(offload_bytes=...)`` large is therefore sent, as bytes, to one of
a few worker processes, which do all of its CPU work and return only what the
way to the app needs:

    event loop ──bytes──► worker: parse_json ─► shapes.parse ─► resolve ─► input_bounds
               ◄───────── Understood (the Ask without its texts, the bounds, body fields)
    event loop ──bytes──► worker: the same, then count_input (the exact count)
               ◄───────── TokenCount

The price table is sent once, when a worker starts (lazily, on the first large
body).  An error a worker raises reaches the caller as the same
``CreditGuardError`` (class, message, ``param``, fields).  A worker that dies
or does not answer in time is killed and replaced; the request gets
``PricingUnavailable`` (503): the body is not retried in the event loop's
process, since a body that brings down a worker would bring that process down
too.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection
from typing import Any

import anyio
import anyio.to_thread

from .errors import CreditGuardError, PricingUnavailable
from .prices import PriceTable
from .shapes import Ask
from .tokens import TokenCount

__all__ = ["PricingPool", "Understood", "DEFAULT_OFFLOAD_BYTES"]

#: A body as the pool takes it: its bytes, or their pieces in order.
BodyBytes = bytes | tuple[bytes, ...]

logger = logging.getLogger("credit_guard")

#: Bodies at least this large are priced in a worker process by default.
DEFAULT_OFFLOAD_BYTES = 4 * 1024 * 1024
# How long a worker may take: a base, plus time in proportion to the body
# (counting 16 MiB takes a few seconds on a loaded machine).
_TIMEOUT_BASE = 30.0
_TIMEOUT_PER_MIB = 2.0
# How long a new worker may take to import, load the tokenizers and say so.
_START_TIMEOUT = 120.0
# Workers yield the CPU to the event loop's process where the two compete:
# a small request's latency matters more than a huge one's.  Under Linux's
# SCHED_IDLE, the event loop's wakeup takes the CPU from a worker at once (at
# nice 10 alone it waits for the worker's time slice to end, a few ms); where
# SCHED_IDLE is missing, nice 10 is what they get.
_WORKER_NICENESS = 10
# A body a worker has been pricing for this long (a base, plus time in
# proportion to the body, as for the timeout) has its worker lifted out of
# SCHED_IDLE (to the ordinary policy, at nice 10) where this process may do so,
# and put back once it answers: a busy event loop delays a large body, but
# does not starve it for want of idle CPU.  Not sooner: every body waits while
# the event loop is busy, and lifting a worker costs the loop whole time
# slices (a worker lifted after a long wait is owed CPU and takes it).
_PATIENCE_BASE = 2.0
_PATIENCE_PER_MIB = 0.5
# How many pieces one writev may gather.
try:
    _IOV_MAX = max(16, os.sysconf("SC_IOV_MAX"))
except (AttributeError, ValueError, OSError):  # pragma: no cover - not POSIX
    _IOV_MAX = 16


@dataclass(frozen=True, slots=True)
class Understood:
    """What the way to the app needs of a body a worker priced.

    ``ask`` carries no texts (never count it: ``PricingPool.count`` does that
    from the body); ``low``/``high`` are ``tokens.input_bounds``; ``fields``
    holds the body's ``stream_options`` where it has one, the one field read
    later (a body rewritten whole is parsed again).
    """

    ask: Ask
    low: int
    high: int
    fields: dict[str, Any]


class PricingPool:
    """Up to ``processes`` worker processes that price bodies for one guard.

    ``understand`` and ``count`` raise the ``CreditGuardError`` that pricing the
    body raises, or ``PricingUnavailable`` where the worker died, did not answer
    within ``timeout`` seconds (default: thirty, plus two per MiB of the body),
    or could not start.  Workers run at nice 10 and, on Linux, under
    SCHED_IDLE; one still pricing a body after ``patience`` seconds (default:
    two, plus half a second per MiB of the body) is lifted
    to the ordinary policy until it answers, where this process may do that.
    Workers start on first use; ``close``/``aclose`` stop them (also at
    interpreter exit), and a later call starts new ones.
    """

    def __init__(
        self,
        prices: PriceTable,
        *,
        processes: int = 1,
        timeout: float | None = None,
        patience: float | None = None,
    ) -> None:
        if processes < 1:
            raise ValueError("processes must be at least 1")
        self._prices = prices
        self._timeout = timeout
        self._patience = patience
        self._slots = anyio.Semaphore(processes)
        self._idle: list[_Worker] = []
        self._busy: set[_Worker] = set()
        self._exit_hook = False

    async def understand(self, kind: str, data: BodyBytes) -> Understood:
        """Parse, shape, resolve and bound ``data`` (the bytes, or their
        pieces in order) as a ``kind`` body."""
        result = await self._call("understand", kind, data)
        assert isinstance(result, Understood)
        return result

    async def count(self, kind: str, data: BodyBytes) -> TokenCount:
        """``tokens.count_input`` of ``data`` as a ``kind`` body."""
        result = await self._call("count", kind, data)
        assert isinstance(result, TokenCount)
        return result

    def pids(self) -> list[int]:
        """The worker processes' ids (for monitoring)."""
        return [w.process.pid for w in (*self._idle, *self._busy)]

    def close(self) -> None:
        """Stop every worker, waiting a moment for each to exit; a call in
        flight gets ``PricingUnavailable``."""
        idle, self._idle = self._idle, []
        for worker in idle:
            worker.stop()
        for worker in list(self._busy):
            # Its caller's thread sees the pipe close and finishes the call.
            worker.kill()
        if self._exit_hook:
            atexit.unregister(self.close)
            self._exit_hook = False

    async def aclose(self) -> None:
        """``close`` in a worker thread (it waits for processes to exit)."""
        await anyio.to_thread.run_sync(self.close)

    async def _call(self, op: str, kind: str, data: BodyBytes) -> Any:
        parts = (data,) if isinstance(data, bytes) else data
        size = sum(map(len, parts))
        timeout = self._timeout
        if timeout is None:
            timeout = _TIMEOUT_BASE + _TIMEOUT_PER_MIB * size / (1024 * 1024)
        patience = self._patience
        if patience is None:
            patience = _PATIENCE_BASE + _PATIENCE_PER_MIB * size / (1024 * 1024)
        async with self._slots:
            worker = self._idle.pop() if self._idle else None
            if worker is not None and not worker.alive():
                # Died while idle (killed from outside): not this body's doing.
                worker.kill()
                worker = None
            if worker is None:
                worker = await anyio.to_thread.run_sync(self._start)
            self._busy.add(worker)
            try:
                reply = await anyio.to_thread.run_sync(worker.call, op, kind, parts, timeout, patience)
            except BaseException:
                worker.kill()
                raise
            finally:
                self._busy.discard(worker)
            self._idle.append(worker)
        status, value = reply
        if status == "ok":
            return value
        if status == "error":
            cls, message, param, fields = value
            raise cls(message, param=param, **fields)
        raise value

    def _start(self) -> _Worker:
        ours, theirs = socket.socketpair()
        # A fresh interpreter that imports this package only: unlike
        # multiprocessing's spawn, it never runs the app's main module again.
        path = os.pathsep.join(entry or os.getcwd() for entry in sys.path)
        try:
            process = subprocess.Popen(
                [sys.executable, "-c", _BOOT, str(theirs.fileno())],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                env={**os.environ, "PYTHONPATH": path},
            )
        except OSError as exc:
            ours.close()
            logger.error("credit_guard.pricing_pool: cannot start a worker process: %s", exc)
            raise PricingUnavailable("Large requests cannot be priced right now; retry shortly.") from None
        finally:
            theirs.close()
        worker = _Worker(process, Connection(ours.detach()))
        if not self._exit_hook:
            atexit.register(self.close)
            self._exit_hook = True
        watchdog = threading.Timer(_START_TIMEOUT, worker.process.kill)
        watchdog.daemon = True
        watchdog.start()
        try:
            worker.conn.send(self._prices)
            ready = worker.conn.recv_bytes() == b"ready"
        except (EOFError, OSError):
            ready = False
        finally:
            watchdog.cancel()
        if not ready:
            worker.kill()
            logger.error("credit_guard.pricing_pool: a worker process did not start")
            raise PricingUnavailable("Large requests cannot be priced right now; retry shortly.")
        return worker


class _Worker:
    """One worker process and the event loop's end of its pipe."""

    def __init__(self, process: subprocess.Popen[bytes], conn: Connection) -> None:
        self.process = process
        self.conn = conn
        self.lifted = False  # out of SCHED_IDLE for the body it prices now

    def alive(self) -> bool:
        return self.process.poll() is None

    def call(self, op: str, kind: str, parts: tuple[bytes, ...], timeout: float, patience: float) -> tuple[str, Any]:
        """Send one body, in its pieces, and wait for the answer (in a thread:
        the GIL is released while the pipe is written and while the worker
        works, and the pieces are never joined here)."""
        # A worker that stops reading blocks the write as surely as one that
        # stops answering blocks the read: past the deadline it is killed,
        # which ends both.
        expired = threading.Event()

        def expire() -> None:
            expired.set()
            if self.alive():
                self.process.kill()

        watchdog = threading.Timer(timeout, expire)
        watchdog.daemon = True
        watchdog.start()
        lift = threading.Timer(patience, self._lift)
        lift.daemon = True
        lift.start()
        try:
            self.conn.send((op, kind, sum(map(len, parts))))
            _write_all(self.conn.fileno(), parts)
            reply: tuple[str, Any] = self.conn.recv()
        except (EOFError, OSError, pickle.UnpicklingError):
            if expired.is_set():
                logger.error("credit_guard.pricing_pool: worker %s did not answer in %.0fs", self.process.pid, timeout)
                raise PricingUnavailable("Pricing this request took too long; it was not forwarded.") from None
            logger.error("credit_guard.pricing_pool: worker %s died pricing a request", self.process.pid)
            raise PricingUnavailable("Pricing this request failed; it was not forwarded. Retry shortly.") from None
        finally:
            watchdog.cancel()
            lift.cancel()
            lift.join()  # (where it is lifting the worker now, until it is done)
            if self.lifted:
                self._idle_again()
        return reply

    def _lift(self) -> None:
        """The worker out of SCHED_IDLE, to the ordinary policy at its nice
        value, where this process is allowed to (root, CAP_SYS_NICE, or an
        RLIMIT_NICE that permits it); where not, it keeps the idle share the
        kernel still gives it."""
        try:
            if os.sched_getscheduler(self.process.pid) != os.SCHED_IDLE:
                return
            os.sched_setscheduler(self.process.pid, os.SCHED_OTHER, os.sched_param(0))
        except (AttributeError, OSError):
            return
        self.lifted = True
        logger.info("credit_guard.pricing_pool: worker %s lifted out of SCHED_IDLE to finish a body", self.process.pid)

    def _idle_again(self) -> None:
        self.lifted = False
        with contextlib.suppress(AttributeError, OSError):
            os.sched_setscheduler(self.process.pid, os.SCHED_IDLE, os.sched_param(0))

    def stop(self) -> None:
        self.conn.close()  # the worker sees the end of its pipe and exits
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=2)
        self.kill()

    def kill(self) -> None:
        if self.alive():
            self.process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=5)
        self.conn.close()


def _write_all(fd: int, parts: tuple[bytes, ...]) -> None:
    """Write ``parts`` to ``fd`` in order, gathered (``writev``: no copy of
    them is made in this process, and the GIL is released while the kernel
    takes them)."""
    views = [memoryview(part) for part in parts if part]
    first = 0
    while first < len(views):
        written = os.writev(fd, views[first : first + _IOV_MAX])
        while first < len(views) and written >= len(views[first]):
            written -= len(views[first])
            first += 1
        if written:
            views[first] = views[first][written:]


# -- in the worker process -----------------------------------------------------


_BOOT = "import sys; from credit_guard.offload import _serve; _serve(int(sys.argv[1]))"


def _serve(fd: int) -> None:
    """A worker's life: receive the price table, then answer bodies until
    the pipe closes."""
    from . import tokens

    conn = Connection(fd)
    try:
        prices: PriceTable = conn.recv()
    except (EOFError, OSError):
        return

    # Ctrl-C reaches the whole process group; the guard's process stops us.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with contextlib.suppress(OSError):
        os.nice(_WORKER_NICENESS)
    tokens.warm()
    # No event loop here: a Mistral tokenizer is loaded when first needed and
    # counts exactly, rather than the byte bound while it loads.
    from . import _mistral

    _mistral.WAIT_FOR_TOKENIZERS = True
    # Idle only once started: loading the tokenizers is bounded by the start
    # timeout, and a worker that cannot start would fail every large body.
    _idle()
    conn.send_bytes(b"ready")
    while True:
        try:
            op, kind, size = conn.recv()
            data = _read_exactly(fd, size)
        except (EOFError, OSError):
            return
        conn.send(_answer(prices, op, kind, data))
        del data  # not kept while the worker waits for the next body


def _idle() -> None:
    """This process under SCHED_IDLE, where the system has it."""
    with contextlib.suppress(AttributeError, OSError):
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))


def _read_exactly(fd: int, size: int) -> bytearray:
    """``size`` bytes from ``fd``, read straight into one buffer."""
    data = bytearray(size)
    view = memoryview(data)
    got = 0
    while got < size:
        n = os.readv(fd, [view[got:]])
        if n == 0:
            raise EOFError
        got += n
    view.release()
    return data


def _answer(prices: PriceTable, op: str, kind: str, data: bytes | bytearray) -> tuple[str, Any]:
    from . import shapes, tokens
    from .body import parse_json
    from .middleware import resolve_price

    try:
        obj = parse_json(data)
        ask = shapes.parse(kind, obj)
        price = resolve_price(prices, ask)
        if op == "count":
            return "ok", tokens.count_input(ask, price)
        low, high = tokens.input_bounds(ask, price)
        fields = {"stream_options": obj["stream_options"]} if "stream_options" in obj else {}
        light = replace(ask, texts=(), bound_texts=None, unknown=(), source=None)
        return "ok", Understood(light, low, high, fields)
    except CreditGuardError as exc:
        return "error", (type(exc), exc.message, exc.param, exc.fields)
    except Exception as exc:
        # Not an answer in the envelope: raised in the guard's process as it
        # would have been there.
        try:
            pickle.dumps(exc)
        except Exception:
            exc = RuntimeError(f"{type(exc).__name__}: {exc}")
        return "raise", exc
