"""Records stay consistent whatever happens to a run: a SIGKILL at each boundary of an
epoch's end, bad input (refused before anything is written), two writers on one folder,
a crafted checkpoint that would run code, and a stage killed inside `dvc repro`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers import cli_env, copy_project, run_command, run_rotnet, tiny_config
from rotnet import cli
from rotnet.params import dump_params

KILL_CONFIG = {"pretrain": {"snapshot_every": 1}, "runtime": {"deterministic": True}}
# (point, epoch) of ROTNET_CRASH_AT, in the order a 2-epoch run passes them.
KILL_POINTS = [("started", 0), ("snapshot", 1), ("metrics", 2), ("checkpoint", 2)]


def write_params(path: Path, overrides: dict | None = None) -> Path:
    path.write_text(dump_params(tiny_config(overrides)))
    return path


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


# ---- bad input: exit 2, one line, nothing written, no run, a finished result intact -----


def _one_image_per_class(root: Path) -> Path:
    from PIL import Image

    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        Image.new("RGB", (8, 8), (10, 200, 30)).save(root / name / "x.png")
    return root


class RunsCode:
    """A pickle that calls os.system when unpickled by a full unpickler."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def bad_inputs(tmp: Path, good: Path, params: Path) -> dict:
    """name -> (argv, extra environment, a path that must not exist afterwards)."""
    bad_out = tmp / "bad-out"
    base = ["pretrain", "--params", params, "--out", bad_out]
    not_utf8 = tmp / "latin1.yaml"
    not_utf8.write_bytes("profile: smoke\n# caf\xe9\n".encode("latin-1"))
    a_file = tmp / "a-file"
    a_file.write_text("x")
    read_only = tmp / "read-only"
    read_only.mkdir(mode=0o555)
    text_store = tmp / "notes.txt"
    text_store.write_text("my notes\n")
    corrupt = tmp / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint at all")
    evil = tmp / "evil.pt"
    torch.save({"format": "rotnet-checkpoint/2", "payload": RunsCode(tmp / "pwned")}, evil)
    images = _one_image_per_class(tmp / "images")
    return {
        "weight_decay<0": (base + ["--set", "pretrain.optim.weight_decay=-1"], {}, bad_out),
        "momentum=0+nesterov": (base + ["--set", "pretrain.optim.momentum=0"], {}, bad_out),
        "momentum<0": (base + ["--set", "pretrain.optim.momentum=-0.5"], {}, bad_out),
        "log_every=0": (base + ["--set", "runtime.log_every=0"], {}, bad_out),
        "device tpu9": (base + ["--device", "tpu9"], {}, bad_out),
        "cuda without GPU (finished out)": (
            ["pretrain", "--params", params, "--out", good, "--device", "cuda"], {}, bad_out),
        "width=inf": (base + ["--set", "pretrain.width=.inf"], {}, bad_out),
        "lr=inf": (base + ["--set", "pretrain.optim.lr=.inf"], {}, bad_out),
        "lr=nan": (base + ["--set", "pretrain.optim.lr=.nan"], {}, bad_out),
        "params not UTF-8": (["pretrain", "--params", not_utf8, "--out", bad_out], {}, bad_out),
        "out is a file": (["pretrain", "--params", params, "--out", a_file / "sub"], {}, a_file / "sub"),
        "out is a file itself": (["pretrain", "--params", params, "--out", a_file], {}, bad_out),
        "out too long": (base[:-1] + [tmp / "deep" / ("x" * 300)], {}, tmp / "deep"),
        "out read-only": (base[:-1] + [read_only / "run"], {}, read_only / "run"),
        "out under /proc": (base[:-1] + ["/proc/rotnet-out/run"], {}, Path("/proc/rotnet-out")),
        "imagefolder, no test images": (
            base + ["--dataset", "imagefolder", "--data-root", images], {}, bad_out),
        "probe.hidden=0": (base + ["--set", "probe.hidden=0"], {}, bad_out),
        "MLflow URI is a text file": (base, {"MLFLOW_TRACKING_URI": f"sqlite:///{text_store}"},
                                      bad_out),
        "semisup, corrupt checkpoint": (["semisup", corrupt, "--params", params, "--subsets",
                                         tmp / "subsets", "--out", bad_out], {}, tmp / "subsets"),
        "checkpoint that runs code": (["probe", evil, "--params", params, "--out", bad_out], {},
                                      tmp / "pwned"),
    }


@pytest.fixture(scope="module")
def finished(tmp_path_factory, _empty_store):
    """A finished, tracked run: what a bad rerun must leave exactly as it was."""
    import shutil

    tmp = tmp_path_factory.mktemp("bad-inputs")
    store_path = tmp / "mlflow.db"
    shutil.copyfile(_empty_store, store_path)
    params = write_params(tmp / "params.yaml")
    good = tmp / "good"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store_path}")
        assert _cli(["pretrain", "--params", params, "--out", good]) == 0
    return tmp, store_path, params, good


def _cli(argv) -> int:
    """`rotnet <argv>` in this process (as main() runs it); its exit code."""
    old = sys.argv
    sys.argv = ["rotnet", *map(str, argv)]
    try:
        cli.main()
    except SystemExit as exit_:
        return exit_.code or 0
    finally:
        sys.argv = old
    return 0


def _state_of(good: Path, store) -> tuple:
    files = {p.name: p.read_bytes() for p in good.iterdir() if p.name != ".lock"}
    return files, sorted((r.info.run_id, r.info.status) for r in store.runs())


CASES = ["weight_decay<0", "momentum=0+nesterov", "momentum<0", "log_every=0", "device tpu9",
         "cuda without GPU (finished out)", "width=inf", "lr=inf", "lr=nan", "params not UTF-8",
         "out is a file", "out is a file itself", "out too long", "out read-only",
         "out under /proc", "imagefolder, no test images", "probe.hidden=0",
         "MLflow URI is a text file", "semisup, corrupt checkpoint", "checkpoint that runs code"]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(case, finished, tmp_path, capsys,
                                                            monkeypatch):
    from helpers import Store

    tmp, store_path, params, good = finished
    if case == "cuda without GPU (finished out)" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    if case == "out read-only" and os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store_path}")
    argv, env, must_not_exist = bad_inputs(tmp_path, good, params)[case]
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    store = Store(store_path)
    before = _state_of(good, store)
    capsys.readouterr()

    code = _cli(argv)

    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("error:"), err
    assert not must_not_exist.exists()
    assert not (tmp_path / "bad-out").exists()
    assert _state_of(good, store) == before  # no new run, the finished one untouched
    if case == "MLflow URI is a text file":
        assert (tmp_path / "notes.txt").read_text() == "my notes\n"


def test_a_diverging_run_stops_with_one_line_and_is_marked_failed(tmp_path, tracking_store,
                                                                  capsys):
    params = write_params(tmp_path / "params.yaml", {"pretrain": {"optim": {"lr": 1e30}}})
    code = _cli(["pretrain", "--params", params, "--out", tmp_path / "run"])
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
        code = _cli(["pretrain", "--params", write_params(tmp_path / "params.yaml"), "--out", out])
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
