"""`rotnet ablate`: which DVC command it runs (a main-pipeline variant through `dvc repro`,
reusing what is up to date; another as a named DVC experiment), its defaults (params.yaml's
`ablation` section) and its table (downstream accuracy over every seed, chance, the paper,
the difference with its interval and verdict, run links)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from rotnet.config import Config
from mlflow import MlflowClient

from helpers import cli_env, run_rotnet
from rotnet import ablation, ablation_table
from test_report import CONFIG, log_run, probe_tags, protocol

TEN_CLASSES = {f"class{i}": 50.0 for i in range(10)}


@pytest.fixture
def runs(tracking_store):
    """Probe runs of b4-r8 and the baseline b4-r4 (quick profile, cifar10), and a pretraining."""
    pretrain = log_run({"task": "pretrain", "variant": "b4-r8", "blocks": 4, "rotations": "8"},
                       [60.0, 75.25])
    ids = {
        "pretrain_b4r8": pretrain,
        "b4r8_b2": log_run(probe_tags("b4-r8", 2, pretrain_run_id=pretrain), [86.0, 87.0],
                           per_class=TEN_CLASSES),
        "b4r4_b2": log_run(probe_tags("b4-r4", 2), [85.0, 88.5], per_class=TEN_CLASSES),
        "b4r4_b1": log_run(probe_tags("b4-r4", 1), [80.0, 84.0], per_class=TEN_CLASSES),
    }
    return tracking_store, ids


def test_table_compares_downstream_accuracy_with_chance_paper_and_run_links(runs, tmp_path):
    _, ids = runs
    rows = ablation_table.comparison_rows(CONFIG, "b4-r8")
    path = ablation_table.write_markdown(CONFIG, rows, "b4-r8", tmp_path / "reports",
                                         "http://127.0.0.1:5123")
    assert path == tmp_path / "reports" / "ablation-b4-r8.md"
    text = path.read_text()
    header = next(line for line in text.splitlines() if line.startswith("| probe on "))
    assert "| b4-r8 (paper) |" in header and "| b4-r4 (paper) |" in header  # labelled
    block2 = next(line for line in text.splitlines() if line.startswith("| block 2 "))
    cells = [c.strip() for c in block2.strip("|").split("|")]
    assert cells[:7] == ["block 2", "10.00", "87.00 ± 0.00 (1)", "88.51", "88.50 ± 0.00 (1)",
                         "89.06", "-1.50"]
    assert cells[7].startswith("[") and "at 95.0 % (independent)" in cells[7]  # no predictions
    assert cells[8] == "undecided"
    # runs as links into the MLflow UI that `rotnet ui` serves, in its model-training view
    assert (f"[s0](http://127.0.0.1:5123/#/experiments/1/runs/{ids['b4r8_b2']}"
            "?workflowType=machine_learning)") in cells[9]
    assert ids["b4r4_b2"] in cells[9]
    assert "| block 1 " not in text  # the main pipeline probes b4-r8 on block 2 only
    assert "75.25" not in text  # the pretext accuracy (8-way) is not compared with a 4-way one
    assert "pretext chance 12.5% vs 25.0%" in text


def test_every_seed_counts_and_the_difference_gets_the_claims_test(tracking_store):
    """Three seeds per side, each run with its predictions: mean ± sd (n=3) per side, and a
    paired interval from rotnet.significance that decides a 30-point gap."""
    import numpy as np

    config = protocol(seeds=[0, 1, 2])
    labels = np.arange(400) % 10
    for variant, accs in (("b4-r8", (40.0, 42.0, 41.0)), ("b4-r4", (70.0, 72.0, 74.0))):
        for seed, acc in enumerate(accs):
            log_predicted_run(config, seed, probe_tags(variant, 2), acc, labels)
    [row] = ablation_table.comparison_rows(config, "b4-r8")
    cells = ablation_table.cells(row, lambda run, text: text)
    assert cells[2:7] == ["41.00 ± 1.00 (3)", "88.51", "72.00 ± 2.00 (3)", "89.06", "-31.00"]
    assert row.decision.estimate.paired and row.decision.estimate.seeds == 3
    assert row.verdict == "refuted"  # 8 rotations worse than 4 here, beyond the noise
    assert cells[9] == "s0 s1 s2 / s0 s1 s2"


def log_predicted_run(config, seed: int, tags: dict, acc: float, labels) -> str:
    """A finished probe run of `seed` whose predictions.json gets `acc` % of `labels` right."""
    import json
    import tempfile

    import numpy as np

    seeded = config.with_seed(seed)
    run_id = log_run({**tags, "seed": seed}, [acc], config=seeded)
    right = int(round(acc / 100 * len(labels)))
    predicted = np.where(np.arange(len(labels)) < right, labels, (labels + 1) % 10)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "predictions.json"
        path.write_text(json.dumps({"test_set_sha256": "t", "labels": labels.tolist(),
                                    "predicted": predicted.tolist()}))
        MlflowClient().log_artifact(run_id, str(path))
    return run_id


def test_paper_values_come_from_tables_1_and_2():
    assert ablation_table.paper_value("b4-r4", 3) == 86.21  # Table 1
    assert ablation_table.paper_value("b4-r8", 2) == 88.51  # Table 2: block 2 only
    assert ablation_table.paper_value("b4-r8", 1) is None
    assert ablation_table.paper_value("b3-r8", 2) is None


def test_experiment_names_are_unique():
    assert ablation.unique_name("ablate-b3-r8", set()) == "ablate-b3-r8"
    assert ablation.unique_name("ablate-b3-r8", {"ablate-b3-r8", "ablate-b3-r8-2"}) == "ablate-b3-r8-3"


@pytest.fixture
def project(tmp_path, runs):
    """A directory with params.yaml (ablation: b4-r8), ablation/dvc.yaml and a fake `dvc`
    module first on the path (rotnet runs DVC as `python -m dvc`) that records its arguments
    and succeeds. PATH is left without the venv's bin/, as when a user runs .venv/bin/rotnet."""
    store, ids = runs
    root = tmp_path / "project"
    (root / "ablation").mkdir(parents=True)
    (root / "ablation" / "dvc.yaml").write_text("stages: {}\n")
    params = {"profile": "quick", "data": {"dataset": "cifar10"},
              "ablation": {"blocks": 4, "rotations": "8"}}
    (root / "params.yaml").write_text(json.dumps(params))  # YAML is a superset of JSON
    fake = tmp_path / "fake" / "dvc"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "__main__.py").write_text(
        "import sys\n"
        f"with open({str(tmp_path / 'dvc-calls')!r}, 'a') as f:\n"
        "    f.write(' '.join(sys.argv[1:]) + '\\n')\n")
    path = os.pathsep.join(filter(None, [str(fake.parent), os.environ.get("PYTHONPATH")]))
    env = cli_env(store, PYTHONPATH=path, PATH="/usr/bin:/bin")
    return root, env, tmp_path / "dvc-calls", ids


