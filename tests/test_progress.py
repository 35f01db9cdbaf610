"""Training progress: a Rich bar on a terminal, one plain line per epoch elsewhere (a
`dvc repro` stage, a log file)."""

from __future__ import annotations

import io
import re

from rich.console import Console

from rotnet import experiments
from rotnet.progress import plain_hooks, progress_hooks
from rotnet.tracking import NullTracker

EPOCH_LINE = re.compile(r"^pretrain epoch (\d+)/2 loss \d+\.\d{3} train acc \d+\.\d% "
                        r"test acc \d+\.\d% [\d,]+ img/s ETA \d+:\d\d:\d\d$")


def test_off_a_terminal_a_run_prints_one_line_per_epoch(tmp_path, make_config, tiny_data):
    stream = io.StringIO()
    with progress_hooks("pretrain", Console(file=stream, force_terminal=False)) as hooks:
        experiments.pretrain(make_config(), tmp_path / "out", hooks=hooks, tracker=NullTracker(),
                             data=tiny_data)
    header, *epochs = stream.getvalue().splitlines()
    assert header.startswith("pretrain: 2 epochs of ")
    assert [EPOCH_LINE.match(line).group(1) for line in epochs] == ["1", "2"], epochs
    assert epochs[-1].endswith("ETA 0:00:00")


def test_on_a_terminal_it_is_a_rich_bar_updated_per_step():
    console = Console(file=io.StringIO(), force_terminal=True, width=160)
    with progress_hooks("probe@b4-r8-1 block2", console) as hooks:
        assert hooks.on_step is not None
        hooks.on_start(0, 10, 500)
        hooks.on_step(2, 250, 1.25, 900.0)  # half-way through the third epoch
    shown = console.file.getvalue()
    assert "probe@b4-r8-1 block2" in shown  # the bar names the stage
    assert "epoch 3/10" in shown and "/5000" not in shown  # it counts epochs, not batches
    assert plain_hooks("pretrain", io.StringIO()).on_step is None  # plain: per epoch only


def test_a_resumed_run_says_so_and_estimates_from_the_epochs_it_trained():
    stream = io.StringIO()
    hooks = plain_hooks("probe@b4-r4-block2", stream)
    hooks.on_start(8, 10, 5)
    hooks.on_epoch_end({"epoch": 9, "train_loss": 0.5, "train_acc": 80.0, "test_acc": 75.25,
                        "images_per_s": 12345.6})
    first, second = stream.getvalue().splitlines()
    assert first == "probe@b4-r4-block2: 10 epochs of 5 steps, resuming after epoch 8"
    assert second.startswith("probe@b4-r4-block2 epoch 9/10 loss 0.500 train acc 80.0% "
                             "test acc 75.2% 12,346 img/s ETA 0:00:0")
