"""Multitask's window cuts on the raw event table: seconds and peak RSS, this checkout against another one.

    python benchmarks/window_cuts_rss.py --data-dir W [--against OLD_CHECKOUT] [--repeats 2]

What the multitask embedder reads of the whole table before it trains (``embedders.multitask.train``): for each of
its 4 anchors, the cut of a 50,000-client training sample (``EventTable.before(anchor, client_ids=...)``) and the
window's labels (``windows_labels``: one pass over the product events for every window; window by window in
checkouts before it). At 1M clients the table's memory maps are ~11 GB; the point is how much of them stays in
the process's resident set (``competition.events.read_positions`` / ``release``). Builds the raw table first when it
is not cached (not timed). Each run is a fresh process sampling its own RSS every 50 ms; with ``--against``, that
checkout's code runs the same script, alternating with this one's, and the labels' checksums must agree.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from competition.cli import HelpFormatter  # noqa: E402

CHILD = r"""
import os, sys, threading, time
import numpy as np
from competition.events import EventTable
from competition.load import read_relevant_clients
from embedders.multitask.windows import anchor_times, window_labels
try:  # one pass for every window's labels (since issue 29); older checkouts cut them window by window
    from embedders.multitask.windows import windows_labels
except ImportError:
    windows_labels = None
from embedders.training import cap_clients
page, peak = os.sysconf("SC_PAGE_SIZE") / 2**20, [0.0]
def sample():
    while True:
        with open("/proc/self/statm") as f:
            peak[0] = max(peak[0], int(f.read().split()[1]) * page)
        time.sleep(0.05)
threading.Thread(target=sample, daemon=True).start()
events = EventTable.build(sys.argv[1], "raw", progress=False)
relevant = read_relevant_clients(sys.argv[1])
ids = cap_clients(np.sort(relevant[events.rows_of(relevant) >= 0]), 50_000, 0, "the window benchmark")
t0, check = time.perf_counter(), 0
anchors = sorted(anchor_times(events, 4))
labels = windows_labels(events, anchors, ids) if windows_labels else [window_labels(events, a, ids) for a in anchors]
for anchor, w in zip(anchors, labels):
    check += events.before(anchor, client_ids=ids).n_events
    check += int(w.no_buy.sum()) + int(sum(int(w.labels[t].sum()) + len(w.entries[t]) for t in w.labels))
print(f"{time.perf_counter() - t0:.1f} {peak[0]:.0f} {check}")
"""


def run(checkout: Path, data_dir: Path) -> tuple[float, float, int]:
    out = subprocess.run([sys.executable, "-c", CHILD, str(data_dir)], cwd=checkout, capture_output=True, text=True,
                         check=False)
    if out.returncode != 0:
        raise SystemExit(f"{checkout}: the window cuts failed:\n{out.stderr[-2000:]}")
    seconds, rss, check = out.stdout.split()
    return float(seconds), float(rss), int(check)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python benchmarks/window_cuts_rss.py", formatter_class=HelpFormatter,
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", required=True, type=Path, help="a split world (raw files)")
    parser.add_argument("--against", type=Path, default=None, help="another checkout of this repository (e.g. a "
                                                                   "git worktree of an older commit)")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each checkout, alternating")
    args = parser.parse_args(argv)
    checkouts = [("this", ROOT)] + ([("against", args.against.resolve())] if args.against else [])
    checks = set()
    for _ in range(args.repeats):
        for label, checkout in checkouts:
            seconds, rss, check = run(checkout, args.data_dir)
            checks.add(check)
            print(f"{label:8} {seconds:7.1f} s  peak RSS {rss:>8,.0f} MiB  ({checkout})", flush=True)
    if len(checks) > 1:
        print(f"the checkouts disagree: checksums {sorted(checks)}", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