def test_ablate_reuses_the_main_pipeline_with_the_params_defaults(project):
    root, env, calls, ids = project
    result = run_rotnet(["ablate"], root, env, timeout=300)
    assert result.returncode == 0, result.stderr
    call = Path(calls).read_text().split()
    # dvc.yaml's stage names: matrix values joined by "-", variant then seed; every seed of
    # params' `seeds` (the quick profile's)
    seeds = Config.from_dict({"profile": "quick"}).seeds
    assert len(seeds) >= 2
    assert call == ["repro", *[f"{stage}@b4-r8-{seed}" for seed in seeds
                               for stage in ("pretrain", "probe")],
                    *[f"{stage}@b4-r4-{seed}" for seed in seeds for stage in ("pretrain", "probe")]]
    written = (root / "reports" / "ablation-b4-r8.md").read_text()
    assert ids["b4r8_b2"] in written and "88.51" in written
    # the variant's runs, made by the main pipeline, now nest under the ablation's parent run
    client = MlflowClient()
    parent_id = client.get_run(ids["b4r8_b2"]).data.tags["mlflow.parentRunId"]
    assert client.get_run(ids["pretrain_b4r8"]).data.tags["mlflow.parentRunId"] == parent_id
    parent = client.get_run(parent_id)
    assert parent.info.run_name == "ablate-b4-r8-quick-s0" and parent.info.status == "FINISHED"
    assert [a.path for a in client.list_artifacts(parent_id)] == ["ablation-b4-r8.md"]
    assert "mlflow.parentRunId" not in client.get_run(ids["b4r4_b2"]).data.tags  # the baseline's stay
    baseline_rows = ablation_table.comparison_rows(CONFIG, "b4-r4")
    assert ablation.gather_runs(CONFIG, "b4-r4", baseline_rows, root / "t.md") == []
    assert "mlflow.parentRunId" not in client.get_run(ids["b4r4_b2"]).data.tags
    run_rotnet(["ablate"], root, env, timeout=300)  # again: the same parent, no second one
    assert client.get_run(ids["b4r8_b2"]).data.tags["mlflow.parentRunId"] == parent_id
    assert len(client.search_runs([parent.info.experiment_id],
                                  "tags.`rotnet.group` LIKE 'ablation:%'")) == 1


