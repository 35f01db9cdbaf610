"""The report: tables, figures and runs.json read back from a throwaway MLflow store.

One sqlite store per module (MLflow setup costs seconds), filled through
`rotnet.tracking.Tracker` with made-up accuracies for a subset of the cells.
"""

import json
import time

import pytest

from rotnet import report, report_render, tracking
from rotnet.config import Config
from rotnet.errors import RotnetError
from rotnet.tracking import MODEL_TRAINING_VIEW, Tracker

PROFILE, DATASET = "quick", "cifar10"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
RUNTIME = {"resolved.precision": "fp32", "resolved.device": "cpu", "resolved.device_name": "test cpu"}


def protocol(profile: str = PROFILE, **sections) -> Config:
    return Config.from_dict({"profile": profile, "data": {"dataset": DATASET}, **sections})


CONFIG = protocol(seeds=[0])  # one replicate per cell (tests/test_replicates.py: several)
OTHER_LR = protocol(probe={"optim": {"lr": 0.05}})  # the same profile, another probe lr


def fingerprint(tags: dict, config: Config = CONFIG) -> str:
    """What the experiments tag a run of `config` with (tests/test_protocol.py checks that
    real runs agree with report.expected_fingerprint)."""
    number = {k: int(tags[k]) if k in tags else None for k in ("subset_per_class", "snapshot_epoch")}
    return report.expected_fingerprint(config, {k: str(v) for k, v in tags.items()}, **number)


def log_run(tags: dict, accs: list[float], status: str = "FINISHED", profile: str = PROFILE,
            config: Config | None = None, runtime: dict = RUNTIME,
            per_class: dict | None = None) -> str:
    """A run as the experiments make it (in the module store: the `store` fixture sets
    MLFLOW_TRACKING_URI for the whole module): tags with the fingerprint `config` implies,
    test_acc per epoch, then a final status."""
    time.sleep(0.005)  # distinct start times (milliseconds), so "most recent" is well defined
    config = config or protocol(profile)
    all_tags = {"dataset": DATASET, "profile": profile, "seed": "0", **runtime,
                "fingerprint": fingerprint(tags, config), **tags}
    run = Tracker().start(f"test-{tags.get('task')}", {}, {k: str(v) for k, v in all_tags.items()})
    for epoch, acc in enumerate(accs, 1):
        run.log_metrics({"test_acc": acc}, step=epoch)
    run.log_metrics({"best_test_acc": max(accs)}, step=1 + accs.index(max(accs)))
    if per_class:  # as experiments log them: once, at the final epoch
        run.log_metrics({tracking.class_metric(k): v for k, v in per_class.items()},
                        step=len(accs))
    run.finish(status)
    return run.run_id


def probe_tags(variant: str, block: int, method: str = "nonlinear", **extra) -> dict:
    task = "finetune" if method.endswith("finetuned") else "probe"
    return {"task": task, "variant": variant, "block": block, "method": method,
            "head": method.split("-")[0], "finetune": str(task == "finetune"),
            "pretrain_run_id": "x", **extra}


