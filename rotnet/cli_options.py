"""The options the `rotnet` training commands share, declared once.

A command decorated with `@run_options(...)` takes `options: RunOptions` instead of
declaring --params, --profile, --dataset, ... itself: the decorator adds the named shared
options to the command's signature (Typer reads it from there) and hands their values on
as one `RunOptions`. `RunOptions.config` builds the command's `Config` the one way every
command does: the paper protocol, then --params, then --profile, then the flags, then --set.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Callable, Optional

import typer

from rotnet import files
from rotnet.config import DATASETS, PROFILES, Config
from rotnet.errors import RotnetError

PAPER_PROFILE = Config.profile_defaults("paper")  # the values --help quotes as the paper profile's


def from_profile(paper_value) -> str:
    """How --help states a default the profile (or --params) sets."""
    return f"default: from the profile (paper: {paper_value})"


def one_of(option: str, choices) -> Callable:
    """A parse-time check of a fixed-choice option: a bad value is one `error:` line naming
    the option as the user typed it, before any data, MLflow or DVC is touched."""
    allowed = [str(choice) for choice in choices]

    def check(value):
        if value is not None and str(value) not in allowed:
            raise RotnetError(f"{option} {value}: choose one of {', '.join(allowed)}")
        return value
    return check


def choice_option(default, option: str, choices, help: str, *aliases: str):
    """A typer.Option whose value must be one of `choices` (shown in --help)."""
    return typer.Option(default, option, *aliases, help=help, callback=one_of(option, choices),
                        metavar="[" + "|".join(map(str, choices)) + "]")


def checkpoint_file(path: Optional[Path]) -> Optional[Path]:
    """A directory given as a checkpoint: name the file the user probably meant."""
    if path is not None and path.is_dir():
        inside = files.checkpoint_in(path)
        hint = f"did you mean {inside}?" if inside.is_file() else f"it has no {files.CHECKPOINT}"
        raise RotnetError(f"checkpoint {path} is a directory, not a checkpoint file; {hint}")
    return path


def output_path(value: Optional[str]) -> Optional[Path]:
    """--out as a Path, refused at parse time when empty (Path("") would be the current
    folder) or too long for any file system."""
    if value is None:
        return None
    if not value.strip():
        raise RotnetError("--out '': give a path (--out . for the current folder)")
    from rotnet.outdir import check_path

    check_path(Path(value), "--out")
    return Path(value)


def out_option(help: str):
    return typer.Option(None, "--out", help=help, callback=output_path)


PROFILE_HELP = ("paper (CIFAR-10, the reference protocol), paper-authors (the same with the "
                "authors' code's 200-epoch pretraining), quick (minutes on a CPU) or smoke (seconds).")

# Each shared option: its type and its typer.Option, keyed by the RunOptions field.
SHARED = {
    "params": (Optional[Path], typer.Option(None, "--params", help="A params.yaml to start from "
                                            "(the DVC pipeline's).")),
    "profile": (Optional[str], choice_option(None, "--profile", PROFILES, PROFILE_HELP)),
    "dataset": (Optional[str], choice_option(None, "--dataset", DATASETS, "The data set; "
                                                 + from_profile(PAPER_PROFILE.data.dataset) + ".")),
    "data_root": (Optional[str], typer.Option(None, "--data-root", help="Where the data set lives "
                                              "/ is downloaded; " + from_profile(PAPER_PROFILE.data.root) + ".")),
    "epochs": (Optional[int], typer.Option(None, "--epochs", help="Training epochs; " + from_profile(
                                           f"{PAPER_PROFILE.pretrain.optim.epochs}, supervised NIN "
                                           f"{PAPER_PROFILE.supervised.optim.epochs}") + ".")),
    "seed": (Optional[int], typer.Option(None, "--seed", help="Random seed (model init, order, "
                                         "augmentation); " + from_profile(PAPER_PROFILE.runtime.seed) + ".")),
    "device": (Optional[str], typer.Option(None, "--device", help="auto | cpu | cuda | cuda:N; "
                                           + from_profile(PAPER_PROFILE.runtime.device) + ".")),
    "out": (Optional[str], out_option("Output directory (checkpoint.pt, metrics.json). "
                                      "Rerunning into the same directory resumes.")),
    "sets": (Optional[list[str]], typer.Option(None, "--set", help="Override any config key, e.g. "
                                               "--set pretrain.optim.lr=0.05 (repeatable).")),
    "track": (bool, typer.Option(True, "--track/--no-track", help="Log the run to MLflow.")),
}


@dataclass
class RunOptions:
    """The shared options' values; a command not offering one sees its default."""

    params: Optional[Path] = None
    profile: Optional[str] = None
    dataset: Optional[str] = None
    data_root: Optional[str] = None
    epochs: Optional[int] = None
    seed: Optional[int] = None
    device: Optional[str] = None
    out: Optional[Path] = None
    sets: Optional[list[str]] = None
    track: bool = True

    def config(self, flags: dict | None = None, *, profile: Optional[str] = None):
        """params.yaml, then --profile (else `profile`), then the shared and the command's
        `flags` (dotted keys; None: not given), then --set; validated once."""
        from rotnet.config import Config, merge
        from rotnet.params import nested, parse_set, read_params

        values = read_params(self.params) if self.params else {}
        if self.profile or profile:
            values["profile"] = self.profile or profile
        given = {"data.dataset": self.dataset, "data.root": self.data_root,
                 "runtime.seed": self.seed, "runtime.device": self.device, **(flags or {})}
        values = merge(values, nested({k: v for k, v in given.items() if v is not None}))
        for item in self.sets or []:
            values = merge(values, parse_set(item))
        return Config.from_dict(values)

    def tracker(self):
        from rotnet.tracking import NullTracker, Tracker

        return Tracker() if self.track else NullTracker()


ALL = tuple(f.name for f in fields(RunOptions))


def run_options(*names: str) -> Callable:
    """Give a command the shared options `names` (default: all of them) as `options`."""
    names = names or ALL

    def decorate(command: Callable) -> Callable:
        signature = inspect.signature(command, eval_str=True)
        own = [p for p in signature.parameters.values() if p.name != "options"]
        shared = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=SHARED[name][1],
                                    annotation=SHARED[name][0]) for name in names]

        @functools.wraps(command)
        def wrapper(**kwargs):
            options = RunOptions(**{name: kwargs.pop(name) for name in names})
            return command(**kwargs, options=options)

        wrapper.__signature__ = signature.replace(parameters=own + shared)
        return wrapper
    return decorate
