"""What credit_guard costs, measured against a baseline in the same run.

    python -m benchmarks.run_all            # every figure (about 5 minutes)
    python -m benchmarks.run_all --quick    # the same, shorter (about a minute)
    python -m benchmarks.run_all --only 3   # one figure

Figures:
 1. overhead per request over real HTTP (uvicorn + wrk): bare vs guarded
 2. counting speed and accuracy against peers (litellm, tokencost)
 3. the guard's CPU per request vs tiktoken's bare encode_ordinary (the floor)
 4. p99 of small requests while 1 MB and 10 MB prompts are priced
 5. peak memory while streaming 100 MB through the guard vs 1 MB
 6. store throughput: reserve+settle pairs per second
 7. the guard's CPU by stage at 1 KB, a 100 KB prompt priced by its bound, and
    a conversation resent with one new turn (benchmarks/stages.py)
 8. reserve+settle pairs per second with 1 and 64 concurrent tasks, SQLite with
    and without group commit (benchmarks/concurrency.py)
 9. throughput in front of LiteLLM's proxy server (mocked model), bare vs guarded

Everything talks to 127.0.0.1 only.  Results print as a markdown table and are
saved to benchmarks/results/latest.json.  Peers are optional:
``pip install -r benchmarks/requirements.txt``.
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
from contextlib import ExitStack, contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
KEY = "sk-bench-0123456789abcdef"

WORDS = (
    "the quick brown fox jumps over the lazy dog while a gateway counts every token "
    "of the prompt before the model sees it and holds the worst case against a balance"
).split()


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


def print_results(results: dict[str, Any], started: float, **settings: Any) -> None:
    """Print a diagnostic's ``results`` as JSON, with the ``settings`` it ran
    with, the machine and the seconds since ``started`` (``time.monotonic``)."""
    results.update(settings)
    results["machine"] = f"{os.cpu_count()} cores {platform.machine()}, Python {platform.python_version()}"
    results["seconds"] = round(time.monotonic() - started, 1)
    print(json.dumps(results, indent=1))


def chat_body(size: int, *, spaces: bool = True, max_tokens: int = 16) -> bytes:
    return orjson.dumps(
        {
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": text_of(size, spaces=spaces)}],
            "max_tokens": max_tokens,
        }
    )


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
    raise TimeoutError(port)


def pinned(cpu: int) -> list[str]:
    return ["taskset", "-c", str(cpu)] if shutil.which("taskset") and (os.cpu_count() or 1) > 1 else []


@contextmanager
def server(
    factory: str, env: dict[str, str] | None = None, cpu: int = 0, startup: float = 30.0
) -> Iterator[tuple[int, int]]:
    port = free_port()
    process = subprocess.Popen(
        [
            *pinned(cpu),
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
            # Every figure here was measured with h11, uvicorn's parser when
            # httptools is not installed; the test extra installs it.
            "--http",
            "h11",
        ],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, startup)
        yield port, process.pid
    finally:
        stop(process)


def stop(process: subprocess.Popen[Any]) -> None:
    """End a server: SIGTERM, then SIGKILL if it has not ended in 10 seconds."""
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
    number, unit = re.match(r"([\d.]+)(\w+)", value).groups()  # type: ignore[union-attr]
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def wrk(port: int, body: bytes, seconds: int, connections: int = 32, cpu: int = 1) -> dict[str, float]:
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is not installed (apt-get install wrk)")
    with tempfile.TemporaryDirectory() as tmp:
        body_path = Path(tmp) / "body.json"
        body_path.write_bytes(body)
        script = Path(tmp) / "post.lua"
        script.write_text(_WRK_LUA % (KEY, body_path))
        result = subprocess.run(
            [
                *pinned(cpu),
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
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"\s50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"\s99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    return {
        "rps": rps,
        "p50_ms": p50,
        "p99_ms": p99,
        "non_2xx": float(errors.group(1)) if errors else 0.0,
        "requests": float(requests),
    }


async def _grant_sqlite(path: str) -> None:
    from credit_guard.stores import SQLiteStore

    store = SQLiteStore(path)
    await store.grant("bench", "100000000")
    await store.aclose()


# -- 1 -------------------------------------------------------------------------------


def figure_overhead(quick: bool) -> dict[str, Any]:
    seconds = 3 if quick else 8
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        db = str(Path(tmp) / "bench.db")
        import anyio

        anyio.run(_grant_sqlite, db)
        for label, size in (("1KB", 1000), ("100KB", 100_000)):
            body = chat_body(size)
            row: dict[str, Any] = {}
            for name, factory, env in (
                ("bare", "bare", {}),
                ("memory", "guarded_memory", {}),
                ("sqlite", "guarded_sqlite", {"BENCH_SQLITE": db}),
            ):
                with server(factory, env) as (port, _):
                    wrk(port, body, 1)  # warm up: encodings load, connections open
                    row[name] = wrk(port, body, seconds)
            for name in ("memory", "sqlite"):
                row[name]["throughput_vs_bare"] = round(row[name]["rps"] / row["bare"]["rps"], 3)
            results[label] = row
    return results


# -- 2 -------------------------------------------------------------------------------

COOKBOOK = [
    {
        "role": "system",
        "content": "You are a helpful, pattern-following assistant that translates corporate jargon into plain English.",  # noqa: E501
    },  # noqa: E501
    {"role": "system", "name": "example_user", "content": "New synergies will help drive top-line growth."},
    {"role": "system", "name": "example_assistant", "content": "Things working well together will increase revenue."},
    {
        "role": "system",
        "name": "example_user",
        "content": "Let's circle back when we have more bandwidth to touch base on opportunities for increased leverage.",  # noqa: E501
    },  # noqa: E501
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Let's talk later when we're less busy about how to do better.",
    },  # noqa: E501
    {
        "role": "user",
        "content": "This late pivot means we don't have time to boil the ocean for the client deliverable.",
    },  # noqa: E501
]
SHAPES: dict[str, tuple[list[dict[str, Any]], dict[str, int]]] = {
    # name: (messages, what the provider bills per model, where published)
    "cookbook": (COOKBOOK, {"gpt-4o": 124, "gpt-4": 129}),
    "multi-turn 40": ([{"role": "user" if i % 2 else "assistant", "content": text_of(400)} for i in range(40)], {}),
    "one 10 KB message": ([{"role": "user", "content": text_of(10_000)}], {}),
    "one 100 KB message": ([{"role": "user", "content": text_of(100_000)}], {}),
}


def _time(fn: Callable[[], Any], budget: float) -> float:
    fn()
    runs = 0
    start = time.perf_counter()
    while True:
        fn()
        runs += 1
        elapsed = time.perf_counter() - start
        if elapsed > budget and runs >= 3:
            return elapsed / runs


def figure_peers(quick: bool) -> dict[str, Any]:
    from credit_guard import PriceTable, shapes, tokens

    table = PriceTable.default()
    budget = 0.3 if quick else 1.0
    peers: dict[str, Callable[[list[dict[str, Any]], str], int]] = {}
    notes: dict[str, str] = {}
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    try:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import litellm

        peers["litellm.token_counter"] = lambda messages, model: int(
            litellm.token_counter(model=model, messages=messages)
        )
    except Exception as exc:  # an optional peer
        notes["litellm"] = f"not available: {type(exc).__name__}: {exc}"[:200]
    try:
        import tokencost

        peers["tokencost.count_message_tokens"] = lambda messages, model: int(
            tokencost.count_message_tokens(messages, model)
        )
    except Exception as exc:
        notes["tokencost"] = f"not available: {type(exc).__name__}: {exc}"[:200]

    def ours(messages: list[dict[str, Any]], model: str) -> int:
        ask = shapes.parse("chat", {"model": model, "messages": messages})
        return tokens.count_input(ask, table.resolve(model)).tokens

    results: dict[str, Any] = {"notes": notes, "shapes": {}}
    for name, (messages, published) in SHAPES.items():
        row: dict[str, Any] = {}
        for model in ("gpt-4o", "gpt-4"):
            cell: dict[str, Any] = {"published": published.get(model)}
            for peer, count in {"credit_guard": ours, **peers}.items():
                try:
                    cell[peer] = {
                        "tokens": count(messages, model),
                        "seconds": _time(lambda c=count, m=messages, n=model: c(m, n), budget),  # type: ignore[misc]
                    }
                except Exception as exc:
                    cell[peer] = {"error": f"{type(exc).__name__}: {exc}"[:160]}
            mine = cell["credit_guard"]["seconds"]
            timed = [v["seconds"] for k, v in cell.items() if k not in ("credit_guard", "published") and "seconds" in v]
            if timed:
                cell["fastest_peer_vs_ours"] = round(min(timed) / mine, 2)
            row[model] = cell
        results["shapes"][name] = row
    return results


# -- 3 -------------------------------------------------------------------------------


def figure_floor(quick: bool) -> dict[str, Any]:
    from credit_guard import PriceTable, make_quote, shapes, tokens
    from credit_guard.body import parse_json

    table = PriceTable.default()
    budget = 0.3 if quick else 1.0
    encoding = tokens.get_encoding("o200k_base")
    results: dict[str, Any] = {}
    for label, size in (("1KB", 1_000), ("10KB", 10_000), ("100KB", 100_000), ("1MB", 1_000_000)):
        raw = chat_body(size)
        text = orjson.loads(raw)["messages"][0]["content"]

        def guard_path(raw: bytes = raw) -> Any:
            ask = shapes.parse("chat", parse_json(raw))
            price = table.resolve(ask.model)
            count = tokens.count_input(ask, price)
            return make_quote(ask, price, count.tokens, count.exact)

        guard_s = _time(guard_path, budget)
        floor_s = _time(lambda text=text: encoding.encode_ordinary(text), budget)  # type: ignore[misc]
        # Enough digits that the ratio of the printed times is the printed
        # ratio (a 1 KB body's guard takes a few microseconds).
        results[label] = {
            "guard_ms": round(guard_s * 1000, 6),
            "encode_ordinary_ms": round(floor_s * 1000, 6),
            "ratio": round(guard_s / floor_s, 4),
        }
    return results


# -- 4 -------------------------------------------------------------------------------


def _large_load(port: int, size: int, spaces: bool, stop_file: str) -> subprocess.Popen[bytes]:
    """Large prompts back to back until ``stop_file`` exists; then the time
    and status of each answer go to ``stop_file + ".done"`` (JSON).
    ``stop_file + ".first"`` is made once the first is answered."""
    code = f"""