def random_probe_tags(backbone: str) -> dict:
    """A conv probe on block 2 of a random backbone: tagged `backbone`, no `variant`."""
    tags = {**probe_tags("b4-r4", 2, "conv"), "backbone": backbone, "pretrain_run_id": ""}
    del tags["variant"]
    return tags


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root}/mlflow.db")
        mp.delenv(report_render.UI_ENV, raising=False)
        with pytest.raises(RotnetError) as empty:  # before any run exists: an empty store
            report_render.write_report(root / "empty", report.collect(CONFIG))
        ids = {
            "pretrain_b4r4": log_run({"task": "pretrain", "variant": "b4-r4", "blocks": 4,
                                      "rotations": "4"}, [70.0, 90.5]),
            "pretrain_b4r8": log_run({"task": "pretrain", "variant": "b4-r8", "blocks": 4,
                                      "rotations": "8"}, [60.0, 75.25]),
            "b4r4_b1": log_run(probe_tags("b4-r4", 1), [80.0, 84.0]),
            "b4r4_b2_old": log_run(probe_tags("b4-r4", 2), [70.0, 80.0]),
            "b4r4_b2": log_run(probe_tags("b4-r4", 2), [85.0, 88.50, 88.0]),  # best != final
            "b4r4_b2_other_lr": log_run(probe_tags("b4-r4", 2), [99.5], config=OTHER_LR),
            "b4r4_b3_failed": log_run(probe_tags("b4-r4", 3), [99.0], status="FAILED"),
            "b4r8_b2": log_run(probe_tags("b4-r8", 2), [86.0, 87.0],
                               runtime={**RUNTIME, "resolved.precision": "bf16"}),
            "b4r8_b1": log_run(probe_tags("b4-r8", 1), [83.0, 83.5]),
            "b4r8_b1_other_lr": log_run(probe_tags("b4-r8", 1), [98.5], config=OTHER_LR),
            "conv": log_run(probe_tags("b4-r4", 2, "conv"), [90.0, 91.0],
                            per_class={"airplane": 88.0, "truck": 95.5}),
            "conv_ft": log_run(probe_tags("b4-r4", 2, "conv-finetuned"), [92.0, 92.5]),
            "supervised": log_run({"task": "supervised", "method": "supervised", "blocks": 3},
                                  [91.0, 92.25], per_class={"airplane": 90.5, "truck": 97.0}),
            "random_initial_bn": log_run(random_probe_tags("random-initial-bn"), [30.0, 35.5]),
            "random_calibrated": log_run(random_probe_tags("random"), [40.0, 45.25]),
            "other_profile": log_run(probe_tags("b3-r4", 1), [11.11], profile="smoke"),
            # Figure 5b (study runs: must stay out of the tables)
            "semi_sup_20": log_run({"task": "supervised", "method": "supervised", "figure5": "semisup",
                                    "subset_per_class": 20, "subset_size": 200}, [40.0, 41.41]),
            "semi_rot_20": log_run(probe_tags("b4-r4", 2, "conv", figure5="semisup",
                                              subset_per_class=20, subset_size=200), [60.0, 62.62]),
            "semi_rot_50": log_run(probe_tags("b4-r4", 2, "conv", figure5="semisup",
                                               subset_per_class=50, subset_size=500), [73.73]),
            # Figure 5a
            "snap_1": log_run(probe_tags("b4-r4", 2, figure5="snapshots", snapshot_epoch=1,
                                         snapshot_rotation_acc="55.5000"), [50.0, 65.65]),
            "snap_2": log_run(probe_tags("b4-r4", 2, figure5="snapshots", snapshot_epoch=2,
                                         snapshot_rotation_acc="77.7000"), [70.0, 79.79]),
        }
        out = root / "reports"
        paths = report_render.write_report(out, report.collect(CONFIG))
        yield {"ids": ids, "out": out, "paths": paths, "root": root, "empty_error": empty.value,
               "runs": json.loads((out / "runs.json").read_text())}


def cell(store, table, row, column="accuracy"):
    return next(c for c in store["runs"]["cells"]
                if (c["table"], c["row"], c["column"]) == (table, row, column))


def test_writes_every_file(store):
    names = sorted(str(p.relative_to(store["out"])) for p in store["paths"])
    assert names == sorted(["table1.md", "table2.md", "table3.md", "table9.md", "figure5a.png",
                            "figure5b.png", "figures.md", "runs.json", "claims.md",
                            "metrics.json", "plots/rotation-sets-pretraining.csv",
                            "plots/rotation-sets-probe.csv", "plots/blocks.csv"])
    assert all(p.is_file() for p in store["paths"])


def test_tables_show_ours_paper_difference_and_run_link(store):
    ids, out = store["ids"], store["out"]
    table1 = (out / "table1.md").read_text()
    # 4-block B2: ours (final epoch, not best) / paper (ours - paper) link
    assert (f"88.00 ± 0.00 (n=1) / 89.06 (-1.06) s0 [{ids['b4r4_b2'][:8]}]"
            f"(http://127.0.0.1:5000/#/experiments/") in table1
    assert f"/runs/{ids['b4r4_b2']}?{MODEL_TRAINING_VIEW})" in table1
    assert "— / 61.73" in table1  # a missing cell still shows the paper value
    table2 = (out / "table2.md").read_text()
    assert "| 8 rotations (multiples of 45°) | 87.00 ± 0.00 (n=1) | 88.51 | -1.51 |" in table2
    table3 = (out / "table3.md").read_text()
    assert "| RotNet + conv | 91.00 ± 0.00 (n=1) | 91.16 | -0.16 |" in table3
    assert "| RotNet + conv (fine-tuned) | 92.50 ± 0.00 (n=1) | 92.17 | +0.33 |" in table3
    assert "| RotNet + non-linear (fine-tuned) | — | 91.73 | — | s0 — |" in table3
    assert "| Exemplar CNN | 84.3 |" in table3
    for text in (table1, table2, table3):
        assert "profile: `quick`" in text and "final-epoch" in text
        assert "sqlite:///" in text and "Git commit" in text


