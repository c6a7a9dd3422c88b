"""The content-taste block: within-category residuals, the PCA, the per-group means against hand-computed values
on the tiny world, validation and the CLI; on a synthetic world its axes find the generator's style space."""
from __future__ import annotations

import numpy as np
import pytest

from competition.events import EventTable
from competition.synth import STYLE_DIM, generate_world
from embedders.base import read_block
from embedders.content import ContentEmbedder, feature_names, main, within_category_residuals


def test_residuals_have_zero_mean_in_every_category_the_unknowns_one_group():
    names = np.random.default_rng(0).integers(0, 256, (50, 16)).astype(np.uint8)
    category = np.r_[np.zeros(20), np.ones(25), -np.ones(5)].astype(np.int64)
    r = within_category_residuals(names, category)
    assert r.shape == (50, 16) and r.dtype == np.float32
    for c in (0, 1, -1):
        np.testing.assert_allclose(r[category == c].mean(axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(r[0], names[0] - names[:20].mean(axis=0), rtol=1e-5)


def _row(block, client):
    return dict(zip(block.meta["feature_names"], block.vectors[list(block.client_ids).index(client)]))


def test_group_means_counts_and_relative_prices_match_the_events(tiny_events):
    emb = ContentEmbedder(components=2, recent_days=1, progress=False).fit(tiny_events)
    block = emb.transform(tiny_events, np.array([100, 101, 103, 104], dtype=np.int64))
    assert block.dim == emb.width == 12 and block.meta["feature_names"] == feature_names(2)
    coords = dict(zip(emb.skus_.tolist(), emb.coords_))
    # client 100 in the input: add sku 1 (07-01), buy sku 1 (07-01), buy sku 2 (07-23 23:59:59, the last day)
    row = _row(block, 100)
    for j in range(2):
        assert row[f"taste_product_{j}"] == pytest.approx((2 * coords[1][j] + coords[2][j]) / 3, abs=1e-5)
        assert row[f"taste_buy_{j}"] == pytest.approx((coords[1][j] + coords[2][j]) / 2, abs=1e-5)
        assert row[f"taste_recent_{j}"] == pytest.approx(coords[2][j], abs=1e-5)  # only the last day's buy
    assert row["log_count_product"] == pytest.approx(np.log1p(3))
    assert row["log_count_buy"] == pytest.approx(np.log1p(2)) and row["log_count_recent"] == pytest.approx(np.log1p(1))
    # prices: sku 1 costs 5 and sku 2 50 in category 10 (mean 27.5)
    assert row["price_rel_buy"] == pytest.approx(((5 - 27.5) + (50 - 27.5)) / 2 / 100, abs=1e-6)
    assert row["price_rel_product"] == pytest.approx((2 * (5 - 27.5) + (50 - 27.5)) / 3 / 100, abs=1e-6)
    # client 104 added and removed sku 2 but bought nothing; client 101 has no product event in the input
    row = _row(block, 104)
    assert row["log_count_product"] == pytest.approx(np.log1p(2)) and row["log_count_buy"] == 0.0
    assert row["taste_buy_0"] == 0.0 and row["taste_product_0"] == pytest.approx(coords[2][0], abs=1e-5)
    assert not np.any(block.vectors[list(block.client_ids).index(101)])


def test_validation_names_the_parameter():
    with pytest.raises(ValueError, match="components must be an integer in 1..16"):
        ContentEmbedder(components=17).validate()
    with pytest.raises(ValueError, match="fixed width of 30 .* got 8"):
        ContentEmbedder(dim=8).validate()
    with pytest.raises(ValueError, match="recent_days must be > 0"):
        ContentEmbedder(recent_days=0).validate()
    ContentEmbedder(dim=30).validate()


def test_axes_find_the_style_space_of_a_synthetic_world(tmp_path):
    """The generator writes each product's style along STYLE_DIM axes into its name codes (spread 24 per unit
    against noise 8 per code): the first STYLE_DIM residual axes hold most of the variance, the next ones little."""
    world = generate_world(tmp_path / "w", 300, seed=77, chunk_clients=300, progress=False)
    events = EventTable.build(world, "input", progress=False)
    emb = ContentEmbedder(components=6, progress=False).fit(events)
    assert emb.explained_[:STYLE_DIM].sum() > 0.5
    assert emb.explained_[STYLE_DIM] < emb.explained_[STYLE_DIM - 1] / 3
    np.testing.assert_allclose(emb.coords_.std(axis=0), 1.0, rtol=0.1)  # unit variance per axis


def test_cli_writes_the_block_and_refuses_a_wrong_width(tiny, tmp_path, capsys):
    assert main(["--data-dir", str(tiny), "--out", str(tmp_path / "c"), "--components", "3", "--no-progress"]) == 0
    block = read_block(tmp_path / "c")
    assert block.dim == 15 and block.meta["embedder"] == "content" and block.meta["params"]["components"] == 3
    with pytest.raises(SystemExit):
        main(["--data-dir", str(tiny), "--out", str(tmp_path / "d"), "--dim", "7", "--no-progress"])
    assert "fixed width of 30" in capsys.readouterr().err


def test_axes_depend_on_the_products_only_not_on_the_cut(tiny_events):
    """Why multitask may refit content at every anchor: the axes and coordinates are the same at any cut."""
    cut = tiny_events.before(int(tiny_events.cut_time) - 20 * 86_400)
    a = ContentEmbedder(components=3, progress=False).fit(tiny_events)
    b = ContentEmbedder(components=3, progress=False).fit(cut)
    assert a.cut_time_ != b.cut_time_
    assert a.axes_.tobytes() == b.axes_.tobytes() and a.coords_.tobytes() == b.coords_.tobytes()
