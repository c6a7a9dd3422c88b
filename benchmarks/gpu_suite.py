"""Everything that needs a GPU, in one command that fits about 9 minutes on one H200, printing one table.

    python benchmarks/gpu_suite.py [--root /tmp/gpu_suite] [--clients 100000] [--agree-clients 50000]
    python benchmarks/gpu_suite.py --dry-run        # the same steps at toy sizes on a CPU (minutes): checks the script

Steps (each under its own time limit; a step that fails or runs out of time is reported, the others still run):

1. ``world``: a synthetic world of ``--clients`` relevant clients (seed 9001, which no test or default uses);
2. ``pipeline``: the one-command run on it (``python -m submit.pack --data-dir W --out O``) with the GPU presets,
   the replica deciding (``--decision-probe mlp``, ladder ``--decide-clients``), its report's choice, the
   decision's table and the wall time per stage;
3. ``agreement``: the fp32 replica on ``--agree-clients`` report-fold clients as the reference for every probe
   (``mlp16``, ``narrow``, ``linear``, ``lgbm``) over 8+ candidates (the run's blocks alone and four ensembles):
   Spearman per task and of the six-task sums, each probe's largest difference from the replica;
4. ``cuda checks``: ``benchmarks/check_cuda.py`` (GRU batch independence, CUDA vs CPU paths, replica CUDA vs CPU).

Writes ``ROOT/gpu_suite.json`` with every figure. The machine is lent for ~15 minutes in all: run it once with a
timeout that leaves room for a rerun (``--budget-minutes``, default 9, is split between the steps).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORLD_SEED = 9001
#: Share of --budget-minutes each step may take (what is left over passes on to the next steps).
SHARES = {"world": 0.12, "pipeline": 0.45, "agreement": 0.35, "cuda checks": 0.08}
ENSEMBLES = ("stats+multitask", "stats+tfidf_svd+multitask", "stats+tfidf_svd+item2vec+gru_ae+multitask",
             "stats@32+multitask@64")


def run_step(name: str, cmd: list[str], limit_s: float, log: Path) -> dict:
    """Run ``cmd`` (output to ``log``) for at most ``limit_s`` seconds; returns its record."""
    t0 = time.perf_counter()
    with open(log, "w") as f:
        try:
            rc = subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, timeout=max(limit_s, 1.0),
                                env=dict(os.environ, PYTHONPATH=str(ROOT))).returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
    seconds = time.perf_counter() - t0
    print(f"[{name}] {'ok' if rc == 0 else f'FAILED ({rc})'} in {seconds:.0f} s (log {log})", flush=True)
    return {"step": name, "rc": rc, "seconds": round(seconds, 1), "log": str(log)}


def pipeline_figures(out: Path) -> dict:
    """The run's choice, decision and stage times from its report.json."""
    report = json.loads((out / "run" / "report.json").read_text())
    decision = report.get("decision") or {}
    return {"shipped": [b["name"] for b in report["chosen"]], "searched": [b["name"] for b in report["searched"]],
            "decision_probe": decision.get("probe"), "decision_sizes": decision.get("sizes"),
            "decision": {c["name"]: c["scores"] for c in decision.get("candidates", [])},
            "choice": (decision.get("choice") or {}).get("name"), "rule": decision.get("rule"),
            "ranking_stable": (decision.get("curves") or {}).get("stable"),
            "stages": {s["stage"]: s["seconds"] for s in report["stages"]}, "table_probe": report["probe"],
            "table": {n: r["sum"] for n, r in report["results"].items()}}


