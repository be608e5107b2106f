"""What credit_guard costs, each figure a ratio against a baseline measured in the
same run (machines are noisy; absolute times alone mean little).

    python benchmarks/run_all.py            # every figure, about 5 minutes on 2 cores
    python benchmarks/run_all.py --quick    # the same, shorter runs, under a minute
    python benchmarks/run_all.py --only 3   # one figure (repeatable)

Figures:
 1. overhead per request over real HTTP (uvicorn + wrk): bare vs guarded
 2. counting speed and accuracy against peers (litellm, tokencost)
 3. the guard's CPU per request vs tiktoken's bare encode_ordinary (the floor)
 4. p99 of small requests while 1 MB and 10 MB prompts are priced
 5. peak RSS while streaming 100 MB through the guard vs 1 MB
 6. store throughput: reserve+settle pairs per second

Everything talks to 127.0.0.1 only.  The figures print as a markdown table; raw
results go to benchmarks/results/latest.json (and the table to latest.md).
Figure 2's peers live in their own virtualenv, benchmarks/.venv-peers, made on
first use from benchmarks/requirements.txt (``--peers-python`` picks another
interpreter; ``--no-peer-install`` never installs).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: python benchmarks/run_all.py
    sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
PEERS_VENV = ROOT / "benchmarks" / ".venv-peers"
KEY = "sk-bench-0123456789abcdef"
SERVER_CPU = 0  # uvicorn runs alone on this core
CLIENT_CPU = 1  # wrk and every other load generator on this one

WORDS = (
    "the quick brown fox jumps over the lazy dog while a gateway counts every token "
    "of the prompt before the model sees it and holds the worst case against a balance"
).split()


@dataclass(frozen=True)
class Scale:
    """How long each figure runs: ``tiny`` for the smoke test, ``quick``, ``full``."""

    name: str
    http_seconds: int  # one wrk measurement (after a 1 s warm-up)
    rounds: int  # figure 1: bare / memory / SQLite, interleaved, this many times
    overhead_sizes: tuple[str, ...]
    peer_budget: float  # seconds of timing per counter and shape
    floor_budget: float
    floor_sizes: tuple[str, ...]
    responsive_seconds: int
    responsive_cases: tuple[tuple[str, str], ...]  # (size label, mode)
    stream_sizes: tuple[str, ...]
    store_pairs: int


SIZES = {"1KB": 1_000, "10KB": 10_000, "100KB": 100_000, "1MB": 1_000_000, "10MB": 10_000_000}
ALL_LARGE = ("1MB text", "1MB no whitespace", "10MB text", "10MB no whitespace")
SCALES = {
    "tiny": Scale("tiny", 1, 1, ("1KB",), 0.01, 0.01, ("1KB", "10KB"), 1, (("1MB text", "bounds"),), ("1MB", "10MB"), 30),
    "quick": Scale(
        "quick",
        2,
        1,
        ("1KB", "100KB"),
        0.05,
        0.15,
        ("1KB", "10KB", "100KB", "1MB"),
        3,
        (("1MB text", "exact"), ("10MB text", "exact")),
        ("1MB", "100MB"),
        300,
    ),
    "full": Scale(
        "full",
        6,
        2,
        ("1KB", "100KB"),
        0.3,
        1.0,
        ("1KB", "10KB", "100KB", "1MB", "1MB no whitespace"),
        8,
        tuple((label, mode) for mode in ("bounds", "exact") for label in ALL_LARGE),
        ("1MB", "100MB"),
        2000,
    ),
}


def text_of(size: int, *, spaces: bool = True) -> str:
    if not spaces:
        return ("abcdefghij" * (size // 10 + 1))[:size]
    out: list[str] = []
    length = 0
    i = 0
    while length < size:
        word = WORDS[(i * 7) % len(WORDS)]
        out.append(word)
        length += len(word) + 1
        i += 1
    return " ".join(out)[:size]


def chat_body(size: int, *, spaces: bool = True, max_tokens: int = 16) -> bytes:
    return orjson.dumps(
        {
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": text_of(size, spaces=spaces)}],
            "max_tokens": max_tokens,
        }
    )


def large_body(label: str) -> bytes:
    size, _, kind = label.partition(" ")
    return chat_body(SIZES[size], spaces=kind == "text")


# -- processes ------------------------------------------------------------------------


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = 30) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


def pinned(cpu: int) -> list[str]:
    """``taskset -c CPU`` where there is more than one core to keep apart."""
    return ["taskset", "-c", str(cpu)] if shutil.which("taskset") and (os.cpu_count() or 1) > 1 else []


@contextmanager
def server(factory: str, env: dict[str, str] | None = None) -> Iterator[tuple[int, int]]:
    """uvicorn serving ``benchmarks.apps:<factory>``, alone on SERVER_CPU: (port, pid)."""
    port = free_port()
    process = subprocess.Popen(
        [
            *pinned(SERVER_CPU),
            sys.executable,
            "-m",
            "uvicorn",
            f"benchmarks.apps:{factory}",
            "--factory",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--no-access-log",
            "--backlog",
            "4096",
        ],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        yield port, process.pid
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


_WRK_LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer %s"
local f = io.open("%s", "rb")
wrk.body = f:read("*a")
f:close()
"""


