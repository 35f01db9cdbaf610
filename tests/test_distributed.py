"""DDP under torchrun on CPU (gloo, 2 processes): the same global batches as one process,
so the metrics match within noise (BatchNorm statistics are per rank, the one difference);
resuming a killed 2-process run ends where an uninterrupted one does; a batch that the world
size does not divide is refused."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

BIN = Path(sys.executable).parent
# Learns visibly within seconds: the rotation loss leaves chance (ln 4) within 3 epochs.
ARGS = ["pretrain", "--profile", "smoke", "--no-track", "--epochs", "3",
        "--set", "runtime.precision=fp32", "--set", "data.train_size=1024",
        "--set", "data.test_size=512",
        "--set", "pretrain.optim.milestones=[2]", "--set", "runtime.deterministic=true"]


def env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "MLFLOW_DISABLE_TELEMETRY": "true"}


def torchrun(out, *extra, wait=True):
    cmd = [str(BIN / "torchrun"), "--standalone", "--nproc_per_node", "2", "-m", "rotnet.cli",
           *ARGS, "--out", str(out), *extra]
    if not wait:
        return subprocess.Popen(cmd, env=env(), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
    return subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=600)


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (Linux /proc)."""
    found = []
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        for child in map(int, children.read_text().split()):
            found += [child, *descendants(child)]
    return found


def history(out):
    return torch.load(Path(out) / "checkpoint.pt", weights_only=True)["history"]


@pytest.mark.slow
def test_two_processes_match_one(tmp_path):
    two = torchrun(tmp_path / "two")
    assert two.returncode == 0, two.stderr[-2000:]
    one = subprocess.run([sys.executable, "-m", "rotnet.cli", *ARGS, "--out", str(tmp_path / "one")],
                         env=env(), capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-2000:]
    h1, h2 = history(tmp_path / "one"), history(tmp_path / "two")
    assert len(h1) == len(h2) == 3
    curves = [(round(a["train_loss"], 3), round(b["train_loss"], 3), a["test_acc"], b["test_acc"])
              for a, b in zip(h1, h2)]
    # Same init, batches and augmentation; only BatchNorm statistics differ (16 images per
    # rank instead of 32). The first epoch, before those differences compound, is the sharp
    # check: measured 0.014 apart on an AVX512_BF16 CPU, 0.003 on an AVX2-only one. Later,
    # as the run leaves the chance plateau, small differences grow like a change of seed:
    # five seeds of the 1-process run spread 0.04 at epoch 2 and 0.10 at epoch 3 (this pair:
    # within 0.014 on the bf16 CPU; 0.053 and 0.114 on the AVX2 one). Their final rotation
    # accuracies (512 test images) spread 34.8-45.3 % (sd ~4).
    assert abs(curves[0][0] - curves[0][1]) < 0.02, curves
    for loss1, loss2, _, _ in curves:
        assert abs(loss1 - loss2) < 0.15, curves
    assert abs(h1[-1]["test_acc"] - h2[-1]["test_acc"]) < 10.0, curves
    # Both learnt: the loss leaves ln 4 = 1.386 (chance) clearly behind.
    assert h1[-1]["train_loss"] < 1.33 and h2[-1]["train_loss"] < 1.33, curves
    # Rank 0 alone writes results.
    assert json.loads((tmp_path / "two" / "metrics.json").read_text())["epochs"] == 3


@pytest.mark.slow
def test_killed_ddp_run_resumes_to_the_same_end(tmp_path):
    full = torchrun(tmp_path / "full")
    assert full.returncode == 0, full.stderr[-2000:]
    proc = torchrun(tmp_path / "killed", wait=False)
    first = tmp_path / "killed" / "snapshot-epoch001.pt"
    deadline = time.time() + 300
    while not first.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    workers = descendants(proc.pid)  # torchrun starts each worker in a session of its own
    os.killpg(proc.pid, signal.SIGKILL)
    for pid in workers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait()
    while any(Path(f"/proc/{pid}").exists() for pid in workers):  # they hold the folder's lock
        time.sleep(0.1)
    assert first.exists()
    assert history(tmp_path / "killed")[-1]["epoch"] < 3  # killed mid-way
    resumed = torchrun(tmp_path / "killed")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert [h["train_loss"] for h in history(tmp_path / "killed")] == \
        [h["train_loss"] for h in history(tmp_path / "full")]


def test_batch_not_divisible_by_world_size(tmp_path):
    result = torchrun(tmp_path / "odd", "--set", "pretrain.optim.batch_size=33")
    assert result.returncode != 0  # each worker exits 2; torchrun reports the failure
    assert "not divisible by the world size 2" in result.stderr
    assert not (tmp_path / "odd" / "checkpoint.pt").exists()
