"""Checkpoints: one dict (model, optimizer, scheduler, epoch, config, RNG states), written
atomically; `open_for_resume` checks a run folder's checkpoint against the run about to
start and `restore` loads it into the model, optimiser and scheduler (`experiments.execute`
and `engine.fit` call them once per run, for every task).

A checkpoint is a plain `torch.save` dict with a format marker, so a file that is not a
rotnet checkpoint, or one from a different architecture, is refused with a clear error
instead of a shape mismatch deep inside `load_state_dict`. It holds only tensors, numbers,
strings, lists and dicts (RNG states as tensors) and is read with `weights_only=True`:
checkpoints travel between people, and a full unpickler runs whatever code a file names.
"""

from __future__ import annotations

import hashlib
import pickle
import random
import zipfile
from pathlib import Path

import numpy as np
import torch

from rotnet import files
from rotnet.config import flatten
from rotnet.errors import RotnetError

FORMAT = "rotnet-checkpoint/2"  # /2: RNG states as tensors, loadable weights_only


def rng_states() -> dict:
    """Every generator's state as tensors and numbers (what `weights_only` loading accepts)."""
    _, keys, pos, has_gauss, cached = np.random.get_state()
    version, python_state, gauss_next = random.getstate()
    states = {"torch": torch.get_rng_state(),
              "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                        "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
              "python": {"version": version, "state": torch.tensor(python_state, dtype=torch.int64),
                         "gauss_next": gauss_next}}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    n = states["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = states["python"]
    random.setstate((p["version"], tuple(p["state"].tolist()), p["gauss_next"]))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def save_checkpoint(path: str | Path, *, task: str, arch: dict, config: dict, model, optimizer,
                    scheduler, epoch: int, history: list[dict], extra: dict | None = None) -> None:
    """`epoch` is the number of completed epochs; `arch` is what the model must match to load."""
    state = {
        "format": FORMAT, "task": task, "arch": arch, "config": config, "epoch": epoch,
        "model": _unwrap(model).state_dict(), "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(), "rng": rng_states(), "history": history,
        "extra": extra or {},
    }
    files.atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_checkpoint(path: str | Path, *, task: str | None = None) -> dict:
    """Load and check a rotnet checkpoint; `task` (e.g. "pretrain") if the caller needs one.
    Whatever the file holds (text, random or damaged bytes, a crafted dict), the only error
    is a one-line RotnetError."""
    path = Path(path)
    if not path.is_file():
        raise RotnetError(f"checkpoint not found: {path}")
    state = _read(path)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise RotnetError(f"{path} is not a rotnet checkpoint")
    if "task" not in state and "kind" in state:  # written before the key was renamed
        state["task"] = state.pop("kind")
    check_form(state, path)
    if task is not None and state["task"] != task:
        raise RotnetError(f"{path} is a {state['task']} checkpoint, expected a {task} checkpoint")
    return state


def _read(path: Path):
    try:
        with zipfile.ZipFile(path) as archive:  # torch.load does not check the CRCs: a flipped
            damaged = archive.testzip()          # bit in the weights would load silently
        if damaged is not None:
            raise RotnetError(f"{path} is a damaged checkpoint ({damaged} fails its checksum)")
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # also what weights_only raises for any code a file names
        raise RotnetError(f"{path} is not a rotnet checkpoint (it holds more than tensors and "
                          "plain values, or is damaged; refused unread)") from None
    except RotnetError:
        raise
    except Exception as err:  # damaged bytes reach torch's zip and pickle readers, which raise
        # almost any type (IndexError, KeyError, struct.error, OSError, RuntimeError, ...)
        raise RotnetError(f"{path} is not a readable checkpoint ({type(err).__name__})") from None


# What `save_checkpoint` writes: key -> the type of its value.
FORM = {"task": str, "arch": dict, "config": dict, "epoch": int, "model": dict, "optimizer": dict,
        "scheduler": dict, "rng": dict, "history": list, "extra": dict}


def check_form(state: dict, path: str | Path) -> None:
    """Refuse a file with the format marker whose content is not what `save_checkpoint`
    writes (damaged, or made by hand): every key of its type, a history of finished epochs,
    weights as named tensors."""
    def refuse(what: str):
        raise RotnetError(f"{path} is a damaged rotnet checkpoint: {what}")

    for key, kind in FORM.items():
        if not isinstance(state.get(key), kind) or isinstance(state.get(key), bool):
            refuse(f"{key!r} is missing or not a {kind.__name__}")
    if state["epoch"] < 1:
        refuse(f"epoch {state['epoch']}")
    # an epoch between two scored ones (pretrain.eval_every) has no test_acc
    if not state["history"] or not all(isinstance(m, dict) and type(m.get("epoch")) is int
                                       and _is_number(m.get("test_acc", 0.0)) for m in state["history"]):
        refuse("no history of finished epochs")
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor)
               for k, v in state["model"].items()):
        refuse("its weights are not named tensors")
    extra = state["extra"]
    if not isinstance(extra.get("run_id", ""), str) or not isinstance(extra.get("tags", {}), dict):
        refuse("'extra' holds a run id or tags of the wrong type")