def _ms(value: str) -> float:
    match = re.match(r"([\d.]+)(\w+)", value)
    assert match is not None, value
    number, unit = match.groups()
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def wrk(port: int, body: bytes, seconds: int, connections: int = 32) -> dict[str, float]:
    """POST ``body`` for ``seconds`` with wrk (one thread, on CLIENT_CPU)."""
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is not installed (apt-get install wrk)")
    with tempfile.TemporaryDirectory() as tmp:
        body_path = Path(tmp) / "body.json"
        body_path.write_bytes(body)
        script = Path(tmp) / "post.lua"
        script.write_text(_WRK_LUA % (KEY, body_path))
        result = subprocess.run(
            [
                *pinned(CLIENT_CPU),
                "wrk",
                "-t1",
                f"-c{connections}",
                f"-d{seconds}s",
                "--latency",
                "-s",
                str(script),
                f"http://127.0.0.1:{port}/v1/chat/completions",
            ],
            capture_output=True,
            text=True,
            check=True,
        )
    out = result.stdout

    def field(pattern: str) -> str:
        match = re.search(pattern, out)
        if match is None:
            raise RuntimeError(f"unexpected wrk output: {out[-500:]}")
        return match.group(1)

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    return {
        "rps": float(field(r"Requests/sec:\s+([\d.]+)")),
        "p50_ms": _ms(field(r"\s50%\s+(\S+)")),
        "p99_ms": _ms(field(r"\s99%\s+(\S+)")),
        "requests": float(field(r"(\d+) requests in")),
        "non_2xx": float(errors.group(1)) if errors else 0.0,
        **({"socket_errors": socket_errors.group(1)} if socket_errors else {}),  # type: ignore[dict-item]
    }


def _time(fn: Callable[[], Any], budget: float) -> float:
    """Mean seconds per call over at least ``budget`` seconds (and 3 calls)."""
    fn()
    runs = 0
    start = time.perf_counter()
    while True:
        fn()
        runs += 1
        elapsed = time.perf_counter() - start
        if elapsed >= budget and runs >= 3:
            return elapsed / runs


# -- 1 -------------------------------------------------------------------------------


async def _grant_sqlite(path: str) -> None:
    from credit_guard.stores import SQLiteStore

    store = SQLiteStore(path)
    await store.grant("bench", "100000000")
    await store.aclose()


def figure_overhead(scale: Scale) -> dict[str, Any]:
    import anyio

    results: dict[str, Any] = {"connections": 32, "seconds_per_run": scale.http_seconds, "rounds": scale.rounds}
    with tempfile.TemporaryDirectory() as tmp:
        db = str(Path(tmp) / "bench.db")
        anyio.run(_grant_sqlite, db)
        configs = (
            ("bare", "bare", {}),
            ("memory", "guarded_memory", {}),
            ("sqlite", "guarded_sqlite", {"BENCH_SQLITE": db}),
        )
        for label in scale.overhead_sizes:
            body = chat_body(SIZES[label])
            runs: dict[str, list[dict[str, float]]] = {name: [] for name, _, _ in configs}
            for _ in range(scale.rounds):  # interleaved, so drift hits every config alike
                for name, factory, env in configs:
                    with server(factory, env) as (port, _pid):
                        wrk(port, body, 1)  # warm-up: encodings load, connections open
                        runs[name].append(wrk(port, body, scale.http_seconds))
            row: dict[str, Any] = {"body_bytes": len(body)}
            for name, measured in runs.items():
                row[name] = {
                    "rps": round(statistics.median(m["rps"] for m in measured), 1),
                    "p50_ms": round(statistics.median(m["p50_ms"] for m in measured), 3),
                    "p99_ms": round(statistics.median(m["p99_ms"] for m in measured), 3),
                    "non_2xx": sum(m["non_2xx"] for m in measured),
                    "runs": measured,
                }
            for name in ("memory", "sqlite"):
                row[name]["throughput_vs_bare"] = round(row[name]["rps"] / row["bare"]["rps"], 3)
                # Per request, what the guard adds on the server's one core.
                row[name]["added_us_per_request"] = round(1e6 / row[name]["rps"] - 1e6 / row["bare"]["rps"], 1)
            results[label] = row
    return results


