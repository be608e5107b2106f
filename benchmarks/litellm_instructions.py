"""The guard's share of LiteLLM's work, counted rather than timed: the
machine instructions per request of LiteLLM's proxy app (mock model) called
bare and behind the memory store's guard, in one process, under valgrind's
callgrind.  With ``--cache-sim`` callgrind also simulates the caches, with
``--branch-sim`` the branch predictors, and each side gets an estimate of its
cycles (instructions, plus 10 per first-level cache miss, 100 per last-level
one and 10 per mispredicted branch, as KCachegrind estimates).

    python -m benchmarks.litellm_instructions [--requests 200] [--batches 2] [--cache-sim] [--branch-sim]
        [--last-level BYTES]

``--last-level`` sets the size of the simulated last-level cache (16-way),
instead of the one callgrind reads from the machine; 1048576 models this
machine's private 1 MB second-level cache, the level that LiteLLM's
milliseconds of work between two of the guard's steps empty.  With the
caches simulated, the misses each side adds are also given by shared object
(``libpython``, ``_decimal``, ``orjson``...) and by function, largest first.

Figure 9 (``run_all --only 9``) times both servers over HTTP and moves by
several percent from run to run on the same code (two processes of one
server differ that much); an instruction count is the same from run to run
to a few hundredths of a percent, so it tells what the guard itself adds.
It leaves out what only time shows: the HTTP server (the guard adds two
response headers to its work), and cache effects beyond callgrind's model.

Both sides are driven the same way: 16 concurrent callers, each request an
ASGI call with figure 9's 1 KB chat body, its answer read in full.  Batches
of each side alternate (bare, guarded, guarded, bare, ...) after a warm-up
of both; instrumentation is on only while a batch runs, so start-up and the
warm-up are not counted.  Needs ``valgrind`` (apt-get install valgrind) and
the ``litellm`` extra.  Prints a JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.run_all import chat_body, print_results  # noqa: E402

CALLERS = 16


def scope(body: bytes, key: str) -> dict[str, Any]:
    """An HTTP scope as uvicorn gives it, for figure 9's request."""
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/chat/completions",
        "raw_path": b"/v1/chat/completions",
        "root_path": "",
        "query_string": b"",
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 50000),
        "state": {},
        "headers": [
            (b"host", b"127.0.0.1:8000"),
            (b"authorization", b"Bearer " + key.encode()),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
    }


async def one(app: Any, body: bytes, key: str) -> int:
    """One request through ``app``: its status."""
    given = False
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # the client stays until the answer ends
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope(body, key), receive, send)
    return status


async def batch(app: Any, body: bytes, key: str, requests: int) -> list[int]:
    """``requests`` requests through ``app`` by ``CALLERS`` concurrent callers: the statuses."""
    statuses: list[int] = []
    left = iter(range(requests))

    async def caller() -> None:
        for _ in left:
            statuses.append(await one(app, body, key))

    await asyncio.gather(*(caller() for _ in range(CALLERS)))
    return statuses


async def start(app: Any) -> None:
    """Run ``app``'s lifespan start-up (LiteLLM reads its config there)."""
    messages: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    await messages.put({"type": "lifespan.startup"})
    started = asyncio.Event()

    async def send(message: dict[str, Any]) -> None:
        if message["type"].startswith("lifespan.startup"):
            started.set()

    asyncio.get_running_loop().create_task(
        app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, messages.get, send)
    )
    await started.wait()


def run_quietly(main: Callable[[], Coroutine[Any, Any, dict[str, Any]]]) -> dict[str, Any]:
    """``asyncio.run(main())`` with stdout sent to stderr meanwhile: LiteLLM
    prints as it starts, and stdout is kept for the JSON."""
    with contextlib.redirect_stdout(sys.stderr):
        return asyncio.run(main())


def _child(order: list[str], requests: int) -> None:
    """Under callgrind: each batch's side on stdout ("READY name"), then a
    line on stdin once instrumentation is on, then "DONE", then a line once
    the counts are taken."""
    from benchmarks import apps
    from credit_guard import MemoryStore

    async def run() -> None:
        bare = apps._litellm()
        sides = {"bare": bare, "guarded": apps._guard(bare, MemoryStore({apps.ACCOUNT: apps.BALANCE}))}
        await start(bare)
        body = chat_body(1000)
        for app in sides.values():  # caches, the count cache, LiteLLM's first-call work
            await batch(app, body, apps.KEY, 100)
        for name in order:
            print("READY", name, flush=True)
            sys.stdin.readline()
            statuses = await batch(sides[name], body, apps.KEY, requests)
            print("DONE", name, sorted(set(statuses)), flush=True)
            sys.stdin.readline()

    asyncio.run(run())


