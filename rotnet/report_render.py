"""Rendering the report (`rotnet.report.collect`'s `ReportData`) under `reports/`: the
tables as Markdown (Tables 1-3, 9), Figures 5a/5b as PNG with figures.md, every cell's run
in runs.json, each linked to its MLflow run; and claims.md (`rotnet.claims`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from rotnet import claims, figures, protocol, report_publish, tracking
from rotnet.spread import MISSING, number_text
from rotnet.files import atomic_write
from rotnet.registry import BASELINE, BASELINE_ROTATIONS, ROTATION_SETS
from rotnet.report import (PAPER, PAPER_DATASET, ROTNET_CONV, SNAPSHOT_PROBE, SNAPSHOT_ROTATION,
                           SUPERVISED, Cell, ReportData, Run)

UI_ENV = "ROTNET_MLFLOW_UI"  # where links point: the MLflow UI serving the same store
DEFAULT_UI = "http://127.0.0.1:5000"
NOTE = ("Numbers: final-epoch top-1 test accuracy per image, in % (the authors' code kept "
        "the best test epoch instead; ours is in runs.json as best_value).")
TABLE_NOTE = (" Paper: Gidaris et al., ICLR 2018. Ours: mean ± standard deviation over the "
              "seeds' runs (n runs; ± 0.00 where n=1) · SE: the test-set standard error "
              "√(p(1−p)/n_test) at the mean, in points. Difference: our mean − paper. " + MISSING +
              ": not run under this protocol (no finished run with the cell's fingerprint).")

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck")
TABLE9_CELLS = ("table3/supervised", "table3/conv")  # the Table 3 rows Table 9 breaks down
TITLES = {"table1": "Table 1: non-linear probe on each block of RotNets with 3, 4, 5 blocks",
          "table2": "Table 2: number of rotations (4-block RotNet, non-linear probe on block 2)",
          "table3": "Table 3: {dataset} classification (RotNet features vs supervised)",
          "table9": "Table 9: per-class {dataset} test accuracy (supervised NIN vs RotNet + conv)"}


def title(name: str, data: ReportData) -> str:
    """A table's title, naming the data set its runs are on (the paper's: CIFAR-10)."""
    return TITLES[name].format(dataset="CIFAR-10" if data.dataset == PAPER_DATASET else
                               f"`{data.dataset}` (not CIFAR-10)")



def ui_base(ui_url: str | None = None) -> str:
    """Where run links point: the given URL, $ROTNET_MLFLOW_UI, the tracking server itself
    (an http(s) tracking URI serves the UI too), where `rotnet ui` last served this store,
    else where `rotnet ui` serves it by default."""
    uri = tracking.tracking_uri()
    server = uri if uri.startswith(("http://", "https://")) else None
    return (ui_url or os.environ.get(UI_ENV) or server or tracking.recorded_ui_address(uri)
            or DEFAULT_UI).rstrip("/")


def run_url(run: Run, ui: str) -> str:
    return tracking.ui_link(ui, run.experiment_id, run.run_id)



def _link(run: Run | None, ui: str) -> str:
    # the end of the run's name (`tracking.Tracker.start`): what the UI's search box finds
    return MISSING if run is None else f"[{run.run_id[:tracking.ID_PREFIX]}]({run_url(run, ui)})"


def _links(cell: Cell, ui: str) -> str:
    """Every seed's run of `cell`, as "s0 [ab12cd34](url), s1 —"."""
    return ", ".join(f"s{r.seed} {_link(r.run, ui)}" for r in cell.replicates)


def _ours(cell: Cell) -> str:
    return MISSING if cell.spread is None else cell.spread.text()


def _fingerprints(cells: list[Cell]) -> list[str]:
    return [f for c in cells for f in c.fingerprints]


def runtime_line(runs: list[Run]) -> str:
    """The resolved precision and device of `runs` (their `resolved.*` tags): one line when
    they agree, a flagged count per combination when they do not."""
    def what(run: Run) -> str:
        tags = run.tags
        if "resolved.precision" not in tags:
            return "not recorded"
        return (f"`{tags['resolved.precision']}` on `{tags.get('resolved.device', '?')}` "
                f"({tags.get('resolved.device_name', '?')})")

    counts: dict[str, int] = {}
    for run in runs:
        counts[what(run)] = counts.get(what(run), 0) + 1
    if len(counts) <= 1:
        return f"- Ran with: {next(iter(counts), MISSING)}"
    return ("- **Mixed runtimes** (the runs did not all run alike): " +
            "; ".join(f"{k}: {n} run{'s' * (n > 1)}" for k, n in sorted(counts.items())))