# -- 2 -------------------------------------------------------------------------------

_TIKTOKEN_URL = "https://openaipublic.blob.core.windows.net/encodings/{}.tiktoken"


def tiktoken_cache(directory: Path) -> Path:
    """A ``TIKTOKEN_CACHE_DIR`` filled from the encodings credit_guard ships: each
    file under tiktoken's cache key, the SHA-1 of its download URL (tiktoken
    still checks each file's SHA-256 when it reads it)."""
    import hashlib

    data = ROOT / "credit_guard" / "data"
    directory.mkdir(parents=True, exist_ok=True)
    for source in data.glob("*.tiktoken"):
        key = hashlib.sha1(_TIKTOKEN_URL.format(source.stem).encode()).hexdigest()
        shutil.copyfile(source, directory / key)
    return directory


def peers_python(requested: str | None, install: bool) -> tuple[str, str]:
    """The interpreter that runs the peers, and how it was found."""
    if requested:
        return requested, "given with --peers-python"
    python = PEERS_VENV / "bin" / "python"
    if python.exists():
        return str(python), f"{PEERS_VENV.relative_to(ROOT)}"
    if not install:
        return sys.executable, "this interpreter (no peers venv, --no-peer-install)"
    print(f"   making {PEERS_VENV.relative_to(ROOT)} (once) from benchmarks/requirements.txt ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(PEERS_VENV)], check=True)
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "-r", str(ROOT / "benchmarks" / "requirements.txt")],
        check=True,
    )
    return str(python), f"{PEERS_VENV.relative_to(ROOT)} (made now)"


def figure_peers(scale: Scale, python: str | None = None, install: bool = True) -> dict[str, Any]:
    interpreter, how = peers_python(python, install)
    with tempfile.TemporaryDirectory() as tmp:
        env = {
            **os.environ,
            "TIKTOKEN_CACHE_DIR": str(tiktoken_cache(Path(tmp) / "tiktoken")),
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        }
        command = [*pinned(SERVER_CPU), interpreter, str(ROOT / "benchmarks" / "peers.py")]
        command += ["--budget", str(scale.peer_budget)]
        if scale.name == "tiny":
            command += ["--shape", "multi-turn with names (cookbook)", "--shape", "tools (cookbook weather)"]
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise RuntimeError(f"peers.py failed: {done.stderr[-1000:]}")
    results: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    results["interpreter"] = how
    return results


# -- 3 -------------------------------------------------------------------------------


def figure_floor(scale: Scale) -> dict[str, Any]:
    from credit_guard import PriceTable, make_quote, shapes, tokens
    from credit_guard.body import parse_json

    table = PriceTable.default()
    encoding = tokens.get_encoding("o200k_base")  # gpt-4o-mini's
    results: dict[str, Any] = {"model": "gpt-4o-mini", "encoding": encoding.name}
    for label in scale.floor_sizes:
        size, _, kind = label.partition(" ")
        raw = chat_body(SIZES[size], spaces=not kind)
        text = orjson.loads(raw)["messages"][0]["content"]

        def guard_path(raw: bytes = raw) -> Any:
            # What the middleware does with a body before it reserves: strict
            # parse, shape, resolve the price, count exactly, quote.
            ask = shapes.parse("chat", parse_json(raw))
            price = table.resolve(ask.model)
            count = tokens.count_input(ask, price)
            return make_quote(ask, price, count.tokens, count.exact)

        guard_s = _time(guard_path, scale.floor_budget)
        floor_s = _time(lambda text=text: encoding.encode_ordinary(text), scale.floor_budget)  # type: ignore[misc]
        results[label] = {
            "body_bytes": len(raw),
            "guard_ms": round(guard_s * 1000, 4),
            "encode_ordinary_ms": round(floor_s * 1000, 4),
            "ratio": round(guard_s / floor_s, 3),
        }
    return results


