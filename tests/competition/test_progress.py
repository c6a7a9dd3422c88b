"""competition.progress: a tqdm bar on a terminal, a few plain lines (no ``\\r``, none over 300 characters) in a log,
nothing with ``--no-progress``; and every kind of command, run redirected (stderr not a TTY), writes a readable
log."""
from __future__ import annotations

import io
import json
import sys

import pytest

from competition import progress as progress_mod
from competition.progress import MAX_LINE, LineProgress, is_terminal, progress


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def _readable(text: str) -> list[str]:
    """The lines of a redirected run's stderr, checked readable: no carriage return, none over MAX_LINE."""
    assert "\r" not in text, [ln for ln in text.split("\n") if "\r" in ln][:3]
    lines = text.splitlines()
    long = [ln for ln in lines if len(ln) > MAX_LINE]
    assert not long, [ln[:120] + "..." for ln in long]
    return lines


@pytest.fixture(autouse=True)
def every_loop_is_long(monkeypatch, request):
    """The tests below look at the lines of loops that take milliseconds: let them print (see the last test)."""
    if "short_loops_are_silent" not in request.node.name:
        monkeypatch.setattr(progress_mod, "MIN_SECONDS", 0.0)


# -- the module --------------------------------------------------------------------------------------------------------
def test_off_tty_a_few_plain_lines_with_start_and_end(capsys):
    assert not is_terminal()  # pytest's captured stderr is not a TTY
    items = list(progress(range(1000), desc="gru_ae epoch 1/2", unit="batch"))
    assert items == list(range(1000))
    lines = _readable(capsys.readouterr().err)
    assert 3 <= len(lines) < 12, lines
    assert all(ln.startswith("gru_ae epoch 1/2: ") for ln in lines), lines
    assert lines[0].startswith("gru_ae epoch 1/2: 0% (0/1,000 batch)"), lines[0]
    assert lines[-1].startswith("gru_ae epoch 1/2: done 100% (1,000/1,000 batch)"), lines[-1]
    assert any("40% (400/1,000 batch)" in ln and "eta" in ln for ln in lines), lines


def test_off_tty_lines_stay_short_and_single():
    out = io.StringIO()
    bar = progress(range(3), desc="x" * 500 + "\rno\ncarriage", file=out)
    bar.set_postfix(loss=0.123456, note="a\rb")
    for _ in bar:
        pass
    lines = _readable(out.getvalue())
    assert len(lines) == 4 and all(len(ln) == MAX_LINE and ln.endswith("...") for ln in lines)


def test_manual_counter_postfix_and_stopped():
    out = io.StringIO()
    with progress(total=4, desc="item2vec: word2vec epochs", unit="epoch", file=out) as bar:
        assert isinstance(bar, LineProgress)
        bar.update(1)
        bar.set_postfix({"loss": 0.5})
        bar.update(1)
    lines = _readable(out.getvalue())
    assert lines[0] == "item2vec: word2vec epochs: 0% (0/4 epoch) 0.0s"
    assert "loss=0.5" in lines[2] and lines[-1].startswith("item2vec: word2vec epochs: stopped 50% (2/4 epoch)")
    out = io.StringIO()
    for i in progress(iter(range(5)), desc="no length", file=out):  # no total: counts and time
        if i == 2:
            break
    assert [ln.split(" 0.")[0] for ln in _readable(out.getvalue())] == ["no length: 0 it", "no length: done 2 it"]


def test_a_line_every_interval_seconds(monkeypatch):
    clock = iter(float(t) for t in range(0, 1000, 30))  # 30 s per step
    monkeypatch.setattr(progress_mod.time, "perf_counter", lambda: next(clock))
    out = io.StringIO()
    bar = LineProgress(total=1000, desc="slow", file=out)
    for _ in range(5):
        bar.update(1)  # far below 10% each time: only the clock prints
    bar.close()
    lines = _readable(out.getvalue())
    assert len(lines) == 1 + 2 + 1, lines  # start, at 60 s and 120 s, end
    assert lines[0] == "slow: 0% (0/1,000) 0.0s" and lines[1].startswith("slow: 0% (2/1,000) 60.0s, eta ")
    assert lines[2].startswith("slow: 0% (4/1,000) 120.0s") and lines[3] == "slow: stopped 0% (5/1,000) 180.0s"


def test_on_a_tty_a_real_tqdm_bar(monkeypatch):
    from tqdm import tqdm
    tty = FakeTTY()
    monkeypatch.setattr(sys, "stderr", tty)
    assert is_terminal()
    bar = progress(range(10), desc="stats: features", unit="chunk", leave=False)
    assert isinstance(bar, tqdm) and not isinstance(bar, LineProgress)
    assert bar.total == 10 and bar.desc.startswith("stats: features") and not bar.leave and bar.unit == "chunk"
    assert list(bar) == list(range(10))
    assert "stats: features" in tty.getvalue()
    manual = progress(total=3, desc="epochs")
    assert isinstance(manual, tqdm)
    manual.update(3)
    manual.close()


