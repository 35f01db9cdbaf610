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

from rotnet.files import LOCK, remove_stale_temp_files
from rotnet.errors import RotnetError



NAME_MAX, PATH_MAX = 255, 4096  # bytes: Linux's limits on a name and a whole path


def check_path(path: Path, what: str = "output folder") -> None:
    """Refuse a path no file system can hold (a name over NAME_MAX bytes, a path over
    PATH_MAX) with one line, before anything looks at it (`exists()` itself would raise)."""
    for part in path.parts:
        if len(os.fsencode(part)) > NAME_MAX:
            raise RotnetError(f"{what} {str(path)[:60]}...: the name {part[:20]}... is "
                              f"{len(os.fsencode(part))} bytes long, the limit is {NAME_MAX}")
    length = len(os.fsencode(str(path.absolute())))
    if length >= PATH_MAX:
        raise RotnetError(f"{what} {str(path)[:60]}... is {length} bytes long, the limit is "
                          f"{PATH_MAX - 1}")


@contextlib.contextmanager
def claim(out_dir: Path):
    """Create `out_dir` (an OSError is a one-line RotnetError, leaving nothing behind), lock
    it or refuse naming the holder, and clear the temp files a killed writer left. If the
    body fails before writing anything there (e.g. the MLflow store is refused), the
    folders this call made are removed again."""
    if out_dir.exists() and not out_dir.is_dir():
        raise RotnetError(f"output folder {out_dir} is a file")
    created = next((p for p in reversed([out_dir, *out_dir.parents]) if not p.exists()), None)
    with _open_lock_file(out_dir, created) as handle:
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
        try:
            yield
        except BaseException:
            if created is not None and _holds_only_the_lock(created, out_dir):
                shutil.rmtree(created, ignore_errors=True)
            raise


def _holds_only_the_lock(created: Path, out_dir: Path) -> bool:
    return [p for p in created.rglob("*") if not p.is_dir()] == [out_dir / LOCK]


def _open_lock_file(out_dir: Path, created: Path | None):
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        return open(out_dir / LOCK, "a+")
    except OSError as err:
        if created is not None:  # only folders this call made, all still empty
            shutil.rmtree(created, ignore_errors=True)
        raise RotnetError(f"cannot write the output folder {out_dir}: "
                          f"{err.strerror or type(err).__name__}") from None