# -- 4 -------------------------------------------------------------------------------

_LARGE_CLIENT = """
import json, os, sys, time, httpx
body = open(sys.argv[1], "rb").read()
stop, out, url, key = sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
statuses, seconds = {}, []
with httpx.Client(timeout=300) as http:
    while not os.path.exists(stop):
        started = time.perf_counter()
        status = http.post(url, content=body, headers={"Authorization": "Bearer " + key,
                                                       "Content-Type": "application/json"}).status_code
        seconds.append(time.perf_counter() - started)
        statuses[str(status)] = statuses.get(str(status), 0) + 1
json.dump({"statuses": statuses, "seconds": seconds}, open(out, "w"))
"""


def _between_bounds_balance(body: bytes) -> Decimal:
    """A balance that covers this body's exact quote but not its byte upper
    bound: the guard must count it exactly (a huge balance lets the bounds decide
    alone, for bodies of 256 KiB and more)."""
    from credit_guard import PriceTable, make_quote, shapes, tokens
    from credit_guard.body import parse_json

    table = PriceTable.default()
    ask = shapes.parse("chat", parse_json(body))
    price = table.resolve(ask.model)
    exact = tokens.count_input(ask, price)
    _low, high = tokens.input_bounds(ask, price)
    exact_cost = make_quote(ask, price, exact.tokens, exact.exact).max_cost
    high_cost = make_quote(ask, price, high, False).max_cost
    assert high_cost > exact_cost * 2, (exact_cost, high_cost)
    return (exact_cost * 2).quantize(Decimal("0.0001"))


def figure_responsive(scale: Scale) -> dict[str, Any]:
    seconds = scale.responsive_seconds
    small = chat_body(500)
    keys = {f"{label} {mode}": f"sk-large-{i}" for i, (label, mode) in enumerate(scale.responsive_cases)}
    balances: dict[str, str] = {}
    for (label, mode), key in zip(scale.responsive_cases, keys.values(), strict=True):
        balances[key] = "100000000" if mode == "bounds" else str(_between_bounds_balance(large_body(label)))
    results: dict[str, Any] = {"small_body_bytes": len(small), "connections": 4, "seconds": seconds}
    with server("guarded_memory", {"BENCH_ACCOUNTS": json.dumps(balances)}) as (port, _pid):
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        wrk(port, small, 1, connections=4)
        baseline = wrk(port, small, seconds, connections=4)
        results["baseline (no large requests)"] = baseline
        for (label, mode), key in zip(scale.responsive_cases, keys.values(), strict=True):
            with tempfile.TemporaryDirectory() as tmp:
                body_path = Path(tmp) / "body.json"
                body_path.write_bytes(large_body(label))
                stop, out = Path(tmp) / "stop", Path(tmp) / "out.json"
                load = subprocess.Popen(
                    [*pinned(CLIENT_CPU), sys.executable, "-c", _LARGE_CLIENT, str(body_path), str(stop), str(out),
                     url, key],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                )
                time.sleep(1.0)  # the first large request is in flight
                try:
                    row: dict[str, Any] = wrk(port, small, seconds, connections=4)
                finally:
                    stop.touch()
                    try:
                        _, err = load.communicate(timeout=120)
                    except subprocess.TimeoutExpired:
                        load.kill()
                        _, err = load.communicate()
                large = json.loads(out.read_text()) if out.exists() else {"error": err.decode()[-300:]}
            row["large_requests"] = large.get("statuses", large)
            if large.get("seconds"):
                row["large_request_mean_s"] = round(statistics.mean(large["seconds"]), 3)
            row["p99_vs_baseline"] = round(row["p99_ms"] / baseline["p99_ms"], 2)
            results[f"{label}, {mode}"] = row
    return results


# -- 5 -------------------------------------------------------------------------------


def _peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def _stream_sizes(label: str) -> int:
    return int(label.removesuffix("MB")) * 1_000_000


