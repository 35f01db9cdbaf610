"""The paper's Figures 3, 4 and 6 and the attention measures of trained networks, from their
checkpoints: written to a folder (PNG per figure, `attention.md`) and logged on the networks'
own MLflow runs (metrics, and the figures as artifacts the UI previews). No training.

The `attention` DVC stage takes a RotNet variant and the supervised NIN of the same seed, on
the data set's test images; `rotnet attention` takes one checkpoint and any image folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from rotnet.attention import (TURNS, attention_maps, equivariance, filter_tiles, one_per_class,
                              rotated_back_maps, seeded_sample, similarity)
from rotnet.attention_figures import draw_figure3, draw_figure4, draw_figure6
from rotnet.attention_render import (EQUIVARIANCE, SIMILARITY, attention_claims_markdown,
                                     attention_table_markdown, score_metrics)
from rotnet.augment import normalize
from rotnet.checkpoint import load_checkpoint
from rotnet.files import atomic_write, atomic_write_text
from rotnet.config import Config
from rotnet.data import CIFAR_MEAN, CIFAR_STD, ImageData, image_files, read_images
from rotnet.errors import RotnetError
from rotnet.figures import png
from rotnet.models import NINBackbone, classifier_from_arch
from rotnet.registry import variant_name
from rotnet.rotations import rotate
from rotnet.tracking import NullTracker, Tracker

MEASURED_IMAGES = 500  # test images the measures average over (all of them, when fewer)
FIGURE_ROWS = 10  # Figure 3 shows at most this many images (one per class of a data set)
FIGURE6_ROWS = 4  # Figure 6 shows the first images of Figure 3
KINDS = {"pretrain": "rotnet", "supervised": "supervised"}  # checkpoint task -> network kind
ARTIFACTS = "attention"  # the runs' artifact folder (then the output folder's name)
TABLE = "attention.md"


@dataclass
class Network:
    name: str  # as the figures label it
    kind: str  # "rotnet" or "supervised"
    backbone: NINBackbone
    run_id: str  # its training run in MLflow ("" when it was not tracked)
    epoch: int
    config: Config  # what it was trained with


def load_network(path: str | Path) -> Network:
    """The backbone of a pretraining or supervised checkpoint (its head is dropped)."""
    state = load_checkpoint(path)
    if state["task"] not in KINDS:
        raise RotnetError(f"{path} is a {state['task']} checkpoint; attention maps need a "
                          "pretraining (RotNet) or supervised NIN checkpoint")
    arch = state["arch"]
    try:
        model = classifier_from_arch(arch)
        model.load_state_dict(state["model"])
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise RotnetError(f"{path}: its weights do not fit the architecture it declares "
                          f"({type(err).__name__})") from None
    kind = KINDS[state["task"]]
    name = (f"RotNet {variant_name(arch['blocks'], arch['rotations'])}" if kind == "rotnet"
            else "supervised NIN")
    return Network(name, kind, model.backbone.eval(), state["extra"].get("run_id", ""),
                   state["epoch"], Config.from_dict(state["config"]))


@dataclass
class Images:
    shown: torch.Tensor  # uint8 N×C×H×W: Figure 3's rows
    labels: list[str]  # one per row (class or file name)
    measured: torch.Tensor  # uint8: the images the measures average over
    mean: tuple[float, ...]  # the normalisation the networks were trained with
    std: tuple[float, ...]


def test_images(data: ImageData, seed: int) -> Images:
    """One test image per class (Figure 3) and MEASURED_IMAGES test images, drawn with `seed`."""
    shown = one_per_class(data.test_labels, seed)[:FIGURE_ROWS]
    measured = seeded_sample(len(data.test_labels), MEASURED_IMAGES, seed)
    return Images(data.test_images[shown], [data.classes[int(data.test_labels[i])] for i in shown],
                  data.test_images[measured], data.mean, data.std)


def training_statistics(config: Config) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The per-channel mean and std a network was trained with: CIFAR-10's are the paper's
    constants; any other data set's come from its training split, so it is loaded."""
    if config.data.dataset == "cifar10":
        return CIFAR_MEAN, CIFAR_STD
    from rotnet.experiments import load_dataset

    data = load_dataset(config)
    return data.mean, data.std


def folder_images(folder: Path, channels: int, config: Config) -> Images:
    """Every image under `folder` (up to MEASURED_IMAGES, by path), read as the data's are."""
    if not folder.is_dir():
        raise RotnetError(f"--images {folder}: no such folder")
    files = image_files(folder)[:MEASURED_IMAGES]
    if not files:
        raise RotnetError(f"--images {folder}: no image files in it (png, jpg, ...)")
    pixels = read_images(files, channels)
    mean, std = training_statistics(config)
    return Images(pixels[:FIGURE_ROWS], [f.name for f in files[:FIGURE_ROWS]], pixels, mean, std)


def _display(pixels: torch.Tensor) -> list[np.ndarray]:
    """uint8 N×C×H×W as a list of H×W×C (H×W for one channel) arrays in [0, 1]."""
    shown = (pixels.float() / 255).permute(0, 2, 3, 1).numpy()
    return list(shown[..., 0] if shown.shape[-1] == 1 else shown)


