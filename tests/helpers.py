"""Plain helpers the tests share (conftest.py keeps the fixtures): the repository's paths,
the TINY config, an MLflow store's queries, running the `rotnet` console script and other
commands, and a throw-away copy of the project for DVC.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

# One intra-op thread by default: the CI machine has 2 cores, and with other processes on
# them (a subprocess CLI run, a parallel job) two spinning OpenMP threads per process are
# many times slower than one. ROTNET_TEST_THREADS=2 on an idle machine.
THREADS = int(os.environ.get("ROTNET_TEST_THREADS", "1"))

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ROTNET = BIN / "rotnet"

# The smoke profile cut further: a few seconds per pretraining on a CPU.
TINY = {
    "profile": "smoke",
    "data": {"train_size": 64, "test_size": 32},
    "pretrain": {"width": 0.125, "snapshot_every": 0,
                 "optim": {"epochs": 2, "batch_size": 16, "milestones": [1]}},
    "probe": {"optim": {"epochs": 1, "batch_size": 16}},
    "conv_probe": {"optim": {"epochs": 1, "batch_size": 16}},
    "finetune": {"optim": {"epochs": 1, "batch_size": 16}},
    "supervised": {"optim": {"epochs": 1, "batch_size": 16}},
    "runtime": {"log_every": 1000},
}


def tiny_config(overrides: dict | None = None):
    """The TINY config with `overrides` merged in."""
    from rotnet.config import Config, merge

    return Config.from_dict(merge(TINY, overrides or {}))


def write_params(path: Path, overrides: dict | None = None) -> Path:
    """A params file of the TINY config (with `overrides`)."""
    from rotnet.params import dump_params

    path.write_text(dump_params(tiny_config(overrides)))
    return path


def cli_main(argv) -> int:
    """`rotnet <argv>` in this process (as the console script runs it); its exit code."""
    from rotnet import cli

    old = sys.argv
    sys.argv = ["rotnet", *map(str, argv)]
    try:
        cli.main()
    except SystemExit as exit_:
        return exit_.code or 0
    finally:
        sys.argv = old
    return 0


class RunsCode:
    """A pickle that calls os.system when unpickled by a full unpickler."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class Store:
    """A throw-away MLflow store and a few queries on it."""

    def __init__(self, path: Path):
        self.path = path
        self.uri = f"sqlite:///{path}"

    def client(self):
        from mlflow.tracking import MlflowClient

        return MlflowClient(self.uri)

    def runs(self) -> list:
        client = self.client()
        experiments = [e.experiment_id for e in client.search_experiments()]
        return list(client.search_runs(experiments, max_results=1000)) if experiments else []

    def run(self, run_id: str):
        return self.client().get_run(run_id)

    def history(self, run_id: str, key: str) -> list[tuple[int, float]]:
        return sorted((m.step, m.value) for m in self.client().get_metric_history(run_id, key))


def cli_env(store: Store | None = None, **extra) -> dict:
    """The environment of a `rotnet` child process: a tmp store (or an unused tmp path),
    one thread, no telemetry."""
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DVC_NO_ANALYTICS": "1",
           "OMP_NUM_THREADS": str(THREADS), "MKL_NUM_THREADS": str(THREADS),
           "PYTHONUNBUFFERED": "1", "COLUMNS": "200", **extra}
    if store is not None:
        env["MLFLOW_TRACKING_URI"] = store.uri
    return env


def run_rotnet(args: list[str], cwd: Path, env: dict, timeout: float = 600) -> subprocess.CompletedProcess:
    """The installed console script, as a user runs it."""
    return subprocess.run([str(ROTNET), *map(str, args)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def run_command(cmd, cwd, env, check=True, timeout=1800):
    """Run a subprocess; on failure show the tail of its output."""
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{cmd} failed ({result.returncode}):\n{result.stdout[-3000:]}\n"
                             f"{result.stderr[-3000:]}")
    return result


def copy_project(dest: Path, env: dict, profile: str = "smoke") -> Path:
    """A git repository holding the working tree (tracked and untracked, not ignored files)
    with params.yaml set to `profile`: where DVC tests run without touching this checkout."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split("\0")
    for name in filter(None, files):
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    run_command([sys.executable, "-m", "rotnet.cli", "params", "--profile", profile, "--out",
                 "params.yaml"], dest, env)
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"],
                ["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "copy"]):
        run_command(cmd, dest, env)
    return dest


def crafted_checkpoints(good: Path, folder: Path) -> dict[str, Path]:
    """Checkpoints with the right format marker whose content is wrong, each a copy of the
    pretraining checkpoint `good` with one thing changed: name -> its file in `folder`."""
    import torch

    def first_float(state):
        return next(k for k, v in state["model"].items() if v.is_floating_point())

    edits = {
        "no task": lambda s: s.pop("task"),
        "no arch": lambda s: s.pop("arch"),
        "arch of 5 blocks": lambda s: s["arch"].update(blocks=5),
        "arch of another width": lambda s: s["arch"].update(width=s["arch"]["width"] * 2),
        "arch width huge": lambda s: s["arch"].update(width=1e12),
        "arch rotations unknown": lambda s: s["arch"].update(rotations="7"),
        "missing tensor": lambda s: s["model"].pop(first_float(s)),
        "weights not tensors": lambda s: s["model"].update({first_float(s): 1.5}),
        "NaN weights": lambda s: s["model"][first_float(s)].fill_(float("nan")),
        "empty history": lambda s: s.update(history=[]),
        "epoch 0": lambda s: s.update(epoch=0),
        "config not a dict": lambda s: s.update(config=[1, 2]),
        "optimizer state of another shape": lambda s: next(
            v for v in s["optimizer"]["state"].values()).update(momentum_buffer=torch.zeros(3)),
        "scheduler without keys": lambda s: s.update(scheduler={}),
        "rng missing": lambda s: s["rng"].pop("numpy"),
    }
    folder.mkdir(parents=True, exist_ok=True)
    made = {}
    for name, edit in edits.items():
        state = torch.load(good, map_location="cpu", weights_only=True)
        edit(state)
        made[name] = folder / (name.replace(" ", "-") + ".pt")
        torch.save(state, made[name])
    return made
