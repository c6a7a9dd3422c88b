"""The input event table cut from the raw one against a build from input/: seconds, peak RSS, same files.

    python benchmarks/event_table_cut.py --data-dir W [--repeats 2] [--out cut.json]

Builds the raw table first when it is not cached (not timed). Then, ``--repeats`` times, alternating in fresh
processes: the input table built from ``input/`` (``EventTable.build(..., rebuild=True)``) and the input table cut
from the raw one (:mod:`competition.events_cut`, the cached input table removed first). Each child prints its wall
seconds and peak RSS; the files of the last build and the last cut are compared byte for byte (sha256). What the
one-command run saves is the build's time minus the cut's (``submit.pipeline`` builds the raw table first when a
final stage follows).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from competition.cli import HelpFormatter  # noqa: E402

CHILD = r"""
import hashlib, json, shutil, sys, time
from competition.cli import peak_rss_mb
from competition.events import EventTable
from competition.schema import DataPaths
data_dir, how = sys.argv[1], sys.argv[2]
if how == "cut":
    for old in DataPaths(data_dir).cache.glob("events_input_*"):
        shutil.rmtree(old)
t0 = time.perf_counter()
table = EventTable.build(data_dir, "input", progress=False, rebuild=how == "build")
seconds = time.perf_counter() - t0
folder = DataPaths(data_dir).cache / f"events_input_{table.fingerprint}"
digest = {}
for p in sorted(folder.glob("*.npy")):
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            h.update(block)
    digest[p.name] = h.hexdigest()
print(json.dumps({"how": how, "seconds": round(seconds, 2), "peak_rss_mb": round(peak_rss_mb(), 1),
                  "cut": "cut_from" in table.meta, "n_events": table.n_events, "files": digest}))
"""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python benchmarks/event_table_cut.py", formatter_class=HelpFormatter,
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", required=True, type=Path, help="a split data directory")
    p.add_argument("--repeats", type=int, default=2, help="pairs of (build, cut), alternating (default 2)")
    p.add_argument("--out", type=Path, default=None, help="write the runs as JSON here")
    p.add_argument("--seed", type=int, default=0, help="unused (both are deterministic)")
    args = p.parse_args(argv)
    from competition.events import EventTable
    EventTable.build(args.data_dir, "raw", progress=False)
    runs = []
    for r in range(args.repeats):
        for how in ("build", "cut"):
            out = subprocess.run([sys.executable, "-c", CHILD, str(args.data_dir), how], cwd=ROOT, check=True,
                                 capture_output=True, text=True).stdout
            runs.append(json.loads(out.strip().splitlines()[-1]))
            print(f"[{r + 1}/{args.repeats}] {how}: {runs[-1]['seconds']:.1f} s, peak RSS "
                  f"{runs[-1]['peak_rss_mb']:,.0f} MiB, {runs[-1]['n_events']:,} events"
                  + ("" if runs[-1]["cut"] == (how == "cut") else "  (NOT the path asked for)"), flush=True)
    build = [x for x in runs if x["how"] == "build"]
    cut = [x for x in runs if x["how"] == "cut"]
    same = build[-1]["files"] == cut[-1]["files"]
    ratio = [b["seconds"] / c["seconds"] for b, c in zip(build, cut)]
    print(f"build / cut: {', '.join(f'{x:.1f}x' for x in ratio)}; the same files: {same}")
    if args.out:
        args.out.write_text(json.dumps({"runs": runs, "ratio": ratio, "same_files": same}, indent=2))
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