def figure6(network: Network, images: Images, context: str):
    """Figure 6 of one network: its first FIGURE6_ROWS images, turned, maps turned back."""
    pixels = images.shown[:FIGURE6_ROWS]
    turned = rotated_back_maps(network.backbone, normalize(pixels, images.mean, images.std))
    angles = (0, *TURNS)
    copies = [_display(rotate(pixels, angle)) for angle in angles]
    maps = [[list(turned[angle][block].numpy()) for angle in angles]
            for block in range(len(turned[0]))]
    return draw_figure6(copies, images.labels[:FIGURE6_ROWS], maps, angles, network.name, context)


def figures(networks: list[Network], images: Images, context: str) -> dict:
    """name -> matplotlib figure: figure3, figure4, and figure6-<kind> per network."""
    x = normalize(images.shown, images.mean, images.std)
    per_model = [(n.name, [list(block.numpy()) for block in attention_maps(n.backbone, x)])
                 for n in networks]
    drawn = {"figure3": draw_figure3(_display(images.shown), images.labels, per_model, context),
             "figure4": draw_figure4([(n.name, filter_tiles(n.backbone.blocks[0][0].weight).numpy())
                                      for n in networks], context)}
    for network in networks:
        drawn[f"figure6-{network.kind}"] = figure6(network, images, context)
    return drawn


def measures(networks: list[Network], images: Images) -> list[dict[str, float]]:
    """Per network, its MLflow metrics: equivariance per block; the first network's also its
    similarity to the second's per shared block."""
    x = normalize(images.measured, images.mean, images.std)
    metrics = [score_metrics(EQUIVARIANCE, equivariance(n.backbone, x)) for n in networks]
    if len(networks) == 2:
        metrics[0].update(score_metrics(SIMILARITY, similarity(networks[0].backbone,
                                                               networks[1].backbone, x)))
    return metrics


def report_markdown(networks: list[Network], metrics: list[dict], title: str) -> str:
    """The table; with a RotNet and a supervised NIN, the claims of Figures 3 and 6 too."""
    by_kind = {kind: [m for n, m in zip(networks, metrics) if n.kind == kind] for kind in KINDS.values()}
    text = attention_table_markdown(by_kind["rotnet"], by_kind["supervised"], title)
    if all(by_kind.values()):
        text += "\n" + "\n".join(attention_claims_markdown(by_kind["rotnet"], by_kind["supervised"]))
    return text


def write_outputs(out_dir: Path, drawn: dict, markdown: str) -> list[Path]:
    """The PNGs and attention.md in `out_dir` (each written whole or not at all)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, figure in drawn.items():
        path, data = out_dir / f"{name}.png", png(figure)
        atomic_write(path, lambda tmp, data=data: Path(tmp).write_bytes(data))
        paths.append(path)
    atomic_write_text(out_dir / TABLE, markdown)
    return paths + [out_dir / TABLE]


def log_on_runs(tracker: Tracker, networks: list[Network], metrics: list[dict],
                paths: list[Path], folder: str) -> None:
    """Each network's metrics (at its last epoch) and every output file on its own run, in
    artifact folder attention/<folder>; an untracked network is skipped."""
    for network, values in zip(networks, metrics):
        if network.run_id:
            run = tracker.on_run(network.run_id)
            run.log_metrics(values, step=network.epoch)
            for path in paths:
                run.log_artifact(path, f"{ARTIFACTS}/{folder}")


def attention_report(networks: list[Network], images: Images, out_dir: str | Path, *,
                     context: str, tracker: Tracker) -> list[dict[str, float]]:
    """Figures, measures and table of `networks` on `images`, written to `out_dir` and
    logged on the networks' runs; returns each network's metrics."""
    out_dir = Path(out_dir)
    with torch.no_grad():
        metrics = measures(networks, images)
        drawn = figures(networks, images, context)
    title = f"Attention: equivariance and similarity per block ({context})"
    paths = write_outputs(out_dir, drawn, report_markdown(networks, metrics, title))
    log_on_runs(tracker, networks, metrics, paths, out_dir.name)
    return metrics


def for_checkpoint(checkpoint: Path, images: Path | None, out: Path | None,
                   log: bool) -> tuple[Path, list[dict[str, float]]]:
    """`rotnet attention`: one checkpoint on an image folder (default: its data set's test
    images). Every input is checked before any work: bad input raises RotnetError with
    nothing written. Returns the output folder and the network's metrics."""
    network = load_network(checkpoint)
    out = out or Path("outputs") / "attention" / checkpoint.resolve().parent.name
    if out.exists() and not out.is_dir():
        raise RotnetError(f"--out {out} is a file, not a folder")
    tracker = Tracker() if log else NullTracker()
    if log and not network.run_id:
        raise RotnetError(f"{checkpoint} records no MLflow run to log on; drop --log")
    tracker.on_run(network.run_id)  # refused now, not after the work, if the store lacks it
    channels = network.backbone.blocks[0][0].in_channels
    if images is None:
        from rotnet.experiments import load_dataset

        chosen = test_images(load_dataset(network.config), network.config.runtime.seed)
    else:
        chosen = folder_images(images, channels, network.config)
    metrics = attention_report([network], chosen, out, tracker=tracker,
                               context=f"{network.name}, {checkpoint.resolve().parent.name}/"
                                       f"{checkpoint.name}")
    return out, metrics