def totals(path: Path) -> dict[str, int]:
    """A callgrind output file's event totals, by event name."""
    events: list[str] = []
    for line in path.read_text().splitlines():
        if line.startswith("events:"):
            events = line.split()[1:]
        elif line.startswith("totals:") or line.startswith("summary:"):
            values = [int(value) for value in line.split()[1:]]
            if any(values):
                return dict(zip(events, values, strict=False))
    raise ValueError(f"no totals in {path}")


def by_object(path: Path, functions: bool = False) -> dict[str, dict[str, int]]:
    """A callgrind output file's self costs summed by shared object (its file
    name), or with ``functions`` by function (``object: function``, a
    recursion's levels as one), by event name; the inclusive cost that
    follows each ``calls=`` line is the callee's, counted where the callee's
    own lines are."""
    events: list[str] = []
    objects: dict[str, str] = {}
    names: dict[str, str] = {}
    sums: dict[str, list[int]] = {}
    current = function = "?"
    after_call = False
    for line in path.read_text().splitlines():
        if line.startswith("events:"):
            events = line.split()[1:]
        elif line.startswith("ob="):
            current = _object_name(line[3:], objects)
        elif line.startswith("cob="):
            _object_name(line[4:], objects)  # named here, for a later ``ob=(n)``
        elif line.startswith("fn="):
            function = _function_name(line[3:], names)
        elif line.startswith("cfn="):
            _function_name(line[4:], names)
        elif line.startswith("calls="):
            after_call = True
        elif line and (line[0].isdigit() or line[0] in "+-*"):
            if after_call:
                after_call = False
                continue
            row = sums.setdefault(f"{current}: {function}" if functions else current, [0] * len(events))
            for index, value in enumerate(line.split()[1:]):
                row[index] += int(value)
    return {name: dict(zip(events, row, strict=True)) for name, row in sums.items()}


def _function_name(spec: str, names: dict[str, str]) -> str:
    """``(7) name'2`` or, once named, ``(7)``: the name, without callgrind's
    mark of a recursion's level."""
    key, _, rest = spec.strip().partition(")")
    if rest.strip():
        names[key] = rest.strip().split("'")[0]
    return names.get(key, key + ")")


def _object_name(spec: str, names: dict[str, str]) -> str:
    """``(3) /lib/libc.so.6`` or, once named, ``(3)``: the file name."""
    spec = spec.strip()
    if spec.startswith("("):
        key, _, rest = spec.partition(")")
        if rest.strip():
            names[key] = Path(rest.strip()).name
        return names.get(key, key + ")")
    return Path(spec).name


def per_request(events: dict[str, int], requests: int) -> dict[str, float]:
    """Instructions per request and, where the caches were simulated, their
    misses and the estimate of cycles (Ir + 10 per L1 miss + 100 per LL miss);
    where branches were too, their mispredictions (10 cycles each in the
    estimate, as KCachegrind's)."""
    figures = {"instructions": events["Ir"] / requests}
    cycles = float(events["Ir"])
    if "I1mr" in events:
        first = events["I1mr"] + events["D1mr"] + events["D1mw"]
        last = events["ILmr"] + events["DLmr"] + events["DLmw"]
        figures["l1_misses"] = first / requests
        figures["ll_misses"] = last / requests
        cycles += 10 * first + 100 * last
    if "Bcm" in events:
        mispredicted = events["Bcm"] + events["Bim"]
        figures["branch_mispredicts"] = mispredicted / requests
        cycles += 10 * mispredicted
    if len(figures) > 1:
        figures["estimated_cycles"] = cycles / requests
    return figures


def compare(batches: list[tuple[str, dict[str, float]]]) -> dict[str, Any]:
    """Each figure's median per side over its batches, what the guard adds,
    and bare's share of guarded (what throughput would be, were the server's
    time all in these figures)."""
    results: dict[str, Any] = {}
    for key in batches[0][1]:
        side = {name: [figures[key] for n, figures in batches if n == name] for name in ("bare", "guarded")}
        bare, guarded = statistics.median(side["bare"]), statistics.median(side["guarded"])
        results[key] = {
            "bare": [round(value) for value in side["bare"]],
            "guarded": [round(value) for value in side["guarded"]],
            "added_per_request": round(guarded - bare),
            "bare_of_guarded": round(bare / guarded, 4),
        }
    return results