def test_ablate_runs_a_variant_outside_the_main_pipeline_as_a_named_experiment(project):
    root, env, calls, _ = project
    result = run_rotnet(["ablate", "--blocks", "3", "--queue"], root, env, timeout=300)
    assert result.returncode == 0, result.stderr
    call = Path(calls).read_text().split()
    assert call[:5] == ["exp", "run", "--queue", "-n", "ablate-b3-r8"]  # rotations: params'
    assert "ablation.blocks=3" in call and "ablation/dvc.yaml" in call


def test_the_ablation_stage_gives_dvc_nothing_to_restore_before_it_runs():
    """A DVC-cached output of a stage that never ran in this checkout makes `dvc exp run`
    warn "No file hash info found for … runs/ablation"; the ablation's outputs are uncached
    (its checkpoint goes to MLflow's artifacts) and its run folder git-ignored, so an
    experiment commits no checkpoint."""
    import subprocess

    import yaml

    from helpers import ROOT

    stage = yaml.safe_load((ROOT / "ablation" / "dvc.yaml").read_text())["stages"]["ablation"]
    for out in stage["outs"]:
        [(path, options)] = out.items()
        assert options.get("cache") is False, path
    ignored = subprocess.run(["git", "check-ignore", "-q", "runs/ablation/b3-r8/checkpoint.pt"],
                             cwd=ROOT)
    assert ignored.returncode == 0


def test_a_main_pipeline_rotation_variant_is_compared_on_the_blocks_dvc_yaml_probes(runs):
    assert ablation_table.probed_blocks("b4-r8") == [2]  # Table 2: block 2
    assert ablation_table.probed_blocks("b4-r4") == [1, 2, 3, 4]
    assert ablation_table.probed_blocks("b3-r8") == [1, 2, 3]  # ablation/dvc.yaml: all
    [row] = ablation_table.comparison_rows(CONFIG, "b4-r8")
    assert row.label == "block 2" and row.chance == 10.0
    rows = ablation_table.comparison_rows(CONFIG, "b3-r8")  # outside dvc.yaml: every block
    assert [r.label for r in rows] == ["block 1", "block 2", "block 3"]
    assert [r.run_id for r in rows[0].base] == [runs[1]["b4r4_b1"]] and rows[0].ours == ()
    assert rows[0].decision is None and rows[0].verdict == "not run"
    assert rows[2].chance == 10.0 and rows[2].base == ()  # no run there: chance all the same
