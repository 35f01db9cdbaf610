"""The paper's Tables 1-3 and Figures 5a/5b, read back from the MLflow runs (through
`rotnet.tracking` only) and written as Markdown, PNG and `runs.json` under `reports/`.

Which run fills which cell is decided by tags alone (see `table_specs`). Per cell, the most
recent FINISHED run wins (start time, then run id, so ties are deterministic); a cell with
no run shows "—", so a half-finished pipeline still reports. Runs with a `study` tag
(semi-supervised subsets, snapshot probes) never fill a table cell: they were trained on
less data or on an unfinished backbone. Every file is a pure function of the runs, written
atomically and only when its bytes change, so rerunning without new runs changes nothing.
Figures with no runs yet are still written, saying "no ... runs yet" (a DVC output must
exist), and figures.md says the same.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from rotnet import figures, tracking
from rotnet.checkpoint import atomic_write
from rotnet.errors import RotnetError

UI_ENV = "ROTNET_MLFLOW_UI"  # where links point: the MLflow UI serving the same store
DEFAULT_UI = "http://127.0.0.1:5000"
ROTNET = "b4-r4"  # the paper's main RotNet (4 blocks, 4 rotations): Table 3, Figures 5a/5b
MISSING = "—"
NOTE = "Numbers: final-epoch top-1 test accuracy per image, in %."
TABLE_NOTE = (" Paper: Gidaris et al., ICLR 2018. Difference: ours − paper. " + MISSING +
              ": no finished run yet.")

# The paper's CIFAR-10 test accuracies (%). Source: /work/shared/REFERENCE.md, "The paper's
# numbers", which quotes Tables 1-3 of Gidaris, Singh, Komodakis (ICLR 2018).
PAPER = {
    "table1": {"b3-r4": (85.45, 88.26, 62.09), "b4-r4": (85.07, 89.06, 86.21, 61.73),
               "b5-r4": (85.04, 89.76, 86.82, 74.50, 50.37)},  # blocks B1, B2, ...
    "table2": {"b4-r4": 89.06, "b4-r8": 88.51, "b4-r2": 87.46, "b4-r2-perp": 85.52},
    "table3": {"supervised": 92.80, "random-conv": 72.50, "nonlinear": 89.06, "conv": 91.16,
               "nonlinear-finetuned": 91.73, "conv-finetuned": 92.17},
    "prior_work": {"Roto-Scat + SVM": 82.3, "Exemplar CNN": 84.3, "DCGAN": 82.8,
                   "Scattering": 84.7},
}
TITLES = {"table1": "Table 1: non-linear probe on each block of RotNets with 3, 4, 5 blocks",
          "table2": "Table 2: number of rotations (4-block RotNet, non-linear probe on block 2)",
          "table3": "Table 3: CIFAR-10 classification (RotNet features vs supervised)"}


@dataclass(frozen=True)
class Run:
    run_id: str
    experiment_id: str
    name: str
    start_time: int
    tags: dict
    value: float  # test_acc at the last step: the final epoch
    best: float | None  # best_test_acc, kept only as a separately labelled number


@dataclass(frozen=True)
class Cell:
    table: str
    row: str
    column: str
    paper: float | None
    run: Run | None

    @property
    def diff(self) -> float | None:
        return None if self.run is None or self.paper is None else self.run.value - self.paper


@dataclass(frozen=True)
class Point:
    figure: str
    series: str
    x: float
    value: float
    run: Run


@dataclass
class ReportData:
    profile: str
    dataset: str
    tracking_uri: str
    cells: list[Cell]
    points: list[Point]

    def table(self, name: str) -> list[Cell]:
        return [c for c in self.cells if c.table == name]

    def cell(self, table: str, row: str, column: str = "accuracy") -> Cell:
        return next(c for c in self.cells if (c.table, c.row, c.column) == (table, row, column))

    def series(self, figure: str, series: str) -> list[Point]:
        return sorted((p for p in self.points if (p.figure, p.series) == (figure, series)),
                      key=lambda p: p.x)


def table_specs() -> list[tuple[str, str, str, float | None, dict]]:
    """(table, row, column, paper value, tags the run must have) for every table cell."""
    specs = []
    for variant, paper in PAPER["table1"].items():
        for block, value in enumerate(paper, 1):
            specs.append(("table1", f"RotNet {variant[1]} blocks", f"B{block}", value,  # b3-r4: 3
                          {"method": "nonlinear", "variant": variant, "block": str(block)}))
    rows2 = {"b4-r4": "4 rotations (0°, 90°, 180°, 270°)", "b4-r8": "8 rotations (multiples of 45°)",
             "b4-r2": "2 rotations (0°, 180°)", "b4-r2-perp": "2 rotations (90°, 270°)"}
    for variant, row in rows2.items():
        specs.append(("table2", row, "accuracy", PAPER["table2"][variant],
                      {"method": "nonlinear", "variant": variant, "block": "2"}))
    rows3 = [("Supervised NIN", "supervised", {"kind": "supervised"}),
             ("Random init + conv", "random-conv", {"variant": "random", "method": "conv"}),
             ("RotNet + non-linear", "nonlinear", {"method": "nonlinear"}),
             ("RotNet + conv", "conv", {"method": "conv"}),
             ("RotNet + non-linear (fine-tuned)", "nonlinear-finetuned",
              {"method": "nonlinear-finetuned"}),
             ("RotNet + conv (fine-tuned)", "conv-finetuned", {"method": "conv-finetuned"})]
    for row, key, want in rows3:
        if key != "supervised":
            want = {"variant": ROTNET, "block": "2", **want}
        specs.append(("table3", row, "accuracy", PAPER["table3"][key], want))
    return specs


# ---- reading the runs ------------------------------------------------------------------


def finished_runs(profile: str, dataset: str) -> list[Run]:
    """Every FINISHED run of this profile and data set that logged a test accuracy."""
    for name, value in (("profile", profile), ("dataset", dataset)):
        if not re.fullmatch(r"[\w.+-]+", value):
            raise RotnetError(f"invalid {name} {value!r}")
    query = f"tags.profile = '{profile}' and tags.dataset = '{dataset}' and attributes.status = 'FINISHED'"
    try:
        found = tracking.search_runs(query)
    except Exception as err:  # a locked or corrupt store, an unreachable server
        raise RotnetError(f"cannot read the MLflow store at {tracking.tracking_uri()}: "
                          f"{type(err).__name__}: {str(err).splitlines()[0][:200]}") from None
    runs = [Run(r.info.run_id, str(r.info.experiment_id), r.data.tags.get("mlflow.runName", ""),
                r.info.start_time or 0, dict(r.data.tags), r.data.metrics["test_acc"],
                r.data.metrics.get("best_test_acc"))
            for r in found if r.info.status == "FINISHED" and "test_acc" in r.data.metrics]
    if not runs:
        raise RotnetError(f"no finished runs for profile {profile} on data set {dataset} in "
                          f"{tracking.tracking_uri()}; run the pipeline (dvc repro) first")
    return runs


def latest(runs: list[Run], **want: str | None) -> Run | None:
    """The most recent run whose tags equal `want` (a None value: the tag must be absent)."""
    hits = [r for r in runs if all(r.tags.get(k) == v for k, v in want.items())]
    return max(hits, key=lambda r: (r.start_time, r.run_id), default=None)


def latest_by(runs: list[Run], key: str, **want: str | None) -> dict[float, Run]:
    """The most recent matching run per numeric value of tag `key` (e.g. snapshot_epoch)."""
    out: dict[float, Run] = {}
    for run in runs:
        try:
            x = float(run.tags.get(key, ""))
        except ValueError:
            continue
        if all(run.tags.get(k) == v for k, v in want.items()):
            if x not in out or (run.start_time, run.run_id) > (out[x].start_time, out[x].run_id):
                out[x] = run
    return dict(sorted(out.items()))


def collect(profile: str, dataset: str) -> ReportData:
    """The run behind every table cell and figure point (cells may have none)."""
    runs = finished_runs(profile, dataset)
    cells = [Cell(t, row, col, paper, latest(runs, study=None, **want))
             for t, row, col, paper, want in table_specs()]
    points = []
    snaps = latest_by(runs, "snapshot_epoch", study="snapshots", method="nonlinear", block="2",
                      variant=ROTNET)
    for epoch, run in snaps.items():
        points.append(Point("figure5a", "non-linear probe on block 2", epoch, run.value, run))
        try:  # the snapshot's own rotation accuracy, recorded as a tag by the snapshot probe
            rotation = float(run.tags["snapshot_rotation_acc"])
        except (KeyError, ValueError):
            continue
        points.append(Point("figure5a", "rotation prediction (snapshot)", epoch, rotation, run))
    for series, want in (("RotNet + conv (block 2)", {"method": "conv", "block": "2",
                                                      "variant": ROTNET}),
                         ("supervised NIN", {"kind": "supervised"})):
        for k, run in latest_by(runs, "subset_per_class", study="semisup", **want).items():
            points.append(Point("figure5b", series, k, run.value, run))
    return ReportData(profile, dataset, tracking.tracking_uri(), cells, points)


# ---- writing -------------------------------------------------------------------------


def ui_base(ui_url: str | None = None) -> str:
    """Where run links point: the given URL, $ROTNET_MLFLOW_UI, the tracking server itself
    (an http(s) tracking URI serves the UI too), else what `rotnet ui` opens by default."""
    server = tracking.tracking_uri()
    if not server.startswith(("http://", "https://")):
        server = None
    return (ui_url or os.environ.get(UI_ENV) or server or DEFAULT_UI).rstrip("/")


def run_url(run: Run, ui: str) -> str:
    return f"{ui}/#/experiments/{run.experiment_id}/runs/{run.run_id}"


def _num(value: float | None, signed: bool = False) -> str:
    return MISSING if value is None else (f"{value:+.2f}" if signed else f"{value:.2f}")


def _link(run: Run | None, ui: str) -> str:
    return MISSING if run is None else f"[{run.run_id[:8]}]({run_url(run, ui)})"


def _header(title: str, data: ReportData, runs: list[Run], note: str = NOTE) -> list[str]:
    commits = sorted({r.tags.get("git_commit", "unknown") for r in runs}) or [MISSING]
    lines = [f"# {title}", "",
             f"- Data set: `{data.dataset}`; profile: `{data.profile}`",
             f"- Git commit(s) of the runs: {', '.join(f'`{c}`' for c in commits)}",
             f"- MLflow tracking URI: `{data.tracking_uri}`",
             f"- {note}"]
    if data.dataset != "cifar10":
        lines.append("- The paper's numbers are for CIFAR-10: on this data set the "
                     "comparison is only indicative.")
    return lines + [""]


def _grid_text(cell: Cell | None, ui: str) -> str:
    if cell is None:  # a block this RotNet does not have
        return ""
    if cell.run is None:
        return f"{MISSING} / {_num(cell.paper)}"
    return f"{cell.run.value:.2f} / {_num(cell.paper)} ({_num(cell.diff, True)}) {_link(cell.run, ui)}"


def table_markdown(data: ReportData, name: str, ui: str) -> str:
    cells = data.table(name)
    lines = _header(TITLES[name], data, [c.run for c in cells if c.run], NOTE + TABLE_NOTE)
    if name == "table1":  # the paper's grid: a row per RotNet, a column per block
        columns = sorted({c.column for c in cells})
        lines += ["Each cell: ours / paper (ours − paper) MLflow run.", "",
                  "| RotNet | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
        for row in dict.fromkeys(c.row for c in cells):
            by_col = {c.column: c for c in cells if c.row == row}
            texts = [_grid_text(by_col.get(col), ui) for col in columns]
            lines.append(f"| {row} | " + " | ".join(texts) + " |")
    else:
        lines += ["| Method | Ours | Paper | Ours − paper | MLflow run |", "|---|---|---|---|---|"]
        lines += [f"| {c.row} | {_num(c.run and c.run.value)} | {_num(c.paper)} | "
                  f"{_num(c.diff, True)} | {_link(c.run, ui)} |" for c in cells]
    if name == "table3":
        lines += ["", "Prior work, as quoted in the paper (not reproduced here):", "",
                  "| Method | Paper |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in PAPER["prior_work"].items()]
    return "\n".join(lines) + "\n"


def figures_markdown(data: ReportData, ui: str) -> str:
    supervised = data.cell("table3", "Supervised NIN").run
    lines = _header("Figures 5a and 5b", data, [p.run for p in data.points] +
                    ([supervised] if supervised else []))
    sections = [
        ("figure5a", "Figure 5a: rotation accuracy and block-2 probe accuracy of pretraining "
                     "snapshots", "pretraining epoch"),
        ("figure5b", "Figure 5b: semi-supervised (frozen block 2 + conv vs supervised NIN)",
                     "labelled images per class")]
    for figure, title, xname in sections:
        points = sorted((p for p in data.points if p.figure == figure), key=lambda p: (p.series, p.x))
        lines += [f"## {title}", "", f"![{figure}]({figure}.png)", ""]
        if not points:
            lines += [f"No runs yet for this figure: {figure}.png has no points and says so.", ""]
        lines += [f"| Series | {xname} | Accuracy | MLflow run |", "|---|---|---|---|"]
        lines += [f"| {p.series} | {p.x:g} | {_num(p.value)} | {_link(p.run, ui)} |" for p in points]
        if figure == "figure5a":
            lines.append(f"| supervised NIN (flat line, Table 3) | all | "
                         f"{_num(supervised and supervised.value)} | {_link(supervised, ui)} |")
        lines.append("")
    return "\n".join(lines)


def runs_json(data: ReportData, ui: str) -> str:
    """Every cell and point with its run id: what CI checks against the store."""
    def run_fields(run: Run | None) -> dict:
        return {"run_id": run and run.run_id, "run_name": run and run.name,
                "experiment_id": run and run.experiment_id,
                "url": run and run_url(run, ui), "best_value": run and run.best}

    cells = [{"table": c.table, "row": c.row, "column": c.column, "value": c.run and c.run.value,
              "paper": c.paper, "diff": None if c.diff is None else round(c.diff, 6),
              **run_fields(c.run)} for c in data.cells]
    points = [{"figure": p.figure, "series": p.series, "x": p.x, "value": p.value,
               "paper": None, **run_fields(p.run)}
              for p in sorted(data.points, key=lambda p: (p.figure, p.series, p.x))]
    doc = {"profile": data.profile, "dataset": data.dataset, "tracking_uri": data.tracking_uri,
           "metric": "test_acc, final epoch, %", "cells": cells, "points": points,
           "prior_work": PAPER["prior_work"]}
    return json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write_if_changed(path: Path, content: bytes) -> bool:
    """Atomically replace `path` with `content` unless it already holds exactly that."""
    if path.is_file() and path.read_bytes() == content:
        return False
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(content))
    return True


def write_report(out_dir: str | Path = "reports", profile: str = "paper", dataset: str = "cifar10",
                 ui_url: str | None = None) -> list[Path]:
    """Write tables 1-3, figures 5a/5b, figures.md and runs.json into `out_dir`; returns
    all their paths (files whose bytes would not change are left untouched)."""
    data = collect(profile, dataset)
    ui = ui_base(ui_url)
    supervised = data.cell("table3", "Supervised NIN").run
    context = f"({dataset}, {profile})"

    def xy(figure: str, series: str) -> list[tuple[float, float]]:
        return [(p.x, p.value) for p in data.series(figure, series)]

    files = {f"{t}.md": table_markdown(data, t, ui).encode() for t in ("table1", "table2", "table3")}
    files["figure5a.png"] = figures.figure5a(
        xy("figure5a", "rotation prediction (snapshot)"), xy("figure5a", "non-linear probe on block 2"),
        supervised.value if supervised else None, context)
    files["figure5b.png"] = figures.figure5b(xy("figure5b", "RotNet + conv (block 2)"),
                                             xy("figure5b", "supervised NIN"), context)
    files["figures.md"] = figures_markdown(data, ui).encode()
    files["runs.json"] = runs_json(data, ui).encode()
    out = Path(out_dir)
    for name, content in files.items():
        write_if_changed(out / name, content)
    return [out / name for name in files]


def ablation_table(profile: str, dataset: str, variant: str, baseline: str = "b4-r4"):
    """A Rich table for `rotnet ablate`: the variant's rotation accuracy and its non-linear
    probe accuracy per block, next to the baseline's, with the difference."""
    from rich.table import Table

    runs = [r for r in finished_runs(profile, dataset) if "study" not in r.tags]
    rows = [("rotation accuracy (pretext)", {"kind": "pretrain"})]
    blocks = sorted({int(r.tags["block"]) for r in runs if r.tags.get("variant") == variant
                     and r.tags.get("method") == "nonlinear" and r.tags.get("block", "").isdigit()})
    rows += [(f"non-linear probe, block {b}", {"method": "nonlinear", "block": str(b)}) for b in blocks]
    table = Table(title=f"{variant} vs {baseline} ({dataset}, {profile}; final-epoch test accuracy, %)")
    for name, justify in (("", "left"), (variant, "right"), (baseline, "right"),
                          (f"{variant} − {baseline}", "right")):
        table.add_column(name, justify=justify)
    for label, want in rows:
        ours, base = latest(runs, variant=variant, **want), latest(runs, variant=baseline, **want)
        diff = ours.value - base.value if ours and base else None
        table.add_row(label, _num(ours and ours.value), _num(base and base.value), _num(diff, True))
    return table
