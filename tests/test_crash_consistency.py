"""Records stay consistent whatever happens to a run: a SIGKILL at each boundary of an
epoch's end or right after its MLflow run is created, two writers on one folder, a crafted
checkpoint that would run code, and a stage killed inside `dvc repro`. (Bad input, refused
before anything is written: test_bad_input.py.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers import RunsCode, cli_env, cli_main, copy_project, run_command, run_rotnet, write_params

KILL_CONFIG = {"pretrain": {"snapshot_every": 1}, "runtime": {"deterministic": True}}
# (point, epoch) of ROTNET_CRASH_AT, in the order a 2-epoch run passes them.
KILL_POINTS = [("started", 0), ("snapshot", 1), ("metrics", 2), ("checkpoint", 2)]


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def assert_records_agree(out: Path, store) -> None:
    """One FINISHED run for the folder, none RUNNING; MLflow, metrics.json, the checkpoint
    and its snapshots say the same; no temp file left."""
    statuses = sorted(r.info.status for r in store.runs())
    assert "RUNNING" not in statuses, statuses
    assert statuses.count("FINISHED") == 1, statuses
    result = json.loads((out / "metrics.json").read_text())
    state = load(out / "checkpoint.pt")
    assert result["run_id"] == state["extra"]["run_id"] == (out / "mlflow-run-id").read_text().strip()
    assert store.run(result["run_id"]).info.status == "FINISHED"
    history = {m["epoch"]: m["test_acc"] for m in state["history"]}
    logged = dict(store.history(result["run_id"], "test_acc"))  # the last value of each step
    assert logged == history, (logged, history)
    assert store.run(result["run_id"]).data.metrics["test_acc"] == result["test_acc"] == history[2]
    for epoch in (1, 2):
        assert load(out / f"snapshot-epoch{epoch:03d}.pt")["epoch"] == epoch
    assert (out / "snapshot-epoch002.pt").read_bytes() == (out / "checkpoint.pt").read_bytes()
    assert not list(out.glob(".*.tmp-*"))


@pytest.mark.slow
@pytest.mark.parametrize("point,epoch", KILL_POINTS, ids=[f"{p}{e}" for p, e in KILL_POINTS])
def test_a_kill_at_each_epoch_boundary_leaves_records_that_agree_after_the_rerun(
        point, epoch, tmp_path, tracking_store):
    params = write_params(tmp_path / "params.yaml", KILL_CONFIG)
    out = tmp_path / "run"
    args = ["pretrain", "--params", params, "--out", out]
    killed = run_rotnet(args, tmp_path, cli_env(tracking_store, ROTNET_CRASH_AT=f"{point}:{epoch}"))
    assert killed.returncode == -9, killed.stderr[-2000:]
    (out / ".checkpoint.pt.tmp-99999").write_bytes(b"half")  # as a kill mid-write leaves it
    rerun = run_rotnet(args, tmp_path, cli_env(tracking_store))
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert_records_agree(out, tracking_store)
    if point == "started":  # the orphan was closed, not left RUNNING
        assert sorted(r.info.status for r in tracking_store.runs()) == ["FINISHED", "KILLED"]
    else:  # the checkpoint's run was resumed, not duplicated
        assert len(tracking_store.runs()) == 1


# Injected from outside the project's code: the first MlflowClient.create_run returns, then
# the process is SIGKILLed, before rotnet can record the new run's id.
KILL_AFTER_CREATE_RUN = """
import os, signal
from mlflow.tracking import MlflowClient

_create_run = MlflowClient.create_run


def create_run(self, *args, **kwargs):
    run = _create_run(self, *args, **kwargs)
    os.kill(os.getpid(), signal.SIGKILL)
    return run