def agreement_figures(path: Path) -> dict:
    """Per probe: Spearman with the replica (sums, worst task) and its largest |difference| of six-task sums."""
    summary = json.loads(path.read_text())
    res = summary["results"]
    ref = res.get("mlp", {})
    out = {"n_clients": summary.get("n_clients"), "candidates": list(ref), "replica": {n: v["sum"] for n, v in
                                                                                      ref.items()}}
    for probe, agree in summary.get("agreement", {}).items():
        diffs = [abs(res[probe][n]["sum"] - ref[n]["sum"]) for n in ref if n in res.get(probe, {})]
        out[probe] = {"spearman_sum": agree.get("spearman_sum"), "worst_task": agree.get("worst_task"),
                      "time_ratio": agree.get("time_ratio"),
                      "max_abs_difference": max(diffs) if diffs else None,
                      "sums": {n: v["sum"] for n, v in res.get(probe, {}).items()}}
    return out


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.3f}"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", type=Path, default=Path("/tmp/gpu_suite"), help="work folder (world, run, logs)")
    p.add_argument("--clients", type=int, default=100_000, help="relevant clients of the world")
    p.add_argument("--agree-clients", type=int, default=50_000, help="report-fold clients of the agreement")
    p.add_argument("--decide-clients", type=int, nargs="+", default=[10_000, 20_000, 50_000],
                   help="the decision's ladder in the one-command run")
    p.add_argument("--budget-minutes", type=float, default=9.0, help="all steps together")
    p.add_argument("--dry-run", action="store_true",
                   help="toy sizes on a CPU (the script's own check): 3,000 clients, the quick preset, small nets")
    args = p.parse_args()
    if args.dry_run:
        args.clients, args.agree_clients, args.decide_clients = 3_000, 600, [300, 600]
    args.root.mkdir(parents=True, exist_ok=True)
    world, out, agree = args.root / "world", args.root / "run", args.root / "agreement.json"
    py = sys.executable
    budget = 60.0 * args.budget_minutes
    t_start = time.perf_counter()

    def limit(step: str) -> float:  # the step's share of the budget, plus whatever earlier steps left unused
        spent = time.perf_counter() - t_start
        later = sum(v for k, v in SHARES.items() if list(SHARES).index(k) > list(SHARES).index(step))
        return max(budget - spent - later * budget, SHARES[step] * budget * 0.5)

    records, figures = [], {}
    records.append(run_step("world", [py, "-m", "competition.synth", "--out", str(world), "--clients",
                                      str(args.clients), "--seed", str(WORLD_SEED), "--no-progress"],
                            limit("world"), args.root / "world.log"))
    pack = [py, "-m", "submit.pack", "--data-dir", str(world), "--out", str(out), "--no-progress",
            "--decide-clients", *map(str, args.decide_clients), "--trials", "4", "--epochs", "1"]
    pack += ["--quick", "--decision-probe", "mlp16"] if args.dry_run else ["--decision-probe", "mlp"]
    records.append(run_step("pipeline", pack, limit("pipeline"), args.root / "pipeline.log"))
    if records[-1]["rc"] == 0:
        figures["pipeline"] = pipeline_figures(out)
    blocks = out / "run" / "blocks"
    names = [n for n in ("stats", "tfidf_svd", "item2vec", "gru_ae", "multitask") if (blocks / n).is_dir()]
    agree_cmd = [py, "-m", "validate.agreement", "--data-dir", str(world),
                 "--embeddings-dir", *[str(blocks / n) for n in names],
                 "--ensembles", *[e for e in ENSEMBLES if all(x.split("@")[0] in names for x in e.split("+"))],
                 "--probes", "mlp16", "narrow", "linear", "lgbm", "--clients", str(args.agree_clients),
                 "--fold", "report", "--seed", "0", "--no-progress", "--out", str(agree)]
    if args.dry_run:
        agree_cmd += ["--mlp-width", "64", "128"]
    records.append(run_step("agreement", agree_cmd, limit("agreement"), args.root / "agreement.log")
                   if names else {"step": "agreement", "rc": "no blocks", "seconds": 0.0})
    if agree.is_file():  # partial results count too: it writes after every score
        figures["agreement"] = agreement_figures(agree)
    cuda = [py, str(ROOT / "benchmarks" / "check_cuda.py"), "--out", str(args.root / "check_cuda.json")]
    if args.dry_run:
        cuda += ["--device", "cpu", "--clients", "100"]
    records.append(run_step("cuda checks", cuda, limit("cuda checks"), args.root / "check_cuda.log"))

    print("\n| step | result | seconds |\n|---|---|---|")
    for r in records:
        print(f"| {r['step']} | {'ok' if r['rc'] == 0 else r['rc']} | {r['seconds']:.0f} |")
    if "pipeline" in figures:
        f = figures["pipeline"]
        print(f"\npipeline: searched {' + '.join(f['searched'])}; shipped {' + '.join(f['shipped'])} "
              f"(decision {f['decision_probe']} at {f['decision_sizes']}, chose {f['choice']}, ranking stable "
              f"{f['ranking_stable']}); stages " + ", ".join(f"{k} {v:.0f}s" for k, v in f["stages"].items()))
        for name, scores in f["decision"].items():
            print(f"  {name}: " + ", ".join(f"{n} clients {v['sum']:.4f}" for n, v in scores.items()))
    if "agreement" in figures:
        a = figures["agreement"]
        print(f"\nagreement on {a['n_clients']} clients, {len(a['candidates'])} candidates; replica sums: "
              + ", ".join(f"{n} {v:.4f}" for n, v in a["replica"].items()))
        print("| probe | Spearman (sums) | worst task | max abs difference from the replica | time / replica |\n"
              "|---|---|---|---|---|")
        for probe in ("mlp16", "narrow", "linear", "lgbm"):
            if probe in a:
                q = a[probe]
                print(f"| {probe} | {_fmt(q['spearman_sum'])} | {_fmt(q['worst_task'])} | "
                      f"{_fmt(q['max_abs_difference'])} | {_fmt(q['time_ratio'])} |")
    total = time.perf_counter() - t_start
    print(f"\ntotal {total / 60:.1f} min (budget {args.budget_minutes:g} min)")
    (args.root / "gpu_suite.json").write_text(json.dumps({"records": records, "figures": figures,
                                                          "seconds": round(total, 1)}, indent=1, default=str))
    return 0 if all(r["rc"] == 0 for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
