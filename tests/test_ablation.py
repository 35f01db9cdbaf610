"""`rotnet ablate`: which DVC command it runs (a main-pipeline variant through `dvc repro`,
reusing what is up to date; another as a named DVC experiment), its defaults (params.yaml's
`ablation` section) and its table (downstream accuracy, chance, the paper, run ids)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from mlflow import MlflowClient

from helpers import cli_env, run_rotnet
from rotnet import ablation
from test_report import CONFIG, log_run, probe_tags

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


def test_table_compares_downstream_accuracy_with_chance_paper_and_run_ids(runs, tmp_path):
    _, ids = runs
    rows = ablation.comparison_rows(CONFIG, "b4-r8")
    path = ablation.write_markdown(CONFIG, rows, "b4-r8", tmp_path / "reports")
    assert path == tmp_path / "reports" / "ablation-b4-r8.md"
    text = path.read_text()
    block2 = next(line for line in text.splitlines() if line.startswith("| block 2 "))
    cells = [c.strip() for c in block2.strip("|").split("|")]
    # probe on | chance | b4-r8 | paper | b4-r4 | paper | Δ | runs
    assert cells[:7] == ["block 2", "10.00", "87.00", "88.51", "88.50", "89.06", "-1.50"]
    assert ids["b4r8_b2"] in cells[7] and ids["b4r4_b2"] in cells[7]
    assert "| block 1 " not in text  # the main pipeline probes b4-r8 on block 2 only
    assert "75.25" not in text  # the pretext accuracy (8-way) is not compared with a 4-way one
    assert "pretext chance 12.5% vs 25.0%" in text


def test_paper_values_come_from_tables_1_and_2():
    assert ablation.paper_value("b4-r4", 3) == 86.21  # Table 1
    assert ablation.paper_value("b4-r8", 2) == 88.51  # Table 2: block 2 only
    assert ablation.paper_value("b4-r8", 1) is None
    assert ablation.paper_value("b3-r8", 2) is None


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
    # dvc.yaml's stage names: matrix values joined by "-", variant then seed
    assert call == ["repro", "pretrain@b4-r8-0", "probe@b4-r8-0", "pretrain@b4-r4-0", "probe@b4-r4-0"]
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
    baseline_rows = ablation.comparison_rows(CONFIG, "b4-r4")
    assert ablation.gather_runs(CONFIG, "b4-r4", baseline_rows, root / "t.md") is None
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
    assert ablation.probed_blocks("b4-r8") == [2]  # Table 2: block 2
    assert ablation.probed_blocks("b4-r4") == [1, 2, 3, 4]
    assert ablation.probed_blocks("b3-r8") == [1, 2, 3]  # ablation/dvc.yaml: all
    [row] = ablation.comparison_rows(CONFIG, "b4-r8")
    assert row.label == "block 2" and row.chance == 10.0
    rows = ablation.comparison_rows(CONFIG, "b3-r8")  # outside dvc.yaml: every block
    assert [r.label for r in rows] == ["block 1", "block 2", "block 3"]
    assert rows[0].base.run_id == runs[1]["b4r4_b1"] and rows[0].ours is None
    assert rows[2].chance == 10.0 and rows[2].base is None  # no run there: chance all the same