MlflowClient.create_run = create_run
"""


@pytest.mark.slow
def test_a_kill_right_after_the_run_is_created_leaves_no_running_run_after_the_rerun(
        tmp_path, tracking_store):
    inject = tmp_path / "inject"
    inject.mkdir()
    (inject / "sitecustomize.py").write_text(KILL_AFTER_CREATE_RUN)
    out = tmp_path / "run"
    args = ["pretrain", "--params", write_params(tmp_path / "params.yaml"), "--out", out]
    killed = run_rotnet(args, tmp_path, cli_env(tracking_store, PYTHONPATH=str(inject)))
    assert killed.returncode == -9, killed.stderr[-2000:]
    [orphan] = tracking_store.runs()
    assert orphan.info.status == "RUNNING" and not (out / "checkpoint.pt").exists()

    rerun = run_rotnet(args, tmp_path, cli_env(tracking_store))
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    statuses = {r.info.run_id: r.info.status for r in tracking_store.runs()}
    assert statuses.pop(orphan.info.run_id) == "KILLED"
    assert list(statuses.values()) == ["FINISHED"]
    assert (out / "mlflow-run-id").read_text().strip() == next(iter(statuses))


# ---- a run that diverges ------------------------------------------------------------


def test_a_diverging_run_stops_with_one_line_and_is_marked_failed(tmp_path, tracking_store,
                                                                  capsys):
    params = write_params(tmp_path / "params.yaml", {"pretrain": {"optim": {"lr": 1e30}}})
    code = cli_main(["pretrain", "--params", params, "--out", tmp_path / "run"])
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and "train_loss=nan is not finite" in errors[0], errors
    assert [r.info.status for r in tracking_store.runs()] == ["FAILED"]
    assert not (tmp_path / "run" / "metrics.json").exists()


# ---- one writer per output folder -------------------------------------------------------

HOLD = ("import sys, time\nfrom pathlib import Path\nfrom rotnet.outdir import claim\n"
        "with claim(Path(sys.argv[1])):\n    print('held', flush=True)\n    time.sleep(120)\n")


def test_a_second_command_into_a_folder_in_use_exits_2_naming_the_holder(tmp_path, tracking_store,
                                                                          capsys):
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE,
                              text=True, env=cli_env(tracking_store))
    try:
        assert holder.stdout.readline().strip() == "held"
        code = cli_main(["pretrain", "--params", write_params(tmp_path / "params.yaml"),
                         "--out", out])
    finally:
        holder.kill()
        holder.wait()
    err = capsys.readouterr().err.strip()
    assert code == 2 and f"in use by process {holder.pid}" in err, err
    assert len(err.splitlines()) == 1
    assert tracking_store.runs() == []
    assert sorted(p.name for p in out.iterdir()) == [".lock"]


def test_a_checkpoint_holding_code_is_refused_unread(tmp_path):
    from rotnet.checkpoint import load_checkpoint
    from rotnet.errors import RotnetError

    evil = tmp_path / "evil.pt"
    torch.save({"format": "rotnet-checkpoint/2", "payload": RunsCode(tmp_path / "pwned")}, evil)
    with pytest.raises(RotnetError, match="refused unread"):
        load_checkpoint(evil)
    assert not (tmp_path / "pwned").exists()
    torch.load(evil, weights_only=False)  # the file is real: a full unpickler runs it
    assert (tmp_path / "pwned").exists()


# ---- DVC: a stage killed inside `dvc repro` resumes; a finished one is not resumed ------


@pytest.mark.slow
def test_a_stage_killed_inside_dvc_repro_resumes_from_its_checkpoint(tmp_path):
    from helpers import BIN, Store

    store = Store(tmp_path / "mlflow.db")
    env = {**cli_env(store), "PATH": f"{BIN}:{os.environ['PATH']}", "ROTNET_HOME": str(tmp_path),
           "PYTHONPATH": str(tmp_path / "project")}
    project = tmp_path / "project"
    project.mkdir()
    copy_project(project, env)
    write_params(project / "params.yaml", KILL_CONFIG)
    stage, out = "pretrain@b4-r4-0", project / "runs" / "pretrain" / "b4-r4-s0"

    killed = run_command(["dvc", "repro", stage], project, {**env, "ROTNET_CRASH_AT": "checkpoint:1"},
                         check=False)
    assert killed.returncode != 0
    epoch1 = load(out / "checkpoint.pt")["history"][0]
    [orphan] = store.runs()
    assert orphan.info.status == "RUNNING"

    run_command(["dvc", "repro", stage], project, env)
    state = load(out / "checkpoint.pt")
    assert state["epoch"] == 2 and state["history"][0] == epoch1  # epoch 1 was not retrained
    [resumed] = store.runs()
    assert resumed.info.run_id == orphan.info.run_id and resumed.info.status == "FINISHED"
    assert (out / ".stage-done").exists()
    status = json.loads(run_command(["dvc", "status", "--json", "dvc.yaml"], project, env).stdout
                        or "{}")
    assert stage not in status, status

    # A changed parameter reruns the finished stage from scratch, as a new run.
    write_params(project / "params.yaml", {**KILL_CONFIG, "pretrain": {
        "snapshot_every": 1, "optim": {"lr": 0.05}}})
    run_command(["dvc", "repro", stage], project, env)
    runs = {r.info.run_id: r.info.status for r in store.runs()}
    assert len(runs) == 2 and set(runs.values()) == {"FINISHED"}, runs
    assert load(out / "checkpoint.pt")["config"]["pretrain"]["optim"]["lr"] == 0.05
