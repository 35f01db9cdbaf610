"""`rotnet tune`: a tiny Optuna study on the smoke profile — resumable, validation-only,
nested MLflow runs, a pruned trial is KILLED, a changed search space is refused."""

from __future__ import annotations

import shlex
import sys

import pytest
import torch

from rotnet import experiments
from rotnet.config import Config
from rotnet.errors import RotnetError
from rotnet.tracking import NullTracker

TRAIN_SIZE = 96


def smoke_config(**data) -> Config:
    return Config.from_dict({"profile": "smoke", "data": {"train_size": TRAIN_SIZE, **data},
                             "pretrain": {"optim": {"epochs": 1}}})


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("pretrain")
    experiments.pretrain(smoke_config(), out, tracker=NullTracker())
    return out / "checkpoint.pt"


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("ROTNET_HOME", str(tmp_path))
    return tmp_path


def invoke(capsys, *args) -> tuple[int, str, str]:
    """`rotnet ARGS` in-process through cli.main (RotnetError -> exit 2)."""
    from rotnet import cli

    argv = sys.argv
    sys.argv = ["rotnet", *map(str, args)]
    try:
        cli.main()
        code = 0
    except SystemExit as exit_:
        code = exit_.code or 0
    finally:
        sys.argv = argv
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def tune_args(checkpoint, store, study="s", trials=3, max_epochs=2):
    return ["tune", checkpoint, "--block", 2, "--trials", trials, "--study", study,
            "--storage", f"sqlite:///{store / 'optuna.db'}", "--seed", 0, "--profile", "smoke",
            "--set", f"data.train_size={TRAIN_SIZE}", "--val-fraction", 0.25,
            "--min-epochs", 1, "--max-epochs", max_epochs, "--out", store / "trials"]


def mlflow_runs(experiment="rotnet-tune"):
    from rotnet.tracking import search_runs

    return search_runs("", experiment=experiment)


