import json

import numpy as np

from validate import agreement
from validate.agreement import rank_agreement, reference_blocks


def test_rank_agreement():
    assert rank_agreement([1, 2, 3, 4], [10, 20, 30, 40]) == 1.0
    assert rank_agreement([1, 2, 3, 4], [4, 3, 2, 1]) == -1.0
    assert np.isnan(rank_agreement([1, 2], [1, 2]))


def test_reference_blocks_are_ordered_by_leak(planted, tmp_path):
    data_dir, ids, _, _ = planted
    blocks = reference_blocks(data_dir, seed=0, sigmas=(0.3, 3.0), dim=16)
    assert [b.meta["name"] for b in blocks] == ["random", "leak_s0.3", "leak_s3"]
    assert all(b.vectors.shape == (len(ids), 16) for b in blocks)
    out = tmp_path / "agree.json"
    rc = agreement.main(["--data-dir", str(data_dir), "--reference-blocks", "--tasks", "conversion",
                         "--mlp-width", "16", "32", "--out", str(out), "--no-progress"])
    assert rc == 0
    res = json.loads(out.read_text())
    lgbm = dict(zip(res["blocks"], res["sums"]["lgbm"]))
    assert lgbm["leak_s0.5"] > lgbm["leak_s4"] > lgbm["random"] - 0.05
    assert -1 <= res["spearman_sum"] <= 1 and set(res["results"]) == {"mlp", "lgbm"}
