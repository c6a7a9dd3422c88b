"""The knowable oracle as behaviour can estimate it: how much of the oracle survives when its latents must be read
off the event logs.

The knowable oracle (:func:`validate.oracle.oracle_block` with ``knowable``: the world's true latents censored at
the input period's end) is a ceiling no embedder can reach in full: it knows each client's rates, tastes and
states (is the purchasing phase over? is the client gone?) exactly, where a log shows a few events drawn from
them. This script fits a network from the run's behaviour blocks (every block the one-command run built, from
the input period only; ``--extra`` adds others) to the knowable oracle's columns on the **search fold** of
``--seed`` (:func:`validate.search.split_folds`), predicts every relevant client, and writes the prediction as a
block (``"oracle": true`` in its meta, so no search takes it). Scored beside stats on the report fold
(``bench_capture.py --extra OUT --only stats+<name>``), it is a ceiling measured from behaviour: what the
latents are worth when they are estimated by a supervised regression from the same logs the embedders see. It
prints the held-out R^2 of each group of columns on the report fold (how identifiable each latent is).

Not a block of the toolkit (it reads ``truth/``): a diagnostic for docs/capture.md.

    python benchmarks/estimated_oracle.py --data-dir W --run O --seed S --out B/est_knowable
"""
from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_capture import knowable_block, run_blocks  # noqa: E402
from competition.cli import HelpFormatter, add_no_progress  # noqa: E402
from competition.load import read_relevant_clients  # noqa: E402

#: Column groups for the R^2 summary: the oracle's column name with its trailing entry / index dropped.
GROUP = re.compile(r"_-?\d+$")


def features(dirs: list[Path], clients: np.ndarray, fit_rows: np.ndarray) -> np.ndarray:
    """The blocks side by side for ``clients`` (missing rows: the block's mean), each column mapped to a standard
    normal by a quantile transform fitted on ``fit_rows`` alone. float32 (n, sum of widths)."""
    from sklearn.preprocessing import QuantileTransformer

    from embedders.base import read_block
    parts = []
    for d in dirs:
        x, _ = read_block(d).align(clients)
        qt = QuantileTransformer(n_quantiles=min(1000, len(fit_rows)), output_distribution="normal", subsample=10**9,
                                 random_state=0).fit(x[fit_rows])
        parts.append(qt.transform(x).astype(np.float32))
    return np.concatenate(parts, axis=1)


def fit_predict(x: np.ndarray, y: np.ndarray, fit_rows: np.ndarray, seed: int, hidden: int = 512,
                epochs: int = 200, patience: int = 10, log=print) -> np.ndarray:
    """A two-hidden-layer network from ``x`` to ``y`` (both (n, .) float32) trained by MSE on ``fit_rows`` (10% of
    them held out to stop at the best epoch); predictions for every row."""
    import torch
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    rows = rng.permutation(fit_rows)
    n_hold = max(1, len(rows) // 10)
    hold, train = rows[:n_hold], rows[n_hold:]
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    net = torch.nn.Sequential(torch.nn.Linear(x.shape[1], hidden), torch.nn.GELU(), torch.nn.Dropout(0.1),
                              torch.nn.Linear(hidden, hidden), torch.nn.GELU(), torch.nn.Dropout(0.1),
                              torch.nn.Linear(hidden, y.shape[1]))
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-4)
    best, best_state, stale = np.inf, None, 0
    for epoch in range(epochs):
        net.train()
        for b in np.array_split(rng.permutation(train), max(1, len(train) // 256)):
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(net(xt[b]), yt[b])
            loss.backward()
            opt.step()
        net.eval()
        with torch.no_grad():
            held = float(torch.nn.functional.mse_loss(net(xt[hold]), yt[hold]))
        if held < best - 1e-4:
            best, best_state, stale = held, {k: v.clone() for k, v in net.state_dict().items()}, 0
        else:
            stale += 1
            if stale >= patience:
                break
    log(f"  network: {epoch + 1} epochs, best held-out MSE {best:.4f} (standardised columns)")
    net.load_state_dict(best_state)
    net.eval()
    with torch.no_grad():
        return net(xt).numpy()


def r2_by_group(y: np.ndarray, pred: np.ndarray, names: list[str], rows: np.ndarray) -> dict[str, float]:
    """Mean R^2 per column group on ``rows`` (columns constant there are left out)."""
    yt, pt = y[rows], pred[rows]
    var = yt.var(axis=0)
    r2 = 1.0 - ((yt - pt) ** 2).mean(axis=0) / np.where(var > 0, var, 1.0)
    groups: dict[str, list[float]] = {}
    for j, name in enumerate(names):
        if var[j] > 0:
            groups.setdefault(GROUP.sub("", name), []).append(float(r2[j]))
    return {g: float(np.mean(v)) for g, v in groups.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python benchmarks/estimated_oracle.py", description=__doc__.split("\n\n")[0],
                                formatter_class=HelpFormatter)
    p.add_argument("--data-dir", type=Path, required=True, help="a split synthetic world (with truth/)")
    p.add_argument("--run", type=Path, required=True, help="the --out folder of `python -m submit.pack --data-dir W "
                                                           "--out O --seed S` on that world (its blocks are the inputs)")
    p.add_argument("--seed", type=int, required=True, help="the run's --seed: the network fits its search fold")
    p.add_argument("--extra", type=Path, nargs="*", default=[], help="more input block folders (input period only)")
    p.add_argument("--out", type=Path, required=True, help="the block folder to write")
    add_no_progress(p)
    args = p.parse_args(argv)
    from embedders.base import Block, read_block, write_block
    from validate.search import split_folds

    t0 = time.perf_counter()
    clients = np.sort(read_relevant_clients(args.data_dir))
    search, _ = split_folds(clients, args.seed)
    fit_rows = np.flatnonzero(np.isin(clients, search))
    report_rows = np.setdiff1d(np.arange(len(clients)), fit_rows)
    inputs = list(run_blocks(args.run).values()) + list(args.extra)
    print(f"inputs: {', '.join(d.name for d in inputs)}; fitted on {len(fit_rows):,} search-fold clients", flush=True)
    knowable = read_block(knowable_block(args.data_dir, args.seed, not args.no_progress))
    y, _ = knowable.align(clients)
    x = features(inputs, clients, fit_rows)
    pred = fit_predict(x, y, fit_rows, args.seed)
    names = knowable.meta.get("columns") or [f"column_{j}" for j in range(y.shape[1])]
    r2 = r2_by_group(y, pred, names, report_rows)
    print(f"held-out R^2 on the {len(report_rows):,} report-fold clients, by column group:")
    for g, v in sorted(r2.items(), key=lambda kv: -kv[1]):
        print(f"  {g:40s} {v:7.3f}")
    meta = {"name": args.out.name, "embedder": "estimated_oracle", "oracle": True, "seed": args.seed,
            "inputs": [str(d) for d in inputs], "r2_report_fold": r2, "columns": names,
            "seconds": round(time.perf_counter() - t0, 1)}
    write_block(Block(clients, pred, meta), args.out)
    print(f"wrote {args.out} ({len(clients):,} x {pred.shape[1]}) in {meta['seconds']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
