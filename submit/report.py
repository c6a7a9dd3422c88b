"""The run report of a pipeline run (:mod:`submit.pipeline`): ``report.md`` and its PNGs in the run folder.

What a person should see at a glance (docs/design.md, "submit"):

- ``scores_vs_baseline.png``: per task, every candidate's score minus the stats baseline's (and the sum of the
  tasks), one bar per candidate; ``scores.png``: the absolute scores (:func:`validate.report.bar_chart`);
- the score table: rows = named candidates (:class:`Row`: each block alone, the packed submission, the oracle on
  synthetic worlds, any later row such as a replica confirmation), with per-task scores, the sum, the difference to
  the baseline and the probe that produced the figures (LightGBM figures are labelled "proxy");
- ``search.png``: the search history (each trial's objective, pruned trials marked, the best so far);
- ``columns.png``: the columns each block contributes to the packed matrix (local and final submission);
- ``stages.png``: wall time and peak RSS per stage.

Everything is drawn with matplotlib's Agg backend; files are written atomically.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from competition.io import atomic_path
from validate.report import bar_chart, save_png

#: PNG files of the report, by what they show.
PNGS = {"vs_baseline": "scores_vs_baseline.png", "scores": "scores.png", "search": "search.png",
        "columns": "columns.png", "stages": "stages.png"}
REPORT_MD = "report.md"
#: Fixed colours of the rows with a special role (blocks take the other tab10 colours).
ROLE_COLOURS = {"baseline": "#7f7f7f", "packed": "#d62728", "oracle": "#2ca02c"}


@dataclass
class Row:
    """One named candidate of the score table: per-task scores (task -> score) from one probe.

    role: "baseline", "block", "packed", "oracle" or any other word (drawn in a neutral colour); probe: the label
    of the probe that produced the figures, e.g. :func:`probe_label`; note: free text shown in the table."""

    name: str
    tasks: dict[str, float]
    probe: str
    role: str = "block"
    n_clients: int | None = None
    dim: int | None = None
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def sum(self) -> float:
        return float(sum(self.tasks.values()))

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "sum": self.sum}


#: Words for each probe's figures; every probe but the replica is a proxy of the organisers' score.
PROBE_LABELS = {"mlp16": "the replica net at bf16, not the score", "lgbm": "LightGBM (proxy)",
                "narrow": "narrow MLP (proxy)", "linear": "linear (proxy)"}


def probe_label(result: Mapping[str, Any] | str) -> str:
    """"MLP replica" for the organisers' network, else the probe's name with "(proxy)", for a
    :func:`validate.probe.score_matrix` result (or a probe name)."""
    probe = result if isinstance(result, str) else result.get("probe")
    if probe == "mlp":
        replica = True if isinstance(result, str) else result.get("replica")
        return "MLP replica" if replica else "MLP, other widths (proxy)"
    return PROBE_LABELS.get(str(probe), f"{probe} (proxy)")


def rows_from_results(results: Mapping[str, Mapping[str, Any]], baseline: str | None = None,
                      packed: str | None = None) -> list[Row]:
    """:class:`Row` objects of probe results keyed by name (``baseline`` / ``packed``: the names given those
    roles)."""
    rows = []
    for name, res in results.items():
        role = "baseline" if name == baseline else "packed" if name == packed else "block"
        rows.append(Row(name, {t: float(f["score"]) for t, f in res["tasks"].items()}, probe_label(res), role,
                        res.get("n_clients"), res.get("dim")))
    return rows


def oracle_row(data_dir: str | Path, clients: np.ndarray, tasks: Sequence[str], probe: str, seed: int) -> Row | None:
    """The oracle's row from :mod:`validate.oracle` (the world's true latents scored like a block), or None when
    its API does not offer a block of latents we can score."""
    from validate import oracle
    from validate.probe import score_blocks

    make = getattr(oracle, "oracle_block", None)
    if make is None:
        return None
    block = make(data_dir, progress=False, seed=seed, client_ids=clients)  # only the table's clients
    res = score_blocks(data_dir, [block], tasks, probe=probe, seed=seed, clients=clients, progress=False)
    return Row("oracle (true latents)", {t: float(f["score"]) for t, f in res["tasks"].items()},
               probe_label(res), "oracle", res.get("n_clients"), res.get("dim"),
               "the synthetic world's latents: an upper reference, not a submission")


# ---------------------------------------------------------------------------------------------------------------
# Charts
# ---------------------------------------------------------------------------------------------------------------
def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def vs_baseline_chart(rows: Sequence[Row], baseline: str, tasks: Sequence[str], path: Path, title: str) -> Path:
    """Per task, each non-baseline row's score minus the baseline's, and the same for the sum of the tasks; the
    legend (below) names each row's probe."""
    plt = _plt()
    base = next(r for r in rows if r.name == baseline)
    others = [r for r in rows if r.name != baseline]
    fig, (ax, ax_sum) = plt.subplots(1, 2, figsize=(4.5 + 1.3 * len(tasks) + 0.35 * len(others), 5.0),
                                     gridspec_kw={"width_ratios": [max(len(tasks), 1) * 1.2,
                                                                   max(1.4, 0.35 * len(others))]})
    x = np.arange(len(tasks))
    w = 0.8 / max(len(others), 1)
    palette = [c for i, c in enumerate(plt.get_cmap("tab10").colors) if i not in (2, 3, 7)]  # green/red/grey: roles
    k = 0
    for i, r in enumerate(others):
        if r.role in ("packed", "oracle"):
            colour = ROLE_COLOURS[r.role]
        else:
            colour, k = palette[k % len(palette)], k + 1
        edge = dict(edgecolor="black", linewidth=1.0) if r.role == "packed" else {}
        ax.bar(x + (i - (len(others) - 1) / 2) * w, [r.tasks[t] - base.tasks[t] for t in tasks], w,
               label=f"{r.name} [{r.probe}]", color=colour, **edge)
        ax_sum.bar(i, r.sum - base.sum, 0.8, color=colour, **edge)
    for a in (ax, ax_sum):
        a.axhline(0.0, color="black", linewidth=0.8)
        a.grid(axis="y", alpha=0.3)
    ax.set_xticks(x, tasks, rotation=20, ha="right")
    ax.set_ylabel(f"score minus {baseline}")
    ax.set_title("per task", fontsize=9)
    ax_sum.set_xticks(range(len(others)), [r.name for r in others], rotation=35, ha="right", fontsize=7)
    ax_sum.set_title(f"sum of {len(tasks)} task(s)\n({baseline}: {base.sum:.4f})", fontsize=9)
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, loc="lower center", ncol=min(len(others), 3), frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.06 + 0.035 * ((len(others) + 2) // 3), 1, 1))
    return save_png(fig, path, layout=False)


def search_chart(history: Sequence[Mapping[str, Any]], path: Path, title: str) -> Path:
    """Each trial's objective (mean task score on the search fold) over the trial number, pruned trials marked at
    the bottom, and the best so far."""
    plt = _plt()
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(7.5, 4.0))
    done = [(t["number"], t["value"]) for t in history if t.get("value") is not None]
    pruned = [t["number"] for t in history if t.get("value") is None]
    if done:
        n, v = map(np.asarray, zip(*done))
        ax.plot(n, v, "o", color="#1f77b4", label="trial objective")
        ax.step(n, np.maximum.accumulate(v), where="post", color="#d62728", label="best so far")
        if pruned:
            ax.plot(pruned, np.full(len(pruned), v.min()), "x", color="#7f7f7f",
                    label="pruned (no block or > 2048 columns)")
        best = int(n[np.argmax(v)])
        ax.annotate(f"best: trial {best}, {v.max():.4f}", (best, v.max()), textcoords="offset points",
                    xytext=(6, 6), fontsize=8)
    else:
        ax.text(0.5, 0.5, "no finished trial", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlim(-0.5, max([t["number"] for t in history] + [0]) + 0.5)
    ax.margins(y=0.15)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("trial")
    ax.set_ylabel("mean task score, search fold")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(title, fontsize=9)
    return save_png(fig, path)


def columns_chart(columns: Mapping[str, Mapping[str, int]], path: Path) -> Path:
    """One stacked horizontal bar per submission (local, final): the columns each block contributes."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 1.2 + 0.6 * len(columns)))
    names = sorted({b for cols in columns.values() for b in cols})
    cmap = plt.get_cmap("tab10")
    for y, (sub, cols) in enumerate(columns.items()):
        left = 0
        for i, b in enumerate(names):
            width = cols.get(b, 0)
            if width:
                ax.barh(y, width, left=left, color=cmap(i % 10), label=b if y == 0 else None)
                ax.text(left + width / 2, y, str(width), ha="center", va="center", fontsize=8, color="white")
                left += width
    ax.set_yticks(range(len(columns)), [f"{k} ({sum(v.values())})" for k, v in columns.items()])
    ax.set_xlabel("columns of the packed matrix")
    ax.legend(fontsize=7, ncol=min(len(names), 5), loc="lower left", bbox_to_anchor=(0, 1.0), frameon=False)
    return save_png(fig, path)


def stages_chart(stages: Sequence[Mapping[str, Any]], path: Path, rss_scope: str) -> Path:
    """Wall seconds and peak RSS per stage, side by side."""
    plt = _plt()
    fig, (a, b) = plt.subplots(1, 2, figsize=(9.0, 1.2 + 0.45 * len(stages)))
    names = [s["stage"] for s in stages][::-1]
    secs = [s["seconds"] for s in stages][::-1]
    rss = [s["peak_rss_mb"] / 1024 for s in stages][::-1]
    a.barh(names, secs, color="#1f77b4")
    b.barh(names, rss, color="#ff7f0e")
    for ax_, vals, fmt in ((a, secs, "{:.1f}s"), (b, rss, "{:.2f} GiB")):
        for y, v in enumerate(vals):
            ax_.text(v, y, " " + fmt.format(v), va="center", fontsize=8)
        ax_.set_xlim(0, max(vals + [1e-9]) * 1.3)
    a.set_xlabel("wall time (s)")
    b.set_xlabel(f"peak RSS (GiB, {rss_scope})")
    b.set_yticks(range(len(names)), [""] * len(names))
    return save_png(fig, path)


# ---------------------------------------------------------------------------------------------------------------
# Markdown
# ---------------------------------------------------------------------------------------------------------------
def rows_table(rows: Sequence[Row], tasks: Sequence[str], baseline: str | None = None) -> str:
    """Markdown table: one line per row (name, probe, dim, per-task scores, sum, sum minus the baseline's)."""
    base = next((r for r in rows if r.name == baseline), None)
    head = ["candidate", "probe", "dim", *tasks, "sum"] + (["vs " + baseline] if base else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        name = f"**{r.name}**" if r.role == "packed" else r.name
        cells = [name, r.probe, "" if r.dim is None else str(r.dim),
                 *(f"{r.tasks[t]:.4f}" if t in r.tasks else "" for t in tasks), f"{r.sum:.4f}"]
        if base:
            cells.append("" if r is base else f"{r.sum - base.sum:+.4f}")
        lines.append("| " + " | ".join(cells) + " |")
    notes = [f"- {r.name}: {r.note}" for r in rows if r.note]
    return "\n".join(lines + ([""] + notes if notes else []))


def _fmt_size(size: Mapping[str, Any]) -> str:
    keys = ("trials", "epochs", "search_clients", "search_timeout", "clients")
    return ", ".join(f"{k} {size[k]:g}" if isinstance(size[k], float) else f"{k} {size[k]}" for k in keys if k in size)


def decision_section(decision: Mapping[str, Any] | None, searched: Sequence[Mapping] | None) -> list[str]:
    """The report's "Decision" section: what the organisers' network chose among the short list, and why."""
    lines = ["## Decision", ""]
    if not decision:
        return lines + ["No decision stage ran (`--decide-clients 0`): the search's choice is shipped.", ""]
    from validate.decide import summary_lines

    lines += summary_lines(decision)
    if searched is not None:  # the short list keeps the search's choice as "searched" (duplicates dropped)
        lines += ["", "The shipped ensemble is " + ("the search's choice." if decision["choice"]["name"] == "searched"
                                                    else f"**{decision['choice']['name']}**, not the search's "
                                                         "choice (" + " + ".join(b["name"] for b in searched) + ").")]
    if decision.get("curves_png"):
        lines += ["", f"![decision curves]({decision['curves_png']})"]
    return lines + [""]


def write_run_report(report: Mapping[str, Any], rows: Sequence[Row], work: str | Path) -> Path:
    """``work/report.md`` and the PNGs of :data:`PNGS` from a pipeline report dict (see
    :func:`submit.pipeline.run_pipeline`) and its candidate rows. Returns the markdown's path."""
    work = Path(work)
    tasks = list(report["tasks"])
    baseline = report.get("baseline")
    probes = sorted({r.probe for r in rows})
    title = f"{report.get('title', 'run')}: report fold, {report.get('report_clients', 0):,} clients"
    vs_baseline_chart(rows, baseline, tasks, work / PNGS["vs_baseline"], title)
    bar_chart({r.name: {"tasks": {t: {"score": r.tasks[t]} for t in tasks}, "sum": r.sum} for r in rows}, tasks,
              work / PNGS["scores"], f"{title}; probe(s): {', '.join(probes)}")
    search_chart(report.get("search_history", []), work / PNGS["search"],
                 f"search history, {probe_label(str(report.get('search_probe')))}: objective per trial")
    columns_chart(report["columns"], work / PNGS["columns"])
    stages_chart(report["stages"], work / PNGS["stages"], report.get("rss_scope", "stage"))

    s = report.get("search") or {}
    lines = [f"# Run report: {report.get('title', '')}", "",
             f"Data: `{report['data_dir']}`; run folder: `{report['work_dir']}`; seed {report['seed']}; preset "
             f"{report.get('preset', '?')} ({_fmt_size(report['sizes'])}).", "",
             "## Outputs", "",
             f"- local submission (blocks from the split's input period; for local scoring): "
             f"`{report['submission']}`"]
    if report.get("final_submission"):
        lines.append(f"- **final submission** (blocks from every event; the one to upload): "
                     f"`{report['final_submission']}`")
    lines += [f"- ensemble spec: `{report['spec']}`; blocks: `{Path(report['work_dir']) / 'blocks'}`"
              + (f" (final: `{Path(report['work_dir']) / 'blocks-final'}`)" if report.get("final_submission") else ""),
              "", "## Scores", "",
              f"Each block alone and the packed local submission on the report fold "
              f"({report.get('report_clients', 0):,} clients the search never saw), {len(tasks)} task(s). "
              f"Probe per row in the table; **every probe but the MLP replica is a proxy** of the organisers' "
              f"score (the replica is `--probe mlp`: minutes per block on a CPU).", "",
              rows_table(rows, tasks, baseline), "",
              f"![scores against the baseline]({PNGS['vs_baseline']})", "", f"![scores]({PNGS['scores']})", "",
              "## Search", ""]
    if s:
        sf, rf = s.get("search_fold") or {}, s.get("report_fold") or {}
        lines.append(f"{s.get('trials_total')} trial(s), {s.get('pruned')} pruned; best trial {s.get('best_trial')}: "
                     f"mean {sf.get('mean', float('nan')):.4f} on the search fold ({sf.get('n_clients', 0):,} "
                     f"clients), {rf.get('mean', float('nan')):.4f} on the report fold; probe "
                     f"{probe_label(str(report.get('search_probe')))}.")
    noise = report.get("search_noise") or {}
    if noise.get("lines"):
        lines += [""] + noise["lines"]
    lines += ["", "| block | transform | weight | dims |", "|---|---|---|---|"]
    lines += [f"| {b['name']} | {b['transform']} | {b['weight']:.3f} | {b['dims'] or 'full'} |"
              for b in report.get("chosen", [])]
    lines += ["", f"![search history]({PNGS['search']})", ""]
    lines += decision_section(report.get("decision"), report.get("searched"))
    if report.get("notices"):  # what the pack stages filled, dropped or read in a particular way
        lines += ["## Notices", ""] + [f"- {n['stage']}: {n['line']}" for n in report["notices"]] + [""]
    lines += ["## Columns of the packed matrix", ""]
    subs = list(report["columns"])
    names = sorted({b for c in report["columns"].values() for b in c})
    lines += ["| block | " + " | ".join(subs) + " |", "|---|" + "---|" * len(subs)]
    lines += [f"| {b} | " + " | ".join(str(report["columns"][k].get(b, 0)) for k in subs) + " |" for b in names]
    lines += ["| total | " + " | ".join(str(sum(report["columns"][k].values())) for k in subs) + " |", "",
              f"![columns]({PNGS['columns']})", "", "## Stages", "",
              f"| stage | wall time (s) | peak RSS (MiB, {report.get('rss_scope', 'stage')}) | of which anonymous "
              "(MiB; the rest is memory-mapped files) |", "|---|---|---|---|"]
    lines += [f"| {st['stage']} | {st['seconds']:.1f} | {st['peak_rss_mb']:,.0f} | "
              + (f"{st['peak_anon_mb']:,.0f}" if st.get("peak_anon_mb") is not None else "-") + " |"
              for st in report["stages"]]
    est = report.get("estimated_seconds")
    lines += [f"| total | {report['seconds']:.1f} | {report['peak_rss_mb']:,.0f} (process) | |", "",
              (f"Estimated before the run: {est / 60:.1f} min"
               + (f" (budget {report['budget_minutes']:g} min)" if report.get("budget_minutes") else "")
               + f"; took {report['seconds'] / 60:.1f} min.") if est is not None else "", "",
              f"![stages]({PNGS['stages']})", ""]
    path = work / REPORT_MD
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines))
    return path


__all__ = ["Row", "probe_label", "rows_from_results", "rows_table", "write_run_report", "PNGS", "REPORT_MD"]
