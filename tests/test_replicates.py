"""Replicates in the report: one run per seed fills each cell (same protocol except the
seed), never a run of another protocol; runs.json keeps every seed's run; claims.md is
decided on those runs (`rotnet.claims`)."""

import json
import time

import pytest

from rotnet import report, report_render
from rotnet.config import Config
from rotnet.tracking import Tracker

CONFIG = Config.from_dict({"profile": "quick", "seeds": [0, 1], "data": {"dataset": "cifar10"}})
OTHER_LR = Config.from_dict({"profile": "quick", "seeds": [0, 1], "data": {"dataset": "cifar10"},
                             "probe": {"optim": {"lr": 0.05}}})


def log_run(tags: dict, acc: float, seed: int, config: Config = CONFIG, **number) -> str:
    """A finished run of `config` with `seed`, tagged as the experiments tag it."""
    time.sleep(0.005)  # distinct start times: "most recent" is well defined
    fingerprint = report.expected_fingerprint(config.with_seed(seed), tags, **number)
    all_tags = {"dataset": "cifar10", "profile": "quick", "seed": str(seed), "test_images": "800",
                "fingerprint": fingerprint, **tags,
                **{k: str(v) for k, v in number.items() if v is not None}}
    run = Tracker().start("test", {}, all_tags)
    run.log_metrics({"test_acc": acc}, step=1)
    run.finish("FINISHED")
    return run.run_id


def probe(variant: str, block: int, method: str = "nonlinear", **extra) -> dict:
    return {"task": "probe", "variant": variant, "block": str(block), "method": method, **extra}


@pytest.fixture(scope="module")
def reported(tmp_path_factory):
    root = tmp_path_factory.mktemp("replicates")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root}/mlflow.db")
        b2 = probe("b4-r4", 2)
        ids = {"old_s0": log_run(b2, 10.0, 0), "s0": log_run(b2, 88.0, 0), "s1": log_run(b2, 86.0, 1),
               "other_lr_s1": log_run(b2, 99.0, 1, OTHER_LR),
               "b1_s0": log_run(probe("b4-r4", 1), 80.0, 0), "b1_s1": log_run(probe("b4-r4", 1), 81.0, 1)}
        semisup = {"figure5": "semisup"}
        for seed, (conv, sup) in enumerate(((60.0, 40.0), (62.0, 41.0))):
            log_run(probe("b4-r4", 2, "conv", **semisup), conv, seed, subset_per_class=20)
            log_run({"task": "supervised", "method": "supervised", **semisup}, sup, seed,
                    subset_per_class=20)
        data = report.collect(CONFIG)
        report_render.write_report(root / "reports", data)
        yield {"ids": ids, "data": data, "out": root / "reports",
               "runs": json.loads((root / "reports" / "runs.json").read_text())}


def test_a_cell_holds_the_latest_run_of_each_seed_of_its_protocol(reported):
    ids, cell = reported["ids"], reported["data"].cell("table1", "RotNet 4 blocks", "B2")
    assert [r.seed for r in cell.replicates] == [0, 1]
    assert [r.run.run_id for r in cell.replicates] == [ids["s0"], ids["s1"]]  # not old_s0, other_lr
    assert len(set(cell.fingerprints)) == 2  # the same protocol, a fingerprint per seed
    assert (cell.spread.n, cell.spread.mean) == (2, 87.0)
    assert cell.spread.sd == pytest.approx(1.414, abs=1e-3) and cell.spread.test_images == 800


def test_runs_of_another_protocol_never_join_a_cell(reported):
    cell = reported["data"].cell("table1", "RotNet 4 blocks", "B2")
    other = report.expected_fingerprint(OTHER_LR.with_seed(1), probe("b4-r4", 2))
    assert other not in cell.fingerprints and 99.0 not in [r.value for r in cell.runs]


def test_a_cell_missing_one_seed_counts_as_not_run(reported):
    data = reported["data"]
    b2 = data.cell("table1", "RotNet 4 blocks", "B2")
    assert b2 not in data.not_run()  # both seeds ran
    missing_s1 = report.Cell(b2.table, b2.row, b2.column, b2.paper,
                             (b2.replicates[0], report.Replicate(1, "f", None)))
    assert report.ReportData("quick", "cifar10", "", [missing_s1], []).not_run() == [missing_s1]


def test_tables_print_mean_sd_n_and_the_test_set_se(reported):
    table1 = (reported["out"] / "table1.md").read_text()
    assert "87.00 ± 1.41 (n=2) · SE 1.2 / 89.06 (-2.06) s0 [" in table1


def test_runs_json_keeps_every_seeds_run_with_the_cells_statistics(reported):
    entries = [c for c in reported["runs"]["cells"]
               if (c["table"], c["row"], c["column"]) == ("table1", "RotNet 4 blocks", "B2")]
    assert [(e["seed"], e["run_id"], e["value"]) for e in entries] == [
        (0, reported["ids"]["s0"], 88.0), (1, reported["ids"]["s1"], 86.0)]
    assert all((e["mean"], e["n"], e["diff"]) == (87.0, 2, -2.06) for e in entries)


def test_figures_keep_one_point_per_seed(reported):
    points = [p for p in reported["data"].points if p.figure == "figure5b"]
    assert sorted((p.series, p.run.tags["seed"], p.value) for p in points) == [
        ("RotNet + conv (block 2)", "0", 60.0), ("RotNet + conv (block 2)", "1", 62.0),
        ("supervised NIN", "0", 40.0), ("supervised NIN", "1", 41.0)]
    assert report_render.series_values(reported["data"], "figure5b", "supervised NIN") == [
        (20, [40.0, 41.0])]
    assert "| supervised NIN | 20 | 1 | 41.00 |" in (reported["out"] / "figures.md").read_text()


def test_claims_md_is_computed_from_the_runs(reported):
    text = (reported["out"] / "claims.md").read_text()
    # 61 ± 1.4 vs 40.5 ± 0.7 on 800 images without predictions: independent cells, and with
    # two seeds t(1) = 12.7 makes the interval ±34: undecided, as two seeds can only be
    assert "## 10. RotNet + conv beats supervised with few labels: **undecided**" in text
    # ±34.18 at 95 % too (one comparison: no Holm step); no number of seeds gets it within
    # ±2.5: two cells' binomial errors on 800 images alone are ±4.8 at 95 %
    assert ("| 20 per class: RotNet + conv > supervised NIN | +20.50 | [-13.68, +54.68] at "
            "95.0 % (independent, n=2) | ±34.18 | — | undecided |") in text
    assert "- Resolution: 0 of 2 comparisons have a 95 % interval within ±2.5 points" in text
    # B2 vs B1 of the 4-block RotNet has runs, B3 and B4 do not
    assert "## 1. Block 2 gives the best frozen features: **not run**" in text
    assert "| RotNet 4 blocks: B2 > B4 | — | — | — | — | not run |" in text