import os, httpx, orjson, sys, time
sys.path.insert(0, {str(ROOT)!r})
from benchmarks.run_all import chat_body
body = chat_body({size}, spaces={spaces})
done = []
with httpx.Client(timeout=120) as http:
    while not os.path.exists({stop_file!r}):
        status = http.post("http://127.0.0.1:{port}/v1/chat/completions", content=body,
                           headers={{"Authorization": "Bearer {KEY}", "Content-Type": "application/json"}}).status_code
        done.append((time.time(), status))
        if len(done) == 1:
            open({stop_file + ".first"!r}, "wb").close()
with open({stop_file + ".done"!r}, "wb") as out:
    out.write(orjson.dumps(done))
"""
    return subprocess.Popen(
        [*pinned(1), sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def _wait_for(path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)


def figure_responsive(quick: bool) -> dict[str, Any]:
    seconds = 4 if quick else 8
    small = chat_body(500)
    results: dict[str, Any] = {}
    with server("guarded_memory") as (port, _):
        wrk(port, small, 1, connections=4)
        results["baseline"] = wrk(port, small, seconds, connections=4)
        for label, size, spaces in (
            ("1MB text", 1_000_000, True),
            ("1MB no whitespace", 1_000_000, False),
            ("10MB text", 10_000_000, True),
            ("10MB no whitespace", 10_000_000, False),
        ):
            with tempfile.TemporaryDirectory() as tmp:
                stop_file = str(Path(tmp) / "stop")
                load = _large_load(port, size, spaces, stop_file)
                # The steady state is measured, not the start of the pricing
                # workers (the first body of 4 MiB or more starts them, once
                # per server): the small requests start once the first large
                # prompt is answered, and a second later.
                _wait_for(Path(stop_file + ".first"), 120)
                time.sleep(1.0)
                try:
                    started = time.time()
                    row = wrk(port, small, seconds, connections=4)
                    ended = time.time()
                finally:
                    Path(stop_file).touch()
                    try:
                        load.wait(timeout=60)
                    except subprocess.TimeoutExpired:
                        load.kill()
                done = Path(stop_file + ".done")
                answers = orjson.loads(done.read_bytes()) if done.exists() else []
                # How many large prompts were answered while the small requests
                # were measured: pricing them too slowly would flatter the p99.
                row["large_answered"] = sum(1 for at, _ in answers if started <= at <= ended)
                row["large_not_200"] = sum(1 for _, status in answers if status != 200)
            row["p99_vs_baseline"] = round(row["p99_ms"] / results["baseline"]["p99_ms"], 2)
            results[label] = row
    return results


# -- 5 -------------------------------------------------------------------------------


def _peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def figure_memory(quick: bool) -> dict[str, Any]:
    import httpx

    results: dict[str, Any] = {}
    body = chat_body(200)
    for label, size in (("1MB", 1_000_000), ("100MB", 100_000_000)):
        with server("streaming_guarded") as (port, pid):
            with httpx.Client(timeout=300) as http:
                # A first small request loads the encodings: not part of the figure.
                http.post(
                    f"http://127.0.0.1:{port}/v1/chat/completions",
                    content=body,
                    headers={"Authorization": f"Bearer {KEY}", "x-bench-bytes": "1000"},
                ).read()
                before = _peak_rss_kib(pid)
                received = 0
                with http.stream(
                    "POST",
                    f"http://127.0.0.1:{port}/v1/chat/completions",
                    content=body,
                    headers={"Authorization": f"Bearer {KEY}", "x-bench-bytes": str(size)},
                ) as response:
                    for chunk in response.iter_raw():
                        received += len(chunk)
                peak = _peak_rss_kib(pid)
        results[label] = {
            "received_bytes": received,
            "peak_rss_mib": round(peak / 1024, 1),
            "peak_before_stream_mib": round(before / 1024, 1),
        }
    results["peak_100MB_vs_1MB"] = round(results["100MB"]["peak_rss_mib"] / results["1MB"]["peak_rss_mib"], 3)
    return results


# -- 6 -------------------------------------------------------------------------------


def _store_worker(kind: str, url: str, pairs: int, account: str, out: Any) -> None:
    import anyio

    async def run() -> float:
        from credit_guard.stores import MemoryStore, open_store

        store = MemoryStore({account: "1000000"}) if kind == "memory" else open_store(url)
        if kind != "memory":
            await store.grant(account, "1000000")
        start = time.perf_counter()
        for _ in range(pairs):
            hold = await store.reserve(account, Decimal("0.001"))
            await store.settle(hold, Decimal("0.0004"))  # type: ignore[arg-type]
        elapsed = time.perf_counter() - start
        await store.aclose()
        return elapsed

    out.put(anyio.run(run))


def figure_stores(quick: bool) -> dict[str, Any]:
    import multiprocessing

    pairs = 300 if quick else 1500
    results: dict[str, Any] = {}
    redis_process = None
    with tempfile.TemporaryDirectory() as tmp:
        urls = {"memory": "memory://", "sqlite": f"sqlite:///{tmp}/stores.db"}
        if shutil.which("redis-server"):
            port = free_port()
            redis_process = subprocess.Popen(
                ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            wait_for_port(port)
            urls["redis"] = f"redis://127.0.0.1:{port}/0"
        try:
            context = multiprocessing.get_context("spawn")
            for kind, url in urls.items():
                row: dict[str, Any] = {}
                for processes in (1, 4):
                    if kind == "memory" and processes > 1:
                        row["4 processes"] = "n/a (a memory store is per process)"
                        continue
                    queue = context.Queue()
                    workers = [
                        context.Process(target=_store_worker, args=(kind, url, pairs, f"acct{i}", queue))
                        for i in range(processes)
                    ]
                    started = time.perf_counter()
                    for worker in workers:
                        worker.start()
                    times = [queue.get(timeout=600) for _ in workers]
                    for worker in workers:
                        worker.join()
                    wall = time.perf_counter() - started
                    label = "1 process" if processes == 1 else "4 processes"
                    row[label] = {
                        "pairs_per_second": round(pairs * processes / max(times), 1),
                        "mean_pair_ms": round(statistics.mean(times) / pairs * 1000, 3),
                        "wall_seconds": round(wall, 2),
                    }
                results[kind] = row
        finally:
            if redis_process is not None:
                redis_process.kill()
                redis_process.wait()
    return results


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of process ``pid`` (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _gc_totals(pid: int, path: Path) -> dict[str, Any]:
    """The server's collector totals (``apps._count_gc``), asked for by ``SIGUSR1``."""
    path.unlink(missing_ok=True)
    os.kill(pid, signal.SIGUSR1)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            return dict(orjson.loads(path.read_bytes()))
        except (FileNotFoundError, orjson.JSONDecodeError):
            time.sleep(0.05)
    return {}


