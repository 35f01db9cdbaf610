"""MLflow tracking of the experiments, in a throw-away sqlite store per test."""

from __future__ import annotations

import json
import subprocess

import pytest

from rotnet import checkpoint, engine, experiments, tracking
from rotnet.errors import RotnetError
from rotnet.tracking import as_params


def git_head() -> str:
    out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tracking.project_root(),
                         capture_output=True, text=True)
    return out.stdout.strip() if out.returncode == 0 else "unknown"


@pytest.fixture
def pretrained(tmp_path, tracking_store, make_config, tiny_data):
    """A tracked tiny pretraining (2 epochs)."""
    config = make_config()
    result = experiments.pretrain(config, tmp_path / "pretrain", data=tiny_data)
    return config, result


def test_uri_comes_from_the_environment(tracking_store):
    assert tracking.tracking_uri() == tracking_store.uri


def test_pretrain_creates_a_finished_run_with_params_tags_and_history(pretrained, tracking_store):
    config, result = pretrained
    runs = tracking_store.runs()
    assert [r.info.run_id for r in runs] == [result.run_id]
    run = tracking_store.run(result.run_id)
    assert run.info.status == "FINISHED"

    params = run.data.params
    assert params["model.rotnet.blocks"] == "4"
    assert params["model.rotnet.rotations"] == "4"
    assert params["optim.epochs"] == "2"
    assert params["data.dataset"] == "generated"
    # Only the sections that apply to a pretraining: no probe, semisup, ablation, ... keys.
    assert {key.split(".")[0] for key in params} == {"profile", "data", "runtime", "optim", "model"}
    assert len(params) < len(as_params(config.to_dict())) / 2

    tags = run.data.tags
    ckpt = result.out_dir / "checkpoint.pt"
    assert tags["task"] == "pretrain"
    assert tags["dataset"] == "generated"
    assert tags["variant"] == "b4-r4"
    assert tags["profile"] == "smoke"
    assert tags["git_commit"] == git_head()
    if git_head() != "unknown":
        assert tags["mlflow.source.git.commit"] == git_head()
    assert tags["mlflow.source.name"]
    # what tells runs apart first; the end is what reports cite, so the UI's search finds it
    assert run.info.run_name == f"b4-r4-pretrain-s0-{result.run_id[:8]}"
    assert tags["checkpoint_sha256"] == checkpoint.file_sha256(ckpt)
    assert tags["checkpoint_sha256"] == result.metrics["checkpoint_sha256"]

    history = tracking_store.history(result.run_id, "test_acc")
    assert [step for step, _ in history] == [1, 2]  # one entry per epoch
    assert [v for _, v in history] == pytest.approx([m["test_acc"] for m in result.history])
    assert [s for s, _ in tracking_store.history(result.run_id, "train_loss")] == [1, 2]
    assert tracking.metric_history(result.run_id, "test_acc") == history

    written = json.loads((result.out_dir / "metrics.json").read_text())
    assert written["run_id"] == result.run_id
    assert written["test_acc"] == result.history[-1]["test_acc"]
    assert written["checkpoint_sha256"] == tags["checkpoint_sha256"]


def test_pretraining_logs_its_network_as_an_mlflow_model_that_loads_back(pretrained, tracking_store):
    """"Logged models" lists the RotNet with the pretraining run as its source, a signature and
    an input example; `mlflow.pytorch.load_model` gives back the network that predicts as the
    checkpoint's does."""
    import mlflow
    import torch

    from rotnet.models import NINClassifier

    _, result = pretrained
    client = mlflow.MlflowClient()
    [model] = client.search_logged_models([tracking.experiment_id()])
    assert model.source_run_id == result.run_id and model.name == "rotnet"
    loaded = mlflow.pytorch.load_model(f"models:/{model.model_id}")
    assert isinstance(loaded, NINClassifier)
    info = mlflow.models.get_model_info(f"models:/{model.model_id}")
    assert info.signature.inputs.to_dict()[0]["tensor-spec"]["shape"] == (-1, 3, 32, 32)
    example = mlflow.models.Model.load(f"models:/{model.model_id}").load_input_example()
    example = torch.from_numpy(example).float()
    state = checkpoint.load_checkpoint(result.out_dir / "checkpoint.pt", task="pretrain")
    original = NINClassifier(4, 4, 3, state["arch"]["width"]).eval()
    original.load_state_dict(state["model"])
    with torch.no_grad():
        assert torch.allclose(loaded.eval()(example), original(example), atol=1e-5)
    # inside the store's own artifact folder
    assert model.artifact_location.startswith((tracking_store.path.parent / "mlartifacts").as_uri())


def test_probe_run_records_its_pretraining_lineage(pretrained, tracking_store, tmp_path,
                                                   tiny_data):
    config, pre = pretrained
    ckpt = pre.out_dir / "checkpoint.pt"
    backbone = experiments.load_backbone(ckpt)
    result = experiments.probe(config, backbone, block=2, out_dir=tmp_path / "probe",
                               data=tiny_data)
    run = tracking_store.run(result.run_id)
    assert run.info.status == "FINISHED"
    assert result.run_id != pre.run_id
    tags = run.data.tags
    assert tags["pretrain_run_id"] == pre.run_id
    assert tags["pretrain_checkpoint_sha256"] == checkpoint.file_sha256(ckpt)
    assert tags["pretrain_checkpoint_sha256"] == tracking_store.run(pre.run_id).data.tags[
        "checkpoint_sha256"]
    assert tags["task"] == "probe" and tags["head"] == "nonlinear"
    assert tags["block"] == "2" and tags["variant"] == "b4-r4" and tags["backbone"] == "pretrained"
    assert tags["checkpoint_sha256"] == checkpoint.file_sha256(result.out_dir / "checkpoint.pt")
    assert [s for s, _ in tracking_store.history(result.run_id, "test_acc")] == [1]


