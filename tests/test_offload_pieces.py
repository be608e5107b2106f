"""A large body in many pieces, over real HTTP: priced by a worker process,
forwarded and charged exactly as the same body priced in process, whether it
arrives whole, its client leaves mid-upload, its worker refuses it, or its
worker is killed while the body is being written to it."""

from __future__ import annotations

import gzip
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
import pytest

from credit_guard import CreditGuard, MemoryStore, PriceTable, shapes, tokens
from credit_guard.offload import _IOV_MAX, DEFAULT_OFFLOAD_BYTES, PricingPool

from .servers import serve
from .test_offload import answer, read_pieces

KEY = "sk-pieces-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}
TABLE = PriceTable.default()
PAD = "gateway token " * (DEFAULT_OFFLOAD_BYTES // 14 + 1)
BIG = orjson.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": PAD}], "max_tokens": 5})


def _cut(body: bytes, size: int) -> list[bytes]:
    return [body[i : i + size] for i in range(0, len(body), size)]


class Upstream:
    """Records the bodies that reach it (and in how many messages), and
    answers with usage or without it."""

    def __init__(self, usage: bool) -> None:
        self.usage = usage
        self.bodies: list[bytes] = []
        self.messages: list[int] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        chunks = await read_pieces(receive)
        if chunks is None:
            return
        self.bodies.append(b"".join(chunks))
        self.messages.append(len(chunks))
        await answer(send, self.usage)


@contextmanager
def _gateway(*, offload: bool, usage: bool = True) -> Iterator[tuple[str, CreditGuard, MemoryStore, Upstream]]:
    store = MemoryStore({"acct": "100000"})
    upstream = Upstream(usage)
    guard = CreditGuard(
        upstream,
        store=store,
        prices=TABLE,
        accounts={KEY: "acct"},
        max_body_bytes=32 * 1024 * 1024,
        offload_bytes=DEFAULT_OFFLOAD_BYTES if offload else None,
    )
    try:
        with serve(guard) as url:
            yield url, guard, store, upstream
    finally:
        if guard.pricing is not None:
            guard.pricing.close()


def _post(url: str, body: bytes, *, piece: int = 1500, gz: bool = False) -> httpx.Response:
    """POST ``body`` with chunked transfer encoding, ``piece`` bytes at a time."""
    headers = dict(AUTH)
    if gz:
        body = gzip.compress(body, compresslevel=1, mtime=0)
        headers["Content-Encoding"] = "gzip"
    return httpx.post(f"{url}/v1/chat/completions", content=iter(_cut(body, piece)), headers=headers, timeout=120)


async def _settled(store: MemoryStore) -> Any:
    """The balance once no hold is left (the server ends a hold just after
    the client has the answer, or after it has gone)."""
    deadline = time.monotonic() + 20
    while True:
        balance = await store.balance("acct")
        if balance.held == 0 or time.monotonic() > deadline:
            assert balance.available + balance.held + balance.spent == balance.granted
            return balance
        time.sleep(0.02)


def _answer(response: httpx.Response) -> tuple[int, Any]:
    payload = response.json()
    if "error" in payload:
        payload["error"].pop("request_id", None)
    return response.status_code, payload


@pytest.fixture(scope="module")
def pool() -> Iterator[PricingPool]:
    shared = PricingPool(TABLE)
    yield shared
    shared.close()


@pytest.mark.anyio
async def test_more_pieces_than_one_write_gathers_are_priced_as_the_body_whole(pool: PricingPool) -> None:
    pieces = (*_cut(BIG[:5000], 1), b"", *_cut(BIG[5000:], 997))
    assert len(pieces) > 2 * _IOV_MAX and b"".join(pieces) == BIG
    whole = await pool.understand("chat", BIG)
    assert await pool.understand("chat", pieces) == whole
    counted = await pool.count("chat", pieces)
    ask = shapes.parse("chat", orjson.loads(BIG))
    assert counted == tokens.count_input(ask, TABLE.resolve("gpt-4o-mini"))
    assert (whole.low, whole.high) == tokens.input_bounds(ask, TABLE.resolve("gpt-4o-mini"))


@pytest.mark.anyio
@pytest.mark.parametrize("usage", [True, False])
@pytest.mark.parametrize(
    ("extra", "gz"),
    [({}, False), ({}, True), ({"stream": True}, False), ({"stream": True, "stream_options": None}, False)],
)
async def test_a_body_in_pieces_is_forwarded_and_charged_as_one_priced_here(
    extra: dict[str, Any], gz: bool, usage: bool
) -> None:
    """The app gets every byte (spliced where the guard asks a stream for
    usage), in pieces; the charge is the in-process one to the unit, also
    where the response reports no usage and the worker counts the input."""
    body = orjson.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": PAD}], **extra})
    seen = []
    for offload in (False, True):
        with _gateway(offload=offload, usage=usage) as (url, guard, store, upstream):
            response = _post(url, body, gz=gz)
            assert response.status_code == 200, response.text
            seen.append((upstream.bodies, await _settled(store), response.headers["x-credits-remaining"]))
            if offload:
                assert guard.pricing is not None and len(guard.pricing.pids()) == 1
                if not gz and "stream_options" not in extra:  # (else rewritten whole)
                    assert upstream.messages[0] > 1  # replayed in the pieces it came in
    assert seen[0] == seen[1]
    (forwarded,) = seen[1][0]
    assert orjson.loads(gzip.decompress(forwarded) if gz else forwarded)["messages"][0]["content"] == PAD


@pytest.mark.anyio
@pytest.mark.parametrize(
    "body",
    [
        BIG[:-1] + b',"model":"gpt-4o"}',  # a duplicate key after the prompt
        BIG[:-1] + b',"temperature":NaN}',
        BIG[: len(BIG) // 2] + b"\xff" + BIG[len(BIG) // 2 :],  # not UTF-8, in the middle
        BIG[:-2],  # cut short
        BIG.replace(b"gpt-4o-mini", b"no-such-model"),
        BIG.replace(b'"role":"user"', b'"role":"wizard"'),
    ],
    ids=["duplicate", "nan", "utf8", "truncated", "model", "role"],
)
async def test_a_body_the_worker_refuses_gets_the_answer_it_gets_here(body: bytes) -> None:
    answers = []
    for offload in (False, True):
        with _gateway(offload=offload) as (url, guard, store, upstream):
            answers.append(_answer(_post(url, body, piece=4096)))
            assert upstream.bodies == []
            balance = await _settled(store)
            assert balance.spent == 0 and balance.available == balance.granted
            if offload:
                assert guard.pricing is not None and len(guard.pricing.pids()) == 1
    assert answers[0] == answers[1]
    assert 400 <= answers[0][0] < 500


def _raw_post(url: str, body: bytes, *, send: int) -> None:
    """Send the headers for ``body`` and its first ``send`` bytes, then leave."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port or 80)) as sock:
        head = (
            f"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {KEY}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        sock.sendall(head.encode() + body[:send])
        time.sleep(0.2)


@pytest.mark.anyio
async def test_a_client_that_leaves_mid_upload_holds_nothing_and_the_next_body_is_priced_as_here() -> None:
    charges = []
    for offload in (False, True):
        with _gateway(offload=offload, usage=False) as (url, guard, store, upstream):
            for cut in (1, len(BIG) // 2, len(BIG) - 1):
                _raw_post(url, BIG, send=cut)
            time.sleep(0.3)
            assert upstream.bodies == [] and (await store.balance("acct")).held == 0
            if offload:
                assert guard.pricing is not None and guard.pricing.pids() == []  # no body reached a worker
            # Whole, then gone as soon as it is sent: priced, forwarded, and the hold ends.
            _raw_post(url, BIG, send=len(BIG))
            deadline = time.monotonic() + 20
            while not upstream.bodies and time.monotonic() < deadline:
                time.sleep(0.02)
            balance = await _settled(store)
            response = _post(url, BIG)
            assert response.status_code == 200
            after = await _settled(store)
            charges.append((after.spent - balance.spent, len(upstream.bodies)))
    assert charges[0] == charges[1]
    assert charges[0][0] > Decimal(0)


@pytest.mark.anyio
async def test_a_worker_killed_while_the_body_is_written_to_it_costs_a_503_and_no_hold() -> None:
    with _gateway(offload=True) as (url, guard, store, upstream):
        assert _post(url, BIG).status_code == 200
        assert guard.pricing is not None
        (pid,) = guard.pricing.pids()
        # Stopped, it reads no more: the write of a 4 MiB body blocks part way
        # (a socket holds far less), then the worker dies under it.
        os.kill(pid, signal.SIGSTOP)
        result: list[httpx.Response] = []
        sender = threading.Thread(target=lambda: result.append(_post(url, BIG)))
        sender.start()
        time.sleep(1.0)
        os.kill(pid, signal.SIGKILL)
        sender.join(60)
        (response,) = result
        assert response.status_code == 503
        assert response.json()["error"]["type"] == "pricing_unavailable"
        assert len(upstream.bodies) == 1  # nothing forwarded unpriced
        before = await _settled(store)
        assert _post(url, BIG).status_code == 200  # a new worker prices the next one
        after = await _settled(store)
        assert guard.pricing.pids() != [pid]
    with _gateway(offload=False) as (url, _, store_here, _):
        assert _post(url, BIG).status_code == 200
        here = await _settled(store_here)
    assert after.spent - before.spent == here.spent


def _may_leave_idle() -> bool:
    """Whether this process may lift a SCHED_IDLE process at nice 10 back to
    the ordinary policy (the kernel's rule: CAP_SYS_NICE, or RLIMIT_NICE)."""
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NICE)
    return os.geteuid() == 0 or soft == resource.RLIM_INFINITY or soft >= 20 - 10


@pytest.mark.anyio
@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="SCHED_IDLE is Linux's")
async def test_a_worker_yields_to_the_event_loop_but_is_lifted_when_a_body_waits_too_long() -> None:
    """Workers run at nice 10 under SCHED_IDLE; one that has priced a body for
    longer than its patience is lifted to the ordinary policy (where this
    process may do that) and put back once it answers, with the answer of a
    worker never lifted."""
    pool = PricingPool(TABLE, patience=0.3)
    try:
        whole = await pool.understand("chat", BIG)
        (pid,) = pool.pids()
        assert os.sched_getscheduler(pid) == os.SCHED_IDLE
        assert os.getpriority(os.PRIO_PROCESS, pid) == 10
        os.kill(pid, signal.SIGSTOP)  # it takes the next body and makes no progress
        seen: list[int] = []

        def watch() -> None:
            time.sleep(1.0)
            seen.append(os.sched_getscheduler(pid))
            seen.append(os.getpriority(os.PRIO_PROCESS, pid))  # lifted, it keeps nice 10
            os.kill(pid, signal.SIGCONT)

        watcher = threading.Thread(target=watch)
        watcher.start()
        assert await pool.understand("chat", tuple(_cut(BIG, 65536))) == whole
        watcher.join()
        assert seen == [os.SCHED_OTHER if _may_leave_idle() else os.SCHED_IDLE, 10]
        assert pool.pids() == [pid] and os.sched_getscheduler(pid) == os.SCHED_IDLE  # back, and the same one
        # Later bodies leave it under SCHED_IDLE too.
        assert await pool.count("chat", BIG) == await pool.count("chat", tuple(_cut(BIG, 4096)))
        assert os.sched_getscheduler(pid) == os.SCHED_IDLE
    finally:
        pool.close()


@pytest.mark.anyio
@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="SCHED_IDLE is Linux's")
async def test_a_core_kept_busy_delays_a_large_body_but_does_not_starve_it() -> None:
    """The worker shares its one CPU with a process that never sleeps (at the
    ordinary policy, as a busy event loop would be): the body is still priced,
    exactly, the worker lifted while it waits (where this process may lift it)."""
    pool = PricingPool(TABLE, patience=0.3)
    spinner = None
    try:
        whole = await pool.understand("chat", BIG)
        (pid,) = pool.pids()
        cpu = min(os.sched_getaffinity(pid))
        spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        os.sched_setaffinity(spinner.pid, {cpu})
        os.sched_setaffinity(pid, {cpu})
        seen: set[int] = set()
        done = threading.Event()

        def watch() -> None:
            while not done.wait(0.05):
                seen.add(os.sched_getscheduler(pid))

        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            assert await pool.understand("chat", tuple(_cut(BIG, 65536))) == whole
        finally:
            done.set()
            watcher.join()
        if _may_leave_idle():
            assert os.SCHED_OTHER in seen
        assert os.sched_getscheduler(pid) == os.SCHED_IDLE
    finally:
        if spinner is not None:
            spinner.kill()
            spinner.wait()
        pool.close()


@pytest.mark.anyio
@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="SCHED_IDLE is Linux's")
async def test_a_worker_that_may_not_be_lifted_stays_idle_and_still_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the right to raise a priority (no CAP_SYS_NICE, RLIMIT_NICE 0)
    the kernel refuses the lift: the worker keeps its idle share and answers."""
    real = os.sched_setscheduler

    def refused(pid: int, policy: int, param: Any) -> None:
        if policy != os.SCHED_IDLE:
            raise PermissionError(1, "Operation not permitted")
        real(pid, policy, param)

    pool = PricingPool(TABLE, patience=0.1)
    try:
        whole = await pool.understand("chat", BIG)
        (pid,) = pool.pids()
        monkeypatch.setattr(os, "sched_setscheduler", refused)
        os.kill(pid, signal.SIGSTOP)
        seen: list[int] = []

        def watch() -> None:
            time.sleep(0.6)
            seen.append(os.sched_getscheduler(pid))
            os.kill(pid, signal.SIGCONT)

        watcher = threading.Thread(target=watch)
        watcher.start()
        assert await pool.understand("chat", BIG) == whole
        watcher.join()
        assert seen == [os.SCHED_IDLE] and pool.pids() == [pid]
    finally:
        pool.close()
