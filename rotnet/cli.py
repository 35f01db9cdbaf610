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

from rotnet.errors import RotnetError

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="RotNet (Gidaris et al., ICLR 2018): rotation pretraining, probes, "
                       "baselines and the paper's CIFAR-10 ablations, tracked in MLflow.")
console = Console(stderr=True)

# Options shared by the training commands.
ParamsOpt = typer.Option(None, "--params", help="A params.yaml to start from (the DVC pipeline's).")
ProfileOpt = typer.Option(None, "--profile", help="paper (CIFAR-10, the reference protocol), "
                          "quick (minutes on a CPU) or smoke (seconds).")
DatasetOpt = typer.Option(None, "--dataset", help="generated | cifar10 | fashion-mnist | imagefolder.")
DataRootOpt = typer.Option(None, "--data-root", help="Where the data set lives / is downloaded.")
EpochsOpt = typer.Option(None, "--epochs", help="Training epochs (overrides the profile).")
SeedOpt = typer.Option(None, "--seed", help="Random seed (model init, order, augmentation).")
DeviceOpt = typer.Option(None, "--device", help="auto | cpu | cuda | cuda:N.")
OutOpt = typer.Option(None, "--out", help="Output directory (checkpoint.pt, metrics.json). "
                      "Rerunning into the same directory resumes.")
SetOpt = typer.Option(None, "--set", help="Override any config key, e.g. --set pretrain.optim.lr=0.05 "
                      "(repeatable).")
TrackOpt = typer.Option(True, "--track/--no-track", help="Log the run to MLflow.")


def build_config(params: Optional[Path], profile: Optional[str], sets: Optional[list[str]],
                 overrides: dict):
    """params.yaml, then --profile, then flags, then --set; validated once."""
    from rotnet.config import Config, merge
    from rotnet.params import read_params, parse_set

    values = read_params(params) if params else {}
    if profile:
        values["profile"] = profile
    values = merge(values, {k: v for k, v in overrides.items() if v is not None})
    for item in sets or []:
        values = merge(values, parse_set(item))
    return Config.from_dict(values)


def nested(**dotted) -> dict:
    """nested(**{"pretrain.blocks": 4}) -> {"pretrain": {"blocks": 4}}, skipping None."""
    out: dict = {}
    for key, value in dotted.items():
        if value is None:
            continue
        *parents, leaf = key.split("__")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


def common(dataset, data_root, seed, device) -> dict:
    return nested(data__dataset=dataset, data__root=data_root, runtime__seed=seed,
                  runtime__device=device)


def tracker_for(track: bool):
    from rotnet.tracking import NullTracker, Tracker

    return Tracker() if track else NullTracker()


def report_result(title: str, result) -> None:
    m = result.metrics
    console.print(f"[bold green]{title}[/] test accuracy {m['test_acc']:.2f}% (final epoch "
                  f"{m['epochs']}; best {m['best_test_acc']:.2f}% at epoch {m['best_epoch']})"
                  f"  run {m['run_id'] or '-'}  → {result.out_dir}")


@app.command()
def pretrain(
    blocks: Optional[int] = typer.Option(None, "--blocks", help="NIN blocks: 3, 4 or 5."),
    rotations: Optional[str] = typer.Option(None, "--rotations", help="Rotation set: 4, 8, 2 (0/180) "
                                            "or 2-perp (90/270)."),
    width: Optional[float] = typer.Option(None, "--width", help="Channel multiplier (1.0 = paper)."),
    dataset: Optional[str] = DatasetOpt, data_root: Optional[str] = DataRootOpt,
    epochs: Optional[int] = EpochsOpt, seed: Optional[int] = SeedOpt, device: Optional[str] = DeviceOpt,
    profile: Optional[str] = ProfileOpt, params: Optional[Path] = ParamsOpt,
    out: Optional[Path] = OutOpt, set_: Optional[list[str]] = SetOpt, track: bool = TrackOpt,
):
    """Pretrain a RotNet: predict which rotation was applied to each image."""
    from rotnet import experiments
    from rotnet.progress import progress_hooks

    config = build_config(params, profile, set_, {**common(dataset, data_root, seed, device), **nested(
        pretrain__blocks=blocks, pretrain__rotations=rotations, pretrain__width=width,
        pretrain__optim__epochs=epochs)})
    with progress_hooks("pretrain") as hooks:
        result = experiments.pretrain(config, out, tracker=tracker_for(track), hooks=hooks)
    report_result("rotation prediction:", result)


