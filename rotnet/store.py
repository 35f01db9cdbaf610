"""Where the MLflow store is, and keeping it usable: its URI, the lock around it, refusing
a file that is not a store or a server that does not answer, keeping its artifacts inside
the project wherever the project is, and the address `rotnet ui` serves it at. Plain
sqlite3 and urllib, no MLflow: `rotnet.tracking` is what talks to MLflow.

Runs go to a sqlite store at an absolute path (default `<project>/mlflow.db`, or
`MLFLOW_TRACKING_URI`), so DVC's queued runs in temporary copies of the repo still log
to the one store.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
from pathlib import Path

from rotnet.errors import RotnetError
from rotnet.provenance import project_root

SQLITE_PREFIX = "sqlite:///"
SQLITE_HEADER = b"SQLite format 3\x00"
ARTIFACTS_DIR = "mlartifacts"  # beside a local sqlite store
UI_ADDRESS_FILE = "mlflow-ui.url"  # beside a local sqlite store: where `rotnet ui` serves it
REACHABILITY_TIMEOUT_S = 5.0


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"{SQLITE_PREFIX}{project_root() / 'mlflow.db'}"


def sqlite_path(uri: str) -> Path | None:
    """The database file of a sqlite store URI (None: another kind of store)."""
    return Path(uri[len(SQLITE_PREFIX):]) if uri.startswith(SQLITE_PREFIX) else None


def artifact_root(uri: str) -> str | None:
    """Where a local sqlite store keeps its artifacts: `mlartifacts/` beside the database
    (None: another kind of store, which keeps its own)."""
    path = sqlite_path(uri)
    return None if path is None else (path.parent / ARTIFACTS_DIR).as_uri()


def check_sqlite_file(uri: str) -> None:
    """Refuse a sqlite URI naming a file that is not a database: MLflow would overwrite it."""
    path = sqlite_path(uri)
    if path is None:
        return
    if path.is_dir() or (path.is_file() and path.stat().st_size
                         and path.read_bytes()[:len(SQLITE_HEADER)] != SQLITE_HEADER):
        raise RotnetError(f"MLFLOW_TRACKING_URI names {path}, which is not an sqlite database; "
                          "point it at a new or existing MLflow store")


@contextlib.contextmanager
def store_lock(uri: str):
    """An exclusive lock beside a local sqlite store (no-op for other stores)."""
    path = sqlite_path(uri)
    if path is None:
        yield
        return
    lock_path = path.with_suffix(".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# MLflow records every artifact location as an absolute URI (experiments, runs, logged
# models). A project copied or moved elsewhere would go on writing into the old checkout.
RELOCATED = (("experiments", "artifact_location"), ("runs", "artifact_uri"),
             ("logged_models", "artifact_location"))


def relocate_artifacts(uri: str) -> int:
    """Point a local sqlite store's artifact locations at the `mlartifacts/` beside it where
    they name another folder's `mlartifacts/` (the project was copied or moved): the
    locations behave as if relative to the store. Returns how many experiments moved."""
    path, root = sqlite_path(uri), artifact_root(uri)
    if path is None or not path.is_file() or not path.stat().st_size:
        return 0
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "experiments" not in tables:
            return 0
        moved = {loc for (loc,) in db.execute("SELECT artifact_location FROM experiments")
                 if loc.startswith("file://") and loc.rstrip("/").endswith("/" + ARTIFACTS_DIR)
                 and loc.rstrip("/") != root}
        for old in moved:
            old = old.rstrip("/")
            for table, column in RELOCATED:
                if table in tables:
                    db.execute(f"UPDATE {table} SET {column} = ? || substr({column}, ?) "
                               f"WHERE {column} = ? OR {column} LIKE ? ESCAPE '\\'",
                               (root, len(old) + 1, old, _like_prefix(old + "/")))
    return len(moved)


def _like_prefix(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def record_ui_address(uri: str, address: str) -> None:
    """Remember where `rotnet ui` serves a local store, for the links reports write."""
    path = sqlite_path(uri)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        (path.parent / UI_ADDRESS_FILE).write_text(address + "\n")


def recorded_ui_address(uri: str) -> str | None:
    """The address `rotnet ui` last served this local store at (None: never, or not local)."""
    path = sqlite_path(uri)
    record = path.parent / UI_ADDRESS_FILE if path is not None else None
    return record.read_text().strip() or None if record is not None and record.is_file() else None


def check_reachable(uri: str | None = None, timeout: float = REACHABILITY_TIMEOUT_S) -> None:
    """For an http(s) tracking URI, one short GET of `<uri>/health` before MLflow's client
    (which retries a refused connection for minutes) is used; any HTTP answer counts as
    reachable. Other URIs (sqlite, file) are not checked. Raises a one-line RotnetError."""
    import urllib.error
    import urllib.request

    uri = uri or tracking_uri()
    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout):
            pass
    except urllib.error.HTTPError:
        return  # it answered (a proxy or an auth layer may not serve /health)
    except (urllib.error.URLError, OSError, ValueError) as err:
        reason = getattr(err, "reason", err)
        raise RotnetError(f"cannot reach the MLflow tracking server at {uri} ({reason}); "
                          f"start it or fix MLFLOW_TRACKING_URI") from None
