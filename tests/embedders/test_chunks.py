"""embedders.chunks.map_chunks: results in the chunks' order from worker threads, a bounded number in flight."""
from __future__ import annotations

import threading
import time

import pytest

from embedders.chunks import map_chunks


@pytest.mark.parametrize("threads", [1, 2, 4])
def test_results_come_in_order_whatever_finishes_first(threads):
    def slow_first(i: int) -> int:
        time.sleep(0.02 if i % 3 == 0 else 0.0)  # early chunks finish last
        return i * i

    assert list(map_chunks(slow_first, range(20), threads)) == [i * i for i in range(20)]
    assert list(map_chunks(slow_first, [], threads)) == []


def test_work_runs_in_threads_with_a_bounded_look_ahead():
    started, names = [], set()
    lock = threading.Lock()

    def record(i: int) -> int:
        with lock:
            started.append(i)
            names.add(threading.current_thread().name)
        return i

    results = map_chunks(record, range(50), threads=2)
    assert next(results) == 0
    time.sleep(0.05)
    with lock:
        assert len(started) <= 4 + 1  # two per thread in flight (plus the one handed out), not all 50
    assert list(results) == list(range(1, 50))
    assert names and threading.current_thread().name not in names  # worker threads, never the caller


def test_an_error_in_a_chunk_reaches_the_caller():
    def fail_on_3(i: int) -> int:
        if i == 3:
            raise ValueError("chunk 3 is bad")
        return i

    with pytest.raises(ValueError, match="chunk 3 is bad"):
        list(map_chunks(fail_on_3, range(10), threads=2))