def _header(title: str, data: ReportData, runs: list[Run], fingerprints: list[str],
            note: str = NOTE) -> list[str]:
    commits = sorted({r.tags.get("git_commit", "unknown") for r in runs}) or [MISSING]
    lines = [f"# {title}", "",
             f"- Data set: `{data.dataset}`; profile: `{data.profile}`",
             f"- Protocol fingerprint: `{protocol.combined(fingerprints)}` (of the "
             f"{len(fingerprints)} run fingerprints the params imply; each in runs.json)",
             f"- Git commit(s) of the runs: {', '.join(f'`{c}`' for c in commits)}",
             runtime_line(runs),
             f"- Precision: `{data.precision or 'not recorded'}`, part of every cell's "
             "fingerprint: runs of another precision never fill a cell (`rotnet report "
             "--precision` reports those)",
             f"- MLflow tracking URI: `{data.tracking_uri}`; in its UI's search box, "
             "`run_id LIKE '<cited id>%'` finds a cited run, `tags.cell = '<cell key>'` a cell's "
             "runs (keys in runs.json)",
             f"- {note}"]
    if data.dataset != PAPER_DATASET:
        lines.append("- The paper's numbers are for CIFAR-10: on this data set the "
                     "comparison is only indicative.")
    return lines + [""]


def _grid_text(cell: Cell | None, ui: str) -> str:
    if cell is None:  # a block this RotNet does not have
        return ""
    if cell.run is None:
        return f"{MISSING} / {number_text(cell.paper)}"
    return f"{_ours(cell)} / {number_text(cell.paper)} ({number_text(cell.diff, True)}) {_links(cell, ui)}"


