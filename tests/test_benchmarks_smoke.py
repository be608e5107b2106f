"""The benchmark harness runs and reports every field.  Timings are printed by
the benchmarks, never asserted here."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks import run_all

from .reference import LITELLM_PRICE_MAP, needs_litellm_map


def test_floor_figure_reports_both_sides_for_every_size() -> None:
    result = run_all.figure_floor(quick=True)
    assert set(result) == {"1KB", "10KB", "100KB", "1MB"}
    for row in result.values():
        assert row["guard_ms"] > 0 and row["encode_ordinary_ms"] > 0
        assert row["ratio"] == pytest.approx(row["guard_ms"] / row["encode_ordinary_ms"], rel=0.01)


def test_peers_figure_counts_the_published_examples() -> None:
    result = run_all.figure_peers(quick=True)
    cookbook = result["shapes"]["cookbook"]
    assert cookbook["gpt-4o"]["credit_guard"]["tokens"] == cookbook["gpt-4o"]["published"] == 124
    assert cookbook["gpt-4"]["credit_guard"]["tokens"] == cookbook["gpt-4"]["published"] == 129


def test_chat_bodies_have_the_asked_size() -> None:
    body = run_all.chat_body(10_000)
    assert 10_000 <= len(body) <= 10_200
    assert b" " not in run_all.text_of(1000, spaces=False).encode()


def test_stages_figure_reports_every_stage_and_ratio() -> None:
    result = run_all.figure_stages(quick=True)
    stages = result["stages"]["stages_us"]
    for name in (
        "route",
        "identity",
        "body",
        "parse",
        "shape",
        "resolve",
        "count (cold)",
        "bounds",
        "quote",
        "reserve",
        "tap",
        "settle",
    ):
        assert stages[name]["median"] > 0
    for figure in ("large", "conversation"):
        ratio = result[figure]["ratio"]
        assert ratio["min"] <= ratio["median"] <= ratio["max"]
    # The conversation figure measures the count, not a refusal.
    assert result["conversation"]["refused"] is False


def test_concurrency_figure_compares_group_commit_in_one_run() -> None:
    result = run_all.figure_concurrency(quick=True)
    for store in ("memory", "sqlite (group commit)", "sqlite (one transaction per change)"):
        for label in ("1 task", "64 tasks"):
            assert result[store][label]["median"] > 0
    ratio = result["sqlite, 64 tasks: group commit / one transaction per change"]
    assert ratio["min"] <= ratio["median"] <= ratio["max"]


def test_litellm_windows_pool_into_requests_over_time_and_cpu_per_request() -> None:
    # wrk's own rate of a window need not be its requests over the nominal
    # seconds; the pooled figure counts requests.
    windows = [
        {"rps": 100.0, "requests": 1000.0, "cpu_seconds": 5.0, "p99_ms": 40.0, "non_2xx": 0.0, "gc_seconds": 0.5},
        {"rps": 50.0, "requests": 600.0, "cpu_seconds": 3.0, "p99_ms": 90.0, "non_2xx": 2.0, "gc_seconds": 0.3},
    ]
    windows[0]["full_gc_passes"], windows[1]["full_gc_passes"] = 1, 0
    pooled = run_all._pooled(windows, seconds=10)
    assert pooled["rps"] == 80.0  # 1,600 requests in 20 seconds, not the mean rate (75)
    assert pooled["window_rps"] == [100.0, 50.0]
    assert pooled["cpu_ms_per_request"] == 5.0
    assert pooled["gc_ms_per_request"] == 0.5
    assert pooled["full_gc_passes"] == 1
    assert pooled["non_2xx"] == 2.0


def test_a_litellm_server_writes_its_collector_totals_when_signalled(tmp_path: Path) -> None:
    out = tmp_path / "gc.json"
    code = (
        "import gc, os, signal\n"
        "from benchmarks import apps\n"
        "before = len(gc.callbacks)\n"
        "apps._count_gc(); apps._count_gc()\n"  # servers of one process each ask: one counter
        "assert len(gc.callbacks) == before + 1, gc.callbacks\n"
        "loop = []; loop.append(loop); del loop\n"  # a cycle: only the collector frees it
        "gc.collect(); gc.collect(0)\n"
        "os.kill(os.getpid(), signal.SIGUSR1)\n"
    )
    env = {**os.environ, "BENCH_GC_STATS": str(out)}
    subprocess.run([sys.executable, "-c", code], env=env, cwd=Path(run_all.ROOT), check=True, timeout=60)
    totals = json.loads(out.read_text())
    assert totals["2"]["passes"] == 1 and totals["0"]["passes"] >= 1
    assert all(totals[g]["seconds"] >= 0 for g in ("0", "1", "2"))
    assert totals["2"]["collected"] >= 1


def test_where_pools_windows_into_figures_per_request() -> None:
    from benchmarks import litellm_where

    def window(requests: float, main: float, others: float, gen2: int) -> dict[str, Any]:
        gc = {"0": {"passes": 10, "seconds": 0.01, "collected": 0}, "1": {"passes": 1, "seconds": 0.0, "collected": 0}}
        gc["2"] = {"passes": gen2, "seconds": 0.4 * gen2, "collected": 5 * gen2}
        counts = {"voluntary": 100, "involuntary": 50, "reads": 300, "writes": 200}
        return {"requests": requests, "main": main, "others": others, "gc": gc, **counts}

    pooled = litellm_where._pooled([window(1000, 4.0, 1.0, 1), window(1000, 5.0, 0.0, 0)], seconds=10)
    assert pooled["requests"] == 2000 and pooled["rps"] == 100.0 and pooled["window_rps"] == [100.0, 100.0]
    assert pooled["cpu_us_per_request"] == 5000.0  # 10 CPU seconds over 2,000 requests
    assert pooled["loop_thread_us_per_request"] == 4500.0 and pooled["worker_threads_us_per_request"] == 500.0
    assert pooled["gc"]["gen0"] == {
        "passes": 20,
        "passes_per_10k_requests": 100.0,
        "us_per_request": 10.0,
        "freed_per_request": 0.0,
    }
    assert pooled["gc"]["gen2"]["passes"] == 1 and pooled["gc"]["gen2"]["us_per_request"] == 200.0
    assert pooled["gc_us_per_request"] == 210.0 and pooled["gc_freed_per_request"] == 0.0025
    assert pooled["read_calls_per_request"] == 0.3 and pooled["voluntary_switches_per_request"] == 0.1


def test_where_compares_each_server_with_bare_pass_by_pass_and_shares_out_full_passes() -> None:
    """A ratio of windows pairs each window with bare's of the same pass; in
    one process, the collector's full passes are the process's, shared out
    over all its requests whichever window they fell in."""
    from benchmarks import litellm_where

    def server(requests: int, cpu: float, full: float, window_rps: list[float]) -> dict[str, Any]:
        return {
            "requests": requests,
            "rps": sum(window_rps) / len(window_rps),
            "window_rps": window_rps,
            "cpu_us_per_request": cpu,
            "cpu_without_full_passes_us_per_request": cpu - full,
            "loop_thread_us_per_request": cpu,
            "worker_threads_us_per_request": 0.0,
            "gc_us_per_request": full,
            "gc": {"gen2": {"us_per_request": full}},
        }

    results = {
        "bare": server(1000, 5000.0, 200.0, [100.0, 200.0, 150.0]),
        "memory": server(1000, 5100.0, 0.0, [190.0, 90.0, 150.0]),
        "bare:2": server(1000, 4900.0, 100.0, [100.0, 200.0, 150.0]),
    }
    litellm_where.compare(results, ["bare", "memory", "bare:2"], one_process=True)
    memory = results["memory"]
    # Pass by pass: 1.9, 0.45, 1.0 (the windows in order of speed would give 0.9, 1.0, 0.95).
    assert memory["window_ratio_quartiles"] == [0.45, 1.0, 1.9]
    assert memory["added_us_per_request"]["cpu"] == 100.0
    assert memory["added_us_per_request"]["cpu_without_full_passes"] == 300.0
    # (200 + 0 + 100) µs of full passes per request over 3,000 requests: 100 µs each.
    assert memory["cpu_ratio_full_passes_shared"] == round((4800 + 100) / (5100 + 100), 4)
    assert results["bare:2"]["cpu_ratio_full_passes_shared"] == 1.0
    # Servers in processes of their own have full passes of their own: nothing shared.
    apart = {name: server(1000, 5000.0, 200.0, [100.0, 100.0]) for name in ("bare", "memory")}
    litellm_where.compare(apart, ["bare", "memory"], one_process=False)
    assert "cpu_ratio_full_passes_shared" not in apart["memory"]
    assert apart["memory"]["throughput_vs_bare"] == 1.0


def test_where_reads_a_process_threads_from_proc() -> None:
    from benchmarks import litellm_where

    before = litellm_where._threads(os.getpid())
    sum(i * i for i in range(2_000_000))  # CPU on this (the main) thread
    after = litellm_where._threads(os.getpid())
    assert set(before) == {"main", "others", "voluntary", "involuntary", "reads", "writes"}
    assert after["main"] > before["main"] and after["others"] >= before["others"] >= 0


def test_the_holding_diagnostic_calls_the_app_once_with_what_it_was_given() -> None:
    import anyio

    from benchmarks import apps

    calls: list[tuple[Any, Any, Any]] = []

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        calls.append((scope, receive, send))

    async def main() -> None:
        for alive in (True, False):
            for scope in ({"type": "http"}, {"type": "lifespan"}):
                await apps._holding(inner, alive)(scope, main, main)

    anyio.run(main)
    assert [call[0]["type"] for call in calls] == ["http", "lifespan"] * 2
    assert all(call[1] is main and call[2] is main for call in calls)


def test_instruction_counts_are_read_from_callgrinds_totals(tmp_path: Path) -> None:
    from benchmarks import litellm_instructions as counted

    out = tmp_path / "callgrind.out"
    out.write_text(
        "version: 1\ncreator: callgrind-3.19.0\n"
        "events: Ir Dr Dw I1mr D1mr D1mw ILmr DLmr DLmw\n"
        "summary: 0 0 0 0 0 0 0 0 0\n"
        "fn=(1) main\n3 5\n"
        "totals: 2000 900 400 30 20 10 3 2 1\n"
    )
    events = counted.totals(out)
    assert events["Ir"] == 2000 and events["DLmw"] == 1
    figures = counted.per_request(events, 10)
    assert figures == {"instructions": 200, "l1_misses": 6, "ll_misses": 0.6, "estimated_cycles": 320}
    assert counted.per_request({"Ir": 50}, 5) == {"instructions": 10}
    branches = counted.per_request({"Ir": 50, "Bc": 20, "Bcm": 3, "Bi": 5, "Bim": 2}, 5)
    assert branches == {"instructions": 10, "branch_mispredicts": 1, "estimated_cycles": 20}
    compared = counted.compare(
        [
            ("bare", {"instructions": 100.0}),
            ("guarded", {"instructions": 104.0}),
            ("guarded", {"instructions": 106.0}),
            ("bare", {"instructions": 100.0}),
        ]
    )
    assert compared["instructions"] == {
        "bare": [100, 100],
        "guarded": [104, 106],
        "added_per_request": 5,
        "bare_of_guarded": round(100 / 105, 4),
    }


def test_misses_are_summed_by_shared_object_without_the_calls_inclusive_costs(tmp_path: Path) -> None:
    """A callgrind file's self costs by shared object: an object first named
    in a ``cob=`` line keeps its name where a later ``ob=`` gives only its
    number, and the cost line after ``calls=`` (the callee's whole cost,
    counted again under the callee) is left out."""
    from benchmarks import litellm_instructions as counted

    def dump(name: str, decimal_misses: int) -> Path:
        path = tmp_path / name
        path.write_text(
            "version: 1\npositions: line\nevents: Ir ILmr DLmr DLmw\n\n"
            "ob=(1) /usr/lib/libpython3.11.so.1.0\nfl=(1) ceval.c\nfn=(1) eval\n"
            "10 1000 5 20 3\n"
            "cob=(2) /usr/lib/python3.11/_decimal.cpython-311.so\ncfi=(2) mpdecimal.c\ncfn=(2) mul'2\n"
            "calls=4 7\n"
            "12 900 400 400 400\n"
            "+2 100\n"
            f"\nob=(2)\nfl=(2)\nfn=(2)\n7 80 {decimal_misses} 1\n"
            "totals: 1180 0 0 0\n"
        )
        return path

    bare = counted.by_object(dump("bare", 0))
    assert bare == {
        "libpython3.11.so.1.0": {"Ir": 1100, "ILmr": 5, "DLmr": 20, "DLmw": 3},
        "_decimal.cpython-311.so": {"Ir": 80, "ILmr": 0, "DLmr": 1, "DLmw": 0},
    }
    # By function: the callee's name from its ``cfn=`` line, its recursion's mark dropped.
    assert set(counted.by_object(dump("bare", 0), functions=True)) == {
        "libpython3.11.so.1.0: eval",
        "_decimal.cpython-311.so: mul",
    }
    guarded = counted.by_object(dump("guarded", 30))
    added = counted.misses_by_object([("bare", bare), ("guarded", guarded)], requests=10)
    assert list(added) == ["_decimal.cpython-311.so", "libpython3.11.so.1.0"]
    assert added["_decimal.cpython-311.so"] == {"instruction_misses": 3.0, "data_misses": 0.0, "instructions": 0}


def test_the_instruction_count_drives_both_sides_alike() -> None:
    """The requests it counts are the guard's priced ones: each answered 200
    and charged, by 16 callers at once."""
    import asyncio

    from benchmarks import apps
    from benchmarks import litellm_instructions as counted
    from credit_guard import MemoryStore

    async def run() -> tuple[list[int], list[int], Any]:
        store = MemoryStore({apps.ACCOUNT: "1"})
        guarded = apps._guard(apps._trivial, store)
        body = run_all.chat_body(1000)
        bare_statuses = await counted.batch(apps._trivial, body, apps.KEY, 40)
        guarded_statuses = await counted.batch(guarded, body, apps.KEY, 40)
        return bare_statuses, guarded_statuses, await store.balance(apps.ACCOUNT)

    bare, guarded, balance = asyncio.run(run())
    assert bare == guarded == [200] * 40
    assert balance.spent > 0 and balance.held == 0
    assert balance.available + balance.spent == balance.granted


def test_one_process_serves_each_port_with_its_own_server() -> None:
    import httpx

    from benchmarks import apps

    bare_port, guarded_port = run_all.free_port(), run_all.free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.one_process", f"{bare_port}=bare", f"{guarded_port}=guarded_memory"],
        cwd=run_all.ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for port in (bare_port, guarded_port):
            run_all.wait_for_port(port, 60)
        body = run_all.chat_body(1000)
        headers = {"authorization": f"Bearer {apps.KEY}", "content-type": "application/json"}
        with httpx.Client(timeout=30) as http:
            answers = [
                http.post(f"http://127.0.0.1:{port}/v1/chat/completions", content=body, headers=headers)
                for port in (bare_port, guarded_port, bare_port)
            ]
        # The event loop uvicorn's command picks, as for the servers of a process
        # each: uvloop where it is installed (LiteLLM's proxy extra brings it).
        loaded = Path(f"/proc/{process.pid}/maps").read_text()
    finally:
        process.terminate()
        process.wait(timeout=30)
    if importlib.util.find_spec("uvloop") is not None:
        assert "uvloop" in loaded
    assert [answer.status_code for answer in answers] == [200, 200, 200]
    assert ["x-credits-remaining" in answer.headers for answer in answers] == [False, True, False]


def test_the_collector_census_counts_what_a_middle_pass_moves_to_the_oldest_generation() -> None:
    import gc

    from benchmarks.collector import Census

    census = Census()
    gc.collect()
    gc.disable()  # no pass but the ones asked for
    gc.callbacks.append(census)
    try:
        census.counting = True
        kept = [[index] for index in range(5000)]  # tracked, alive through the pass
        atoms = [(index, "atom") for index in range(5000)]  # untracked by the pass: not moved
        gc.collect(1)
        census.counting = False
        gc.collect(1)  # not counted
    finally:
        gc.callbacks.remove(census)
        gc.enable()
    assert census.middle_passes == 1 and census.young_passes == 0 and census.full_passes == 0
    # The lists (and the lists holding them), moved; the tuples of atoms, though
    # examined by the pass, not.
    assert len(kept) + 2 <= census.moved < len(kept) + 500
    assert len(atoms) == 5000


def test_the_collector_figure_sees_objects_held_across_the_app() -> None:
    """An app that allocates while it works, called bare and holding 50 objects
    across each call: the census counts the held ones moved to the oldest
    generation with the app's own, and answers per side."""
    import asyncio

    from benchmarks import apps, collector

    async def working(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        made = []
        for _ in range(4):
            made.append([[step] for step in range(150)])  # what a real app allocates meanwhile
            await asyncio.sleep(0)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": b"{}"})

    sides = {"bare": working, "bare holding 50": collector.holding(working, 50)}
    results = asyncio.run(collector.measure(sides, run_all.chat_body(1000), apps.KEY, 200, 2))
    bare, held = results["bare"], results["bare holding 50"]
    assert bare["young_passes"]["mean"] > 0 and bare["middle_passes"]["mean"] > 0
    assert held["moved_to_oldest"]["mean"] > bare["moved_to_oldest"]["mean"] + 10
    assert held["moved_added_per_request"] == pytest.approx(
        held["moved_to_oldest"]["mean"] - bare["moved_to_oldest"]["mean"], abs=0.1
    )
    assert set(bare) == {"moved_to_oldest", "young_passes", "middle_passes", "full_passes"}


def test_the_in_place_figure_times_every_stage_both_ways() -> None:
    """Each of figure 7's stages, and the whole request, timed after a call of
    ``between`` and warm; ``between`` runs once before every in-place call."""
    import asyncio

    from benchmarks import in_place

    ran = 0

    async def between() -> None:
        nonlocal ran
        ran += 1

    results = asyncio.run(in_place.measure(between, calls=2, rounds=1))
    stage_names = {"route", "identity", "body", "parse", "shape", "resolve", "bounds", "quote", "tap"}
    references = {"floor request", "money as Decimal", "money as integer units"}
    assert stage_names | references | {"reserve", "settle", "bare request", "guarded request"} <= set(results)
    costs = {"guard cost per request", "floor cost per request"}
    timed = [name for name in results if name not in costs]
    assert ran == 2 * len(timed)
    for name in timed:
        assert set(results[name]) == {"in_place_us", "warm_us", "in_place_over_warm"}
        assert results[name]["warm_us"]["median"] > 0
    for name in costs:
        assert set(results[name]) == {"in_place_us", "warm_us"}


@needs_litellm_map
def test_the_in_place_money_figures_compute_the_same_units_both_ways() -> None:
    """The two ways of one request's amounts that ``in_place`` times give
    the same units, held and charged, the same margin decision and the same
    header text, for every model of LiteLLM's price map whose prices are
    whole 1e-20 dollars, over token counts and balances that round both ways
    (an overrun's negative balance included)."""
    import random
    from decimal import Decimal

    from benchmarks import in_place
    from credit_guard import PriceTable
    from credit_guard.money import from_units, json_text

    table = PriceTable.from_litellm(json.loads(LITELLM_PRICE_MAP.read_text(), parse_float=Decimal))
    rng = random.Random(18)
    compared = finer = 0
    for price in table.models():
        rates = price.rates()
        try:
            for rate in (rates.input, rates.max_output, rates.output):
                in_place.price_units(rate)
        except ValueError:
            finer += 1
            continue
        for _ in range(3):
            tokens = (rng.randint(0, 200_000), rng.randint(0, 100_000), rng.randint(1, 8))
            used = (rng.randint(0, 200_000), rng.randint(0, 400_000))
            balance = rng.choice([0, 1, rng.randint(-(10**12), 10**14), 10**18])
            as_decimal, as_integers = in_place.money_calls(rates, tokens, used, balance, rng.randint(1, 8))
            assert as_decimal() == as_integers(), (price.name, tokens, used, balance)
            compared += 1
    assert compared > 3_000 and finer < compared
    for units in (0, 1, -1, 10**10, -(10**10), 12_345_678_901, 10**18 + 5, -(10**18) - 50):
        assert in_place.units_text(units) == json_text(from_units(units))


def test_the_floor_layer_holds_and_settles_in_integer_units() -> None:
    """The in-place figure's reference layer does a hold's arithmetic: the
    app reads the body it replays, and the balance ends less the reply's
    usage (10 tokens in, 1 out) at the model's prices, rounded up."""
    import asyncio

    from benchmarks import in_place, stages
    from benchmarks.apps import _trivial
    from benchmarks.run_all import text_of

    body = stages._body(text_of(1_000))
    balances = {"bench": 10**18}
    layer = in_place.floor_layer(
        _trivial, {f"Bearer {stages.KEY}".encode(): "bench"}, {stages.MODEL: (1500 * 10**10, 6000 * 10**10)}, balances
    )
    asyncio.run(stages._request(layer, body))
    asyncio.run(stages._request(layer, body))
    assert balances["bench"] == 10**18 - 2 * (10 * 1500 + 6000)
