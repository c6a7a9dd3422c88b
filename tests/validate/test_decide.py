"""validate.decide: the short list, the ladder of sizes, the rule (wider within the noise), the curves, the CLI."""
from __future__ import annotations

import json

import numpy as np
import pytest

from embedders.base import Block, write_block
from validate import decide as dec
from validate.decide import Candidate, choose, fit_columns, fit_curve, fit_curves, nested_samples, shortlist

TINY = (16, 32)  # a small net: NOT the organisers' network, for speed


def _block(name: str, dim: int, embedder: str, n: int = 10) -> Block:
    rng = np.random.default_rng(dim)
    return Block(np.arange(n, dtype=np.int64), rng.standard_normal((n, dim)).astype(np.float32),
                 {"name": name, "embedder": embedder})


def _blocks() -> dict[str, Block]:
    return {"stats": _block("stats", 83, "stats"), "tfidf_svd": _block("tfidf_svd", 64, "tfidf_svd"),
            "item2vec": _block("item2vec", 64, "item2vec"), "multitask": _block("multitask", 128, "multitask")}


def test_shortlist_keeps_supervised_and_screened_blocks_and_drops_duplicates():
    blocks = _blocks()
    screen = {"stats": 4.0, "tfidf_svd": 3.5, "item2vec": 4.1, "multitask": 3.9}
    cands = shortlist(blocks, [("stats", 1.0, 83)], screen)
    names = [c.name for c in cands]
    # the search's choice equals stats alone: listed once, under the first reason
    assert names[0] == "searched" and "stats" not in names
    assert "multitask" in names  # supervised, though below stats on the screen
    assert "item2vec" in names and "tfidf_svd" not in names  # above / below stats on the screen
    assert "all blocks" in names
    by = {c.name: c for c in cands}
    assert by["all blocks"].columns == 83 + 64 + 64 + 128
    assert {n for n, _, _ in by["item2vec + stats"].chosen} == {"item2vec", "stats"}
    assert {n for n, _, _ in by["item2vec + stats + multitask"].chosen} == {"item2vec", "stats", "multitask"}
    assert len({c.key() for c in cands}) == len(cands)


def test_fit_columns_cuts_by_pca_only_when_over_the_limit():
    blocks = {"a": _block("a", 1500, "x"), "b": _block("b", 1000, "x")}
    assert fit_columns(blocks, ["a"]) == [("a", 1.0, 1500)]
    cut = fit_columns(blocks, ["a", "b"])
    # an equal share (1,024) each: a is cut to its largest PCA size within it, b fits whole
    assert cut == [("a", 1.0, 256), ("b", 1.0, 1000)]


def _cand(name: str, columns: int, sums: dict[int, float]) -> Candidate:
    c = Candidate(name, [(name, 1.0, columns)], "test")
    c.scores = {n: {"sum": s, "tasks": {}} for n, s in sums.items()}
    return c


def test_choose_prefers_the_wider_candidate_within_the_noise_only():
    narrow, wide = _cand("narrow", 83, {2000: 4.00}), _cand("wide", 400, {2000: 3.98})
    winner, rule = choose([narrow, wide], 2000, noise=0.03)
    assert winner is wide and rule["wider_within_noise"] and rule["best"] == "narrow"
    winner, rule = choose([narrow, wide], 2000, noise=0.01)
    assert winner is narrow and not rule["wider_within_noise"]
    with pytest.raises(ValueError, match="no candidate"):
        choose([narrow], 5000, 0.03)


