"""What a report leaves besides its tables and figures: a small summary of the cells for
DVC (`reports/metrics.json`: `dvc metrics show/diff`, `dvc exp show`), the comparison
curves with every seed (`reports/plots/*.csv`, the charts of `dvc plots show`), and in
MLflow the cell each run fills (tags) and one report run holding the files.

Summary keys are short and stable, one per table cell: `table1.b4.B2` (Table 1, 4-block
RotNet, block 2), `table2.r8` (Table 2, 8 rotations), `table3.conv` (Table 3's row key); each
the mean over the seeds of final-epoch test accuracy (%). A cell without runs is left out.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from rotnet import tracking
from rotnet.registry import parse_variant
from rotnet.report import Cell, ReportData
from rotnet.run_groups import RunGroup, gather
from rotnet.tracking import Tracker

SUMMARY_FILE = "metrics.json"
PLOTS_DIR = "plots"
CELL_TAG = "cell"  # the first cell a run fills, e.g. table2/b4-r8; per table: tag <table>


def summary_key(cell: Cell) -> str:
    """"table1/b4-r4/B2" -> "table1.b4.B2"; "table2/b4-r8" -> "table2.r8"; "table3/conv"."""
    table, *rest = cell.key.split("/")
    if table == "table1":
        return f"table1.b{parse_variant(rest[0])[0]}.{rest[1]}"
    if table == "table2":
        return f"table2.r{parse_variant(rest[0])[1]}"
    return f"{table}.{rest[0]}"


def summary(data: ReportData) -> dict[str, float]:
    """Every cell that has runs: its summary key -> mean over the seeds, 2 decimals."""
    return {summary_key(c): round(c.value, 2) for c in data.cells if c.value is not None}


def summary_json(data: ReportData) -> str:
    """The summary nested by its dots ({"table2": {"r8": 81.2}}), as DVC shows `table2.r8`."""
    nested: dict = {}
    for key, value in summary(data).items():
        *path, last = key.split(".")
        node = nested
        for part in path:
            node = node.setdefault(part, {})
        node[last] = value
    return json.dumps(nested, indent=2) + "\n"


# ---- comparison curves -----------------------------------------------------------------

CURVE_COLUMNS = ("epoch", "test_acc", "series")  # a comparison curve file's columns
# chart -> (the cells whose runs it draws, whether it draws their pretraining run instead)
COMPARISONS = {"rotation-sets-pretraining": ("table2/", True),
               "rotation-sets-probe": ("table2/", False),
               "blocks": ("table1/b5-r4/", False)}


def _series(cell: Cell) -> str:
    table, *rest = cell.key.split("/")
    return rest[1] if table == "table1" else rest[0]


def comparison_csv(data: ReportData, prefix: str, pretraining: bool) -> str:
    """epoch, test_acc, series ("b4-r8 s1" or "B3 s0"): every seed's curve of every cell
    whose key starts with `prefix`, from the runs' MLflow histories."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CURVE_COLUMNS)
    for cell in (c for c in data.cells if c.key.startswith(prefix)):
        for run in cell.runs:
            run_id = run.tags.get("pretrain_run_id", "") if pretraining else run.run_id
            for step, value in tracking.metric_history(run_id, "test_acc") if run_id else []:
                writer.writerow([step, round(value, 4), f"{_series(cell)} s{run.tags.get('seed', '?')}"])
    return out.getvalue()


def comparison_files(data: ReportData) -> dict[str, bytes]:
    return {f"{PLOTS_DIR}/{name}.csv": comparison_csv(data, prefix, pretraining).encode()
            for name, (prefix, pretraining) in COMPARISONS.items()}


# ---- MLflow ----------------------------------------------------------------------------


def run_cells(data: ReportData) -> dict[str, dict[str, str]]:
    """Run id -> its tags naming what it fills: `cell` (the first cell, e.g. table2/b4-r8) and
    one tag per table or figure (`table1` = table1/b4-r4/B2, `figure5a` = figure5a/epoch5),
    so the UI finds a cell's runs with `tags.cell = '...'` or `tags.table2 = '...'`."""
    tags: dict[str, dict[str, str]] = {}
    filled = [(run, c.table, c.key) for c in data.cells for run in c.runs]
    filled += [(p.run, p.figure, p.key) for p in data.points]
    for run, where, key in filled:
        own = tags.setdefault(run.run_id, {})
        own.setdefault(CELL_TAG, key)
        own.setdefault(where, key)
    return tags


def report_group(data: ReportData) -> RunGroup:
    """The one MLflow run that holds a protocol's report (found again on every report)."""
    return RunGroup(key=f"report:{data.dataset}:{data.profile}", name=f"report-{data.profile}-{data.dataset}",
                 tags={"dataset": data.dataset, "profile": data.profile, "group_of": "report"})


def publish(data: ReportData, out_dir: Path, files: list[Path], tracker: Tracker | None = None) -> str:
    """Tag every run with the cells it fills, and log `files` (written under `out_dir`) and
    the summary to the report run; returns its id."""
    tracker = tracker or Tracker()
    for run_id, tags in run_cells(data).items():
        tracker.on_run(run_id).set_tags(tags)
    return gather(tracker.open_group(report_group(data)), [], files, summary(data), Path(out_dir))

