"""submit.pipeline's opt-in rule (``submit.pack --heads``) of shipping multitask's heads beside a shipped multitask
(docs/capture.md): built from the bottleneck block's own training, outside WORK/blocks, recorded in the spec,
idempotent, taken out again by a run without --heads, and carried into the final stage's twin."""
from __future__ import annotations

import json

import numpy as np

import submit.pipeline as pipeline
from competition.schema import EMBEDDINGS_FILE
from submit.pack import pack
from submit.pipeline import HEADS_DIR, ship_heads_beside
from validate.spec import EnsembleSpec

SMALL = {"dim": 8, "thin": 16, "wide": 16, "residual_blocks": 1, "item_dim": 8, "epochs": 1, "windows": 2,
         "inputs": ["stats"], "device": "cpu"}


def _decided(work, names=("stats", "multitask")) -> dict:
    """A decided spec as the decision writes it: paths to the run's blocks, recipes in their meta.json."""
    kinds = {"stats": "quantile", "multitask": "l2"}
    return {"version": 1, "search": {"decision": {"choice": {"name": "+".join(names)}}},
            "blocks": [{"name": n, "path": str(work / "blocks" / n), "transform": kinds[n], "weight": 1.0,
                        "dims": None} for n in names]}


def _built(split_world, work) -> None:
    spec = {"version": 1, "blocks": [
        {"name": "stats", "path": "blocks/stats", "transform": "quantile", "weight": 1.0, "dims": None,
         "embedder": "stats", "params": {}},
        {"name": "multitask", "path": "blocks/multitask", "transform": "l2", "weight": 1.0, "dims": None,
         "embedder": "multitask", "params": SMALL}]}
    work.mkdir(parents=True, exist_ok=True)
    (work / "build.json").write_text(json.dumps(spec))
    pack(split_world, work / "build.json", work / "built", seed=0, progress=False, log=lambda m: None)


def test_heads_ship_beside_a_shipped_multitask_and_follow_it_to_the_final_stage(split_world, tmp_path):
    work = tmp_path / "run"
    _built(split_world, work)
    lines: list[str] = []
    spec = ship_heads_beside(_decided(work), work, split_world, 0, True, False, lines.append)
    names = [b["name"] for b in spec["blocks"]]
    assert names == ["stats", "multitask", "mt_heads"]
    heads = spec["blocks"][-1]
    assert heads["path"] == str(work / HEADS_DIR / "mt_heads") and heads["transform"] == "quantile"
    assert heads["embedder"] == "multitask" and heads["params"]["export"] == "heads"
    assert heads["params"]["dim"] == SMALL["dim"] and heads["params"]["inputs"] == SMALL["inputs"]
    assert spec["search"]["heads_beside"] == {"block": "mt_heads", "beside": "multitask",
                                              "columns": 2 + 100 + 3 * 8, "rule": "docs/capture.md"}
    assert spec["search"]["decision"] == {"choice": {"name": "stats+multitask"}}  # the decision's record kept
    assert EnsembleSpec.load(work / pipeline.SPEC).to_dict() == EnsembleSpec.from_dict(spec).to_dict()
    meta = json.loads((work / HEADS_DIR / "mt_heads" / "meta.json").read_text())
    assert meta["trained_by"] == str(work / "blocks" / "multitask.work")  # its training, not a second one
    assert meta["bottleneck_from"] == str(work / "blocks" / "multitask")
    assert any("shipping mt_heads beside multitask" in line for line in lines), lines
    assert not (work / "blocks" / "mt_heads").exists()  # never a candidate of the search or the decision

    # a second pass (a rerun whose decision was fresh) adds nothing and builds nothing
    lines.clear()
    assert ship_heads_beside(spec, work, split_world, 0, True, False, lines.append) == spec and lines == []

    # the local and the final submission carry it; the final heads read the final multitask's training
    pack(split_world, work / pipeline.SPEC, tmp_path / "local", seed=0, progress=False, log=lambda m: None)
    stats_width = np.load(work / "blocks" / "stats" / EMBEDDINGS_FILE, mmap_mode="r").shape[1]
    assert np.load(tmp_path / "local" / EMBEDDINGS_FILE).shape[1] == stats_width + 8 + 2 + 100 + 3 * 8
    pack(split_world, work / pipeline.SPEC, tmp_path / "final", final=True, seed=0, progress=False,
         log=lambda m: None)
    final = json.loads((work / f"{HEADS_DIR}-final" / "mt_heads" / "meta.json").read_text())
    assert final["trained_by"] == str(work / "blocks-final" / "multitask.work")

    # a run without --heads: the decision's choice as it is, saved
    lines.clear()
    off = ship_heads_beside(spec, work, split_world, 0, False, False, lines.append)
    assert [b["name"] for b in off["blocks"]] == ["stats", "multitask"] and "heads_beside" not in off["search"]
    assert [b.name for b in EnsembleSpec.load(work / pipeline.SPEC).blocks] == ["stats", "multitask"]
    assert any("no --heads this time" in line for line in lines)


def test_no_heads_without_multitask_or_past_the_column_limit(split_world, tmp_path, monkeypatch):
    work = tmp_path / "run"
    _built(split_world, work)
    lines: list[str] = []
    only_stats = _decided(work, ("stats",))
    assert ship_heads_beside(only_stats, work, split_world, 0, True, False, lines.append) == only_stats
    assert not (work / HEADS_DIR).exists() and lines == []
    monkeypatch.setattr(pipeline, "MAX_EMBEDDING_COLUMNS", 150)
    both = _decided(work)
    assert ship_heads_beside(both, work, split_world, 0, True, False, lines.append) == both
    assert any("would pass the limit of 150" in line for line in lines), lines
