"""The benchmark harness runs and reports every field.  Timings are printed by
the benchmarks, never asserted here."""

from __future__ import annotations

import pytest

from benchmarks import run_all


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
    for name in ("route", "identity", "body", "parse", "shape", "resolve", "count (cold)", "quote", "tap"):
        assert stages[name]["median"] > 0
    assert stages["reserve + settle"]["median"] > 0
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
