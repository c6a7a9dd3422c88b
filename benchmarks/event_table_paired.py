"""The event table's build against its floor and against another checkout's build, alternating, the same bytes.

    python benchmarks/event_table_paired.py --data-dir W [--against OLD_CHECKOUT] [--repeats 2] [--layout input]

Each round runs, in fresh processes one after the other: the floor (``benchmarks/event_table_floor.py``), this
checkout's build (``EventTable.build(W, layout, rebuild=True)``) and, with ``--against``, the other checkout's
build into the same cache folder. After each build a digest of every file of the table (manifest's build time
aside) is taken; the builds must agree byte for byte or the script stops. Prints seconds and peak RSS (``wait4``'s
rusage) per run and each build's ratio to the floor of its round. Measure on an otherwise idle machine.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_embedders import _run  # noqa: E402
from competition.cli import HelpFormatter  # noqa: E402
from competition.schema import DataPaths  # noqa: E402

BUILD = ("import sys; sys.path.insert(0, sys.argv[1]); from competition.events import EventTable; "
         "EventTable.build(sys.argv[2], sys.argv[3], progress=False, rebuild=True)")


def table_digest(data_dir: Path, layout: str) -> str:
    """sha256 over the files of the (one) cached table of ``layout``, in name order; the manifest without its
    build time."""
    folders = sorted(DataPaths(data_dir).cache.glob(f"events_{layout}_*"))
    folders = [f for f in folders if f.is_dir() and (f / "manifest.json").is_file()]
    if len(folders) != 1:
        raise SystemExit(f"event_table_paired: expected one {layout} table under {DataPaths(data_dir).cache}, "
                         f"found {len(folders)}")
    h = hashlib.sha256()
    for path in sorted(folders[0].iterdir()):
        h.update(path.name.encode())
        if path.name == "manifest.json":
            manifest = json.loads(path.read_text())
            manifest.pop("build_seconds", None)
            h.update(json.dumps(manifest, sort_keys=True).encode())
            continue
        with open(path, "rb") as f:
            while block := f.read(1 << 24):
                h.update(block)
    return h.hexdigest()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python benchmarks/event_table_paired.py", description=__doc__.split("\n\n")[0],
                                formatter_class=HelpFormatter)
    p.add_argument("--data-dir", required=True, type=Path, help="a split data directory")
    p.add_argument("--against", type=Path, default=None, help="another checkout whose build runs in turn")
    p.add_argument("--repeats", type=int, default=2, help="rounds (default 2)")
    p.add_argument("--layout", default="input", choices=["input", "raw"], help="which table (default input)")
    p.add_argument("--no-digest", action="store_true", help="skip the byte comparison (faster)")
    args = p.parse_args(argv)
    py = sys.executable
    runs = [("floor", [py, str(ROOT / "benchmarks" / "event_table_floor.py"), "--data-dir", str(args.data_dir),
                       "--layout", args.layout])]
    runs.append(("this", [py, "-c", BUILD, str(ROOT), str(args.data_dir), args.layout]))
    if args.against is not None:
        runs.append(("against", [py, "-c", BUILD, str(args.against.resolve()), str(args.data_dir), args.layout]))
    digests: dict[str, str] = {}
    rows = []
    for r in range(args.repeats):
        order = runs if r % 2 == 0 else [runs[0], *runs[:0:-1]]  # the builds alternate which goes first
        floor = None
        for name, cmd in order:
            code, secs, rss = _run(cmd, 0, True)
            if code != 0:
                raise SystemExit(f"event_table_paired: {name} failed (exit {code}): {' '.join(cmd)}")
            if name == "floor":
                floor = secs
            elif not args.no_digest:
                digests.setdefault(name, table_digest(args.data_dir, args.layout))
                if len(set(digests.values())) > 1:
                    raise SystemExit(f"event_table_paired: the builds differ: {digests}")
            ratio = "" if name == "floor" else f"  {secs / floor:.2f}x the floor"
            rows.append(f"round {r + 1}  {name:8s} {secs:7.1f} s  peak RSS {rss:8,.0f} MiB{ratio}")
            print(rows[-1], flush=True)
    if digests:
        print(f"tables: {'identical' if len(set(digests.values())) == 1 else 'DIFFER'} "
              f"({next(iter(digests.values()))[:16]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
