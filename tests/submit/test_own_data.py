"""The one-command run on the user's own data (``python -m submit.pack --data-dir D --out O``, no spec), end to end
on a tiny raw world with the awkward properties of real logs: no split yet, an empty search_query file, no
remove_from_cart events, client and sku ids far from 0; run from another working folder."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import polars as pl
import pytest

from competition.schema import CLIENT_IDS_FILE, EMBEDDINGS_FILE, PAGE_VISIT, DataPaths
from submit.pipeline import COST, DEFAULT_BLOCKS, SIZES, block_recipes, ensure_split, estimate_seconds, fit_budget
from submit.report import PNGS, REPORT_MD
from tests.submit.own_worlds import AWKWARD, make_messy, raw_world
from tests.test_install import _env_outside_repo
from validate.spec import EnsembleSpec

ARGS = ["--quick", "--probe", "lgbm", "--tasks", "conversion", "--no-progress", "--search-clients", "300"]


@pytest.fixture(scope="module")
def own_run(tmp_path_factory):
    """One run of the command from a folder outside the repository, on a raw awkward world (with issue 28's
    relevant clients without events, unknown skus and visits dated 2100), and two more started while it runs on the
    same --out: one refused at once, one queued behind it with --wait (it then reuses every stage)."""
    import time

    root = tmp_path_factory.mktemp("own")
    world = raw_world(root / "world", **AWKWARD)
    messy = make_messy(world)
    cwd = root / "elsewhere"
    cwd.mkdir()
    env = _env_outside_repo()
    cmd = [sys.executable, "-m", "submit.pack", "--data-dir", str(world), "--out", "out", *ARGS]
    first = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lock, t0 = cwd / "out" / "run" / ".lock", time.monotonic()
    while not lock.is_file() and first.poll() is None and time.monotonic() - t0 < 120:
        time.sleep(0.1)
    assert lock.is_file(), "the first run never took its run folder's lock"
    refused = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    waiter = subprocess.Popen(cmd + ["--wait"], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    running_when_refused = first.poll() is None
    out, err = first.communicate(timeout=600)
    assert first.returncode == 0, err[-3000:]
    w_out, w_err = waiter.communicate(timeout=600)
    assert waiter.returncode == 0, w_err[-3000:]
    res = subprocess.CompletedProcess(cmd, first.returncode, out, err)
    return {"world": world, "out": cwd / "out", "cwd": cwd, "env": env, "res": res, "messy": messy,
            "refused": refused, "running_when_refused": running_when_refused, "first_pid": first.pid,
            "waiter": subprocess.CompletedProcess(cmd, waiter.returncode, w_out, w_err)}


def test_a_second_run_on_the_same_out_refuses_in_one_line(own_run):
    """Issue 28 (1): exactly one run proceeds; the other exits 2 at once with one line naming it, no traceback."""
    refused = own_run["refused"]
    assert own_run["running_when_refused"]
    assert refused.returncode == 2, refused.stderr[-2000:]
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in refused.stderr, refused.stderr
    assert lines[0].startswith("error: ") and f"pid {own_run['first_pid']}" in lines[0] and "--wait" in lines[0]
    assert "in use by another run" in lines[0] and "started" in lines[0]
    assert not (own_run["out"] / ".lock").exists() and not (own_run["out"] / "run" / ".lock").exists()


def test_split_blocks_and_both_submissions(own_run):
    world, out = own_run["world"], own_run["out"]
    paths = DataPaths(world)
    assert paths.split_times.is_file() and paths.target_list("propensity_category").is_file()  # split made
    relevant = np.load(paths.relevant_clients)
    assert relevant.min() > 10**9
    for sub in ("local", "final"):
        ids = np.load(out / sub / CLIENT_IDS_FILE)
        assert ids.dtype == np.int64 and set(ids.tolist()) == set(relevant.tolist())
        assert np.load(out / sub / EMBEDDINGS_FILE).dtype == np.float16
        assert json.loads((out / sub / "pack.json").read_text())["layout"] == ("raw" if sub == "final" else "input")
        # the organisers' kind of check, by the command a user would run, from the same folder
        res = subprocess.run([sys.executable, "-m", "submit.check", "--data-dir", str(world), "--embeddings-dir",
                              str(out / sub)], cwd=own_run["cwd"], env=own_run["env"], capture_output=True,
                             text=True, timeout=300)
        assert res.returncode == 0 and "valid" in res.stdout, res.stdout + res.stderr
    shipped = {b.name for b in EnsembleSpec.load(out / "run" / "spec.json").active}
    for name in ("stats", "tfidf_svd", "item2vec", "gru_ae", "multitask"):
        assert (out / "run" / "blocks" / name / EMBEDDINGS_FILE).is_file()
        # the final stage rebuilds from every event exactly the blocks the decision shipped
        assert (out / "run" / "blocks-final" / name / EMBEDDINGS_FILE).is_file() == (name in shipped)
    assert "final submission in out/final" in own_run["res"].stdout


def test_report_with_pngs(own_run):
    run = own_run["out"] / "run"
    md = (run / REPORT_MD).read_text()
    for png in PNGS.values():
        assert (run / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
        assert f"]({png})" in md
    assert "out/final" in md and "out/local" in md
    assert "LightGBM (proxy)" in md and "stats (baseline)" in md and "**packed**" in md
    report = json.loads((run / "report.json").read_text())
    assert [s["stage"] for s in report["stages"]] == ["split", "blocks", "search", "decide", "pack", "final", "table"]
    assert all(s["seconds"] >= 0 and s["peak_rss_mb"] > 0 for s in report["stages"])
    assert report["search_history"] and set(report["columns"]) == {"local", "final"}
    assert report["sizes"]["search_clients"] == 300  # --search-clients wins over the preset
    noise = report["search_noise"]  # the search sample's noise: stats and packed on disjoint samples
    assert noise["measured"] and noise["samples"] == SIZES["quick"]["noise_samples"]
    assert len(noise["sums"]["packed"]) == noise["samples"] and noise["n_clients"] <= report["report_clients"]
    assert "Sample noise (LightGBM" in md and "packed - stats (baseline)" in md
    # the decision ran (the quick preset's test net) and its probe scored stats and the shipped one on the report fold
    assert report["decision"]["sizes"] and "## Decision" in md
    verdict = report["decision_verdict"]
    assert verdict["n_clients"] == max(report["decision"]["sizes"]) and np.isfinite(verdict["difference"])
    assert {r["name"] for r in report["rows"] if r["note"] == "decision probe, report fold"} == \
        {"stats (mlp16)", "packed (mlp16)"}
    assert sum(report["columns"]["final"].values()) == np.load(own_run["out"] / "final" / EMBEDDINGS_FILE).shape[1]


def test_second_run_reuses_every_stage(own_run):
    """The run queued with --wait behind the first one (started while it ran) reuses every stage it made."""
    err = own_run["waiter"].stderr
    assert f"waiting for pid {own_run['first_pid']}" in err and "released after" in err
    assert "split of" in err and "is fresh" in err
    assert "the search is fresh" in err and "building" not in err and "the decision is fresh" in err


def test_awkward_data_said_in_one_line_each_and_in_the_report(own_run):
    """Issue 28 (3-5): relevant clients without events, unknown skus and events after the last purchase: one notice
    line each (no raw Python warning), recorded in the run report's ``notices``; the final blocks' period ends at
    the last purchase."""
    from datetime import datetime, timezone

    import polars as pl

    from competition.events import EventTable

    def epoch(text: str) -> int:
        return int(datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp())
    from competition.schema import PRODUCT_BUY

    err, n_new = own_run["res"].stderr, len(own_run["messy"]["no_event_clients"])
    assert "DataWarning" not in err and "warnings.warn" not in err
    assert "split: notice: " in err and "100 of them more than a day later (page_visit 100" in err
    notices = json.loads((own_run["out"] / "run" / "report.json").read_text())["notices"]
    by_stage = {stage: [n["line"] for n in notices if n["stage"] == stage] for stage in ("pack", "final")}
    for stage, period in (("pack", "in the input period"), ("final", "in the event files")):
        lines = by_stage[stage]
        empty = [m for m in lines if "relevant clients have no event" in m]
        assert len(empty) == 1 and period in empty[0] and "per block: stats " in empty[0], lines
        unknown = [m for m in lines if "missing from product_properties" in m]
        assert len(unknown) == 1 and "product_buy" in unknown[0] and "stats: counted" in unknown[0], lines
        for line in empty + unknown:
            assert line in err  # printed too, one line each
    late = [m for m in by_stage["final"] if "after the last purchase" in m]
    assert len(late) == 1 and "100 of them more than a day later (page_visit 100, dated 2100-01-01 00:00:00)" \
        in late[0] and "left out of the final blocks" in late[0]
    assert not any("after the last" in m for m in by_stage["pack"])
    md = (own_run["out"] / "run" / REPORT_MD).read_text()  # and the report lists them under their stage
    assert "## Notices" in md and f"- final: {late[0]}" in md
    raw = EventTable.build(own_run["world"], "raw", progress=False)
    end = pl.read_parquet(DataPaths(own_run["world"]).table(PRODUCT_BUY))["timestamp"].max()
    assert raw.meta["after_end"]["end"] == end and raw.meta["after_end"]["dropped"]["n"] == 100
    assert raw.cut_time <= epoch(end) + 86_400 + 1  # not stretched to 2100
    final_empty = next(m for m in by_stage["final"] if "relevant clients have no event" in m)
    relevant = np.load(DataPaths(own_run["world"]).relevant_clients)
    none = int((raw.rows_of(relevant) < 0).sum())
    assert none >= n_new and final_empty.startswith(f"notice: {none} of {len(relevant)} relevant clients")


def test_split_redone_when_the_raw_files_change(tmp_path):
    world = raw_world(tmp_path / "w", clients=60, seed=3)
    work = tmp_path / "run"
    log = []
    assert ensure_split(world, work, False, log.append) == "split"
    assert ensure_split(world, work, False, log.append) == "reused"
    visits = pl.read_parquet(DataPaths(world).table(PAGE_VISIT))
    visits.head(len(visits) - 1).write_parquet(DataPaths(world).table(PAGE_VISIT))
    assert ensure_split(world, work, False, log.append) == "split"
    assert "older than the raw files" in log[-1]


def test_budget_scales_sizes():
    cpu, blocks = SIZES["cpu"], DEFAULT_BLOCKS
    events, clients = 5_000_000, 20_000
    small, _ = fit_budget(cpu, 60.0, events, clients, blocks, True)
    assert small["epochs"] == 1 and small["trials"] == 1 and small["search_clients"] == 2_000
    assert small["train_clients"] == 2_000  # the smallest step of the ladder: multitask on a sample
    large, est_large = fit_budget(cpu, 600 * 60.0, events, clients, blocks, True)
    assert large["epochs"] == 4 and large["train_clients"] is None and large["search_clients"] == clients
    assert large["trials"] > cpu["trials"] and est_large <= 600 * 60.0
    for minutes in (20, 60, 180):
        mid, est = fit_budget(cpu, minutes * 60.0, events, clients, blocks, True)
        assert est <= minutes * 60.0 and 1 <= mid["trials"] <= 100 and mid["search_timeout"] <= minutes * 60.0
    # more time never buys smaller sizes
    sizes = [fit_budget(cpu, m * 60.0, events, clients, blocks, True)[0] for m in (10, 30, 90, 270)]
    assert [s["epochs"] for s in sizes] == sorted(s["epochs"] for s in sizes)
    assert [s["search_clients"] for s in sizes] == sorted(s["search_clients"] for s in sizes)
    # the decision's ladder: the smallest on a tight budget, never smaller with more time, priced in the estimate
    from submit.pipeline import DECIDE_LADDERS
    assert small["decide_clients"] == DECIDE_LADDERS["cpu"][-1] and large["decide_clients"] == DECIDE_LADDERS["cpu"][0]
    ladders = [DECIDE_LADDERS["cpu"].index(s["decide_clients"]) for s in sizes]
    assert ladders == sorted(ladders, reverse=True)
    est = estimate_seconds(cpu, events, clients, blocks, True)
    none = estimate_seconds(dict(cpu, decide_clients=()), events, clients, blocks, True)
    assert none["decide"] == 0 and est["decide"] > 60  # minutes of the organisers' network on a CPU
    assert fit_budget(dict(cpu, decide_clients=()), 3600.0, events, clients, blocks, True)[0]["decide_clients"] == ()


def test_train_clients_cap_both_neural_blocks_and_price_embedding_everyone():
    recipes = {r["name"]: r["params"] for r in block_recipes(1, "cpu", train_clients=50_000)}
    assert recipes["gru_ae"]["max_train_clients"] == recipes["multitask"]["max_train_clients"] == 50_000
    assert "mt_heads" not in recipes  # opt-in
    assert all("max_train_clients" not in p for n, p in recipes.items() if n not in ("gru_ae", "multitask"))
    opt_in = {r["name"]: r for r in block_recipes(1, "cpu", ["multitask", "mt_heads"], train_clients=50_000)}
    assert list(opt_in) == ["stats", "multitask", "mt_heads"]  # stats always, the heads after their source
    assert opt_in["mt_heads"]["params"] == {**opt_in["multitask"]["params"], "export": "heads"}  # the same training
    assert opt_in["mt_heads"]["embedder"] == "multitask" and opt_in["mt_heads"]["transform"] == "quantile"
    assert all("max_train_clients" not in p for p in (r["params"] for r in block_recipes(1, "cpu")))
    size, events, clients = dict(SIZES["cpu"], epochs=1), 280_000_000, 1_000_000
    full = estimate_seconds(size, events, clients, ["gru_ae"], False)["blocks"]
    tenth = estimate_seconds(dict(size, train_clients=100_000), events, clients, ["gru_ae"], False)["blocks"]
    (epoch_s, _), (infer_s, infer_per_m) = COST["gru_ae_epoch"], COST["gru_ae_infer"]
    infer = infer_s + infer_per_m * events / 1e6
    assert tenth == pytest.approx(epoch_s + (full - epoch_s) / 10 + infer)  # a tenth of the epoch, everyone embedded


def test_flags_that_do_not_fit(tmp_path, capsys):
    from submit.pack import main

    for argv in (["--data-dir", str(tmp_path), "--out", "o", "--final"], ["--budget", "5"],
                 ["--data-dir", str(tmp_path)], ["--data-dir", str(tmp_path), "--out", "o", "--budget", "0"],
                 ["--search-clients", "5000"], ["--data-dir", str(tmp_path), "--out", "o", "--search-clients", "10"],
                 ["--train-clients", "5000"], ["--data-dir", str(tmp_path), "--out", "o", "--train-clients", "10"],
                 ["--data-dir", str(tmp_path), "--out", "o", "--decide-clients", "-5"]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2
    # no data: one clear error naming the file
    assert main(["--data-dir", str(tmp_path), "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    assert "relevant_clients.npy" in capsys.readouterr().err


def test_oracle_row_kept_within_its_cost(tmp_path, monkeypatch):
    """The oracle row costs clients x products: scored on a seeded part of the table's clients when the catalogue
    is large, skipped (with a line saying why) when even the smallest part would not fit."""
    from competition.synth import generate_world
    from submit import pipeline, report

    world = generate_world(tmp_path / "w", 300, seed=11, progress=False)
    clients = np.sort(np.load(DataPaths(world).relevant_clients))[:200]
    seen: list[np.ndarray] = []
    monkeypatch.setattr(report, "oracle_row", lambda d, c, *a: seen.append(c) or None)
    n_products = pl.scan_parquet(DataPaths(world).table("product_properties")).select(pl.len()).collect().item()
    lines: list[str] = []
    monkeypatch.setattr(pipeline, "ORACLE_MIN_CLIENTS", 50)
    monkeypatch.setattr(pipeline, "ORACLE_MAX_ENTRIES", 120 * n_products)
    assert pipeline.oracle_rows(world, clients, ("churn",), "lgbm", 0, lines.append) == []
    assert len(seen[-1]) == 120 and np.isin(seen[-1], clients).all() and "120 of the 200" in lines[-1]
    monkeypatch.setattr(pipeline, "ORACLE_MAX_ENTRIES", 10 * n_products)
    assert pipeline.oracle_rows(world, clients, ("churn",), "lgbm", 0, lines.append) == []
    assert len(seen) == 1 and "not scored" in lines[-1]
    monkeypatch.setattr(pipeline, "ORACLE_MAX_ENTRIES", 10 ** 12)
    pipeline.oracle_rows(world, clients, ("churn",), "lgbm", 0, lines.append)
    assert np.array_equal(seen[-1], clients)
