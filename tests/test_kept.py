"""``Kept``: a bounded map of atoms, in order, that the collector stops walking."""

from __future__ import annotations

import gc
from collections import OrderedDict
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from credit_guard._kept import Fifo, Kept, Log, tracked

_ops = st.lists(
    st.one_of(
        st.tuples(st.just("put"), st.integers(0, 20), st.integers()),
        st.tuples(st.just("pop"), st.integers(0, 20), st.none()),
        st.tuples(st.just("oldest"), st.none(), st.none()),
    ),
    max_size=300,
)


@settings(max_examples=300, deadline=None)
@given(_ops)
def test_kept_behaves_as_an_ordered_dict_whose_puts_move_to_the_end(
    ops: list[tuple[str, int | None, int | None]],
) -> None:
    kept: Kept[int, int] = Kept()
    model: OrderedDict[int, int] = OrderedDict()
    for op, key, value in ops:
        if op == "put":
            assert key is not None and value is not None
            kept.put(key, value)
            model[key] = value
            model.move_to_end(key)
        elif op == "pop":
            assert key is not None
            assert kept.pop(key) == model.pop(key, None)
        elif model:
            assert kept.pop_oldest() == model.popitem(last=False)
        else:
            with pytest.raises(KeyError):
                kept.pop_oldest()
        assert kept.items() == list(model.items())
        assert len(kept) == len(model)
        assert all(kept.get(k) == model.get(k) for k in range(21))


def test_the_collector_stops_walking_it_and_atoms_put_later_keep_it_so() -> None:
    kept: Kept[str, object] = Kept()
    for i in range(1000):
        kept.put(f"hold_{i}", Decimal(i) / 7)
    gc.collect()
    assert not tracked(kept)
    for i in range(1000, 3000):
        kept.put(f"hold_{i}", (b"packed", 1.5, None, True)[i % 4])
        if i % 3 == 0:
            kept.pop_oldest()
    assert not tracked(kept)
    # A container put in is walked again: only a cost, never a wrong answer.
    kept.put("a list", ["account", 1])
    assert tracked(kept)
    assert kept.get("a list") == ["account", 1]


@settings(max_examples=200, deadline=None)
@given(adds=st.lists(st.integers(), max_size=200), limit=st.integers(0, 20))
def test_a_fifo_keeps_the_newest_keys_up_to_its_limit(adds: list[int], limit: int) -> None:
    fifo: Fifo[str, int] = Fifo(limit)
    for i, value in enumerate(adds):
        fifo.add(f"hold_{i}", value)
    kept = list(enumerate(adds))[-limit:] if limit else []
    assert len(fifo) == len(kept)
    assert all(fifo.get(f"hold_{i}") == value for i, value in kept)
    assert all(fifo.get(f"hold_{i}") is None for i in range(len(adds) - len(kept)))


@settings(max_examples=200, deadline=None)
@given(ops=st.lists(st.one_of(st.integers(), st.none()), max_size=200), limit=st.integers(1, 20))
def test_a_log_keeps_the_newest_values_in_order_and_removals_leave_no_hole(ops: list[int | None], limit: int) -> None:
    """``None`` removes the oldest entry but one, out of order, as a prune would."""
    log: Log[int] = Log(limit)
    model: OrderedDict[int, int] = OrderedDict()
    seq = 0
    for op in ops:
        if op is None:
            if len(model) > 1:
                victim = list(model)[1]
                log.remove(victim)
                del model[victim]
            continue
        log.append(op)
        model[seq] = op
        seq += 1
        if len(model) > limit:
            model.popitem(last=False)
        assert log.items() == list(model.items())