def test_newer_run_replaces_older_one(store):
    c = cell(store, "table1", "RotNet 4 blocks", "B2")
    assert c["run_id"] == store["ids"]["b4r4_b2"]
    assert c["value"] == 88.0 and c["best_value"] == 88.5 and c["paper"] == 89.06
    assert c["diff"] == pytest.approx(-1.06)


def test_a_run_of_another_protocol_leaves_the_reports_byte_identical(store):
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in store["paths"]}
    newer = log_run(probe_tags("b4-r4", 2), [97.25], config=OTHER_LR)  # e.g. -S probe.optim.lr=0.05
    again = report_render.write_report(store["out"], report.collect(CONFIG))
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in again} == before
    # ... and reported on request, under its own protocol, with nothing of the default mixed in
    other = report.collect(OTHER_LR)
    assert other.cell("table1", "RotNet 4 blocks", "B2").run.run_id == newer
    assert other.cell("table1", "RotNet 4 blocks", "B1").run is None  # made with lr 0.1
    # the conv probe's section did not change: that run belongs to both protocols
    assert other.cell("table3", "RotNet + conv").run.run_id == store["ids"]["conv"]


def test_each_cell_names_its_fingerprint_and_the_header_the_protocol(store):
    cells = [c for c in store["runs"]["cells"] if c["table"] == "table1"]
    b2 = cell(store, "table1", "RotNet 4 blocks", "B2")
    assert b2["fingerprint"] == fingerprint(probe_tags("b4-r4", 2))
    assert b2["fingerprint"] != fingerprint(probe_tags("b4-r4", 2), OTHER_LR)
    table1 = (store["out"] / "table1.md").read_text()
    combined = report.protocol.combined(c["fingerprint"] for c in cells)
    assert f"- Protocol fingerprint: `{combined}` (of the 12 run fingerprints" in table1
    assert "- Data set: `cifar10`; profile: `quick`" in table1
    assert "- Ran with: `fp32` on `cpu` (test cpu)\n" in table1
    assert "not run under this protocol" in table1


def test_a_table_whose_runs_ran_differently_is_flagged(store):
    table2 = (store["out"] / "table2.md").read_text()
    assert ("- **Mixed runtimes** (the runs did not all run alike): `bf16` on `cpu` (test cpu): "
            "1 run; `fp32` on `cpu` (test cpu): 1 run") in table2
    assert "Mixed runtimes" not in (store["out"] / "table3.md").read_text()


def test_failed_runs_and_other_profiles_are_ignored(store):
    assert cell(store, "table1", "RotNet 4 blocks", "B3")["run_id"] is None
    assert cell(store, "table1", "RotNet 3 blocks", "B1")["run_id"] is None
    text = "".join(p.read_text() for p in store["paths"] if p.suffix in (".md", ".json"))
    assert "99.00" not in text and "11.11" not in text
    assert store["ids"]["other_profile"] not in text


def test_study_runs_stay_out_of_the_tables(store):
    ids = store["ids"]
    assert cell(store, "table3", "Supervised NIN")["run_id"] == ids["supervised"]
    assert cell(store, "table3", "RotNet + conv")["run_id"] == ids["conv"]
    assert cell(store, "table3", "RotNet + non-linear")["run_id"] == ids["b4r4_b2"]
    tables = "".join((store["out"] / f"table{i}.md").read_text() for i in (1, 2, 3))
    for key in ("semi_sup_20", "semi_rot_20", "snap_2"):
        assert ids[key] not in tables


