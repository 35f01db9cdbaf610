"""What a report leaves besides its tables: DVC's summary (short keys, mean over seeds), the
comparison curves with every seed, and in MLflow the cells each run fills (searchable tags)
and one report run holding the files and the summary."""

from __future__ import annotations

import csv
import io
import json

from mlflow import MlflowClient

from rotnet import report, report_publish, report_render
from test_report import log_run, probe_tags, protocol

TWO_SEEDS = protocol(seeds=[0, 1])


def log_seeds(variant: str, block: int, finals: tuple[float, float], **extra) -> list[str]:
    """One probe run per seed of TWO_SEEDS, each with a two-epoch history ending at its final."""
    return [log_run({**probe_tags(variant, block, **extra), "seed": seed}, [final - 5, final],
                    config=TWO_SEEDS.with_seed(seed)) for seed, final in enumerate(finals)]


def test_summary_keys_are_short_and_one_per_cell():
    cells = [report.Cell(table, "row", "col", None, (), key) for key, table, *_ in report.table_specs()]
    keys = {c.key: report_publish.summary_key(c) for c in cells}
    assert keys["table1/b4-r4/B2"] == "table1.b4.B2"
    assert keys["table2/b4-r8"] == "table2.r8" and keys["table2/b4-r2-perp"] == "table2.r2-perp"
    assert keys["table3/conv"] == "table3.conv"
    assert len(set(keys.values())) == len(keys)  # no two cells share a key
    assert max(map(len, keys.values())) <= 30  # table3.random-conv-initial-bn the longest


def test_the_report_writes_the_summary_and_every_seeds_curves(tracking_store, tmp_path):
    log_seeds("b4-r8", 2, (80.0, 84.0))
    log_seeds("b4-r4", 2, (88.0, 89.0))
    data = report.collect(TWO_SEEDS)
    report_render.write_report(tmp_path, data)
    summary = json.loads((tmp_path / "metrics.json").read_text())
    assert summary["table2"] == {"r8": 82.0, "r4": 88.5}  # the mean over both seeds
    assert summary["table1"] == {"b4": {"B2": 88.5}}  # the same runs fill Table 1's cell
    assert "r2" not in summary["table2"]  # no runs: left out, not a made-up number
    rows = list(csv.DictReader(io.StringIO((tmp_path / "plots" / "rotation-sets-probe.csv").read_text())))
    assert {r["series"] for r in rows} == {"b4-r8 s0", "b4-r8 s1", "b4-r4 s0", "b4-r4 s1"}
    assert [(r["epoch"], r["test_acc"]) for r in rows if r["series"] == "b4-r8 s1"] == [("1", "79.0"), ("2", "84.0")]


def test_runs_are_tagged_with_their_cells_and_the_report_run_holds_the_files(tracking_store, tmp_path):
    r8 = log_seeds("b4-r8", 2, (80.0, 84.0))
    r4 = log_seeds("b4-r4", 2, (88.0, 89.0))
    data = report.collect(TWO_SEEDS)
    files = report_render.write_report(tmp_path, data)
    parent = report_publish.publish(data, tmp_path, files)
    client = MlflowClient()
    experiment = client.get_run(r8[0]).info.experiment_id
    found = client.search_runs([experiment], "tags.cell = 'table2/b4-r8'")
    assert sorted(r.info.run_id for r in found) == sorted(r8)  # both seeds' runs
    tags = client.get_run(r4[1]).data.tags  # the baseline fills three tables' cells
    assert (tags["cell"], tags["table1"], tags["table2"], tags["table3"]) == (
        "table1/b4-r4/B2", "table1/b4-r4/B2", "table2/b4-r4", "table3/nonlinear")
    assert {r.info.run_id for r in client.search_runs([experiment], "tags.table2 = 'table2/b4-r4'")} == set(r4)
    run = client.get_run(parent)
    assert run.info.run_name == "report-quick-cifar10" and run.info.status == "FINISHED"
    assert run.data.metrics["table2.r8"] == 82.0
    logged = {a.path for a in client.list_artifacts(parent)}
    assert {"table2.md", "figure5a.png", "claims.md", "metrics.json", "plots"} <= logged
    assert "plots/blocks.csv" in {a.path for a in client.list_artifacts(parent, "plots")}
    assert report_publish.publish(data, tmp_path, files) == parent  # one report run, found again