def misses_by_object(sides: list[tuple[str, dict[str, dict[str, int]]]], requests: int) -> dict[str, Any]:
    """Per shared object (or per function: ``by_object``'s keys), the
    last-level misses (instruction, data) and the instructions the guard adds
    per request (guarded minus bare, each summed over its batches), largest
    first; the first ten."""
    total: dict[str, dict[str, dict[str, int]]] = {"bare": {}, "guarded": {}}
    counted = {"bare": 0, "guarded": 0}
    for name, objects in sides:
        counted[name] += requests
        for obj, events in objects.items():
            row = total[name].setdefault(obj, {})
            for event, value in events.items():
                row[event] = row.get(event, 0) + value

    def added(obj: str, *events: str) -> float:
        mine = sum(total["guarded"].get(obj, {}).get(event, 0) for event in events) / counted["guarded"]
        theirs = sum(total["bare"].get(obj, {}).get(event, 0) for event in events) / counted["bare"]
        return mine - theirs

    rows = {
        obj: {
            "instruction_misses": round(added(obj, "ILmr"), 1),
            "data_misses": round(added(obj, "DLmr", "DLmw"), 1),
            "instructions": round(added(obj, "Ir")),
        }
        for obj in set(total["bare"]) | set(total["guarded"])
    }
    ranked = sorted(rows, key=lambda obj: -(rows[obj]["instruction_misses"] + rows[obj]["data_misses"]))
    return {obj: rows[obj] for obj in ranked[:10]}


def measure(
    requests: int, batches: int, cache_sim: bool, branch_sim: bool = False, last_level: int | None = None
) -> dict[str, Any]:
    order = [name for index in range(batches) for name in (("bare", "guarded"), ("guarded", "bare"))[index % 2]]
    cache_sim = cache_sim or last_level is not None
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        command = [
            "valgrind",
            "--tool=callgrind",
            "--instr-atstart=no",
            f"--cache-sim={'yes' if cache_sim else 'no'}",
            f"--branch-sim={'yes' if branch_sim else 'no'}",
            *([f"--LL={last_level},16,64"] if last_level is not None else []),
            f"--callgrind-out-file={out}",
            sys.executable,
            "-m",
            "benchmarks.litellm_instructions",
            "--child",
            ",".join(order),
            "--requests",
            str(requests),
        ]
        child = subprocess.Popen(
            command, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        assert child.stdin is not None and child.stdout is not None

        def control(*args: str) -> None:
            subprocess.run(["callgrind_control", *args, str(child.pid)], check=True, capture_output=True)

        measured: list[tuple[str, dict[str, float]]] = []
        objects: list[tuple[str, dict[str, dict[str, int]]]] = []
        functions: list[tuple[str, dict[str, dict[str, int]]]] = []
        for line in child.stdout:
            # LiteLLM prints to stdout as well: only the markers count.
            word, name, *rest = [*line.split(maxsplit=2), "", ""]
            if word == "READY":
                control("--zero")
                control("--instr=on")
            elif word == "DONE":
                control("--instr=off")
                if rest[0].strip() != "[200]":
                    child.kill()
                    raise RuntimeError(f"{name}: answered {rest[0].strip()}")
                before = set(Path(tmp).iterdir())
                control("--dump")
                dumped = _await_new(Path(tmp), before)
                measured.append((name, per_request(totals(dumped), requests)))
                if cache_sim:
                    objects.append((name, by_object(dumped)))
                    functions.append((name, by_object(dumped, functions=True)))
                dumped.unlink()
            else:
                continue
            child.stdin.write("\n")
            child.stdin.flush()
        child.wait()
    if len(measured) != len(order):
        raise RuntimeError(f"callgrind ended after {len(measured)} of {len(order)} batches")
    results = {"batches": order, **compare(measured)}
    if objects:
        results["added_by_object"] = misses_by_object(objects, requests)
        results["added_by_function"] = misses_by_object(functions, requests)
    return results


def _await_new(directory: Path, before: set[Path]) -> Path:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        new = [path for path in set(directory.iterdir()) - before if path.stat().st_size > 0]
        if new:
            time.sleep(0.2)  # written in full
            return new[0]
        time.sleep(0.1)
    raise RuntimeError("callgrind wrote no counts")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=200, help="requests per batch")
    parser.add_argument("--batches", type=int, default=2, help="batches per side")
    parser.add_argument("--cache-sim", action="store_true", help="simulate the caches (about twice as slow)")
    parser.add_argument("--branch-sim", action="store_true", help="simulate the branch predictors")
    parser.add_argument(
        "--last-level", type=int, help="the simulated last-level cache's size in bytes (implies --cache-sim)"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child.split(","), args.requests)
        return
    started = time.monotonic()
    results = measure(args.requests, args.batches, args.cache_sim, args.branch_sim, args.last_level)
    print_results(
        results,
        started,
        last_level_bytes=args.last_level,
        requests_per_batch=args.requests,
        litellm=_version("litellm"),
    )


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


if __name__ == "__main__":
    main()
