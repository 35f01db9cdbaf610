"""One writer per output folder: `claim` creates the folder and holds an exclusive lock on
`<folder>/.lock` (which names the holder's pid) for as long as the run writes there. Two
processes in one folder would resume each other's live checkpoint and interleave steps
in one MLflow run."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from pathlib import Path

from rotnet.checkpoint import remove_stale_temp_files
from rotnet.errors import RotnetError

LOCK_FILE = ".lock"


@contextlib.contextmanager
def claim(out_dir: Path):
    """Create `out_dir` (an OSError is a one-line RotnetError, leaving nothing behind), lock
    it or refuse naming the holder, and clear the temp files a killed writer left."""
    with _open_lock_file(out_dir) as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "?"
            raise RotnetError(f"output folder {out_dir} is in use by process {holder}; wait for "
                              "it to end or use another output folder") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        remove_stale_temp_files(out_dir)
        yield


def _open_lock_file(out_dir: Path):
    if out_dir.exists() and not out_dir.is_dir():
        raise RotnetError(f"output folder {out_dir} is a file")
    created = next((p for p in reversed([out_dir, *out_dir.parents]) if not p.exists()), None)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        return open(out_dir / LOCK_FILE, "a+")
    except OSError as err:
        if created is not None:  # only folders this call made, all still empty
            shutil.rmtree(created, ignore_errors=True)
        raise RotnetError(f"cannot write the output folder {out_dir}: "
                          f"{err.strerror or type(err).__name__}") from None
