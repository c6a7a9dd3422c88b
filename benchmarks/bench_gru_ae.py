"""Measurements of the GRU autoencoder (a script, not a test). Run from the repository root, e.g. with ``nice -n 10``.

``throughput``: training events/s per variant (preset sizes) over a bounded number of batches of the first epoch's
shuffled, length-bucketed batch list (a random sample of the epoch), and the epoch time extrapolated from it.

    python benchmarks/bench_gru_ae.py throughput --data-dir W --batches 10 [--variants day_event all week_all]

``full``: wall time of a whole CLI run (tokenise, train, pick the best epoch, embed, write the block).

    python benchmarks/bench_gru_ae.py full --data-dir W --variant week_all --epochs 1

``sku-init``: the four sku tables (and delta-max values) on one world: sku reconstruction accuracy on the held-out
clients bucketed by training frequency, and the LightGBM probe on propensity_sku / propensity_new_sku.

    python benchmarks/bench_gru_ae.py sku-init --data-dir W --dim 64 --field-dim 64 --epochs 3 --sku-cap 100

Each command prints a markdown table and, with ``--out``, writes the figures as JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from competition.events import EventTable  # noqa: E402
from competition.load import read_relevant_clients  # noqa: E402
from competition.schema import PROPENSITY_NEW_SKU, PROPENSITY_SKU  # noqa: E402
from embedders.gru_ae import PRESETS, GruAE  # noqa: E402
from embedders.gru_ae.evaluate import BUCKETS, sku_accuracy_by_frequency  # noqa: E402
from embedders.gru_ae.tokens import MAX_EVENTS  # noqa: E402

SKU_SETTINGS = (("id", None), ("content-frozen", None), ("content-finetune", None), ("content", 0.1),
                ("content", 0.3), ("content", 0.5), ("content", 1.0))


def _machine() -> str:
    load = os.getloadavg()
    return (f"{os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads, "
            f"load average {load[0]:.1f}")


def throughput(args) -> dict:
    events = EventTable.build(args.data_dir, "input", progress=False)
    out = {"machine": _machine(), "data_dir": str(args.data_dir), "batches": args.batches, "variants": {}}
    for variant in args.variants:
        emb = GruAE(variant=variant, epochs=1, holdout=0.0, max_batches=args.batches, device=args.device,
                    work_dir=args.work / variant, progress=False, seed=args.seed, threads=args.threads)
        t0 = time.perf_counter()
        emb.fit(events)
        total = time.perf_counter() - t0
        h = emb.history_[0]
        rows = emb._train_rows(events)
        n_events = int(np.minimum(events.lengths[rows], MAX_EVENTS).sum())
        rate = h["events_per_second"]
        out["variants"][variant] = {
            "events_per_second": rate, "measured_batches": h["batches"], "measured_seconds": h["seconds"],
            "setup_seconds": round(total - h["seconds"], 1), "epoch_events": n_events,
            "epoch_batches": -(-len(rows) // emb.batch_size),
            "epoch_minutes_extrapolated": round(n_events / rate / 60, 1),
            "parameters": sum(p.numel() for p in emb.model_.parameters())}
        print(f"{variant}: {rate:,.0f} events/s over {h['batches']} batches -> epoch of {n_events:,} events "
              f"~ {n_events / rate / 60:.1f} min", flush=True)
    lines = ["| variant | params | events/s (CPU) | measured batches | events per epoch | epoch (min, extrapolated) |",
             "|---|---|---|---|---|---|"]
    for v, r in out["variants"].items():
        lines.append(f"| {v} | {r['parameters']:,} | {r['events_per_second']:,.0f} | {r['measured_batches']} | "
                     f"{r['epoch_events']:,} | {r['epoch_minutes_extrapolated']} |")
    out["table"] = "\n".join(lines)
    return out


def full(args) -> dict:
    out_dir = args.work / f"full_{args.variant}"
    cmd = [sys.executable, "-m", "embedders.gru_ae", "--data-dir", str(args.data_dir), "--out", str(out_dir),
           "--variant", args.variant, "--epochs", str(args.epochs), "--seed", str(args.seed), "--no-progress",
           "--device", args.device, "--threads", str(args.threads), *args.extra]
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, check=True)
    wall = time.perf_counter() - t0
    meta = json.loads((out_dir / "meta.json").read_text())
    res = {"machine": _machine(), "command": " ".join(cmd[1:]), "wall_seconds": round(wall, 1),
           "history": meta["history"], "n_clients": meta["n_clients"], "n_events": meta["n_events"],
           "peak_rss_mb": meta["peak_rss_mb"]}
    epochs = " / ".join(f"{h['seconds']:.0f}s ({h['events_per_second']:,.0f} ev/s)" for h in meta["history"])
    res["table"] = (f"| variant | clients | epochs | wall time | per epoch |\n|---|---|---|---|---|\n"
                    f"| {args.variant} | {meta['n_clients']:,} | {args.epochs} | {wall / 60:.1f} min | {epochs} |")
    return res


def _delta_stats(table) -> dict | None:
    """Row norms of the trained deltas (None without deltas): mean, max, share within 1% of delta-max."""
    if table.delta is None or len(table.delta) == 0:
        return None
    n = table.delta.detach().norm(dim=1).cpu().numpy()
    return {"mean": round(float(n.mean()), 4), "max": round(float(n.max()), 4),
            "at_bound": round(float((n >= 0.99 * table.delta_max).mean()), 3) if table.bounded else None}


def sku_init(args) -> dict:
    from validate.probe import score_blocks

    events = EventTable.build(args.data_dir, "input", progress=False)
    relevant = read_relevant_clients(args.data_dir)
    out = {"machine": _machine(), "data_dir": str(args.data_dir), "runs": []}
    for mode, delta_max in SKU_SETTINGS:
        label = mode if delta_max is None else f"{mode} (delta-max {delta_max})"
        t0 = time.perf_counter()
        emb = GruAE(variant=args.variant, dim=args.dim, field_dim=args.field_dim, layers=args.layers,
                    epochs=args.epochs, seed=args.seed, sku_init=mode, delta_max=delta_max or 0.5,
                    sku_cap=args.sku_cap, holdout=args.holdout, batch_size=args.batch_size, device=args.device,
                    progress=False, threads=args.threads,
                    work_dir=args.work / f"sku_{mode}_{delta_max}").fit(events)
        acc = sku_accuracy_by_frequency(emb, events, emb.holdout_rows_)
        block = emb.transform(events, relevant)
        block.meta["name"] = label
        probe = score_blocks(args.data_dir, [block], [PROPENSITY_SKU, PROPENSITY_NEW_SKU], "lgbm", args.seed,
                             progress=False)
        run = {"setting": label, "accuracy": acc, "probe": {t: probe["tasks"][t]["score"] for t in probe["tasks"]},
               "probe_auroc": {t: probe["tasks"][t].get("auroc") for t in probe["tasks"]},
               "best_heldout_loss": emb.best_loss_, "seconds": round(time.perf_counter() - t0, 1),
               "delta": _delta_stats(emb.model_.sku)}
        out["runs"].append(run)
        print(json.dumps(run), flush=True)
    names = [b[0] for b in BUCKETS]
    lines = ["| sku table | " + " | ".join(f"acc {n} (n)" for n in names) + " | acc all | held-out loss | "
             "probe propensity_sku | probe propensity_new_sku | delta norm mean / max (at bound) |",
             "|---|" + "---|" * (len(names) + 5)]
    for r in out["runs"]:
        a = r["accuracy"]
        cells = [f"{a[n]['accuracy']:.3f} ({a[n]['n']})" for n in names]
        lines.append(f"| {r['setting']} | " + " | ".join(cells) + f" | {a['all']['accuracy']:.3f} | "
                     f"{r['best_heldout_loss']:.3f} | {r['probe'][PROPENSITY_SKU]:.4f} | "
                     f"{r['probe'][PROPENSITY_NEW_SKU]:.4f} | {_delta_cell(r['delta'])} |")
    out["table"] = "\n".join(lines)
    return out


def _delta_cell(d: dict | None) -> str:
    if d is None:
        return "-"
    return f"{d['mean']:.3f} / {d['max']:.3f}" + (f" ({d['at_bound']:.0%})" if d["at_bound"] is not None else "")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="what", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data-dir", type=Path, required=True, help="a split world")
    common.add_argument("--work", type=Path, default=Path("/tmp/bench_gru_ae"), help="scratch folder")
    common.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    common.add_argument("--seed", type=int, default=0)
    common.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    common.add_argument("--out", type=Path, default=None, help="JSON file for the figures")
    t = sub.add_parser("throughput", parents=[common], help="events/s per variant on a bounded number of batches")
    t.add_argument("--variants", nargs="+", default=list(PRESETS), choices=list(PRESETS))
    t.add_argument("--batches", type=int, default=10, help="batches measured per variant")
    f = sub.add_parser("full", parents=[common], help="wall time of a whole CLI run")
    f.add_argument("--variant", default="week_all", choices=list(PRESETS))
    f.add_argument("--epochs", type=int, default=1)
    f.add_argument("extra", nargs="*", help="more CLI flags after --")
    s = sub.add_parser("sku-init", parents=[common], help="the sku-table comparison")
    s.add_argument("--variant", default="all", choices=["all", "week_all"])
    s.add_argument("--dim", type=int, default=64)
    s.add_argument("--field-dim", type=int, default=64)
    s.add_argument("--layers", type=int, default=1)
    s.add_argument("--epochs", type=int, default=3)
    s.add_argument("--holdout", type=float, default=0.2)
    s.add_argument("--sku-cap", type=int, default=100, help="kept skus of the id table")
    s.add_argument("--batch-size", type=int, default=256)
    args = p.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    res = {"throughput": throughput, "full": full, "sku-init": sku_init}[args.what](args)
    print(res["table"])
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(res, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