def _stream_once(factory: str, size: int) -> dict[str, Any]:
    import httpx

    body = chat_body(200)
    with server(factory) as (port, pid):
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        with httpx.Client(timeout=300) as http:
            # A first small request loads the encodings: not part of the figure.
            http.post(url, content=body, headers={"Authorization": f"Bearer {KEY}", "x-bench-bytes": "1000"})
            before = _peak_rss_kib(pid)
            received = 0
            started = time.perf_counter()
            headers = {"Authorization": f"Bearer {KEY}", "x-bench-bytes": str(size)}
            with http.stream("POST", url, content=body, headers=headers) as response:
                status = response.status_code
                for chunk in response.iter_raw():
                    received += len(chunk)
            elapsed = time.perf_counter() - started
            peak = _peak_rss_kib(pid)
    return {
        "status": status,
        "received_bytes": received,
        "stream_mb_per_s": round(received / elapsed / 1e6, 1),
        "peak_rss_before_stream_mib": round(before / 1024, 1),
        "peak_rss_mib": round(peak / 1024, 1),
    }


def figure_memory(scale: Scale) -> dict[str, Any]:
    """Peak RSS (VmHWM) of the guarded server streaming each size; the same for
    the bare streaming app, as the baseline of the streaming rate."""
    results: dict[str, Any] = {}
    for label in scale.stream_sizes:
        size = _stream_sizes(label)
        results[label] = _stream_once("streaming_guarded", size)
        results[label]["bare"] = _stream_once("streaming_bare", size)
    small, big = scale.stream_sizes
    results["ratio"] = round(results[big]["peak_rss_mib"] / results[small]["peak_rss_mib"], 3)
    results["stream_rate_vs_bare"] = round(
        results[big]["stream_mb_per_s"] / results[big]["bare"]["stream_mb_per_s"], 3
    )
    return results


# -- 6 -------------------------------------------------------------------------------


def _store_worker(kind: str, url: str, pairs: int, account: str, out: Any) -> None:
    import anyio

    async def run() -> float:
        from credit_guard.stores import MemoryStore, RedisStore, SQLiteStore

        store: Any
        if kind == "memory":
            store = MemoryStore({account: "1000000"})
        elif kind.startswith("sqlite"):
            store = SQLiteStore(url, synchronous="NORMAL" if kind.endswith("NORMAL") else "FULL")
        else:
            store = RedisStore(url)
        if kind != "memory":
            await store.grant(account, "1000000")
        hold = await store.reserve(account, Decimal("0.001"))  # warm: connections, statements
        await store.settle(hold, Decimal("0.0004"))
        start = time.perf_counter()
        for _ in range(pairs):
            hold = await store.reserve(account, Decimal("0.001"))
            await store.settle(hold, Decimal("0.0004"))
        elapsed = time.perf_counter() - start
        await store.aclose()
        return elapsed

    out.put(anyio.run(run))


