"""Request and hold ids: random, never repeated across threads or a fork."""

from __future__ import annotations

import os
import threading

import pytest

from credit_guard._ids import random_hex


@pytest.mark.parametrize("size", [1, 12, 16])
def test_an_id_is_lowercase_hex_of_its_size(size: int) -> None:
    for _ in range(600):  # more than one batch
        text = random_hex(size)
        assert len(text) == 2 * size
        assert int(text, 16) >= 0 and text == text.lower()


def test_ids_are_not_repeated_across_batches_and_sizes() -> None:
    ids = [random_hex(16) for _ in range(5_000)] + [random_hex(12) for _ in range(5_000)]
    assert len(set(ids)) == len(ids)
    # Every byte value turns up: the slots are not left zeroed or repeated.
    assert len({text[:2] for text in ids}) == 256


def test_threads_drawing_at_once_never_get_the_same_id() -> None:
    found: list[list[str]] = [[] for _ in range(4)]
    start = threading.Barrier(4)

    def draw(out: list[str]) -> None:
        start.wait()
        for _ in range(20_000):
            out.append(random_hex(16))

    threads = [threading.Thread(target=draw, args=(out,)) for out in found]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ids = [text for out in found for text in out]
    assert len(ids) == 80_000 and len(set(ids)) == 80_000


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork here")
def test_a_forked_child_never_hands_out_its_parents_ids() -> None:
    random_hex(16)  # a batch drawn, partly used, before the fork
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its ids, then out at once
        try:
            os.write(write, "".join(random_hex(16) for _ in range(100)).encode())
        finally:
            os._exit(0)
    os.close(write)
    parent = [random_hex(16) for _ in range(100)]
    data = b""
    while chunk := os.read(read, 65536):
        data += chunk
    os.close(read)
    os.waitpid(pid, 0)
    child = [data[i : i + 32].decode() for i in range(0, len(data), 32)]
    assert len(child) == 100
    assert not set(child) & set(parent)