def test_curves_fit_extrapolate_and_find_crossings():
    a, b = fit_curve([1000, 4000], [3.0, 3.5])
    assert a - b / np.sqrt(1000) == pytest.approx(3.0) and a - b / np.sqrt(4000) == pytest.approx(3.5)
    flat = _cand("flat", 83, {1000: 3.6, 4000: 3.65})
    steep = _cand("steep", 400, {1000: 3.5, 4000: 3.62})
    out = fit_curves([flat, steep], target=1_000_000)
    assert out["ranking"]["1000"] == ["flat", "steep"] and out["ranking"]["target"] == ["steep", "flat"]
    assert out["stable"] is False
    (cross,) = out["crossings"]
    assert 4000 < cross["size"] < 1_000_000 and cross["before_target"]
    a_f, b_f = out["curves"]["flat"]["a"], out["curves"]["flat"]["b"]
    a_s, b_s = out["curves"]["steep"]["a"], out["curves"]["steep"]["b"]
    assert a_f - b_f / np.sqrt(cross["size"]) == pytest.approx(a_s - b_s / np.sqrt(cross["size"]))


def test_nested_samples_are_nested_and_in_fold_order():
    fold = np.arange(100, 400, dtype=np.int64)[::-1]
    s = nested_samples(fold, [50, 120, 1000], seed=3)
    assert set(s[50]) <= set(s[120]) and len(s[1000]) == 300
    pos = {v: i for i, v in enumerate(fold)}
    assert all(np.all(np.diff([pos[v] for v in s[n]]) > 0) for n in s)


def test_decide_scores_only_search_fold_clients_and_keeps_the_signal(planted, monkeypatch):
    from validate.probe import client_order
    from validate.search import split_folds

    data_dir, ids, group, dirs = planted
    from embedders.base import read_block
    blocks = {"stats": read_block(dirs["random"]), "signal": read_block(dirs["signal"])}
    seen = []
    real = dec.score_matrix

    def spy(data_dir_, ids_, X, *a, **k):
        seen.append((np.asarray(ids_).copy(), a[1] if len(a) > 1 else k.get("probe")))
        return real(data_dir_, ids_, X, *a, **k)

    monkeypatch.setattr(dec, "score_matrix", spy)
    out = dec.decide(data_dir, blocks, [("stats", 1.0, 8)], sizes=(120, 240), finalists=1, probe="mlp16",
                     tasks=["churn", "propensity_category"], seed=0, mlp_width=TINY, progress=False, log=lambda m: None)
    search_fold, report_fold = split_folds(client_order(data_dir), 0)
    assert all(not np.isin(s, report_fold).any() for s, _ in seen)
    mlp_calls = [s for s, p in seen if p == "mlp16"]
    # every candidate at the first size, one finalist at the second
    assert [len(s) for s in mlp_calls].count(240) == 1 and len(mlp_calls) == len(out["candidates"]) + 1
    assert any(n == "signal" for n, _, _ in out["choice"]["chosen"])
    assert out["sizes"] == [120, 240] and out["replica_net"] is False
    assert out["curves"]["curves"].keys() == {out["choice"]["name"]}


def test_decide_refuses_a_proxy_probe(planted):
    data_dir, *_ = planted
    with pytest.raises(ValueError, match="decision probe"):
        dec.decide(data_dir, {}, None, probe="lgbm", progress=False)


def test_cli_writes_spec_decision_and_curves_and_errors_in_one_line(planted, tmp_path, capsys):
    data_dir, ids, group, dirs = planted
    root = tmp_path / "blocks"
    for name in ("random", "signal"):
        from embedders.base import read_block
        write_block(read_block(dirs[name]), root / ("stats" if name == "random" else name))
    out = tmp_path / "decided.json"
    rc = dec.main(["--data-dir", str(data_dir), "--embeddings-root", str(root), "--sizes", "100", "200",
                   "--mlp-width", *map(str, TINY), "--tasks", "churn", "--out", str(out), "--no-progress",
                   "--decision-probe", "mlp16"])
    assert rc == 0
    spec = json.loads(out.read_text())
    assert spec["search"]["decision"]["choice"]["name"] in {c["name"] for c in spec["search"]["decision"]["candidates"]}
    assert (tmp_path / "decided_curves.png").stat().st_size > 0 and (tmp_path / "decided_decision.json").is_file()
    assert "Decision by" in capsys.readouterr().out
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    rc = dec.main(["--data-dir", str(data_dir), "--embeddings-root", str(root), "--spec", str(bad),
                   "--out", str(tmp_path / "x.json")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "bad.json" in err[0]