@app.command()
def probe(
    checkpoint: Path = typer.Argument(..., help="A pretraining checkpoint.pt (or 'random' for a "
                                      "randomly initialised backbone)."),
    block: int = typer.Option(2, "--block", help="Which block's output to classify (1-based)."),
    kind: str = typer.Option("nonlinear", "--kind", help="nonlinear (3 FC layers) or conv "
                             "(a fresh NIN block + linear)."),
    finetune: bool = typer.Option(False, "--finetune/--frozen", help="Train the backbone too."),
    dataset: Optional[str] = DatasetOpt, data_root: Optional[str] = DataRootOpt,
    epochs: Optional[int] = EpochsOpt, seed: Optional[int] = SeedOpt, device: Optional[str] = DeviceOpt,
    profile: Optional[str] = ProfileOpt, params: Optional[Path] = ParamsOpt,
    out: Optional[Path] = OutOpt, set_: Optional[list[str]] = SetOpt, track: bool = TrackOpt,
):
    """Train a classifier on one block of a pretrained RotNet (frozen, or fine-tuned)."""
    from rotnet import experiments
    from rotnet.progress import progress_hooks

    section = "finetune" if finetune else ("conv_probe__optim" if kind == "conv" else "probe__optim")
    config = build_config(params, profile or _checkpoint_profile(checkpoint), set_, {
        **common(dataset, data_root, seed, device), **nested(**{f"{section}__epochs": epochs})})
    data = experiments.load_dataset(config)
    if str(checkpoint) == "random":
        backbone = experiments.random_backbone(config, data.channels)
    else:
        backbone = experiments.load_backbone(checkpoint, in_channels=data.channels)
    with progress_hooks(f"{kind} probe, block {block}") as hooks:
        result = experiments.probe(config, backbone, kind=kind, block=block, finetune=finetune,
                                   out_dir=out, tracker=tracker_for(track), hooks=hooks, data=data)
    report_result(f"{kind} {'fine-tuned' if finetune else 'probe'} on block {block}:", result)


def _checkpoint_profile(checkpoint: Path) -> Optional[str]:
    """Evaluate with the profile the backbone was pretrained with, unless told otherwise."""
    if str(checkpoint) == "random":
        return None
    from rotnet.checkpoint import load_checkpoint

    return load_checkpoint(checkpoint, kind="pretrain")["config"].get("profile")


@app.command()
def supervised(
    dataset: Optional[str] = DatasetOpt, data_root: Optional[str] = DataRootOpt,
    epochs: Optional[int] = EpochsOpt, seed: Optional[int] = SeedOpt, device: Optional[str] = DeviceOpt,
    profile: Optional[str] = ProfileOpt, params: Optional[Path] = ParamsOpt,
    out: Optional[Path] = OutOpt, set_: Optional[list[str]] = SetOpt, track: bool = TrackOpt,
):
    """Train the supervised NIN baseline (3 blocks) from scratch."""
    from rotnet import experiments
    from rotnet.progress import progress_hooks

    config = build_config(params, profile, set_, {**common(dataset, data_root, seed, device),
                                                  **nested(supervised__optim__epochs=epochs)})
    with progress_hooks("supervised NIN") as hooks:
        result = experiments.supervised(config, out_dir=out, tracker=tracker_for(track), hooks=hooks)
    report_result("supervised NIN:", result)