def _litellm_window(pid: int, port: int, body: bytes, seconds: int, gc_file: Path) -> dict[str, Any]:
    """One measured wrk run, with the server's CPU and collector passes over it."""
    gc_before, cpu_before = _gc_totals(pid, gc_file), _cpu_seconds(pid)
    run: dict[str, Any] = dict(wrk(port, body, seconds, connections=16))
    run["cpu_seconds"] = _cpu_seconds(pid) - cpu_before
    gc_after = _gc_totals(pid, gc_file)
    if gc_before and gc_after:
        run["full_gc_passes"] = gc_after["2"]["passes"] - gc_before["2"]["passes"]
        run["gc_seconds"] = sum(gc_after[g]["seconds"] - gc_before[g]["seconds"] for g in gc_after)
    return run


def _pooled(windows: list[dict[str, Any]], seconds: int) -> dict[str, Any]:
    """One server's windows of one round as one run: requests over the total time."""
    requests = sum(w["requests"] for w in windows) or 1.0
    pooled: dict[str, Any] = {
        "rps": round(requests / (seconds * len(windows)), 1),
        "window_rps": [w["rps"] for w in windows],
        "cpu_ms_per_request": round(sum(w["cpu_seconds"] for w in windows) / requests * 1000, 3),
        "p99_ms": statistics.median(w["p99_ms"] for w in windows),
        "non_2xx": sum(w["non_2xx"] for w in windows),
    }
    if all("gc_seconds" in w for w in windows):
        pooled["gc_ms_per_request"] = round(sum(w["gc_seconds"] for w in windows) / requests * 1000, 3)
        pooled["full_gc_passes"] = sum(w["full_gc_passes"] for w in windows)
    return pooled


