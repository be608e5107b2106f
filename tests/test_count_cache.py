"""The count cache: a cached count equals a fresh one, the encoding is part of
the key, memory is capped whatever a caller sends, and a resent conversation
is counted once."""

from __future__ import annotations

import tracemalloc

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from credit_guard import shapes, tokens
from credit_guard.prices import PriceTable
from credit_guard.tokens import CountCache

from .test_middleware import PRICES

O200K = tokens.get_encoding("o200k_base")
CL100K = tokens.get_encoding("cl100k_base")

texts = st.lists(
    st.text(alphabet=st.characters(codec="utf-8"), max_size=20)
    | st.sampled_from(["<|endoftext|>", "  ", "\n", "ab", "é", "🙂", "\r\n", "123456"]),
    max_size=40,
).map("".join)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=texts, others=st.lists(texts, max_size=5), text_chars=st.sampled_from([0, 16, 4096]))
def test_a_cached_count_equals_a_fresh_one(text: str, others: list[str], text_chars: int) -> None:
    """Keyed by the text itself or by its digest (longer than ``text_chars``),
    among other texts: a hit is the count of that very text."""
    cache = CountCache(entries=64, min_chars=0, text_chars=text_chars)
    for encoding in (O200K, CL100K):
        for other in others:
            cache.count(encoding, other)
        fresh = len(encoding.encode_ordinary(text))
        assert cache.count(encoding, text) == fresh
        assert cache.count(encoding, text) == fresh  # a hit


def test_lone_surrogates_are_keyed_and_counted() -> None:
    cache = CountCache(min_chars=0)
    text = "x" * 40 + "\ud800" + "y" * 40
    assert cache.count(O200K, text) == len(O200K.encode_ordinary(text))
    assert cache.count(O200K, text) == len(O200K.encode_ordinary(text))
    assert cache.hits == 1


def test_the_encoding_is_part_of_the_key() -> None:
    cache = CountCache(min_chars=0)
    text = "Grüße aus München, " * 20
    assert cache.count(O200K, text) == len(O200K.encode_ordinary(text))
    assert cache.count(CL100K, text) == len(CL100K.encode_ordinary(text))
    assert len(O200K.encode_ordinary(text)) != len(CL100K.encode_ordinary(text))
    assert cache.misses == 2 and len(cache) == 2


def _flood_growth(cache: CountCache, texts: int) -> int:
    """Bytes the cache grew by while ``texts`` distinct 1 KB texts went through it."""
    for i in range(1000):
        cache.count(O200K, f"warm-up text number {i} " * 8)
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        for i in range(texts):
            # Each text is about 1 KB: all kept, 20,000 would be about 20 MB.
            cache.count(O200K, f"{i:08d} " + "an attacker's filler " * 50)
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return after - before


@pytest.mark.parametrize(
    "cache",
    [
        # Texts kept whole, up to a budget of characters.
        CountCache(entries=100_000, min_chars=0, chars=128 * 1024),
        # Texts longer than text_chars kept as digests, up to the entries.
        CountCache(entries=1000, min_chars=0, text_chars=512),
    ],
    ids=["texts", "digests"],
)
def test_a_flood_of_distinct_texts_cannot_grow_the_cache(cache: CountCache) -> None:
    grown = _flood_growth(cache, 20_000)
    assert len(cache) <= 1000
    # Neither the entries nor the texts kept follow the flood's size.
    assert grown < 512 * 1024
    # The oldest entries went first; the newest are kept.
    last = f"{19_999:08d} " + "an attacker's filler " * 50
    hits = cache.hits
    cache.count(O200K, last)
    assert cache.hits == hits + 1


def test_invalid_size_is_refused() -> None:
    with pytest.raises(ValueError):
        CountCache(entries=0)


def _conversation(turns: int) -> dict[str, object]:
    messages: list[dict[str, str]] = [{"role": "system", "content": "You are a careful assistant. " * 40}]
    for i in range(turns):
        role = "user" if i % 2 == 0 else "assistant"
        messages.append({"role": role, "content": f"Turn {i}: " + "some words of the conversation " * 30})
    return {"model": "gpt-4o", "messages": messages, "max_tokens": 100}


def test_a_resent_conversation_counts_only_its_new_turn() -> None:
    price = PRICES.resolve("gpt-4o")
    tokens.COUNT_CACHE.clear()
    first = shapes.parse("chat", _conversation(40))
    fresh = tokens.count_input(first, price)
    misses = tokens.COUNT_CACHE.misses
    assert misses >= 41  # the system prompt and every turn were counted
    again = shapes.parse("chat", _conversation(41))
    count = tokens.count_input(again, price)
    # Only the new turn was tokenized again...
    assert tokens.COUNT_CACHE.misses == misses + 1
    # ...and the total is what a fresh count gives.
    tokens.COUNT_CACHE.clear()
    assert tokens.count_input(again, price) == count
    assert count.tokens > fresh.tokens


def test_the_default_table_counts_the_same_with_and_without_the_cache() -> None:
    price = PriceTable.default().resolve("gpt-4o-mini")
    ask = shapes.parse("chat", _conversation(6))
    tokens.COUNT_CACHE.clear()
    cold = tokens.count_input(ask, price)
    warm = tokens.count_input(ask, price)
    encoding = tokens.get_encoding("o200k_base")
    by_hand = ask.fixed_tokens + sum(len(encoding.encode_ordinary(t)) for t in ask.texts)
    assert cold == warm and cold.tokens == by_hand


@settings(max_examples=200, deadline=None)
@given(
    stored=st.lists(st.tuples(st.booleans(), st.integers(0, 30)), max_size=120),
    entries=st.integers(1, 12),
    text_chars=st.sampled_from([0, 4096]),
)
def test_the_oldest_text_goes_first_whatever_its_encoding(
    stored: list[tuple[bool, int]], entries: int, text_chars: int
) -> None:
    """Texts of two encodings stored in turn: the cache keeps exactly the
    newest ``entries`` of them, by text or by digest."""
    cache = CountCache(entries=entries, min_chars=0, text_chars=text_chars)
    order: list[tuple[bool, int]] = []
    for wide, n in stored:
        encoding = O200K if wide else CL100K
        text = f"text number {n} " * 3
        before = cache.misses
        assert cache.count(encoding, text) == len(encoding.encode_ordinary(text))
        if cache.misses > before:
            order.append((wide, n))
    kept = order[-entries:]
    assert len(cache) == len(kept)
    for wide, n in set(order):
        encoding = O200K if wide else CL100K
        misses = cache.misses
        cache.count(encoding, f"text number {n} " * 3)
        assert (cache.misses == misses) == ((wide, n) in kept)
        if cache.misses > misses:
            break  # a miss stores the text, and changes what is kept


def test_the_collector_stops_walking_a_full_cache() -> None:
    import gc

    cache = CountCache(entries=5000, min_chars=0, text_chars=64)
    for i in range(20_000):
        cache.count(O200K if i % 2 else CL100K, f"{i} " + "words " * (i % 20))
    gc.collect()
    assert len(cache) == 5000
    walked = [d for shelf in cache._shelves.values() for d in (shelf.counts, shelf.order)]
    assert walked and not any(gc.is_tracked(d) for d in walked)
