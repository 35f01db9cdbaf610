"""The warm stage server (rotnet/warm.py): a stage handed over runs in a fork that already
has torch and MLflow imported, with the stage process's arguments, folder, environment,
stdout/stderr and exit status; it runs cold where no server can take it; a stage process
that goes away takes its fork with it; and a real stage gives the same numbers warm as cold."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import ROOT, write_params
from rotnet import tracking, warm

PROBE = '''
import gc, json, os, sys, time
sys.path.insert(0, {root!r})
from rotnet.warm import hand_over
hand_over(__file__)
torch_ready = "torch" in sys.modules  # imported before this script ran: a warm fork
out = sys.argv[1]
with open(out, "w") as f:
    json.dump({{"argv": sys.argv, "cwd": os.getcwd(), "pid": os.getpid(), "warm": torch_ready,
               "marker": os.environ.get("MARKER"), "frozen": gc.get_freeze_count()}}, f)
print("to stdout")
print("to stderr", file=sys.stderr)
action = sys.argv[2]
if action == "sleep":
    time.sleep(60)
if action == "signal":
    os.kill(os.getpid(), signal.SIGTERM)
if action == "raise":
    raise RuntimeError("boom")
sys.exit(int(action))
'''


@pytest.fixture(scope="module")
def server_store(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("warm-store") / "mlflow.db"


@pytest.fixture(scope="module")
def server_env(server_store):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{server_store}")  # the store it makes
        with warm.warm_server() as extra:
            assert extra, "the warm server did not start"
            yield {**os.environ, **extra, "MARKER": "m1"}


def _experiment_kind(store: Path) -> str | None:
    """The project's experiment's kind tag in the sqlite store, None while there is none."""
    try:
        with contextlib.closing(sqlite3.connect(store)) as db:
            row = db.execute("SELECT t.value FROM experiments e JOIN experiment_tags t ON "
                             "t.experiment_id = e.experiment_id WHERE e.name = ? AND t.key = ?",
                             (tracking.EXPERIMENT, tracking.EXPERIMENT_KIND_TAG)).fetchone()
    except sqlite3.OperationalError:  # no tables yet
        return None
    return row and row[0]


def test_the_server_makes_the_stages_store_before_any_stage_asks(server_env, server_store):
    """The store named by the server's environment (the stages' too) gets its tables and the
    experiment, in the model-training view, with no stage run against it."""
    deadline = time.monotonic() + 60
    while _experiment_kind(server_store) is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _experiment_kind(server_store) == tracking.MODEL_TRAINING_KIND


@pytest.fixture
def probe(tmp_path):
    script = tmp_path / "probe_stage.py"
    script.write_text("import signal\n" + PROBE.format(root=str(ROOT)))
    return script


def _run(script, env, *args, cwd):
    return subprocess.run([sys.executable, str(script), *map(str, args)], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def test_a_stage_runs_warm_with_its_arguments_folder_environment_output_and_status(
        server_env, probe, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    result = _run(probe, server_env, work / "seen.json", 3, cwd=work)
    seen = json.loads((work / "seen.json").read_text())
    assert result.returncode == 3
    assert result.stdout == "to stdout\n" and result.stderr == "to stderr\n"
    assert seen["warm"] and seen["cwd"] == str(work) and seen["marker"] == "m1"
    assert seen["argv"] == [str(probe), str(work / "seen.json"), "3"]
    # the server's objects are frozen for the collector (a cold process has none)
    assert seen["frozen"] > 100_000, seen["frozen"]


# A module started as `python -m outer`, as rotnet.dvc_cli is (DVC, which then starts a stage)
OUTER = '''
import json, os, subprocess, sys
from rotnet.warm import hand_over_module
hand_over_module("outer")
stage = subprocess.run([sys.executable, {probe!r}, sys.argv[1], "0"])
print(json.dumps({{"argv": sys.argv[1:], "pid": os.getpid(), "warm": "torch" in sys.modules}}))
sys.exit(stage.returncode + 4)
'''


def test_a_module_runs_warm_and_the_stage_it_starts_is_handed_over_too(server_env, probe,
                                                                        tmp_path):
    (tmp_path / "outer.py").write_text(OUTER.format(probe=str(probe)))
    outer = subprocess.Popen([sys.executable, "-m", "outer", str(tmp_path / "seen.json")],
                             env=server_env, cwd=tmp_path, stdout=subprocess.PIPE, text=True)
    try:  # a module handed over again by its own fork would fork without end
        stdout, _ = outer.communicate(timeout=120)
    finally:
        outer.kill()
    seen, stage = json.loads(stdout.splitlines()[-1]), json.loads((tmp_path / "seen.json").read_text())
    assert outer.returncode == 4
    assert seen["warm"] and seen["argv"] == [str(tmp_path / "seen.json")] and seen["pid"] != outer.pid
    assert stage["warm"] and stage["pid"] not in (seen["pid"], outer.pid)


def test_a_signal_or_an_uncaught_exception_ends_the_stage_process_as_it_ended_the_fork(
        server_env, probe, tmp_path):
    killed = _run(probe, server_env, tmp_path / "a.json", "signal", cwd=tmp_path)
    assert killed.returncode == -signal.SIGTERM
    raised = _run(probe, server_env, tmp_path / "b.json", "raise", cwd=tmp_path)
    assert raised.returncode == 1 and "RuntimeError: boom" in raised.stderr


def test_without_a_server_or_with_another_cpu_setting_the_stage_runs_cold(server_env, probe,
                                                                         tmp_path):
    nowhere = {**server_env, warm.ADDRESS_ENV: str(tmp_path / "no-such.sock")}
    cold = _run(probe, nowhere, tmp_path / "a.json", 0, cwd=tmp_path)
    assert cold.returncode == 0 and not json.loads((tmp_path / "a.json").read_text())["warm"]
    # a setting other than the server's (CI may itself run with ONEDNN_MAX_CPU_ISA=AVX2)
    isa = "SSE41" if server_env.get("ONEDNN_MAX_CPU_ISA") == "AVX2" else "AVX2"
    other_isa = {**server_env, "ONEDNN_MAX_CPU_ISA": isa}
    refused = _run(probe, other_isa, tmp_path / "b.json", 0, cwd=tmp_path)
    assert refused.returncode == 0 and "ONEDNN_MAX_CPU_ISA" in refused.stderr
    assert not json.loads((tmp_path / "b.json").read_text())["warm"]


def test_a_stage_process_that_goes_away_takes_its_fork_with_it(server_env, probe, tmp_path):
    seen = tmp_path / "seen.json"
    stage = subprocess.Popen([sys.executable, str(probe), str(seen), "sleep"], env=server_env,
                             cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not seen.exists() or not seen.read_text():
        assert time.monotonic() < deadline and stage.poll() is None
        time.sleep(0.05)
    fork = json.loads(seen.read_text())["pid"]
    assert fork != stage.pid
    stage.kill()
    stage.wait()
    deadline = time.monotonic() + 15
    while _alive(fork):
        assert time.monotonic() < deadline, "the fork outlived its stage process"
        time.sleep(0.1)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_real_stage_gives_the_same_numbers_warm_as_cold(server_env, tmp_path):
    """The pretraining stage on the TINY profile, cold then warm: the same metrics and the
    same curve (timings aside), each run logged to the store."""
    write_params(tmp_path / "params.yaml")
    env = {**server_env, "ROTNET_HOME": str(tmp_path), "OMP_NUM_THREADS": "1",
           "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    cold_env = {key: value for key, value in env.items() if key != warm.ADDRESS_ENV}
    data = subprocess.run([sys.executable, str(ROOT / "stages/data.py"), "runs/data.json"],
                          env=cold_env, cwd=tmp_path, capture_output=True, text=True)
    assert data.returncode == 0, data.stderr
    curves = {}
    for name, stage_env in (("cold", cold_env), ("warm", env)):
        args = ["b4-r4", "0", f"runs/{name}", f"{name}.json", f"{name}.csv"]
        result = subprocess.run([sys.executable, str(ROOT / "stages/pretrain.py"), *args],
                                env=stage_env, cwd=tmp_path, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        with open(tmp_path / f"{name}.csv") as rows:
            curves[name] = [{k: v for k, v in row.items() if k != "images_per_s"}
                            for row in csv.DictReader(rows)]
    assert json.loads((tmp_path / "cold.json").read_text()) == json.loads(
        (tmp_path / "warm.json").read_text())
    assert curves["cold"] == curves["warm"] and len(curves["cold"]) == 2


DVC_YAML = """stages:
  ok:
    cmd: echo made > out.txt
    outs: [out.txt]
  fails:
    cmd: python -c "import sys; sys.exit('stage failed')"