def table_markdown(data: ReportData, name: str, ui: str) -> str:
    cells = data.table(name)
    lines = _header(title(name, data), data, [r for c in cells for r in c.runs], _fingerprints(cells),
                    NOTE + TABLE_NOTE)
    if name == "table1":  # the paper's grid: a row per RotNet, a column per block
        columns = sorted({c.column for c in cells})
        lines += ["Each cell: ours / paper (ours − paper) MLflow run per seed.", "",
                  "| RotNet | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
        for row in dict.fromkeys(c.row for c in cells):
            by_col = {c.column: c for c in cells if c.row == row}
            texts = [_grid_text(by_col.get(col), ui) for col in columns]
            lines.append(f"| {row} | " + " | ".join(texts) + " |")
    else:
        lines += ["| Method | Ours | Paper | Ours − paper | MLflow run per seed |",
                  "|---|---|---|---|---|"]
        lines += [f"| {c.row} | {_ours(c)} | {number_text(c.paper)} | "
                  f"{number_text(c.diff, True)} | {_links(c, ui)} |" for c in cells]
    if name == "table3":
        lines += ["", "Prior work, as quoted in the paper (not reproduced here):", "",
                  "| Method | Paper |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in PAPER["prior_work"].items()]
    return "\n".join(lines) + "\n"


def table9_markdown(data: ReportData, ui: str) -> str:
    """Table 9: per-class test accuracy of the Table 3 supervised NIN and RotNet + conv runs."""
    cells = [data.by_key(key) for key in TABLE9_CELLS]
    lines = _header(title("table9", data), data, [r for c in cells for r in c.runs],
                    _fingerprints(cells), NOTE + TABLE_NOTE)
    ours = [mean_per_class(c.runs) for c in cells]
    paper = [dict(zip(CIFAR10_CLASSES, PAPER["table9"][key.split("/")[1]])) for key in TABLE9_CELLS]
    found = set().union(*ours)  # the data set's classes; CIFAR-10's in its own order
    names = [n for n in CIFAR10_CLASSES if n in found] + sorted(found - set(CIFAR10_CLASSES))
    # The paper's numbers are CIFAR-10's classes: a data set without them shows ours only.
    compared = not found or bool(found & set(CIFAR10_CLASSES))
    runs = "; ".join(f"{c.row} {_links(c, ui)}" for c in cells)
    lines += [("Each cell: ours (mean over the seeds) / paper (ours − paper). Runs: " if compared
               else "Each cell: ours (mean over the seeds); the paper's per-class numbers are for "
                    "CIFAR-10's classes, which this data set does not have. Runs: ") + runs, "",
              "| Class | " + " | ".join(c.row for c in cells) + " |", "|---|---|---|"]
    for name in names or CIFAR10_CLASSES:
        texts = []
        for values, references in zip(ours, paper):
            value, reference = values.get(name), references.get(name)
            diff = None if value is None or reference is None else value - reference
            texts.append(f"{number_text(value)} / {number_text(reference)} ({number_text(diff, True)})" if compared
                         else number_text(value))
        lines.append(f"| {name} | " + " | ".join(texts) + " |")
    return "\n".join(lines) + "\n"


def mean_per_class(runs: list[Run]) -> dict[str, float]:
    """Per class, the mean accuracy over `runs` that logged it."""
    by_class: dict[str, list[float]] = {}
    for run in runs:
        for name, value in run.per_class:
            by_class.setdefault(name, []).append(value)
    return {name: sum(values) / len(values) for name, values in by_class.items()}


def figures_markdown(data: ReportData, ui: str) -> str:
    supervised = data.by_key("table3/supervised")
    lines = _header("Figures 5a and 5b", data, [p.run for p in data.points] + supervised.runs,
                    [p.fingerprint for p in data.points] + supervised.fingerprints)
    sections = [
        ("figure5a", "Figure 5a: rotation accuracy and block-2 probe accuracy of pretraining "
                     "snapshots", "pretraining epoch"),
        ("figure5b", "Figure 5b: semi-supervised (frozen block 2 + conv vs supervised NIN)",
                     "labelled images per class")]
    for figure, title, xname in sections:
        points = sorted((p for p in data.points if p.figure == figure),
                        key=lambda p: (p.series, p.x, p.run.tags.get("seed", "")))
        lines += [f"## {title}", "", f"![{figure}]({figure}.png)", ""]
        if not points:
            lines += [f"No runs yet for this figure: {figure}.png has no points and says so.", ""]
        lines += [f"| Series | {xname} | Seed | Accuracy | MLflow run |", "|---|---|---|---|---|"]
        lines += [f"| {p.series} | {p.x:g} | {p.run.tags.get('seed', '?')} | {number_text(p.value)} | "
                  f"{_link(p.run, ui)} |" for p in points]
        if figure == "figure5a":
            lines.append(f"| supervised NIN (flat line, Table 3) | all | all | {_ours(supervised)} | "
                         f"{_links(supervised, ui)} |")
        lines.append("")
    return "\n".join(lines)


def spread_fields(cell: Cell) -> dict:
    """A cell's statistics over its seeds (the same on each of its runs.json entries)."""
    spread = cell.spread
    return {"mean": spread and round(spread.mean, 6), "sd": spread and round(spread.sd, 6),
            "n": spread.n if spread else 0, "se": spread and spread.se and round(spread.se, 6),
            "diff": None if cell.diff is None else round(cell.diff, 6)}


def runs_json(data: ReportData, ui: str) -> str:
    """Every cell (one entry per seed, with the cell's mean, sd, n, SE) and point with its run
    id: what CI checks against the store."""
    def run_fields(run: Run | None) -> dict:
        return {"run_id": run and run.run_id, "run_name": run and run.name,
                "experiment_id": run and run.experiment_id,
                "url": run and run_url(run, ui), "best_value": run and run.best}

    cells = [{"key": c.key, "table": c.table, "row": c.row, "column": c.column, "paper": c.paper,
              **spread_fields(c), "seed": r.seed, "fingerprint": r.fingerprint,
              "value": r.run and r.run.value, **run_fields(r.run)}
             for c in data.cells for r in c.replicates]
    points = [{"figure": p.figure, "series": p.series, "x": p.x, "value": p.value,
               "paper": paper_point(p.figure, p.series, p.x), "fingerprint": p.fingerprint,
               **run_fields(p.run)}
              for p in sorted(data.points, key=lambda p: (p.figure, p.series, p.x))]
    doc = {"profile": data.profile, "dataset": data.dataset, "tracking_uri": data.tracking_uri,
           "metric": "test_acc, final epoch, %", "cells": cells, "points": points,
           "prior_work": PAPER["prior_work"]}
    return json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


# ---- figures ---------------------------------------------------------------------------

# Figure 5b's right end: "5000 image examples is the extreme case of using the entire
# CIFAR10 training dataset" (Gidaris et al., ICLR 2018, Sec. 3.1), so there the paper's
# values are its Table 3 rows; the paper gives no other Figure 5b value in its text.
PAPER_FULL_SET_PER_CLASS = 5000
# at K = 5000
PAPER_FIGURE5B = {ROTNET_CONV: PAPER["table3"]["conv"], SUPERVISED: PAPER["table3"]["supervised"]}


def paper_marks_apply(data: ReportData) -> bool:
    """The paper's values are CIFAR-10's: on another data set, marks (at K = 5000 per class,
    which that set may not have) would stretch the axes for a comparison that says nothing."""
    return data.dataset == PAPER_DATASET


def paper_point(figure: str, series: str, x: float) -> float | None:
    """The paper's value for a figure point, where its text gives one."""
    if figure == "figure5b" and x == PAPER_FULL_SET_PER_CLASS:
        return PAPER_FIGURE5B.get(series)
    return None


def series_values(data: ReportData, figure: str, series: str) -> list[tuple[float, list[float]]]:
    """A figure series as (x, the accuracy of every run at x), sorted by x: one run per x
    today, one per seed where a cell has replicates (the figures then draw mean ± sd)."""
    by_x: dict[float, list[float]] = {}
    for point in data.series(figure, series):
        by_x.setdefault(point.x, []).append(point.value)
    return sorted(by_x.items())


def class_count(data: ReportData) -> int | None:
    """How many classes the runs' data set has (for the chance line): a run's num_classes
    tag, else how many per-class accuracies a run logged; None if no run says."""
    runs = [p.run for p in data.points] + [c.run for c in data.cells if c.run]
    for run in runs:
        if run.tags.get("num_classes", "").isdigit():
            return int(run.tags["num_classes"])
    return next((len(run.per_class) for run in runs if run.per_class), None)


def figure5a_png(data: ReportData, context: str) -> bytes:
    """Figure 5a of `data`; the paper's fully pretrained values (Table 1's block 2, Table 3's
    supervised NIN) are marked at the last snapshot, our fully pretrained one."""
    rotation = series_values(data, "figure5a", SNAPSHOT_ROTATION)
    probe = series_values(data, "figure5a", SNAPSHOT_PROBE)
    supervised = data.by_key("table3/supervised").value
    last = max((x for x, _ in rotation + probe), default=None)
    paper = [] if last is None or not paper_marks_apply(data) else [
        figures.Mark("paper: probe on block 2, fully pretrained", last,
                     PAPER["table1"][BASELINE][1], "tab:blue"),
        figures.Mark("paper: supervised NIN", last, PAPER["table3"]["supervised"], "tab:red")]
    return figures.figure5a(rotation, probe, supervised, context,
                            classes=class_count(data),
                            rotations=len(ROTATION_SETS[BASELINE_ROTATIONS]), paper=paper)


def figure5b_png(data: ReportData, context: str) -> bytes:
    k = PAPER_FULL_SET_PER_CLASS
    colors = {ROTNET_CONV: "tab:blue", SUPERVISED: "tab:red"}
    paper = [figures.Mark(f"paper: {series.removesuffix(' (block 2)')} at {k}", k, value,
                          colors[series]) for series, value in PAPER_FIGURE5B.items()
             if paper_marks_apply(data)]
    return figures.figure5b(series_values(data, "figure5b", ROTNET_CONV),
                            series_values(data, "figure5b", SUPERVISED), context,
                            classes=class_count(data), paper=paper)


def write_if_changed(path: Path, content: bytes) -> bool:
    """Atomically replace `path` with `content` unless it already holds exactly that."""
    if path.is_file() and path.read_bytes() == content:
        return False
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(content))
    return True


def write_report(out_dir: str | Path, data: ReportData, ui_url: str | None = None) -> list[Path]:
    """Write tables 1-3 and 9, figures 5a/5b, figures.md, runs.json, claims.md, the DVC
    summary metrics.json and the comparison curves plots/*.csv of `data` (see `collect`)
    into `out_dir`; returns all their paths (files whose bytes would not
    change are left untouched)."""
    ui = ui_base(ui_url)
    context = f"({data.dataset}, {data.profile})"

    files = {f"{t}.md": table_markdown(data, t, ui).encode() for t in ("table1", "table2", "table3")}
    files["table9.md"] = table9_markdown(data, ui).encode()
    files["figure5a.png"] = figure5a_png(data, context)
    files["figure5b.png"] = figure5b_png(data, context)
    files["figures.md"] = figures_markdown(data, ui).encode()
    files["runs.json"] = runs_json(data, ui).encode()
    files["claims.md"] = claims.runs_claims_markdown(data).encode()
    files[report_publish.SUMMARY_FILE] = report_publish.summary_json(data).encode()
    files.update(report_publish.comparison_files(data))
    out = Path(out_dir)
    for name, content in files.items():
        write_if_changed(out / name, content)
    return [out / name for name in files]