def test_a_run_that_fails_mid_training_is_failed_and_resumes_into_the_same_run(
        tmp_path, tracking_store, make_config, tiny_data, monkeypatch):
    config = make_config({"pretrain": {"optim": {"epochs": 3}}})
    out = tmp_path / "pretrain"
    real_epoch = engine.train_one_epoch

    def second_epoch_breaks(task, data, optimizer, runtime, epoch, *args, **kwargs):
        if epoch == 1:
            raise RuntimeError("out of memory (simulated)")
        return real_epoch(task, data, optimizer, runtime, epoch, *args, **kwargs)

    monkeypatch.setattr(engine, "train_one_epoch", second_epoch_breaks)
    with pytest.raises(RuntimeError, match="simulated"):
        experiments.pretrain(config, out, data=tiny_data)
    (failed,) = tracking_store.runs()
    assert failed.info.status == "FAILED"
    assert not (out / "metrics.json").exists()
    assert checkpoint.load_checkpoint(out / "checkpoint.pt")["epoch"] == 1
    assert [s for s, _ in tracking_store.history(failed.info.run_id, "test_acc")] == [1]

    monkeypatch.setattr(engine, "train_one_epoch", real_epoch)
    result = experiments.pretrain(config, out, data=tiny_data)
    assert result.run_id == failed.info.run_id
    assert [r.info.run_id for r in tracking_store.runs()] == [failed.info.run_id]
    run = tracking_store.run(result.run_id)
    assert run.info.status == "FINISHED"
    assert [s for s, _ in tracking_store.history(result.run_id, "test_acc")] == [1, 2, 3]
    assert run.data.tags["checkpoint_sha256"] == checkpoint.file_sha256(out / "checkpoint.pt")
    assert json.loads((out / "metrics.json").read_text())["run_id"] == result.run_id


def test_interrupt_marks_the_run_killed(tmp_path, tracking_store, make_config, tiny_data,
                                        monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(engine, "train_one_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        experiments.pretrain(make_config(), tmp_path / "out", data=tiny_data)
    (run,) = tracking_store.runs()
    assert run.info.status == "KILLED"
    assert not (tmp_path / "out" / "metrics.json").exists()


def test_untracked_runs_leave_the_store_alone(tmp_path, tracking_store, make_config, tiny_data):
    result = experiments.pretrain(make_config({"pretrain": {"optim": {"epochs": 1}}}),
                                  tmp_path / "out", tracker=tracking.NullTracker(), data=tiny_data)
    assert result.run_id == ""
    assert tracking_store.runs() == []
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["run_id"] == ""


def test_as_params_makes_flat_string_params():
    assert as_params({"a": {"b": 1, "c": {"d": [1, 2]}}, "e": None}) == {
        "a.b": "1", "a.c.d": "[1, 2]", "e": "None"}


def test_unreachable_tracking_server_is_a_quick_rotnet_error(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # discard port: refused
    with pytest.raises(RotnetError, match="MLflow"):
        tracking.check_reachable(timeout=2)


def test_the_experiment_opens_in_the_model_training_view(tracking_store):
    client = tracking_store.client()
    kind = client.get_experiment_by_name("rotnet").tags.get(tracking.EXPERIMENT_KIND_TAG)
    assert kind == tracking.MODEL_TRAINING_KIND == "custom_model_development"
    # An experiment made without the tag (by an older rotnet) gets it when a run starts.
    made_before = client.create_experiment("older")
    tracking.Tracker(experiment="older").start("a-run", {}, {})
    assert client.get_experiment(made_before).tags[tracking.EXPERIMENT_KIND_TAG] == "custom_model_development"


def test_source_name_is_the_script_or_the_cli_command(monkeypatch, tmp_path):
    monkeypatch.setenv("ROTNET_HOME", str(tmp_path))
    assert tracking.source_name([str(tmp_path / "stages" / "pretrain.py"), "b4-r4"]) == "stages/pretrain.py"
    assert tracking.source_name(["/venv/bin/rotnet", "probe", "x.pt"]) == "rotnet probe"
    assert tracking.source_name(["/elsewhere/tool.py"]) == "tool.py"


def test_run_names_tell_study_runs_apart(pretrained, tracking_store, tmp_path, tiny_data):
    """Two probes that differ only in their label subset, and runs with other seeds, get
    different names, each naming method, block, variant and seed."""
    config, pre = pretrained
    backbone = experiments.load_backbone(pre.out_dir / "checkpoint.pt")
    names = set()
    for k, seed in ((1, 0), (2, 0), (2, 1)):
        run = experiments.probe(make_seed(config, seed), backbone, block=2, data=tiny_data,
                                out_dir=tmp_path / f"k{k}-s{seed}", subset_per_class=k,
                                extra_tags={"subset_per_class": k})
        name = tracking_store.run(run.run_id).info.run_name
        assert name == f"k{k}-b4-r4-B2-nonlinear-s{seed}-{run.run_id[:8]}", name
        names.add(name)
    assert len(names) == 3


def make_seed(config, seed: int):
    from dataclasses import replace

    return replace(config, runtime=replace(config.runtime, seed=seed))