@app.command()
def semisup(
    checkpoint: Path = typer.Argument(..., help="A 4-block pretraining checkpoint.pt."),
    per_class: Optional[list[int]] = typer.Option(None, "--per-class", help="Labelled images per "
                                                  "class (repeatable; default: the profile's)."),
    subsets_dir: Optional[Path] = typer.Option(None, "--subsets", help="Where the label-subset "
                                               "index files are (written if missing)."),
    dataset: Optional[str] = DatasetOpt, data_root: Optional[str] = DataRootOpt,
    seed: Optional[int] = SeedOpt, device: Optional[str] = DeviceOpt,
    profile: Optional[str] = ProfileOpt, params: Optional[Path] = ParamsOpt,
    out: Optional[Path] = OutOpt, set_: Optional[list[str]] = SetOpt, track: bool = TrackOpt,
):
    """Semi-supervised sweep (Figure 5b): conv probe on RotNet vs supervised NIN per subset size."""
    from rotnet import experiments, studies
    from rotnet.progress import progress_hooks

    config = build_config(params, profile or _checkpoint_profile(checkpoint), set_, {
        **common(dataset, data_root, seed, device), **nested(semisup__per_class=per_class)})
    subsets_dir = subsets_dir or experiments.output_root(config) / "subsets"
    studies.write_subsets(config, subsets_dir)
    backbone = experiments.load_backbone(checkpoint)
    for k in config.semisup.per_class:
        for method in ("rotnet-conv", "supervised"):
            with progress_hooks(f"{method}, {k} per class") as hooks:
                result = studies.semisup_run(config, method, k, subsets_dir, backbone=backbone,
                                             out_dir=out, tracker=tracker_for(track), hooks=hooks)
            report_result(f"{method}, {k} labels per class:", result)


@app.command()
def snapshots(
    pretrain_dir: Path = typer.Argument(..., help="A pretraining output directory with "
                                        "snapshot-epochNNN.pt files."),
    profile: Optional[str] = ProfileOpt, params: Optional[Path] = ParamsOpt,
    device: Optional[str] = DeviceOpt, out: Optional[Path] = OutOpt,
    set_: Optional[list[str]] = SetOpt, track: bool = TrackOpt,
):
    """Figure 5a: a non-linear probe on block 2 of every pretraining snapshot."""
    from rotnet import studies
    from rotnet.progress import progress_hooks

    files = studies.snapshot_files(pretrain_dir)
    config = build_config(params, profile or _checkpoint_profile(files[0]), set_,
                          nested(runtime__device=device))
    for snap in files:
        with progress_hooks(f"probe on {snap.name}") as hooks:
            result = studies.snapshot_probe(config, snap, out_dir=out, tracker=tracker_for(track),
                                            hooks=hooks)
        report_result(f"{snap.name}:", result)


@app.command("params")
def params_command(
    profile: str = typer.Option("paper", "--profile", help="paper, quick or smoke."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write here (e.g. params.yaml) "
                                       "instead of printing."),
):
    """Print (or write) a complete params.yaml for a profile: `rotnet params --profile quick
    --out params.yaml` switches the DVC pipeline to that profile."""
    from rotnet.checkpoint import atomic_write_text
    from rotnet.config import Config
    from rotnet.params import dump_params

    text = dump_params(Config.profile_defaults(profile))
    if out:
        atomic_write_text(out, text)
        console.print(f"wrote the {profile} profile to {out}")
    else:
        sys.stdout.write(text)


@app.command()
def ui(port: int = typer.Option(5000, "--port"), host: str = typer.Option("127.0.0.1", "--host")):
    """Open the MLflow UI on the project's tracking store."""
    from rotnet.tracking import tracking_uri

    uri = tracking_uri()
    console.print(f"MLflow UI for {uri} on http://{host}:{port}")
    os.execvp(sys.executable, [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri,
                               "--host", host, "--port", str(port)])


def main() -> None:
    try:
        app()
    except RotnetError as err:
        console.print(f"[red]error:[/] {err}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/] (rerun the same command to resume)")
        sys.exit(130)


if __name__ == "__main__":
    main()
