"""Whom the event loop waits for while figure 4's large prompts are priced.

    python -m benchmarks.loop_waits [--text] [--size BYTES] [--seconds N]

Runs figure 4's set-up (``guarded_memory`` pinned to CPU 0, wrk's small
requests and a client sending large prompts back to back from CPU 1), records
CPU 0's scheduling with ``perf sched record`` for ``--seconds``, and charges
every wait of the server's event-loop thread for the CPU (from a wakeup, or
from being preempted, to running again) to whatever ran on CPU 0 meanwhile:
the pricing workers, the server's other threads, or other processes.  A
machine shared with other work shows that work under "other processes": the
worker's share is the guard's own.  Needs ``perf`` and the right to trace
scheduling (root, or ``kernel.perf_event_paranoid`` <= -1).
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from .run_all import _large_load, chat_body, server, wrk

_EVENT = re.compile(r"\s*(.+?)\s+(\d+)\s+(?:\[\d+\]\s+)?([\d.]+):\s+(\S+):\s+(.*)")


def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(child) for child in out.split()]


def charge(script: str, loop: int, workers: set[int], threads: set[int]) -> dict[str, Any]:
    """The event-loop thread ``loop``'s waits for the CPU in ``perf script``
    output, charged to ``workers``, ``threads`` (the server's others) or
    other processes: total and longest per kind, and the number of waits."""
    # Seconds, by kind of thread (and by name, for the others).
    total: collections.defaultdict[str, float] = collections.defaultdict(float)
    longest: collections.defaultdict[str, float] = collections.defaultdict(float)
    others: collections.defaultdict[str, float] = collections.defaultdict(float)
    names: dict[int, str] = {}
    waits = 0
    wait_start: float | None = None
    during: collections.defaultdict[int, float] = collections.defaultdict(float)
    running: tuple[int, float] | None = None
    for line in script.splitlines():
        match = _EVENT.match(line)
        if match is None:
            continue
        _, _, stamp, event, trace = match.groups()
        at = float(stamp)
        if event == "sched:sched_waking":
            woken = re.search(r" pid=(\d+)", trace)
            if woken and int(woken.group(1)) == loop and wait_start is None and (running is None or running[0] != loop):
                wait_start, during = at, collections.defaultdict(float)
        elif event == "sched:sched_switch":
            prev = int(re.search(r"prev_pid=(\d+)", trace).group(1))  # type: ignore[union-attr]
            state = re.search(r"prev_state=(\S+)", trace).group(1)  # type: ignore[union-attr]
            following = re.search(r"next_comm=(.+?) next_pid=(\d+)", trace)
            assert following is not None
            nxt = int(following.group(2))
            names[nxt] = f"{following.group(1)}:{nxt}"
            if wait_start is not None and running is not None:
                during[running[0]] += at - max(running[1], wait_start)
            if prev == loop and state.startswith("R"):  # preempted: runnable, waiting
                wait_start, during = at, collections.defaultdict(float)
            running = (nxt, at)
            if nxt == loop and wait_start is not None:
                waits += 1
                total["all"] += at - wait_start
                longest["all"] = max(longest["all"], at - wait_start)
                for who, spent in during.items():
                    kind = "workers" if who in workers else "server threads" if who in threads else "other processes"
                    total[kind] += spent
                    longest[kind] = max(longest[kind], spent)
                    if kind == "other processes":
                        others[names.get(who, str(who))] += spent
                wait_start = None
    ms = {kind: round(value * 1000, 1) for kind, value in total.items()}
    most = sorted(others.items(), key=lambda item: -item[1])[:5]
    return {
        "waits": waits,
        "waited_ms": ms,
        "longest_ms": {kind: round(value * 1000, 2) for kind, value in longest.items()},
        "most_from_others_ms": [(name, round(value * 1000, 1)) for name, value in most],
    }


def measure(size: int, spaces: bool, seconds: float) -> dict[str, Any]:
    small = chat_body(500)
    with server("guarded_memory") as (port, pid), tempfile.TemporaryDirectory() as tmp:
        wrk(port, small, 1, connections=4)
        stop = str(Path(tmp) / "stop")
        load = _large_load(port, size, spaces, stop)
        try:
            time.sleep(1.5)  # the first large body has started the workers
            workers = set(_children(pid))
            threads = {int(task) for task in os.listdir(f"/proc/{pid}/task")} - {pid}
            measured: dict[str, Any] = {}
            small_load = threading.Thread(
                target=lambda: measured.update(wrk(port, small, int(seconds) + 2, connections=4))
            )
            small_load.start()
            time.sleep(0.5)
            data = str(Path(tmp) / "sched.data")
            subprocess.run(
                ["perf", "sched", "record", "-C", "0", "-o", data, "--", "sleep", str(seconds)],
                capture_output=True,
                check=True,
            )
            small_load.join()
        finally:
            Path(stop).touch()
            load.wait(timeout=60)
        script = subprocess.run(
            ["perf", "script", "-i", data, "-F", "comm,tid,time,event,trace"], capture_output=True, text=True
        ).stdout
    return {"small_requests": measured, "seconds": seconds, **charge(script, pid, workers, threads)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--text", action="store_true", help="prompts with whitespace (default: none)")
    parser.add_argument("--size", type=int, default=10_000_000)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    if shutil.which("perf") is None:
        raise SystemExit("perf is not installed (apt-get install linux-perf)")
    result = measure(args.size, args.text, args.seconds)
    import json

    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
