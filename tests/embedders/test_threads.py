"""embedders.threads.free_cores: cores less those busy with *other* processes (this one's own work is not
counted, as the load average counted it)."""
from __future__ import annotations

from collections import namedtuple

import pytest

from embedders import threads

Sys = namedtuple("Sys", "user system idle iowait")
Own = namedtuple("Own", "user system")


@pytest.fixture
def fake_psutil(monkeypatch):
    """A psutil whose machine-wide and own CPU times advance as the test says, over a fixed sample interval."""
    import psutil
    state = {"sys": [Sys(0, 0, 0, 0), Sys(0, 0, 0, 0)], "own": [Own(0, 0), Own(0, 0)], "i": 0}

    def cpu_times():
        return state["sys"][min(state["i"], 1)]  # before / after the sample

    class Proc:
        def cpu_times(self):
            out = state["own"][min(state["i"], 1)]
            state["i"] += 1
            return out

    monkeypatch.setattr(psutil, "cpu_times", cpu_times)
    monkeypatch.setattr(psutil, "Process", Proc)
    monkeypatch.setattr(threads, "_last_sample", None)
    monkeypatch.setattr(threads, "available_cores", lambda: 2)
    ticks = iter([0.0, 1.0])  # perf_counter: a 1-second sample
    monkeypatch.setattr(threads.time, "perf_counter", lambda: next(ticks))
    monkeypatch.setattr(threads.time, "sleep", lambda s: None)
    return state


def test_own_work_is_not_busy_elsewhere(fake_psutil):
    # over one second the machine was busy 1.0 CPU-second, all of it this process's: both cores are free
    fake_psutil["sys"][1] = Sys(0.6, 0.4, 1.0, 0.0)
    fake_psutil["own"][1] = Own(0.7, 0.3)
    assert threads.busy_elsewhere() == pytest.approx(0.0) and threads.free_cores() == 2


def test_another_process_takes_a_core(fake_psutil):
    fake_psutil["sys"][1] = Sys(1.5, 0.4, 0.1, 0.0)  # 1.9 busy, 0.1 of it ours
    fake_psutil["own"][1] = Own(0.1, 0.0)
    assert threads.busy_elsewhere() == pytest.approx(1.8) and threads.free_cores() == 1
    # the answer is reused for a while (no second sample)
    assert threads.busy_elsewhere() == pytest.approx(1.8)


def test_at_least_one_core(monkeypatch):
    monkeypatch.setattr(threads, "busy_elsewhere", lambda: 7.0)
    assert threads.free_cores() == 1
