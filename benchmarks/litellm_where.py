"""Where figure 9's guarded servers spend what they add: long windows in
front of LiteLLM's proxy server, and per server the CPU per request split
between the event loop's thread and LiteLLM's worker threads, the garbage
collector's passes, time and freed objects per generation, read and write
calls, and context switches.  ``memory:2`` names a second process of a server
(with ``--one-process``, a second server of the one process).

    python -m benchmarks.litellm_where [--seconds 30] [--passes 4] [--servers bare,memory,memory:2] [--one-process]

Figure 9 (``run_all --only 9``) gives the throughput ratios; this tells what
makes them.  The servers are figure 9's (``benchmarks/apps.py``), started side
by side on core 0 with wrk on core 1; their windows take turns, in an order
and its reverse, so that whatever else the machine runs falls on all alike.
Each figure is pooled over all of a server's windows (requests over time, CPU
over requests): the collector's full passes over LiteLLM's heap (about half a
second each) are few per window, and pooling counts them all.  A ratio
compares a server with ``bare`` in the same run: pooled, and window by
window against bare's of the same pass (quartiles).  The CPU per request is
also given without the full passes, and in one process with them shared out
over all its requests (``compare``).  ``bare:2`` beside ``bare`` is a
control: the same server twice, so what it shows is the method's noise.
Prints a JSON object.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.run_all import (  # noqa: E402
    _gc_totals,
    _grant_sqlite,
    chat_body,
    free_port,
    pinned,
    print_results,
    server,
    stop,
    wait_for_port,
    wrk,
)

SERVERS = {
    "bare": "litellm_bare",
    "memory": "litellm_memory",
    "sqlite": "litellm_sqlite",
    "parked": "litellm_parked",
    "holding": "litellm_holding",
    "churning": "litellm_churning",
}
_TICK = os.sysconf("SC_CLK_TCK")


def _kind(name: str) -> str:
    """The server a name runs: ``memory:2`` is a second ``memory`` server,
    in a process of its own (two of one kind show how much two processes
    of the same code differ)."""
    return name.split(":", 1)[0]


def _threads(pid: int) -> dict[str, float]:
    """CPU seconds of the process's main thread (the event loop's) and of all
    its other threads together, and its context switches (all threads)."""
    main = others = 0.0
    voluntary = involuntary = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            status = (task / "status").read_text()
        except FileNotFoundError:  # a thread that ended meanwhile
            continue
        cpu = (int(fields[11]) + int(fields[12])) / _TICK
        if task.name == str(pid):
            main += cpu
        else:
            others += cpu
        for line in status.splitlines():
            if line.startswith("voluntary_ctxt_switches:"):
                voluntary += int(line.split()[1])
            elif line.startswith("nonvoluntary_ctxt_switches:"):
                involuntary += int(line.split()[1])
    io = dict(line.split(": ") for line in Path(f"/proc/{pid}/io").read_text().splitlines() if line)
    return {
        "main": main,
        "others": others,
        "voluntary": voluntary,
        "involuntary": involuntary,
        "reads": int(io["syscr"]),
        "writes": int(io["syscw"]),
    }


def _window(pid: int, port: int, body: bytes, seconds: int, gc_file: Path) -> dict[str, Any]:
    before, gc_before = _threads(pid), _gc_totals(pid, gc_file)
    run = wrk(port, body, seconds, connections=16)
    after, gc_after = _threads(pid), _gc_totals(pid, gc_file)
    window: dict[str, Any] = {key: after[key] - before[key] for key in before}
    window["requests"] = run["requests"]
    window["gc"] = {
        generation: {
            "passes": gc_after[generation]["passes"] - gc_before[generation]["passes"],
            "seconds": gc_after[generation]["seconds"] - gc_before[generation]["seconds"],
            "collected": gc_after[generation]["collected"] - gc_before[generation]["collected"],
        }
        for generation in gc_after
    }
    return window


def _pooled(windows: list[dict[str, Any]], seconds: int) -> dict[str, Any]:
    requests = sum(w["requests"] for w in windows) or 1.0
    per = 1e6 / requests  # per request, in µs (or counts per million requests)
    gc: dict[str, Any] = {}
    spent_all = freed_all = 0.0
    for generation in windows[0]["gc"]:
        passes = sum(w["gc"][generation]["passes"] for w in windows)
        spent = sum(w["gc"][generation]["seconds"] for w in windows)
        collected = sum(w["gc"][generation]["collected"] for w in windows)
        spent_all += spent
        freed_all += collected
        gc[f"gen{generation}"] = {
            "passes": passes,
            "passes_per_10k_requests": round(passes * 1e4 / requests, 2),
            "us_per_request": round(spent * per, 1),
            # Objects in reference cycles, which only the collector frees.
            "freed_per_request": round(collected / requests, 4),
        }
    return {
        "requests": int(requests),
        "rps": round(requests / (seconds * len(windows)), 1),
        "window_rps": [round(w["requests"] / seconds, 1) for w in windows],
        "cpu_us_per_request": round((sum(w["main"] + w["others"] for w in windows)) * per, 1),
        # Less the collector's full passes: about half a second each over
        # LiteLLM's heap, a few per server in a run, they fall in whichever
        # window reaches them (``compare`` shares them out).
        "cpu_without_full_passes_us_per_request": round(
            (sum(w["main"] + w["others"] for w in windows) - sum(w["gc"]["2"]["seconds"] for w in windows)) * per, 1
        ),
        "loop_thread_us_per_request": round(sum(w["main"] for w in windows) * per, 1),
        "worker_threads_us_per_request": round(sum(w["others"] for w in windows) * per, 1),
        "gc": gc,
        "gc_us_per_request": round(spent_all * per, 1),
        "gc_freed_per_request": round(freed_all / requests, 4),
        "read_calls_per_request": round(sum(w["reads"] for w in windows) / requests, 3),
        "write_calls_per_request": round(sum(w["writes"] for w in windows) / requests, 3),
        "voluntary_switches_per_request": round(sum(w["voluntary"] for w in windows) / requests, 3),
        "involuntary_switches_per_request": round(sum(w["involuntary"] for w in windows) / requests, 3),
    }


@contextmanager
def _one_process(names: list[str], env: dict[str, str]) -> Iterator[dict[str, tuple[int, int]]]:
    """The servers ``names`` in one process (``benchmarks.one_process``),
    pinned to core 0 as ``server`` pins each: their ports and its pid."""
    ports = {name: free_port() for name in names}
    process = subprocess.Popen(
        [
            *pinned(0),
            sys.executable,
            "-m",
            "benchmarks.one_process",
            *(f"{ports[name]}={SERVERS[_kind(name)]}" for name in names),
        ],
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for port in ports.values():
            wait_for_port(port, 240)
        yield {name: (port, process.pid) for name, port in ports.items()}
    finally:
        stop(process)


def measure(names: list[str], seconds: int, passes: int, one_process: bool = False) -> dict[str, Any]:
    import anyio

    body = chat_body(1000)  # figure 9's request
    windows: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        db = str(Path(tmp) / "bench.db")
        anyio.run(_grant_sqlite, db)
        # Each process's collector totals, in a file of its own (one process: one file, read per window).
        gc_file = {name: Path(tmp) / ("gc-one.json" if one_process else f"gc-{name}.json") for name in names}
        running: dict[str, tuple[int, int]] = {}
        if one_process:
            env = {"BENCH_SQLITE": db, "BENCH_GC_STATS": str(gc_file[names[0]])}
            running = stack.enter_context(_one_process(names, env))
        else:
            for name in names:
                env = {"BENCH_SQLITE": db, "BENCH_GC_STATS": str(gc_file[name])}
                running[name] = stack.enter_context(server(SERVERS[_kind(name)], env, startup=240))
        for name in names:
            wrk(running[name][0], body, 10, connections=16)  # start-up work, caches, connections
        for turn in range(passes):
            for name in names if turn % 2 == 0 else names[::-1]:
                port, pid = running[name]
                windows[name].append(_window(pid, port, body, seconds, gc_file[name]))
    results: dict[str, Any] = {name: _pooled(measured, seconds) for name, measured in windows.items()}
    if "bare" in results:
        compare(results, names, one_process)
    return results


def compare(results: dict[str, Any], names: list[str], one_process: bool) -> None:
    """Each server against ``bare``: pooled throughput and CPU per request,
    and the ratios of its windows to bare's of the same pass (taken in turn,
    minutes apart at most).  In one process, also CPU per request with the
    collector's full passes shared out: the process's full passes, over all
    its requests, added to each server's CPU without its own (a full pass is
    the whole process's, and falls in whichever window reaches it)."""
    bare = results["bare"]
    shared = None
    if one_process:
        requests = sum(results[name]["requests"] for name in names)
        full = sum(results[name]["gc"]["gen2"]["us_per_request"] * results[name]["requests"] for name in names)
        shared = full / requests
    for name in names:
        if name == "bare":
            continue
        mine = results[name]
        mine["throughput_vs_bare"] = round(mine["rps"] / bare["rps"], 3)
        ratios = [m / b for m, b in zip(mine["window_rps"], bare["window_rps"], strict=True) if b > 0]
        if len(ratios) >= 2:
            low, middle, high = statistics.quantiles(ratios, n=4)
            mine["window_ratio_quartiles"] = [round(low, 3), round(middle, 3), round(high, 3)]
        mine["added_us_per_request"] = {
            key: round(mine[f"{key}_us_per_request"] - bare[f"{key}_us_per_request"], 1)
            for key in ("cpu", "cpu_without_full_passes", "loop_thread", "worker_threads", "gc")
        }
        if shared is not None:
            # Throughput on one core is the inverse of the CPU per request.
            mine["cpu_ratio_full_passes_shared"] = round(
                (bare["cpu_without_full_passes_us_per_request"] + shared)
                / (mine["cpu_without_full_passes_us_per_request"] + shared),
                4,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=30, help="each window's length")
    parser.add_argument("--passes", type=int, default=4, help="windows per server")
    parser.add_argument(
        "--servers", default="bare,memory,parked", help=f"of {', '.join(SERVERS)}; 'memory:2' runs a second one"
    )
    parser.add_argument(
        "--one-process",
        action="store_true",
        help="all the servers in one process (benchmarks.one_process), each on its own port",
    )
    args = parser.parse_args()
    names = args.servers.split(",")
    unknown = [name for name in names if _kind(name) not in SERVERS]
    if unknown:
        parser.error(f"unknown servers: {', '.join(unknown)}")
    started = time.monotonic()
    print_results(measure(names, args.seconds, args.passes, args.one_process), started, one_process=args.one_process)


if __name__ == "__main__":
    main()
