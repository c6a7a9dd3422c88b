"""Probe reports: a text table (task x block, plus the sum), the JSON with every figure, a PNG bar chart."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from competition.io import atomic_path, write_json
from competition.schema import MAX_EMBEDDING_COLUMNS


def format_table(results: Mapping[str, Mapping], tasks: Sequence[str]) -> str:
    """Rows = tasks, then "sum" and "seconds"; columns = result names. A proxy figure (LightGBM on the top
    targets of a propensity task) is marked with '*'."""
    names = list(results)
    width = max([12] + [len(n) for n in names])
    head = f"{'task':<20}" + "".join(f"{n:>{width + 2}}" for n in names)
    lines = [head, "-" * len(head)]
    proxy = False
    for task in tasks:
        cells = []
        for n in names:
            fig = results[n]["tasks"][task]
            mark = "*" if fig.get("proxy") else " "
            proxy |= bool(fig.get("proxy"))
            cells.append(f"{fig['score']:>{width + 1}.4f}{mark}")
        lines.append(f"{task:<20}" + "".join(cells))
    lines.append("-" * len(head))
    lines.append(f"{'sum':<20}" + "".join(f"{results[n]['sum']:>{width + 1}.4f} " for n in names))
    lines.append(f"{'seconds':<20}" + "".join(f"{results[n]['seconds']:>{width + 1}.1f} " for n in names))
    if all(results[n].get("blocks") for n in names):
        least = {n: min(b["covered"] for b in results[n]["blocks"]) / max(results[n]["n_clients"], 1) for n in names}
        lines.append(f"{'coverage (least)':<20}" + "".join(f"{100 * least[n]:>{width}.1f}% " for n in names))
        partial = {(b["name"], b["covered"], results[n]["n_clients"]) for n in names for b in results[n]["blocks"]
                   if b["covered"] < results[n]["n_clients"]}
        for name, covered, n in sorted(partial):
            lines.append(f"note: block {name} covers {covered:,} of {n:,} scored clients; the other {n - covered:,} "
                         f"got its column means")
    for n in names:
        if results[n].get("over_limit"):
            lines.append(f"note: {n} is {results[n]['dim']:,} columns wide, over the submission limit of "
                         f"{MAX_EMBEDDING_COLUMNS:,}: a probe of an over-wide block, not of a possible submission")
    if proxy:
        lines.append("* proxy: LightGBM on the most popular targets only, not the organisers' score")
    if any(r.get("probe") == "mlp" and not r.get("replica") for r in results.values()):
        lines.append("note: MLP with non-default width: NOT the organisers' replica")
    return "\n".join(lines)


def bar_chart(results: Mapping[str, Mapping], tasks: Sequence[str], path: str | Path, title: str = "") -> Path:
    """Grouped bars (one group per task, one bar per result) and the sum, as a PNG (matplotlib, Agg)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    width = min(16.0, 3.0 + len(tasks) * (0.5 + 0.3 * len(names)))
    fig, (ax, ax_sum) = plt.subplots(1, 2, figsize=(width, 4.5),
                                     gridspec_kw={"width_ratios": [max(len(tasks), 1), 1.2]})
    x = np.arange(len(tasks))
    w = 0.8 / max(len(names), 1)
    for i, n in enumerate(names):
        ax.bar(x + (i - (len(names) - 1) / 2) * w, [results[n]["tasks"][t]["score"] for t in tasks], w, label=n)
        ax_sum.bar(i, results[n]["sum"], 0.8)
    ax.set_xticks(x, tasks, rotation=30, ha="right")
    ax.set_ylabel("score")
    lows = [results[n]["tasks"][t]["score"] for n in names for t in tasks]
    ax.set_ylim(max(0.0, min(lows) - 0.05), min(1.0, max(lows) + 0.05) if lows else 1.0)
    ax.legend(fontsize=7, loc="lower left", bbox_to_anchor=(0, 1.01), ncol=min(len(names), 4), frameon=False)
    sums = [results[n]["sum"] for n in names]
    ax_sum.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=7)
    ax_sum.set_ylim(max(0.0, min(sums) - 0.25), max(sums) + 0.1)
    ax_sum.set_title(f"sum of {len(tasks)} task(s)", fontsize=9)
    fig.suptitle(title, fontsize=10)
    return save_png(fig, path)


def save_png(fig, path: str | Path, layout: bool = True) -> Path:
    """Write a matplotlib figure as a PNG atomically (tight layout first unless ``layout`` is False), close it."""
    import matplotlib.pyplot as plt

    if layout:
        fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path


def write_report(report: Mapping, out: str | Path) -> tuple[Path, Path]:
    """``out`` (JSON) and the bar chart beside it (same stem, .png). Returns both paths."""
    out = Path(out)
    json_path = write_json(report, out)
    title = f"probe: {report.get('probe')}  data: {Path(str(report.get('data_dir', ''))).name}"
    png_path = bar_chart(report["results"], report["tasks"], out.with_suffix(".png"), title)
    return json_path, png_path
