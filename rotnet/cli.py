"""The `rotnet` command line: Typer commands over the functions in `rotnet.experiments`.

Every command builds one `Config` the same way: the paper protocol, then `--params`
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
from rotnet.cli_options import (PAPER_PROFILE, RunOptions, checkpoint_file, choice_option, from_profile,
                                out_option, run_options)
from rotnet.config import DATASETS, PRECISIONS, PROFILES
from rotnet.errors import RotnetError
from rotnet.registry import BLOCK_CHOICES, HEADS, RANDOM_BACKBONES, ROTATION_SETS, rotation_set_help
from rotnet.tune import TARGETS as TUNE_TARGETS

REPORTED_PRECISIONS = tuple(p for p in PRECISIONS if p != "auto")  # what it resolves to
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


@app.command()
def attention(
    checkpoint: Path = typer.Argument(..., help="A pretraining (RotNet) or supervised NIN "
                                      "checkpoint.pt.", callback=checkpoint_file),
    images: Optional[Path] = typer.Option(None, "--images", help="A folder of images (any depth), "
                                          "each brought to 32×32 (default: the checkpoint's data "
                                          "set's test split, one image per class)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder (default: "
                                       "outputs/attention/<the checkpoint's folder name>)."),
    log: bool = typer.Option(False, "--log/--no-log", help="Also log the measures and figures "
                             "on the checkpoint's MLflow run."),
):
    """Attention maps per block (Σ_c |a_c|^p; the paper's Figures 3 and 6), first-layer filters
    (Figure 4) and how rotation-equivariant the maps are, per block, in attention.md.

    Example: `rotnet attention runs/pretrain/b4-r4-s0/checkpoint.pt --images my-pictures`"""
    from rotnet.attention_report import for_checkpoint

    folder, metrics = for_checkpoint(checkpoint, images, out, log)
    print("  ".join(f"{key} {value:.3f}" for key, value in metrics[0].items()
                    if "control" not in key))
    console.print(f"wrote {folder}")


@app.command()
def report(
    out: Optional[str] = out_option("Where to write the tables and figures (default: reports/ "
                                    "for params.yaml's protocol, else reports/<experiment, "
                                    "params file or profile>/)."),
    params: Path = typer.Option(Path("params.yaml"), "--params", help="The protocol to report: "
                                "cells take only runs whose fingerprint these params imply."),
    exp: Optional[str] = typer.Option(None, "--exp", help="Report the protocol of this DVC "
                                      "experiment (or git revision) instead: its params.yaml."),
    profile: Optional[str] = choice_option(None, "--profile", PROFILES, "Report the protocol of "
                                           "this profile's defaults instead of a params file."),
    dataset: Optional[str] = choice_option(None, "--dataset", DATASETS, "Override the data set."),
    strict: bool = typer.Option(False, "--strict", help="Exit 1 when a table cell has no run "
                                "of the protocol."),
    precision: Optional[str] = choice_option(None, "--precision", REPORTED_PRECISIONS, "Report the "
                                             "runs of this precision (default: what the params' "
                                             "runtime.precision resolves to on this machine)."),
):
    """Write Tables 1-3, Figure 5a/5b and the paper's claims from the MLflow store only, each
    cell from runs of the protocol the params state (its fingerprint, which includes the
    resolved precision), never another.

    Example: `rotnet report --profile quick --strict`"""
    from rotnet.report import collect, protocol_to_report
    from rotnet.report_render import write_report

    config, label = protocol_to_report(params, exp, profile, dataset)
    data = collect(config, precision)
    for path in write_report(out or Path("reports", *filter(None, [label])), data):
        console.print(f"wrote {path}")
    missing = data.not_run()
    if strict and missing:
        console.print(f"[red]{len(missing)} table cell(s) not run under this protocol:[/] " +
                      "; ".join(f"{c.table} {c.row} {c.column}" for c in missing), highlight=False)
        raise typer.Exit(1)


@app.command()
def claims(
    paper: bool = typer.Option(False, "--paper", help="Decide the claims on the paper's published "
                               "numbers (one run per cell, 10 000 test images) instead of runs."),
    params: Path = typer.Option(Path("params.yaml"), "--params", help="The protocol whose runs "
                                "decide them (as `rotnet report`)."),
    profile: Optional[str] = choice_option(None, "--profile", PROFILES, "Use this profile's "
                                           "defaults instead of a params file."),
):
    """Print the paper's claims, each quoted, with every comparison's interval and verdict
    (holds / refuted / undecided) from a paired test with Holm's correction.

    Example: `rotnet claims --paper`"""
    from rotnet import claims as paper_claims_check

    if paper:
        print(paper_claims_check.paper_claims_markdown(), end="")
        return
    from rotnet.report import collect, protocol_to_report

    config, _ = protocol_to_report(params, profile=profile)
    print(paper_claims_check.runs_claims_markdown(collect(config)), end="")


@app.command()
def ablate(
    rotations: Optional[str] = choice_option(None, "--rotations", ROTATION_SETS, "Rotation set of "
                                             "the variant (default: params.yaml's ablation.rotations)."),
    blocks: Optional[int] = choice_option(None, "--blocks", BLOCK_CHOICES, "NIN blocks of the "
                                          "variant (default: params.yaml's ablation.blocks)."),
    queue: bool = typer.Option(False, "--queue", help="Only queue the DVC experiment of a variant "
                               "outside the main pipeline (run later with `dvc queue start`)."),
):
    """Run one variant (pretraining + a non-linear probe per block) through DVC, then compare its
    downstream accuracy with the baseline RotNet's (the registry's) in a table, also written
    to reports/ablation-<variant>.md. A variant of the main dvc.yaml is reproduced there
    (`dvc repro`, up-to-date stages skipped); any other runs as a DVC experiment named after it.

    Example: `rotnet ablate --rotations 8`"""
    from rotnet import ablation

    ablation.run(blocks, rotations, queue, console)


@app.command("params")
def params_command(
    profile: str = choice_option("paper", "--profile", PROFILES, "paper, paper-authors, quick or smoke."),
    out: Optional[str] = out_option("Write here (e.g. params.yaml) instead of printing."),
):
    """Print (or write) a complete params.yaml for a profile; writing it switches the DVC
    pipeline to that profile.

    Example: `rotnet params --profile quick --out params.yaml`"""
    from rotnet.files import atomic_write_text
    from rotnet.config import Config
    from rotnet.params import dump_params

    text = dump_params(Config.profile_defaults(profile))
    if out and out.is_dir():
        raise RotnetError(f"--out {out} is a folder; name the file to write "
                          f"(e.g. {out / 'params.yaml'})")
    if out:
        try:
            atomic_write_text(out, text)
        except OSError as err:  # a read-only or pseudo file system (/proc), a full disk
            raise RotnetError(f"cannot write {out}: {err.strerror or type(err).__name__}") from None
        console.print(f"wrote the {profile} profile to {out}")
    else:
        sys.stdout.write(text)


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


@app.command()
def repro(
    jobs: int = typer.Option(2, "--jobs", "-j", min=1, help="Stages run side by side; on a CPU "
                             "each gets cores/jobs threads (all where it runs alone)."),
    dvcfile: str = typer.Option("dvc.yaml", "--file", help="The pipeline file (in the current "
                                "directory)."),
):
    """`dvc repro` with independent stages run side by side, each still through DVC (an
    unchanged stage is skipped, every result recorded in dvc.lock).

    Example: `rotnet repro --jobs 2` on a 2-core CPU; `--jobs 4` on one GPU."""
    from rotnet import repro as parallel

    if not Path(dvcfile).is_file():
        raise RotnetError(f"--file {dvcfile}: no such pipeline file here (run from the project root)")
    failed = parallel.reproduce(dvcfile, jobs, echo=console.print)
    if failed:
        console.print(f"[red]failed:[/] {', '.join(failed)} (rerun to resume)")
        raise typer.Exit(1)


@app.command()
def ui(port: int = typer.Option(5000, "--port"), host: str = typer.Option("127.0.0.1", "--host")):
    """Open the MLflow UI on the project's tracking store (in its model-training view).

    Example: `rotnet ui --port 5001`"""
    from rotnet import tracking, ui_view

    uri = tracking.tracking_uri()
    base = f"http://{host}:{port}"
    found = tracking.experiment_id()
    console.print(f"MLflow UI for {uri}: open "
                  f"{tracking.ui_link(base, found) if found else base}", soft_wrap=True)
    tracking.record_ui_address(uri, base)  # where the reports written from now on link to
    os.execvp(sys.executable, [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri,
                               "--host", host, "--port", str(port), "--workers", str(ui_workers()),
                               *ui_view.server_options()])  # opens in the model-training view


def ui_workers() -> int:
    """The UI's server processes: MLflow's default 4 needs 4 cores; one per core, up to 4."""
    return max(1, min(4, len(os.sched_getaffinity(0))))


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
