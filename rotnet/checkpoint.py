"""Checkpoints: one dict (model, optimizer, scheduler, epoch, config, RNG states), written
atomically, and one generic resume function used by every experiment.

A checkpoint is a plain `torch.save` dict with a format marker, so a file that is not a
rotnet checkpoint, or one from a different architecture, is refused with a clear error
instead of a shape mismatch deep inside `load_state_dict`.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import random
import zipfile
from pathlib import Path

import numpy as np
import torch

from rotnet.config import flatten
from rotnet.errors import RotnetError

FORMAT = "rotnet-checkpoint/1"


def atomic_write(path: str | Path, write) -> None:
    """Call `write(tmp_path)`, then rename onto `path`: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def rng_states() -> dict:
    states = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
              "python": random.getstate()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    np.random.set_state(states["numpy"])
    random.setstate(states["python"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def save_checkpoint(path: str | Path, *, kind: str, arch: dict, config: dict, model, optimizer,
                    scheduler, epoch: int, history: list[dict], extra: dict | None = None) -> None:
    """`epoch` is the number of completed epochs; `arch` is what the model must match to load."""
    state = {
        "format": FORMAT, "kind": kind, "arch": arch, "config": config, "epoch": epoch,
        "model": _unwrap(model).state_dict(), "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(), "rng": rng_states(), "history": history,
        "extra": extra or {},
    }
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_checkpoint(path: str | Path, *, kind: str | None = None) -> dict:
    """Load and check a rotnet checkpoint; `kind` (e.g. "pretrain") if the caller needs one."""
    path = Path(path)
    if not path.is_file():
        raise RotnetError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except (pickle.UnpicklingError, zipfile.BadZipFile, RuntimeError, EOFError, ValueError,
            OSError) as err:  # OSError: a truncated zip (torch raises EINVAL)
        raise RotnetError(f"{path} is not a readable checkpoint ({type(err).__name__})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise RotnetError(f"{path} is not a rotnet checkpoint")
    if kind is not None and state["kind"] != kind:
        raise RotnetError(f"{path} is a {state['kind']} checkpoint, expected a {kind} checkpoint")
    return state


def check_arch(state: dict, arch: dict, path: str | Path) -> None:
    """Refuse to resume into a model of a different architecture."""
    for key, value in arch.items():
        if state["arch"].get(key) != value:
            raise RotnetError(f"checkpoint {path} has {key}={state['arch'].get(key)!r}, "
                              f"this run needs {key}={value!r}; use another output directory")


# Settings that may differ between a run and its resumption (another machine, more logging).
RESUMABLE_DIFFERENCES = {"runtime.device", "runtime.log_every", "runtime.compile", "data.root",
                         "data.download"}


def check_config(state: dict, config: dict, path: str | Path) -> None:
    """Refuse to resume a run that was started with different training settings."""
    saved, current = flatten(state.get("config", {})), flatten(config)
    for key in sorted(set(saved) | set(current)):
        if key not in RESUMABLE_DIFFERENCES and saved.get(key) != current.get(key):
            raise RotnetError(f"checkpoint {path} was made with {key}={saved.get(key)!r}, this run "
                              f"has {key}={current.get(key)!r}; use another output directory")


def resume(path: str | Path, *, kind: str, arch: dict, model, optimizer, scheduler) -> tuple[int, list[dict], dict]:
    """Restore everything from `path` if it exists. Returns (completed epochs, history, extra)."""
    path = Path(path)
    if not path.exists():
        return 0, [], {}
    state = load_checkpoint(path, kind=kind)
    check_arch(state, arch, path)
    _unwrap(model).load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    restore_rng_states(state["rng"])
    return state["epoch"], state["history"], state["extra"]


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _unwrap(model):
    """The plain module under torch.compile / DistributedDataParallel wrappers."""
    model = getattr(model, "_orig_mod", model)
    return getattr(model, "module", model)