def figure_litellm(quick: bool) -> dict[str, Any]:
    """LiteLLM's proxy server with a mocked model, alone and behind the guard
    (memory and SQLite stores, and the memory store parked 0.5 ms before each
    hold: a diagnostic), over HTTP with wrk.

    Each round starts the four servers side by side (pinned to the same core,
    the load generator on the other) and warms each up; then their measured
    windows take turns, in an order and its reverse (bare, memory, sqlite,
    parked, parked, sqlite, ...), so that whatever else the machine runs
    meanwhile falls on all alike, and no server always goes first.  Per server and
    round: requests per second over all its windows, and the server's CPU per
    request (less sensitive than throughput to other work on the machine) with
    its garbage collector's share.  Each figure is the median of the rounds
    with its spread; a ratio compares a guarded server with the bare one of
    the same round."""
    import anyio

    # A full collection over LiteLLM's heap (about 0.8 M objects) pauses it
    # for about half a second, once every 1,500 requests or so: each server's
    # windows together are long enough to hold several.
    seconds = 10 if quick else 15
    passes = 2 if quick else 4  # each pass: the order, then its reverse
    warm_up = 10 if quick else 20
    rounds = 3 if quick else 4
    body = chat_body(1000)
    # "parked", a diagnostic: the memory store's guard with each request
    # parked 0.5 ms before its hold (apps.litellm_parked).
    servers = (
        ("bare", "litellm_bare"),
        ("memory", "litellm_memory"),
        ("sqlite", "litellm_sqlite"),
        ("parked", "litellm_parked"),
    )
    samples: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in servers}
    with tempfile.TemporaryDirectory() as tmp:
        db = str(Path(tmp) / "bench.db")
        anyio.run(_grant_sqlite, db)
        for round_ in range(rounds):
            shift = round_ % len(servers)
            order = [name for name, _ in servers[shift:] + servers[:shift]]
            with ExitStack() as stack:
                running: dict[str, tuple[int, int]] = {}
                for name, factory in servers:
                    env = {"BENCH_SQLITE": db, "BENCH_GC_STATS": str(Path(tmp) / f"gc-{name}.json")}
                    # LiteLLM's start-up takes a while: wait for the port long enough.
                    running[name] = stack.enter_context(server(factory, env, startup=240))
                for name in order:
                    wrk(running[name][0], body, warm_up, connections=16)  # start-up work, caches, connections
                windows: dict[str, list[dict[str, Any]]] = {name: [] for name in order}
                for _ in range(passes):
                    for name in order + order[::-1]:
                        port, pid = running[name]
                        windows[name].append(_litellm_window(pid, port, body, seconds, Path(tmp) / f"gc-{name}.json"))
            for name, measured in windows.items():
                samples[name].append({"round": round_, "order": order, **_pooled(measured, seconds)})
    results: dict[str, Any] = {}
    for name, measured in samples.items():
        results[name] = {
            "rps": _spread([run["rps"] for run in measured], 1),
            "cpu_ms_per_request": _spread([run["cpu_ms_per_request"] for run in measured], 3),
            "p99_ms": statistics.median(run["p99_ms"] for run in measured),
            "non_2xx": sum(run["non_2xx"] for run in measured),
        }
        if all("gc_ms_per_request" in run for run in measured):
            results[name]["gc_ms_per_request"] = _spread([run["gc_ms_per_request"] for run in measured], 3)
            results[name]["full_gc_passes"] = [run["full_gc_passes"] for run in measured]
    for name in ("memory", "sqlite", "parked"):
        pairs = list(zip(samples[name], samples["bare"], strict=True))
        ratios = [g["rps"] / b["rps"] for g, b in pairs if b["rps"] > 0]
        if not ratios:
            results[name]["throughput_vs_bare"] = "bare answered nothing in time"
            continue
        results[name]["throughput_vs_bare"] = _spread(ratios, 3)
        added = [(g["cpu_ms_per_request"] - b["cpu_ms_per_request"]) * 1000 for g, b in pairs]
        results[name]["cpu_us_added_per_request"] = _spread(added, 0)
    results["rounds"] = samples
    results["load_average"] = round(os.getloadavg()[0], 2)
    results["target"] = "memory >= 0.97 of bare, sqlite >= 0.95"
    return results


