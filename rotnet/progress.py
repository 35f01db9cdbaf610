"""Rich progress for training runs: epoch, loss, accuracy, images/s and ETA."""

from __future__ import annotations

from contextlib import contextmanager

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)

from rotnet.engine import Hooks


@contextmanager
def progress_hooks(title: str, console: Console | None = None):
    """Hooks for `rotnet.engine.fit` that drive one Rich progress bar (on stderr)."""
    console = console or Console(stderr=True)
    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[status]}"), TimeElapsedColumn(),
                        TextColumn("ETA"), TimeRemainingColumn(), console=console, transient=False)
    state = {"task": None, "steps": 1, "last": ""}

    def on_start(start_epoch: int, epochs: int, steps: int) -> None:
        state["steps"] = steps
        if start_epoch:
            console.print(f"resuming {title} after epoch {start_epoch}/{epochs}")
        state["task"] = progress.add_task(title, total=epochs * steps, completed=start_epoch * steps,
                                          status="")

    def on_step(epoch: int, step: int, loss: float | None, rate: float) -> None:
        status = f"epoch {epoch + 1} loss {loss:.3f} {rate:,.0f} img/s {state['last']}"
        progress.update(state["task"], completed=epoch * state["steps"] + step, status=status)

    def on_epoch_end(metrics: dict) -> None:
        state["last"] = f"| test acc {metrics['test_acc']:.1f}%"
        progress.update(state["task"], completed=metrics["epoch"] * state["steps"])

    with progress:
        yield Hooks(on_start, on_step, on_epoch_end)
