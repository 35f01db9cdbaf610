"""The `rotnet` command line: the training commands (pretrain, probe, supervised, semisup,
snapshots, tune), Typer commands over the functions in `rotnet.experiments`; the commands
around the pipeline and its results are `rotnet.cli_pipeline`'s, registered here.

Every training command builds one `Config` the same way: the paper protocol, then `--params`
(a params.yaml, the DVC pipeline's file), then `--profile`, then the command's flags and
`--set key=value` overrides. Bad input exits with code 2 and one line on stderr.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from rotnet import __version__
from rotnet import cli_pipeline
from rotnet.cli_options import (PAPER_PROFILE, RunOptions, checkpoint_file, choice_option, from_profile,
                                out_option, run_options)
from rotnet.errors import RotnetError
from rotnet.registry import BLOCK_CHOICES, HEADS, RANDOM_BACKBONES, ROTATION_SETS, rotation_set_help
from rotnet.tune import TARGETS as TUNE_TARGETS

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="RotNet (Gidaris et al., ICLR 2018): rotation pretraining, probes, "
                       "baselines and the paper's CIFAR-10 ablations, tracked in MLflow.")
console = Console(stderr=True)


def report_result(title: str, result) -> None:
    if os.environ.get("RANK", "0") != "0":  # under torchrun, rank 0 speaks for all
        return
    m = result.metrics
    console.print(f"[bold green]{title}[/] test accuracy {m['test_acc']:.2f}% (final epoch "
                  f"{m['epochs']}; best {m['best_test_acc']:.2f}% at epoch {m['best_epoch']})"
                  f"  run {m['run_id'] or '-'}  → {result.out_dir}")


def show_version(value: bool) -> None:
    if value:
        print(f"rotnet {__version__}")
        raise typer.Exit()


@app.callback()
def version(_: bool = typer.Option(False, "--version", is_eager=True, callback=show_version,
                                   help="Print rotnet's version and exit.")) -> None:
    pass


@app.command()
@run_options()
def pretrain(
    blocks: Optional[int] = choice_option(None, "--blocks", BLOCK_CHOICES, "NIN blocks; "
                                          + from_profile(PAPER_PROFILE.pretrain.blocks) + "."),
    rotations: Optional[str] = choice_option(None, "--rotations", ROTATION_SETS,
                                             f"Rotation set: {rotation_set_help()}; "
                                             + from_profile(PAPER_PROFILE.pretrain.rotations) + "."),
    width: Optional[float] = typer.Option(None, "--width", help="Channel multiplier; "
                                    + from_profile(PAPER_PROFILE.pretrain.width) + "."),
    *, options: RunOptions,
):
    """Pretrain a RotNet: predict which rotation was applied to each image.

    Example: `rotnet pretrain --profile quick --rotations 8 --out outputs/b4-r8`"""
    from rotnet import experiments
    from rotnet.progress import progress_hooks

    config = options.config({"pretrain.blocks": blocks, "pretrain.rotations": rotations,
                             "pretrain.width": width, "pretrain.optim.epochs": options.epochs})
    with progress_hooks(f"pretrain b{config.pretrain.blocks}-r{config.pretrain.rotations}") as hooks:
        result = experiments.pretrain(config, options.out, tracker=options.tracker(), hooks=hooks)
    report_result("rotation prediction:", result)


@app.command()
@run_options()
def probe(
    checkpoint: Path = typer.Argument(..., help="A pretraining checkpoint.pt, or a random "
                                      f"backbone: '{RANDOM_BACKBONES[True]}' (a seeded random NIN, "
                                      "BatchNorm statistics calibrated on training images) or "
                                      f"'{RANDOM_BACKBONES[False]}' (BatchNorm as initialised).",
                                      callback=checkpoint_file),
    block: int = typer.Option(2, "--block", help="Which block's output to classify (1-based; the paper's Table 3: 2)."),
    head: str = choice_option("nonlinear", "--head", HEADS, "nonlinear (3 FC layers) or "
                              "conv (a fresh NIN block + linear).", "--kind"),
    finetune: bool = typer.Option(False, "--finetune/--frozen", help="Train the backbone too."),
    *, options: RunOptions,
):
    """Train a classifier on one block of a pretrained RotNet or a random backbone (frozen,
    or fine-tuned).

    Example: `rotnet probe outputs/b4-r8/checkpoint.pt --block 2 --head conv`"""
    from rotnet import experiments
    from rotnet.progress import progress_hooks

    section = "finetune" if finetune else ("conv_probe" if head == "conv" else "probe")
    random = str(checkpoint) in RANDOM_BACKBONES.values()
    backbone = None if random else experiments.load_backbone(checkpoint)  # read once
    config = options.config({f"{section}.optim.epochs": options.epochs},
                            profile=options.profile or (backbone.profile if backbone else None))
    data = experiments.load_dataset(config)
    if random:
        backbone = experiments.random_backbone(config, data,
                                               calibrated=str(checkpoint) == RANDOM_BACKBONES[True])
    what = f"{head} {'fine-tuned' if finetune else 'probe'} on block {block}"
    with progress_hooks(what) as hooks:
        result = experiments.probe(config, backbone, head=head, block=block, finetune=finetune,
                                   out_dir=options.out, tracker=options.tracker(), hooks=hooks,
                                   data=data)
    report_result(f"{what}:", result)


def _checkpoint_profile(checkpoint: Path) -> Optional[str]:
    """Evaluate with the profile the backbone was pretrained with, unless told otherwise."""
    from rotnet.checkpoint import pretrain_profile

    return None if str(checkpoint) in RANDOM_BACKBONES.values() else pretrain_profile(checkpoint)


@app.command()
@run_options()
def supervised(*, options: RunOptions):
    """Train the supervised NIN baseline (3 blocks) from scratch.

    Example: `rotnet supervised --profile quick --seed 1`"""
    from rotnet import experiments
    from rotnet.progress import progress_hooks

    config = options.config({"supervised.optim.epochs": options.epochs})
    with progress_hooks("supervised NIN") as hooks:
        result = experiments.supervised(config, out_dir=options.out, tracker=options.tracker(),
                                        hooks=hooks)
    report_result("supervised NIN:", result)


@app.command()
@run_options("params", "profile", "dataset", "data_root", "seed", "device", "out", "sets",
             "track")
def semisup(
    checkpoint: Path = typer.Argument(..., help="A 4-block pretraining checkpoint.pt.",
                                      callback=checkpoint_file),
    per_class: Optional[list[int]] = typer.Option(None, "--per-class", help="Labelled images per "
                                                  "class (repeatable); " + from_profile(
                                                      PAPER_PROFILE.semisup.per_class) + "."),
    subsets_dir: Optional[Path] = typer.Option(None, "--subsets", help="Where the label-subset "
                                               "index files are (written if missing)."),
    *, options: RunOptions,
):
    """Semi-supervised sweep (Figure 5b): conv probe on RotNet vs supervised NIN per subset size,
    its runs nested under one MLflow parent run.

    Example: `rotnet semisup outputs/b4-r4/checkpoint.pt --per-class 20 --per-class 100`"""
    from rotnet import experiments, figure5
    from rotnet.progress import progress_hooks

    from rotnet.hardware import check_device_available

    backbone = experiments.load_backbone(checkpoint)  # read once, refused before any subset file
    config = options.config({"semisup.per_class": per_class},
                            profile=options.profile or backbone.profile)
    check_device_available(config.runtime.device)
    subsets_dir = subsets_dir or experiments.output_root(config) / "subsets"
    data = experiments.load_dataset(config)  # once, for the subsets and every run
    figure5.write_subsets(config, subsets_dir, data)
    for k in config.semisup.per_class:
        for method in figure5.semisup_methods(k, subsets_dir):
            with progress_hooks(f"{method}, {k} per class") as hooks:
                result = figure5.semisup_run(config, method, k, subsets_dir, backbone=backbone,
                                             out_dir=options.out, tracker=options.tracker(),
                                             hooks=hooks, data=data)
            report_result(f"{method}, {k} labels per class:", result)


@app.command()
@run_options("profile", "params", "device", "out", "sets", "track")
def snapshots(
    pretrain_dir: Path = typer.Argument(..., help="A pretraining output directory with "
                                        "snapshot-epochNNN.pt files."),
    *, options: RunOptions,
):
    """Figure 5a: a non-linear probe on block 2 of every pretraining snapshot, its runs nested
    under one MLflow parent run.

    Example: `rotnet snapshots runs/pretrain/b4-r4`"""
    from rotnet import experiments, figure5
    from rotnet.progress import progress_hooks

    snapshots = figure5.snapshot_backbones(pretrain_dir)  # each read once, all checked first
    config = options.config(profile=options.profile or snapshots[0].profile)
    data = experiments.load_dataset(config)  # once for every snapshot
    for snap in snapshots:
        name = f"snapshot of epoch {snap.lineage['pretrain_epoch']}"
        with progress_hooks(f"probe on the {name}") as hooks:
            result = figure5.snapshot_probe(config, snap, out_dir=options.out,
                                            tracker=options.tracker(), hooks=hooks, data=data)
        report_result(f"{name}:", result)


# The commands around the pipeline and its results (rotnet.cli_pipeline), registered here
# so that --help lists every command in one order.
for command in (cli_pipeline.attention, cli_pipeline.report, cli_pipeline.claims, cli_pipeline.ablate):
    app.command()(command)
app.command("params")(cli_pipeline.params_command)


@app.command()
@run_options("dataset", "data_root", "device", "profile", "params", "sets", "track")
def tune(
    checkpoint: Optional[Path] = typer.Argument(None, help="The pretraining checkpoint.pt whose "
                                                "block --block the probe reads (target probe).",
                                                callback=checkpoint_file),
    block: int = typer.Option(2, "--block", help="Which block the non-linear probe classifies."),
    trials: int = typer.Option(20, "--trials", help="Trials to add to the study (a rerun resumes it)."),
    study: Optional[str] = typer.Option(None, "--study", help="Study name (default: from the "
                                        "checkpoint's variant, the block and the profile)."),
    storage: Optional[str] = typer.Option(None, "--storage", help="Optuna storage, e.g. "
                                          "sqlite:////abs/optuna.db (default <project>/optuna.db)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the TPE sampler."),
    target: str = choice_option("probe", "--target", TUNE_TARGETS, "probe (the non-linear probe's "
                                "optimiser) or pretrain (pretraining's, scored by validation "
                                "rotation accuracy)."),
    val_fraction: float = typer.Option(0.1, "--val-fraction", help="Share of the TRAINING set held "
                                       "out per class for validation (the test set is never used)."),
    min_epochs: Optional[int] = typer.Option(None, "--min-epochs", help="Fewest epochs a trial may "
                                             "train (default: a quarter of the profile's)."),
    max_epochs: Optional[int] = typer.Option(None, "--max-epochs", help="Most epochs a trial may "
                                             "train (default: the profile's)."),
    write_params: Optional[Path] = typer.Option(None, "--write-params", help="Write the best values "
                                                "into this params.yaml's <target>.optim section."),
    out: Optional[str] = out_option("Where trial runs go (default "
                                    "<project>/outputs/tune/<study>/trial-NNNN)."),
    *, options: RunOptions,
):
    """Tune lr, weight decay and epochs (milestones at 50/75/90% of them) with Optuna, on a
    validation split of the training set; prints the best trial and a `dvc exp run` line.

    Example: `rotnet tune runs/pretrain/b4-r4/checkpoint.pt --trials 20`"""
    from rotnet import tune as tuning

    if target == "probe" and checkpoint is not None and not checkpoint.is_file():
        raise RotnetError(f"checkpoint not found: {checkpoint}")
    config = options.config(profile=options.profile or (_checkpoint_profile(checkpoint) if checkpoint
                                                          else None))

    def on_trial(trial) -> None:
        console.print(tuning.trial_line(trial), highlight=False)

    result = tuning.tune(config, checkpoint, target=target, block=block, n_trials=trials,
                         study_name=study, storage=storage, seed=seed, val_fraction=val_fraction,
                         min_epochs=min_epochs, max_epochs=max_epochs, out_dir=out,
                         tracker=None if options.track else options.tracker(), on_trial=on_trial)
    best = tuning.best_values(result.best_params)
    console.print(f"study {result.study_name!r} ({result.n_trials} trials: {result.n_complete} "
                  f"complete, {result.n_pruned} pruned) in {result.storage}", highlight=False)
    print(f"best trial {result.best_number}: validation accuracy {result.best_value:.2f}%  "
          + "  ".join(f"{k}={v}" for k, v in best.items()))
    if write_params:
        tuning.write_params(write_params, result.target, result.best_params)
        console.print(f"wrote the best {result.target}.optim values to {write_params}")
    else:
        print(tuning.dvc_command(result.target, result.best_params))


app.command()(cli_pipeline.repro)
app.command()(cli_pipeline.ui)


def main() -> None:
    try:
        # Not standalone: Click's usage errors reach us, to be printed as one line (its own
        # report is a usage line, a hint and a 3-line panel).
        code = app(standalone_mode=False)
    except RotnetError as err:
        fail(str(err))
    except typer.TyperException as err:  # Click's usage errors (bad value, unknown option)
        if type(err).__name__ == "NoArgsIsHelpError":  # plain `rotnet`: the help, as before
            err.show()
            sys.exit(err.exit_code)
        fail(usage_error_line(err), getattr(err, "exit_code", 2))
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/] (rerun the same command to resume)")
        sys.exit(130)
    # typer.Exit(n) (report --strict) comes back as n; a command itself returns None.
    sys.exit(code if isinstance(code, int) else 0)


def fail(message: str, code: int = 2) -> None:
    console.print(f"[red]error:[/] {message}", highlight=False, soft_wrap=True)
    sys.exit(code)


def usage_error_line(err) -> str:
    """A Click usage error in one line, naming the command's help."""
    message = " ".join(err.format_message().split())
    ctx = getattr(err, "ctx", None)
    return f"{message} (see {ctx.command_path} --help)" if ctx is not None else message


if __name__ == "__main__":
    main()