def test_figure_points_trace_to_runs(store):
    ids, points = store["ids"], store["runs"]["points"]
    got = {(p["figure"], p["series"], p["x"]): (p["value"], p["run_id"]) for p in points}
    assert got[("figure5a", "rotation prediction (snapshot)", 2.0)] == (77.7, ids["snap_2"])
    assert got[("figure5a", "non-linear probe on block 2", 1.0)] == (65.65, ids["snap_1"])
    assert got[("figure5b", "supervised NIN", 20.0)] == (41.41, ids["semi_sup_20"])
    assert got[("figure5b", "RotNet + conv (block 2)", 50.0)] == (73.73, ids["semi_rot_50"])
    md = (store["out"] / "figures.md").read_text()
    for key in ("snap_1", "snap_2", "semi_sup_20", "semi_rot_20", "semi_rot_50", "supervised"):
        assert f"/runs/{ids[key]}?{MODEL_TRAINING_VIEW})" in md


def test_every_run_id_in_runs_json_exists_in_the_store(store):
    existing = {r.info.run_id for r in tracking.search_runs("")}
    linked = [e["run_id"] for e in store["runs"]["cells"] + store["runs"]["points"] if e["run_id"]]
    assert len(linked) >= 15 and set(linked) <= existing
    for entry in store["runs"]["cells"] + store["runs"]["points"]:
        if entry["run_id"]:
            assert entry["url"].endswith(f"/runs/{entry['run_id']}?{MODEL_TRAINING_VIEW}")


def test_figures_are_pngs_that_draw_both_series(store):
    """Each PNG decodes, and both of its series are drawn in their colours: Figure 5a's
    probe (blue) and rotation (orange) points, 5b's RotNet + conv (blue) and supervised
    (red) points from the store's runs."""
    from PIL import Image

    colours = {"figure5a.png": ((31, 119, 180), (255, 127, 14)),  # tab:blue, tab:orange
               "figure5b.png": ((31, 119, 180), (214, 39, 40))}  # tab:blue, tab:red
    for name, series in colours.items():
        data = (store["out"] / name).read_bytes()
        assert data.startswith(PNG_MAGIC)
        assert b"Software" not in data  # no matplotlib version in the file
        pixels = Image.open(store["out"] / name).convert("RGB").getdata()
        counts = {c: sum(1 for p in pixels if sum(abs(a - b) for a, b in zip(p, c)) < 30)
                  for c in series}
        assert all(n > 50 for n in counts.values()), (name, counts)


def test_rewriting_gives_identical_bytes_and_leaves_files_alone(store):
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in store["paths"]}
    again = report_render.write_report(store["out"], report.collect(CONFIG))
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in again} == before
    fresh = report_render.write_report(store["root"] / "fresh", report.collect(CONFIG))
    assert {p.name: p.read_bytes() for p in fresh} == {k: v[0] for k, v in before.items()}


def test_empty_store_is_a_clear_error(store):
    message = str(store["empty_error"])
    assert "no finished runs for profile quick on data set cifar10 in sqlite:///" in message
    assert "dvc repro" in message and not (store["root"] / "empty").exists()
    with pytest.raises(RotnetError, match="no finished runs for profile paper"):
        report.collect(protocol("paper"))  # runs exist, none of this profile


def test_missing_figure_data_still_writes_a_figure(store, tmp_path):
    # the smoke profile has one probe run: tables mostly "—", no figure points at all
    paths = {p.name: p for p in report_render.write_report(tmp_path, report.collect(protocol("smoke", seeds=[0])))}
    assert "11.11 ± 0.00 (n=1) / 85.45 (-74.34)" in paths["table1.md"].read_text()
    for name in ("figure5a.png", "figure5b.png"):
        assert paths[name].read_bytes().startswith(PNG_MAGIC)
        assert f"No runs yet for this figure: {name}" in paths["figures.md"].read_text()