@pytest.mark.slow
def test_study_runs_resumes_and_nests_runs(checkpoint, store, capsys, monkeypatch):
    import optuna

    from rotnet.params import parse_set

    seen = []
    real_probe = experiments.probe

    def spy(config, backbone, **kwargs):
        seen.append(kwargs["data"])
        return real_probe(config, backbone, **kwargs)

    monkeypatch.setattr(experiments, "probe", spy)
    code, out, err = invoke(capsys, *tune_args(checkpoint, store))
    assert code == 0, err

    # Only the validation split (carved from the training set) was trained and evaluated on.
    full = experiments.load_dataset(smoke_config())
    assert len(seen) == 3
    for data in seen:
        assert len(data.train_labels) + len(data.test_labels) == len(full.train_labels)
        assert len(data.test_labels) == pytest.approx(0.25 * TRAIN_SIZE, abs=len(full.classes))
        train_rows = {bytes(img.numpy()) for img in full.train_images}
        assert all(bytes(img.numpy()) in train_rows for img in data.test_images)
        test_rows = {bytes(img.numpy()) for img in full.test_images}
        assert not any(bytes(img.numpy()) in test_rows for img in data.test_images)
        assert set(data.test_labels.tolist()) == set(full.train_labels.tolist())  # stratified

    # The printed best trial and a dvc line that parses back into the values.
    best_line = next(line for line in out.splitlines() if line.startswith("best trial"))
    dvc_line = next(line for line in out.splitlines() if line.startswith("dvc exp run"))
    words = shlex.split(dvc_line)
    assert words[:3] == ["dvc", "exp", "run"] and words[3::2] == ["-S"] * 4
    values = {}
    for item in words[4::2]:
        values.update(parse_set(item)["probe"]["optim"])
    assert set(values) == {"lr", "weight_decay", "epochs", "milestones"}
    assert 1 <= values["epochs"] <= 2 and isinstance(values["milestones"], list)
    assert f"epochs={values['epochs']}" in best_line
    Config.from_dict({"profile": "smoke", "probe": {"optim": values}})  # valid params

    # Resuming adds trials to the same study and the same MLflow study run.
    code, out, err = invoke(capsys, *tune_args(checkpoint, store, trials=2))
    assert code == 0, err
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{store / 'optuna.db'}")
    assert len(study.trials) == 5
    runs = mlflow_runs()
    parents = [r for r in runs if r.data.tags.get("task") == "tune"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    parent = parents[0]
    assert parent.data.metrics["best_value"] == pytest.approx(study.best_value)
    assert parent.data.tags["best.lr"] == str(study.best_params["lr"])
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 5
    assert all(r.info.status in ("FINISHED", "KILLED") for r in children)
    for r in children:
        assert r.data.tags["pruned"] == ("true" if r.info.status == "KILLED" else "false")
    assert mlflow_runs("rotnet") == []  # tuning stays out of the experiment the report reads

    # The same study name with a different search space: one line, exit 2, nothing changed.
    code, out, err = invoke(capsys, *tune_args(checkpoint, store, trials=1, max_epochs=3))
    assert code == 2
    assert "different search space" in err and len(err.strip().splitlines()) == 1
    assert len(optuna.load_study(study_name="s", storage=f"sqlite:///{store / 'optuna.db'}").trials) == 5
    assert len(mlflow_runs()) == 6


@pytest.mark.slow
def test_pruned_trial_is_killed_not_finished(checkpoint, store):
    import optuna

    from rotnet.tune import tune

    always = optuna.pruners.ThresholdPruner(lower=1000.0)  # every reported accuracy is too low
    with pytest.raises(RotnetError, match="no completed trial"):
        tune(smoke_config(), checkpoint, n_trials=1, study_name="pruned", val_fraction=0.25,
             storage=str(store / "optuna.db"), max_epochs=2, min_epochs=2, pruner=always,
             out_dir=store / "trials")
    (trial,) = optuna.load_study(study_name="pruned", storage=f"sqlite:///{store / 'optuna.db'}").trials
    assert trial.state == optuna.trial.TrialState.PRUNED
    runs = {r.info.run_id: r for r in mlflow_runs()}
    child = runs[trial.user_attrs["mlflow_run_id"]]
    assert child.info.status == "KILLED" and child.data.tags["pruned"] == "true"
    assert not (store / "trials" / "pruned" / "trial-0000" / "metrics.json").exists()
    assert all(r.info.status != "RUNNING" for r in runs.values())


def test_bad_requests_exit_2_before_anything(checkpoint, store, capsys):
    for extra, message in ((["--target", "pretext"], "--target pretext: choose one of probe, pretrain"),
                           (["--trials", "0"], "at least 1"),
                           (["--block", "9"], "cannot probe block 9")):
        args = tune_args(checkpoint, store, study="bad") + extra
        code, _, err = invoke(capsys, *args)
        assert code == 2 and message in err, err
        assert len(err.strip().splitlines()) == 1
    assert not (store / "trials").exists()
    assert not (store / "mlflow.db").exists()


def test_validation_split_is_stratified_and_disjoint():
    from rotnet.data import validation_split

    data = experiments.load_dataset(smoke_config())
    val = validation_split(data, 0.25, seed=3)
    assert len(val.train_labels) + len(val.test_labels) == len(data.train_labels)
    counts = torch.bincount(val.test_labels, minlength=data.num_classes)
    totals = torch.bincount(data.train_labels, minlength=data.num_classes)
    assert torch.all((counts - totals * 0.25).abs() <= 1)
    again = validation_split(data, 0.25, seed=3)
    assert torch.equal(val.test_images, again.test_images)
    with pytest.raises(RotnetError):
        validation_split(data, 1.5)


def test_milestones_dvc_line_and_write_params(tmp_path):
    from rotnet.params import dump_params, read_params
    from rotnet.tune import dvc_command, resolve_storage, scaled_milestones, write_params

    assert scaled_milestones(100) == [50, 75, 90]
    assert scaled_milestones(3) == [1, 2]
    assert scaled_milestones(1) == []
    best = {"lr": 0.0123456789, "weight_decay": 2.5e-4, "epochs": 20}
    line = dvc_command("probe", best)
    assert "probe.optim.milestones=[10,15,18]" in shlex.split(line)
    assert resolve_storage(str(tmp_path / "x.db")) == f"sqlite:///{tmp_path / 'x.db'}"

    path = tmp_path / "params.yaml"
    path.write_text(dump_params(Config.profile_defaults("smoke")))
    before = path.read_text()
    write_params(path, "probe", best)
    after = path.read_text()
    values = read_params(path)
    assert values["probe"]["optim"] == {**values["probe"]["optim"], "lr": 0.0123457,
                                        "weight_decay": 0.00025, "epochs": 20,
                                        "milestones": [10, 15, 18]}
    assert values["conv_probe"] == read_params_text(before)["conv_probe"]
    assert [ln for ln in before.splitlines() if ln.startswith("#")] == \
        [ln for ln in after.splitlines() if ln.startswith("#")]  # comments kept
    Config.from_dict(values)
    with pytest.raises(RotnetError):
        write_params(tmp_path / "missing.yaml", "probe", best)


def read_params_text(text: str) -> dict:
    import yaml

    return yaml.safe_load(text)