def _spread(values: list[float], digits: int) -> dict[str, float]:
    return {
        "median": round(statistics.median(values), digits),
        "min": round(min(values), digits),
        "max": round(max(values), digits),
    }


def figure_stages(quick: bool) -> dict[str, Any]:
    import asyncio

    from benchmarks import stages

    return asyncio.run(stages.main_async(quick))


def figure_concurrency(quick: bool) -> dict[str, Any]:
    import asyncio

    from benchmarks import concurrency

    return asyncio.run(concurrency.main_async(quick))


FIGURES: dict[int, tuple[str, Callable[[bool], dict[str, Any]]]] = {
    1: ("overhead per request over HTTP", figure_overhead),
    2: ("counting vs peers", figure_peers),
    3: ("distance to the encode_ordinary floor", figure_floor),
    4: ("staying responsive under large prompts", figure_responsive),
    5: ("memory while streaming", figure_memory),
    6: ("store throughput", figure_stores),
    7: ("the guard's CPU by stage, the bound-first path and the count cache", figure_stages),
    8: ("store throughput with 1 and 64 concurrent tasks (group commit)", figure_concurrency),
    9: ("in front of LiteLLM's proxy server (mocked model)", figure_litellm),
}


def render(results: dict[str, Any]) -> str:
    lines = [f"# credit_guard benchmarks ({results['machine']})", ""]
    for key, value in results["figures"].items():
        lines.append(f"## {key}")
        lines.append("```json")
        lines.append(json.dumps(value, indent=1, default=str))
        lines.append("```")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="shorter runs")
    parser.add_argument("--only", type=int, action="append", choices=sorted(FIGURES), help="run only these")
    parser.add_argument("--out", default=str(RESULTS / "latest.json"))
    args = parser.parse_args(argv)
    machine = (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    results: dict[str, Any] = {"machine": machine, "quick": args.quick, "figures": {}}
    for number in args.only or sorted(FIGURES):
        title, run = FIGURES[number]
        print(f"== {number}. {title}", flush=True)
        started = time.monotonic()
        try:
            value = run(args.quick)
        except Exception as exc:  # one figure failing must not hide the others
            value = {"error": f"{type(exc).__name__}: {exc}"}
        value["seconds"] = round(time.monotonic() - started, 1)
        results["figures"][f"{number}. {title}"] = value
        print(json.dumps(value, indent=1, default=str), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1, default=str))
    print(f"saved {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