def test_run_links_point_at_the_ui_serving_the_store(monkeypatch):
    monkeypatch.delenv(report_render.UI_ENV, raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////tmp/x/mlflow.db")
    assert report_render.ui_base() == report_render.DEFAULT_UI  # `rotnet ui` on the local store
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.team:5000/")
    assert report_render.ui_base() == "http://mlflow.team:5000"  # a shared server serves its own UI
    monkeypatch.setenv(report_render.UI_ENV, "https://ui.example/")
    assert report_render.ui_base() == "https://ui.example"
    assert report_render.ui_base("http://given:1") == "http://given:1"


def test_both_random_init_rows_with_the_paper_value_on_the_as_initialised_one(store):
    ids, table3 = store["ids"], (store["out"] / "table3.md").read_text()
    initial = cell(store, "table3", "Random init + conv (BatchNorm as initialised)")
    calibrated = cell(store, "table3", "Random init + conv (BatchNorm calibrated on training images)")
    assert (initial["run_id"], initial["paper"]) == (ids["random_initial_bn"], 72.50)
    assert (calibrated["run_id"], calibrated["paper"]) == (ids["random_calibrated"], None)
    assert initial["fingerprint"] != calibrated["fingerprint"]
    assert "| Random init + conv (BatchNorm as initialised) | 35.50 ± 0.00 (n=1) | 72.50 | -37.00 |" in table3
    assert ("| Random init + conv (BatchNorm calibrated on training images) | 45.25 ± 0.00 (n=1) | — | — |"
            in table3)


def test_table9_gives_per_class_accuracy_of_the_table3_runs(store):
    ids, table9 = store["ids"], (store["out"] / "table9.md").read_text()
    assert "| airplane | 90.50 / 93.70 (-3.20) | 88.00 / 91.70 (-3.70) |" in table9
    assert "| truck | 97.00 / 95.20 (+1.80) | 95.50 / 94.20 (+1.30) |" in table9
    assert table9.index("| airplane |") < table9.index("| truck |")  # the data set's order
    assert "| bird |" not in table9  # no class the runs did not log
    assert (f"/runs/{ids['supervised']}?{MODEL_TRAINING_VIEW})" in table9
            and f"/runs/{ids['conv']}?{MODEL_TRAINING_VIEW})" in table9)
    assert "final-epoch" in table9


def test_the_whole_training_set_supervised_run_is_the_figure5b_point(store):
    """Figure 5b's supervised point at K = all training images per class is the Table 3
    supervised run (5000 per class on CIFAR-10), not a second training."""
    paper = protocol("paper")
    tags = {"task": "supervised", "method": "supervised", "profile": "paper",
            "fingerprint": fingerprint({"task": "supervised"}, paper), "num_classes": "10"}

    def run(train_images: int) -> report.Run:
        return report.Run("r1", "0", "sup", 1, {**tags, "train_images": str(train_images)}, 92.0, 92.5)

    (point,) = report.whole_set_supervised_point(paper, [run(50_000)])
    assert (point.figure, point.series, point.x, point.value) == ("figure5b", "supervised NIN", 5000, 92.0)
    assert report.whole_set_supervised_point(paper, [run(1_600)]) == []  # 160 per class: no K


def test_tables_on_another_data_set_say_so_and_table9_shows_ours_only():
    """On the generated set the titles do not claim CIFAR-10, and Table 9 (whose paper
    numbers are CIFAR-10's classes) shows our per-class accuracy, not a column of "— (—)"."""
    run = report.Run("r" * 32, "1", "n", 0, {"seed": "0"}, 80.0, 80.0,
                     (("house", 70.0), ("tree", 90.0)))
    cells = [report.Cell(table, row, column, paper,
                         (report.Replicate(0, "f", run if key in ("table3/supervised", "table3/conv") else None),),
                         key) for key, table, row, column, paper, _ in report.table_specs()]
    data = report.ReportData("quick", "generated", "sqlite:///x", cells, [])
    table3 = report_render.table_markdown(data, "table3", "http://ui")
    table9 = report_render.table9_markdown(data, "http://ui")
    assert table3.startswith("# Table 3: `generated` (not CIFAR-10) classification")
    assert table9.startswith("# Table 9: per-class `generated` (not CIFAR-10) test accuracy")
    assert "| house | 70.00 | 70.00 |" in table9 and "(—)" not in table9
    cifar = report.ReportData("paper", "cifar10", "sqlite:///x", cells, [])
    assert report_render.table_markdown(cifar, "table3", "http://ui").startswith("# Table 3: CIFAR-10")