@pytest.mark.parametrize("tty", [False, True])
def test_disabled_prints_nothing(monkeypatch, capsys, tty):
    if tty:
        monkeypatch.setattr(sys, "stderr", FakeTTY())
    err = sys.stderr
    bar = progress(range(100), desc="off", enabled=False)
    assert list(bar) == list(range(100))
    bar.set_postfix(loss=1.0)
    bar.update(5)
    bar.close()
    manual = progress(total=3, desc="off", enabled=False)
    manual.update(1)
    manual.close()
    assert (err.getvalue() if tty else capsys.readouterr().err) == ""


# -- every kind of command, redirected ---------------------------------------------------------------------------------
def test_competition_commands_redirected(raw_world, tmp_path, capfd):
    from competition import events, split, synth
    assert split.main(["--data-dir", str(raw_world)]) == 0
    from competition.targets import write_target_lists
    write_target_lists(raw_world)
    assert events.main(["--data-dir", str(raw_world)]) == 0
    assert synth.main(["--out", str(tmp_path / "w"), "--clients", "50", "--seed", "1", "--no-split"]) == 0
    lines = _readable(capfd.readouterr().err)
    assert any(ln.startswith("events: chunks: done") for ln in lines), lines
    assert any(ln.startswith("synth: chunks: done") for ln in lines), lines


def test_embedder_commands_redirected(tiny, tmp_path, capfd):
    from embedders.gru_ae.__main__ import main as gru_ae
    from embedders.stats import main as stats
    assert stats(["--data-dir", str(tiny), "--out", str(tmp_path / "stats")]) == 0
    assert gru_ae(["--data-dir", str(tiny), "--out", str(tmp_path / "gru"), "--variant", "all", "--dim", "4",
                   "--field-dim", "4", "--layers", "1", "--batch-size", "2", "--epochs", "2", "--device", "cpu",
                   "--threads", "1"]) == 0
    lines = _readable(capfd.readouterr().err)
    for desc in ("stats: features", "gru_ae epoch 2/2", "gru_ae embed"):
        assert any(ln.startswith(f"{desc}: done") for ln in lines), (desc, lines)
    assert any(ln.startswith("gru_ae epoch 1/2: ") and "loss=" in ln for ln in lines), lines


def test_validate_command_redirected(tmp_path, capfd):
    from embedders.base import write_block
    from tests.validate.conftest import build_planted_world, planted_blocks
    from validate import probe
    data_dir, ids, group = build_planted_world(tmp_path / "world")
    block = write_block(planted_blocks(ids, group)["signal"], tmp_path / "signal")
    capfd.readouterr()
    assert probe.main(["--data-dir", str(data_dir), "--embeddings-dir", str(block), "--tasks", "churn",
                       "--probe", "mlp", "--mlp-width", "16", "32", "--device", "cpu", "--threads", "1"]) == 0
    lines = _readable(capfd.readouterr().err)
    assert any(ln.startswith("churn epoch 3/3: done") for ln in lines), lines


def test_submit_command_redirected(split_world, tmp_path, capfd):
    from submit.pack import main
    spec = {"version": 1, "blocks": [{"name": "stats", "path": str(tmp_path / "blocks" / "stats"),
                                      "transform": "none", "weight": 1.0, "dims": None, "embedder": "stats",
                                      "params": {}}]}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    assert main(["--data-dir", str(split_world), "--spec", str(tmp_path / "spec.json"), "--out",
                 str(tmp_path / "out")]) == 0
    lines = _readable(capfd.readouterr().err)
    assert any(ln.startswith("stats: features: done") for ln in lines), lines


def test_short_loops_are_silent_long_ones_are_not(monkeypatch):
    """By default a loop shorter than MIN_SECONDS prints nothing (not even its end); a longer one prints from then
    on, and its end line."""
    out = io.StringIO()
    assert list(progress(range(50), desc="quick", file=out)) == list(range(50)) and out.getvalue() == ""
    clock = [100.0]
    monkeypatch.setattr(progress_mod.time, "perf_counter", lambda: clock[0])
    bar = LineProgress(total=10, desc="slow", file=out)
    for _ in range(10):
        clock[0] += progress_mod.MIN_SECONDS / 4
        bar.update(1)
    bar.close()
    lines = out.getvalue().splitlines()
    assert lines and not any(ln.startswith("slow: 0%") for ln in lines) and lines[-1].startswith("slow: done")
    assert lines[0].startswith("slow: 40%")  # the first line after MIN_SECONDS had passed