def scored(history: list[dict]) -> list[dict]:
    """The epochs of `history` that scored the test set (all, unless pretrain.eval_every > 1)."""
    return [m for m in history if "test_acc" in m]


def last_test_acc(history: list[dict]) -> float | None:
    """The test accuracy of the last epoch of `history` that scored it (None: none did)."""
    epochs = scored(history)
    return epochs[-1]["test_acc"] if epochs else None


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value)


def check_weights(weights: dict, module, path: str | Path) -> None:
    """Refuse weights that are not exactly `module`'s (names, shapes, dtypes) or hold NaN/inf:
    `load_state_dict` would fail half-way, a probe would train on NaN features. `module` may
    live on the meta device (shapes only, nothing allocated)."""
    expected = _unwrap(module).state_dict()
    missing, unexpected = sorted(set(expected) - set(weights)), sorted(set(weights) - set(expected))
    if missing or unexpected:
        raise RotnetError(f"checkpoint {path} does not hold the weights its architecture declares "
                          f"(missing {missing[:2]}, unexpected {unexpected[:2]})")
    for name, want in expected.items():
        got = weights[name]
        if got.shape != want.shape or got.dtype != want.dtype:
            raise RotnetError(f"checkpoint {path}: {name} is {got.dtype} {tuple(got.shape)}, its "
                              f"architecture needs {want.dtype} {tuple(want.shape)}")
        if got.is_floating_point() and not bool(torch.isfinite(got).all()):
            raise RotnetError(f"checkpoint {path}: {name} holds NaN or infinite values")


def check_restorable(state: dict, *, model, optimizer, scheduler, path: str | Path) -> None:
    """Refuse a checkpoint that would not restore into this run, before the run starts: its
    weights must be `model`'s, and its optimizer, scheduler and RNG states must load
    (into the caller's throw-away `optimizer` and `scheduler`, made as the run makes them)."""
    check_weights(state["model"], model, path)
    fresh_schedule = scheduler.state_dict()
    try:
        optimizer.load_state_dict(state["optimizer"])
        if set(state["scheduler"]) != set(fresh_schedule):
            raise KeyError("scheduler keys")
        scheduler.load_state_dict(state["scheduler"])
        current = rng_states()
        try:
            restore_rng_states(state["rng"])
        finally:
            restore_rng_states(current)
    except Exception as err:  # torch's and numpy's loaders raise many types on a crafted state
        raise RotnetError(f"checkpoint {path} holds an optimizer, scheduler or RNG state this run "
                          f"cannot restore ({type(err).__name__})") from None
    for group in optimizer.param_groups:
        if not all(_is_number(group.get(k, 0)) for k in ("lr", "momentum", "weight_decay")):
            raise RotnetError(f"checkpoint {path} holds a non-numeric optimizer setting")
    for param, values in optimizer.state.items():
        buffer = values.get("momentum_buffer")
        if buffer is not None and (not isinstance(buffer, torch.Tensor)
                                   or buffer.shape != param.shape):
            raise RotnetError(f"checkpoint {path} holds an optimizer state of the wrong shape")


def pretrain_profile(path: str | Path) -> str | None:
    """The profile a pretraining checkpoint was made with."""
    return load_checkpoint(path, task="pretrain")["config"].get("profile")


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


def open_for_resume(path: str | Path, *, task: str, arch: dict,
                    config: dict | None = None) -> dict | None:
    """The checkpoint a run resumes from (None: there is none), opened once and refused if it
    is foreign: another task, architecture or (given `config`) other training settings."""
    path = Path(path)
    if not path.exists():
        return None
    state = load_checkpoint(path, task=task)
    check_arch(state, arch, path)
    if config is not None:
        check_config(state, config, path)
    return state


def restore(state: dict | None, *, model, optimizer, scheduler) -> tuple[int, list[dict], dict]:
    """Load an opened checkpoint into the run's objects (nothing for None). Returns
    (completed epochs, history, extra)."""
    if state is None:
        return 0, [], {}
    _unwrap(model).load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    restore_rng_states(state["rng"])
    return state["epoch"], state["history"], state["extra"]


def resume(path: str | Path, *, task: str, arch: dict, model, optimizer, scheduler) -> tuple[int, list[dict], dict]:
    """Restore everything from `path` if it exists. Returns (completed epochs, history, extra)."""
    return restore(open_for_resume(path, task=task, arch=arch), model=model, optimizer=optimizer,
                   scheduler=scheduler)


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