def figure_stores(scale: Scale) -> dict[str, Any]:
    import multiprocessing

    pairs = scale.store_pairs
    results: dict[str, Any] = {"pairs_per_process": pairs}
    redis_process = None
    with tempfile.TemporaryDirectory() as tmp:
        urls = {
            "memory": "",
            "sqlite": f"{tmp}/full.db",
            "sqlite synchronous=NORMAL": f"{tmp}/normal.db",
        }
        if shutil.which("redis-server"):
            port = free_port()
            redis_process = subprocess.Popen(
                ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            wait_for_port(port)
            urls["redis"] = f"redis://127.0.0.1:{port}/0"
        else:
            results["redis"] = "skipped: redis-server is not on PATH"
        try:
            context = multiprocessing.get_context("spawn")
            for kind, url in urls.items():
                row: dict[str, Any] = {}
                for processes in (1, 4):
                    label = "1 process" if processes == 1 else "4 processes"
                    if kind == "memory" and processes > 1:
                        row[label] = "n/a (a memory store lives in one process)"
                        continue
                    queue = context.Queue()
                    workers = [
                        context.Process(target=_store_worker, args=(kind, url, pairs, f"acct{i}", queue))
                        for i in range(processes)
                    ]
                    for worker in workers:
                        worker.start()
                    times = [queue.get(timeout=600) for _ in workers]
                    for worker in workers:
                        worker.join()
                    # The slowest worker bounds the aggregate: every pair was done by then.
                    row[label] = {
                        "pairs_per_second": round(pairs * processes / max(times), 1),
                        "mean_pair_us": round(statistics.mean(times) / pairs * 1e6, 1),
                    }
                results[kind] = row
        finally:
            if redis_process is not None:
                redis_process.terminate()
                redis_process.wait()
    return results


# -- the table ----------------------------------------------------------------------


def _fmt(value: float, digits: int = 2) -> str:
    return f"{value:,.{digits}f}"


def _verdict(met: bool, how: str) -> str:
    return f"met ({how})" if met else f"**missed** ({how})"


def table(figures: dict[int, dict[str, Any]]) -> str:
    """The figures as one markdown table (the README's)."""
    rows: list[tuple[str, ...]] = []
    one = figures.get(1, {})
    for label in ("1KB", "100KB"):
        row = one.get(label)
        if not row:
            continue
        bare = row["bare"]
        for store in ("memory", "sqlite"):
            guarded = row[store]
            ratio = guarded["throughput_vs_bare"]
            target = "-"
            if label == "1KB" and store == "memory":
                target = _verdict(ratio >= 0.85, ">= 0.85")
            rows.append(
                (
                    "1",
                    f"HTTP req/s, {label} chat body, {store} store (p50 / p99 ms)",
                    f"{_fmt(bare['rps'], 0)} bare ({_fmt(bare['p50_ms'])} / {_fmt(bare['p99_ms'])})",
                    f"{_fmt(guarded['rps'], 0)} ({_fmt(guarded['p50_ms'])} / {_fmt(guarded['p99_ms'])})",
                    f"{ratio:.2f} of bare (+{guarded['added_us_per_request']:,.0f} µs/req)",
                    target,
                )
            )
    two = figures.get(2, {})
    chat_speedups = []
    for shape, row in two.get("shapes", {}).items():
        for model, cell in row.items():
            ours = cell.get("credit_guard", {})
            peers = {k: v for k, v in cell.items() if isinstance(v, dict) and not k.startswith("credit_guard")}
            truth = cell.get("published") or cell.get("cookbook_reference")
            counts = ", ".join(
                f"{k.split('.')[0]} {v['tokens']}" + ("" if v.get("right", True) else " (wrong)")
                if "tokens" in v
                else f"{k.split('.')[0]} n/a"
                for k, v in peers.items()
            )
            speedup = cell.get("speedup_vs_fastest_peer")
            is_chat = shape.startswith(("plain", "multi-turn with names", "tools"))
            if speedup is not None and is_chat:
                chat_speedups.append(speedup)
            floor = f"; bare tiktoken {cell['floor_us']} µs" if cell.get("floor_us") else ""
            rows.append(
                (
                    "2",
                    f"count `{shape}`, {model}: tokens (truth {truth})",
                    f"{counts}; fastest peer {cell.get('fastest_peer_us', '-')} µs{floor}",
                    f"{ours.get('tokens', '-')} in {ours.get('us', '-')} µs (warm cache "
                    f"{cell.get('credit_guard (warm cache)', {}).get('us', '-')} µs)",
                    f"{speedup}x faster" if speedup is not None else "-",
                    _verdict(speedup >= 3, ">= 3x") if speedup is not None and is_chat else "-",
                )
            )
    three = figures.get(3, {})
    for label, row in three.items():
        if not isinstance(row, dict):
            continue
        size = SIZES[label.split(" ")[0]]
        target = _verdict(row["ratio"] <= 1.5, "<= 1.5x") if size >= 10_000 else "-"
        rows.append(
            (
                "3",
                f"CPU per request, {label} chat body (parse+shape+count+quote)",
                f"encode_ordinary {row['encode_ordinary_ms']} ms",
                f"{row['guard_ms']} ms",
                f"{row['ratio']:.2f}x the floor",
                target,
            )
        )
    four = figures.get(4, {})
    base = four.get("baseline (no large requests)")
    for label, row in four.items():
        if not isinstance(row, dict) or label.startswith("baseline"):
            continue
        ok = row["p99_vs_baseline"] < 2
        rows.append(
            (
                "4",
                f"p99 of small requests while {label} prompts are priced",
                f"{base['p99_ms']} ms" if base else "-",
                f"{row['p99_ms']} ms ({_large_summary(row)})",
                f"{row['p99_vs_baseline']:.2f}x",
                _verdict(ok, "< 2x"),
            )
        )
    five = figures.get(5, {})
    if "ratio" in five:
        small, big = (k for k in five if k.endswith("MB"))  # noqa: B905
        rows.append(
            (
                "5",
                f"peak RSS of the guarded server streaming {big} vs {small} of SSE",
                f"{five[small]['peak_rss_mib']} MiB",
                f"{five[big]['peak_rss_mib']} MiB ({five[big]['stream_mb_per_s']} MB/s; bare app "
                f"{five[big]['bare']['peak_rss_mib']} MiB, {five[big]['bare']['stream_mb_per_s']} MB/s)",
                f"{five['ratio']:.2f}x",
                _verdict(five["ratio"] <= 1.1, "flat: <= 1.1x"),
            )
        )
    six = figures.get(6, {})
    for kind, row in six.items():
        if not isinstance(row, dict):
            continue
        one_p = row.get("1 process", {})
        four_p = row.get("4 processes")
        rows.append(
            (
                "6",
                f"reserve+settle pairs/s, {kind} store",
                "-",
                f"{_fmt(one_p['pairs_per_second'], 0)} (1 process)",
                f"{_fmt(four_p['pairs_per_second'], 0)} (4 processes)" if isinstance(four_p, dict) else "-",
                "-",
            )
        )
    header = ("#", "figure", "baseline (same run)", "credit_guard", "ratio", "target")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _large_summary(row: dict[str, Any]) -> str:
    large = row.get("large_requests", {})
    if not isinstance(large, dict):
        return "large load failed"
    done = sum(large.values())
    mean = row.get("large_request_mean_s")
    return f"{done} large done, status {'/'.join(large)}" + (f", {mean} s each" if mean else "")


FIGURES: dict[int, tuple[str, Callable[..., dict[str, Any]]]] = {
    1: ("overhead per request over HTTP", figure_overhead),
    2: ("counting vs peers", figure_peers),
    3: ("distance to the encode_ordinary floor", figure_floor),
    4: ("staying responsive under large prompts", figure_responsive),
    5: ("memory while streaming", figure_memory),
    6: ("store throughput", figure_stores),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="shorter runs (under a minute)")
    size.add_argument("--tiny", action="store_true", help="the smoke test's size: checks it runs, measures nothing")
    parser.add_argument("--only", type=int, action="append", choices=sorted(FIGURES), help="run only these")
    parser.add_argument("--out", default=str(RESULTS / "latest.json"), help="where the raw JSON goes")
    parser.add_argument("--peers-python", help="the interpreter with litellm and tokencost (figure 2)")
    parser.add_argument("--no-peer-install", action="store_true", help="never make benchmarks/.venv-peers")
    args = parser.parse_args(argv)
    scale = SCALES["tiny" if args.tiny else "quick" if args.quick else "full"]
    machine = (
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}"
    )
    results: dict[str, Any] = {
        "machine": machine,
        "scale": scale.name,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "load_average_at_start": os.getloadavg(),
        "pinning": f"server on cpu {SERVER_CPU}, load generators on cpu {CLIENT_CPU}" if pinned(0) else "none",
        "figures": {},
    }
    figures: dict[int, dict[str, Any]] = {}
    started_all = time.monotonic()
    for number in args.only or sorted(FIGURES):
        title, run = FIGURES[number]
        print(f"== {number}. {title}", flush=True)
        started = time.monotonic()
        try:
            if number == 2:
                value = run(scale, args.peers_python, not args.no_peer_install)
            else:
                value = run(scale)
        except Exception as exc:  # one figure failing must not hide the others
            value = {"error": f"{type(exc).__name__}: {exc}"}
            print(f"   failed: {value['error']}", flush=True)
        value["seconds"] = round(time.monotonic() - started, 1)
        figures[number] = value
        results["figures"][f"{number}. {title}"] = value
        print(f"   done in {value['seconds']} s", flush=True)
    results["seconds"] = round(time.monotonic() - started_all, 1)
    markdown = table(figures)
    results["table"] = markdown
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1, default=str))
    out.with_suffix(".md").write_text(f"{machine}; {scale.name} run, {results['started']}\n\n{markdown}\n")
    print()
    print(f"{machine}; {scale.name} run; load average at start {results['load_average_at_start']}")
    print()
    print(markdown)
    print()
    print(f"raw results: {out}; total {results['seconds']} s")
    failed = [n for n, v in figures.items() if "error" in v]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
