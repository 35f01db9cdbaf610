"""The `rotnet` commands around the pipeline and what it made: reproduce it (`repro`,
`ablate`, `params`), read its runs and checkpoints (`report`, `claims`, `attention`) and
browse its store (`ui`). `rotnet.cli` registers them beside the training commands, which
are its own.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from rotnet.cli_options import checkpoint_file, choice_option, out_option
from rotnet.config import DATASETS, PRECISIONS, PROFILES
from rotnet.errors import RotnetError
from rotnet.registry import BLOCK_CHOICES, ROTATION_SETS

REPORTED_PRECISIONS = tuple(p for p in PRECISIONS if p != "auto")  # what it resolves to
console = Console(stderr=True)


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


def repro(
    jobs: int = typer.Option(2, "--jobs", "-j", min=1, help="Stages run side by side; on a CPU "
                             "each gets cores/jobs threads (all where it runs alone)."),
    dvcfile: str = typer.Option("dvc.yaml", "--file", help="The pipeline file (in the current "
                                "directory)."),
    warm: bool = typer.Option(True, "--warm/--cold", help="Run each stage in a fork of a "
                              "server that imported torch and MLflow once (--cold: every stage "
                              "imports them itself, as plain `dvc repro`)."),
):
    """`dvc repro` with independent stages run side by side, each still through DVC (an
    unchanged stage is skipped, every result recorded in dvc.lock).

    Example: `rotnet repro --jobs 2` on a 2-core CPU; `--jobs 4` on one GPU."""
    from rotnet import repro as parallel

    if not Path(dvcfile).is_file():
        raise RotnetError(f"--file {dvcfile}: no such pipeline file here (run from the project root)")
    failed = parallel.reproduce(dvcfile, jobs, echo=console.print, warm=warm)
    if failed:
        console.print(f"[red]failed:[/] {', '.join(failed)} (rerun to resume)")
        raise typer.Exit(1)


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
