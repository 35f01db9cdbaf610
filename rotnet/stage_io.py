"""What the DVC stage scripts in `stages/` share: reading params.yaml into a `Config`,
applying a variant, tagging MLflow runs with their stage, writing DVC metrics and plots.

The pipeline itself (which variants, which probes) is spelled out in dvc.yaml, checked against
`rotnet.registry`; this module only keeps the stage scripts to a few lines each.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shutil
import sys
from pathlib import Path

from rotnet.files import atomic_write_text
from rotnet.config import Config
from rotnet.errors import RotnetError
from rotnet.params import read_params
from rotnet.run_groups import RunGroup
from rotnet.tracking import Tracker

PARAMS_FILE = "params.yaml"
HISTORY_COLUMNS = ("epoch", "train_loss", "train_acc", "test_acc", "lr", "images_per_s")
# The keys of every DVC metrics file (one file per run), so `dvc metrics show` is one narrow
# table: final and best test accuracy (%), the best epoch, the epochs trained.
RUN_METRICS = ("test_acc", "best_test_acc", "best_epoch", "epochs")


def stage_config(seed: str | int | None = None, path: str | Path = PARAMS_FILE) -> Config:
    """params.yaml as a Config; `seed`: the replicate a stage of dvc.yaml's `seeds` matrix
    runs, which becomes runtime.seed (model init, data order, augmentation)."""
    config = Config.from_dict(read_params(path))
    return config if seed is None else config.with_seed(int(seed))


def stage_tracker(stage: str) -> Tracker:
    return Tracker(tags={"pipeline": "dvc", "stage": stage})


def ablation_group(config: Config, variant: str) -> RunGroup:
    """The parent run of an ablation of `variant` (per data set, profile and seed): the
    ablation stage's runs nest under it, and `rotnet ablate` gathers a main-pipeline
    variant's runs and its table there."""
    seed = config.runtime.seed
    return RunGroup(key=f"ablation:{variant}:{config.data.dataset}:{config.profile}:s{seed}",
                 name=f"ablate-{variant}-{config.profile}-s{seed}",
                 tags={"dataset": config.data.dataset, "profile": config.profile,
                       "variant": variant, "group_of": "ablation"})


def write_run_metrics(path: str | Path, result) -> None:
    """One run's DVC metrics (`result`: an `experiments.RunResult`), `RUN_METRICS` only: no
    run id (MLflow and the run's own metrics.json have it), which DVC would show as one more
    column per file."""
    payload = {key: round(result.metrics[key], 4) for key in RUN_METRICS}
    atomic_write_text(path, json.dumps(payload, indent=2, allow_nan=False) + "\n")


def write_history_csv(path: str | Path, history: list[dict]) -> None:
    """A training curve for `dvc plots show` (one row per epoch)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, HISTORY_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: (round(v, 6) if isinstance(v, float) else v) for k, v in row.items()})
    atomic_write_text(path, buffer.getvalue())


STAGE_DONE = ".stage-done"


@contextlib.contextmanager
def stage_outputs(path: str | Path):
    """A training stage's output folder (`persist: true` in dvc.yaml, so DVC keeps it).

    A folder a killed stage left (no done mark) is kept: its runs resume from their
    checkpoints. A folder the stage finished is removed first: DVC reruns a finished stage
    only because a dependency or parameter changed, so its results are stale."""
    path = Path(path)
    if (path / STAGE_DONE).exists():
        shutil.rmtree(path)
    yield path
    atomic_write_text(path / STAGE_DONE, "")


def run_stage(main) -> None:
    """Run a stage's main(); bad input becomes one line on stderr and exit code 2."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    try:
        main(*sys.argv[1:])
    except RotnetError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
