"""Progress of a training run on stderr: epoch, loss, accuracy, images/s and ETA.

A Rich progress bar when stderr is a terminal (`rotnet pretrain` typed by a user); otherwise
one plain line per epoch, so `dvc repro`, a log file or CI shows how a stage is going.
"""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from datetime import timedelta

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from rotnet.engine import Hooks


@contextmanager
def progress_hooks(title: str, console: Console | None = None):
    """Hooks for `rotnet.engine.fit`: a Rich bar on a terminal, else plain lines."""
    console = console or Console(stderr=True)
    if not console.is_terminal:
        yield plain_hooks(title, console.file)
        return
    with rich_hooks(title, console) as hooks:
        yield hooks


def plain_hooks(title: str, stream=None) -> Hooks:
    """One line per epoch on `stream` (stderr), e.g. `pretrain b4-r4 epoch 3/30 loss 1.204
    train acc 48.1% test acc 46.0% 1,520 img/s ETA 0:04:12`."""
    stream = stream or sys.stderr
    state = {"start_epoch": 0, "epochs": 0, "began": time.monotonic()}

    def say(text: str) -> None:
        print(text, file=stream, flush=True)

    def on_start(start_epoch: int, epochs: int, steps: int) -> None:
        state.update(start_epoch=start_epoch, epochs=epochs, began=time.monotonic())
        resumed = f", resuming after epoch {start_epoch}" if start_epoch else ""
        say(f"{title}: {epochs} epochs of {steps} steps{resumed}")

    def on_epoch_end(metrics: dict) -> None:
        epoch, epochs = metrics["epoch"], state["epochs"]
        done = epoch - state["start_epoch"]  # epochs this process trained (a resume skips some)
        eta = (time.monotonic() - state["began"]) / max(done, 1) * (epochs - epoch)
        say(f"{title} epoch {epoch}/{epochs} loss {metrics['train_loss']:.3f} "
            f"train acc {metrics['train_acc']:.1f}%{_test_acc(metrics)} "
            f"{metrics['images_per_s']:,.0f} img/s ETA {timedelta(seconds=round(eta))}")

    return Hooks(on_start, None, on_epoch_end)


@contextmanager
def rich_hooks(title: str, console: Console):
    """Hooks that drive one Rich progress bar named `title` (the stage, or what the command
    trains), updated every `runtime.log_every` steps; it counts epochs, not batches."""
    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                        TextColumn("epoch {task.fields[epoch]}/{task.fields[epochs]}"),
                        TextColumn("{task.fields[status]}"), TimeElapsedColumn(),
                        TextColumn("ETA"), TimeRemainingColumn(), console=console, transient=False)
    state = {"task": None, "steps": 1, "last": ""}

    def on_start(start_epoch: int, epochs: int, steps: int) -> None:
        state["steps"] = steps
        if start_epoch:
            console.print(f"resuming {title} after epoch {start_epoch}/{epochs}")
        # the bar moves per step (total: every step), the count says epochs
        state["task"] = progress.add_task(title, total=epochs * steps, completed=start_epoch * steps,
                                          status="", epoch=start_epoch, epochs=epochs)

    def on_step(epoch: int, step: int, loss: float | None, rate: float) -> None:
        status = f"loss {loss:.3f} {rate:,.0f} img/s {state['last']}"
        progress.update(state["task"], completed=epoch * state["steps"] + step, status=status,
                        epoch=epoch + 1)

    def on_epoch_end(metrics: dict) -> None:
        if "test_acc" in metrics:  # an unscored epoch keeps the last score shown
            state["last"] = f"|{_test_acc(metrics)}"
        progress.update(state["task"], completed=metrics["epoch"] * state["steps"],
                        epoch=metrics["epoch"])

    with progress:
        yield Hooks(on_start, on_step, on_epoch_end)


def _test_acc(metrics: dict) -> str:
    """" test acc N%" for an epoch that scored the test set, else nothing."""
    return f" test acc {metrics['test_acc']:.1f}%" if "test_acc" in metrics else ""