"""


def test_dvc_handed_over_prints_and_exits_as_a_cold_dvc(server_env, tmp_path):
    """`python -m rotnet.dvc_cli` in a fork of the server (DVC imported there, for the
    server's streams): the same lines, once each, and the same exit status as cold."""
    def dvc(env, *args):
        result = subprocess.run([sys.executable, "-m", "rotnet.dvc_cli", *args], env=env,
                                cwd=tmp_path, capture_output=True, text=True, timeout=120)
        return result.returncode, result.stdout, result.stderr

    cold_env = {key: value for key, value in server_env.items() if key != warm.ADDRESS_ENV}
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    assert dvc(cold_env, "init", "-q")[0] == 0
    (tmp_path / "dvc.yaml").write_text(DVC_YAML)
    seen = {}  # the first pass writes dvc.lock, and says so: the two after it are compared
    for name, env in (("first", cold_env), ("cold", cold_env), ("warm", server_env)):
        (tmp_path / "out.txt").unlink(missing_ok=True)
        seen[name] = [dvc(env, "repro", "--single-item", "-f", "ok"),
                      dvc(env, "repro", "--single-item", "fails"), dvc(env, "status")]
    assert seen["warm"] == seen["cold"]
    (ok, ok_out, _), (failed, _, failed_err), _ = seen["warm"]
    assert ok == 0 and ok_out.count("Running stage 'ok'") == 1
    assert failed != 0 and "stage failed" in failed_err
