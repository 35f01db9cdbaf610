"""A run folder's files, each named once, and how every file is written: atomically.

A run folder (`rotnet pretrain --out DIR`, a DVC stage's output) holds the checkpoint
(`checkpoint.pt`, the resume point), `snapshot-epochNNN.pt` copies of it (Figure 5a),
`metrics.json` (written last: the run finished), a classifier's `predictions.json`,
`mlflow-run-id` (the folder's MLflow run) and `.lock` (one writer at a time). Writes go to a
temporary file renamed onto the target, so a reader or a killed process never leaves half a
file; `remove_stale_temp_files` clears what a kill left.
"""

from __future__ import annotations

import os
from pathlib import Path

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.json"
PREDICTIONS = "predictions.json"
RUN_ID = "mlflow-run-id"
LOCK = ".lock"
SNAPSHOT_PATTERN = "snapshot-epoch*.pt"
TMP_MARK = ".tmp-"


def checkpoint_in(folder: str | Path) -> Path:
    return Path(folder) / CHECKPOINT


def snapshot_name(epoch: int) -> str:
    """`snapshot-epoch005.pt`: the checkpoint as it was after `epoch` epochs."""
    return f"snapshot-epoch{epoch:03d}.pt"


def atomic_write(path: str | Path, write) -> None:
    """Call `write(tmp_path)`, then rename onto `path`: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def remove_stale_temp_files(directory: str | Path) -> None:
    """Half-written files a killed process left (call only while holding the folder's lock)."""
    for tmp in Path(directory).glob(f".*{TMP_MARK}*"):
        tmp.unlink(missing_ok=True)
