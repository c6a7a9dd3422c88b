"""The embedded default run (python -m submit.pack with no --data-dir), end to end on a tiny world (--quick)."""
from __future__ import annotations

import json

import numpy as np

from competition.schema import CLIENT_IDS_FILE, EMBEDDINGS_FILE
from submit.check import check_submission
from submit.pack import main
from validate.spec import EnsembleSpec


def test_default_run_quick(tmp_path, capsys):
    work = tmp_path / "run"
    assert main(["--quick", "--work-dir", str(work), "--no-progress", "--seed", "0"]) == 0
    out = capsys.readouterr()

    world, sub = work / "world", work / "submission"
    assert check_submission(world, sub) == []
    emb = np.load(sub / EMBEDDINGS_FILE)
    assert emb.dtype == np.float16 and len(emb) == len(np.load(sub / CLIENT_IDS_FILE)) == 400

    # every block was built, the search wrote a spec that pack can rebuild from
    names = ("stats", "tfidf_svd", "item2vec", "gru_ae", "multitask")
    for name in names:
        assert (work / "blocks" / name / EMBEDDINGS_FILE).is_file()
    spec = EnsembleSpec.load(work / "spec.json")
    assert spec.blocks and all(b.embedder in names for b in spec.blocks)
    packed = json.loads((sub / "pack.json").read_text())
    assert sum(b - a for a, b in packed["columns"].values()) == emb.shape[1]

    # the table: each block alone, the stats baseline and the packed result, with the probe named
    report = json.loads((work / "report.json").read_text())
    assert set(report["results"]) == {"stats (baseline)", "tfidf_svd", "item2vec", "gru_ae", "multitask",
                                      "packed"}
    for res in report["results"].values():
        assert set(res["tasks"]) == set(report["tasks"]) and np.isfinite(res["sum"])
    assert "probe: " in out.out and "packed" in out.out and "total wall time" in out.out
    md = (work / "report.md").read_text()  # the run report (submit.report), its PNGs beside it
    assert "![scores against the baseline](scores_vs_baseline.png)" in md and (work / "search.png").is_file()
    assert [s["stage"] for s in report["stages"]] == ["world", "blocks", "search", "decide", "pack", "table"]
    assert "[1/6] world" in out.err and "[6/6] table" in out.err

    # the decision: a short list scored on the quick ladder, its winner shipped as spec.json
    decision = report["decision"]
    assert decision["sizes"] == [60, 120] and decision["replica_net"] is False  # the quick preset's test net
    names_listed = [c["name"] for c in decision["candidates"]]
    assert names_listed[:2] == ["searched", "stats"] and "multitask" in names_listed
    # every block together is on the list (as "all blocks", or as the search's choice when it is that)
    assert any({n for n, _, _ in c["chosen"]} == set(names) for c in decision["candidates"])
    assert [b.name for b in spec.blocks] == [n for n, _, _ in decision["choice"]["chosen"]]
    assert spec.search["decision"]["choice"]["name"] == decision["choice"]["name"]
    assert "## Decision" in md and "(chosen)" in md and (work / "decision_curves.png").is_file()

    # a second run reuses the world, the fresh blocks, the search and the decision
    assert main(["--quick", "--work-dir", str(work), "--no-progress", "--trials", "1"]) == 0
    err = capsys.readouterr().err
    assert "reusing" in err and "building" not in err and "the search is fresh" in err
    assert "the decision is fresh" in err

    # --decide-clients 0: no decision, the search's own choice is shipped
    assert main(["--quick", "--work-dir", str(work), "--no-progress", "--trials", "1", "--decide-clients", "0"]) == 0
    capsys.readouterr()
    assert EnsembleSpec.load(work / "spec.json").to_dict()["blocks"] == \
        EnsembleSpec.load(work / "search_spec.json").to_dict()["blocks"]
    assert json.loads((work / "report.json").read_text())["decision"] is None

    # --confirm-clients: the search is redone and the replica scores the packed ensemble beside stats alone
    assert main(["--quick", "--work-dir", str(work), "--no-progress", "--trials", "1", "--confirm-clients", "100"]) == 0
    out = capsys.readouterr()
    report = json.loads((work / "report.json").read_text())
    confirm = report["search"]["confirm"]
    assert confirm["n_clients"] == 100 and confirm["replica"] is True
    assert set(confirm["candidates"]) == {"searched", "stats"}
    replica_rows = [r for r in report["rows"] if r["note"] == "replica confirmation"]
    assert {r["name"] for r in replica_rows} == {"packed (replica)", "stats (replica)"}
    assert all(r["probe"] == "MLP replica" for r in replica_rows)
    assert "Replica on 100 report-fold clients" in out.out
