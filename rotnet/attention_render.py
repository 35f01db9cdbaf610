"""The attention measures as MLflow metric names, a Markdown table and claim lines.

Plain data only (no torch), so the report can read them back from MLflow runs and call
`attention_claims_markdown` without the models. A RotNet's pretraining run carries its
equivariance per block and its similarity to the supervised NIN per shared block; the
supervised run carries its own equivariance; each with its different-images control
(`rotnet.attention` defines the measures).
"""

from __future__ import annotations

import math
from statistics import mean
from typing import Mapping, Sequence

from rotnet.registry import ATTENTION_POWERS

EQUIVARIANCE, SIMILARITY = "equivariance", "similarity"
METRIC_PREFIX = "attention_"  # every metric this module names starts so
# A measure "supports" a claim of the paper's when its mean correlation reaches this, and
# beats what two different images score (the control): the paper's "roughly the same".
ROUGHLY_THE_SAME = 0.5
# Descriptive, not a test's verdict (claims.md keeps holds / refuted / undecided for those):
# on how many blocks the measure reads "roughly the same".
HOLDS, PARTLY, FAILS = ("roughly the same on every block", "roughly the same on some blocks",
                       "roughly the same on no block")
NOT_RUN = "not run"
PAPER_FIGURE3 = "both models seem to focus on roughly the same image regions"
PAPER_FIGURE6 = "the attention maps of all the rotated copies of an image are roughly the same"


def metric_name(measure: str, block: int, control: bool = False) -> str:
    """"attention_equivariance_block2", "attention_similarity_control_block1", ..."""
    return f"{METRIC_PREFIX}{measure}{'_control' if control else ''}_block{block}"


def score_metrics(measure: str, scores: Sequence) -> dict[str, float]:
    """`rotnet.attention.Score`s of blocks 1.. as MLflow metrics (mean and control)."""
    metrics = {}
    for block, score in enumerate(scores, start=1):
        metrics[metric_name(measure, block)] = round(score.mean, 6)
        if not math.isnan(score.control):
            metrics[metric_name(measure, block, control=True)] = round(score.control, 6)
    return metrics


def _blocks(metrics: Mapping[str, float], measure: str) -> list[int]:
    blocks, block = [], 1
    while metric_name(measure, block) in metrics:
        blocks.append(block)
        block += 1
    return blocks


def _cell(runs: Sequence[Mapping[str, float]], measure: str, block: int) -> str:
    """mean over runs (seeds) of the measure, with the control's mean in brackets."""
    values = [r[metric_name(measure, block)] for r in runs if metric_name(measure, block) in r]
    if not values:
        return "–"
    controls = [r[key] for r in runs if (key := metric_name(measure, block, True)) in r]
    text = f"{mean(values):.3f}"
    return text + (f" ({mean(controls):.3f})" if controls else "")


def attention_table_markdown(rotnet: Sequence[Mapping[str, float]],
                             supervised: Sequence[Mapping[str, float]], title: str) -> str:
    """Equivariance and similarity per block: one row per block, each cell the mean over
    `rotnet`'s / `supervised`'s run metrics (one dict per seed) with the control in brackets."""
    blocks = sorted({b for r in (*rotnet, *supervised) for b in _blocks(r, EQUIVARIANCE)})
    lines = [f"# {title}", "",
             "Pearson correlation between attention maps (A = Σ_c |a_c|^p over the block's "
             "channels, upsampled to the image), mean over the test images; in brackets the "
             "same between two different images (the control). Equivariance: a rotated "
             "image's map turned back vs the upright image's (90°, 180°, 270°). Similarity: "
             "the RotNet's map vs the supervised NIN's on the same image. Paper: Gidaris et "
             "al., ICLR 2018, Figures 3 and 6 (no numbers).", "",
             "| block | p | RotNet equivariance | supervised equivariance | similarity |",
             "|---|--:|--:|--:|--:|"]
    for block in blocks:
        lines.append(f"| {block} | {ATTENTION_POWERS[block]} | "
                     f"{_cell(rotnet, EQUIVARIANCE, block)} | "
                     f"{_cell(supervised, EQUIVARIANCE, block)} | "
                     f"{_cell(rotnet, SIMILARITY, block)} |")
    return "\n".join(lines) + "\n"


def _verdict(runs: Sequence[Mapping[str, float]], measure: str) -> tuple[str, list[str]]:
    """The claim's verdict over every block the runs measured, and one text per block."""
    blocks = sorted({b for r in runs for b in _blocks(r, measure)})
    supported, texts = [], []
    for block in blocks:
        values = [r[metric_name(measure, block)] for r in runs if metric_name(measure, block) in r]
        controls = [r[k] for r in runs if (k := metric_name(measure, block, True)) in r]
        control = mean(controls) if controls else -1.0
        supported.append(mean(values) >= ROUGHLY_THE_SAME and mean(values) > control)
        texts.append(f"block {block} {_cell(runs, measure, block)}")
    if not blocks:
        return NOT_RUN, texts
    return (HOLDS if all(supported) else PARTLY if any(supported) else FAILS), texts


def attention_claims_markdown(rotnet: Sequence[Mapping[str, float]],
                              supervised: Sequence[Mapping[str, float]]) -> list[str]:
    """The claims of the paper's Figures 3 and 6 against the measures: `rotnet` and
    `supervised` are the MLflow metrics (or `score_metrics` dicts) of the RotNet's
    pretraining runs and of the supervised NIN's runs, one per seed. Lines of Markdown in
    `rotnet.claims`' format: a `##` heading with the verdict, then bullets."""
    rule = (f"a block counts when its mean correlation is ≥ {ROUGHLY_THE_SAME} and above "
            "the control (two different images); the claim holds when every block counts")
    similar, similar_texts = _verdict(rotnet, SIMILARITY)
    turned, turned_texts = _verdict(rotnet, EQUIVARIANCE)
    plain, plain_texts = _verdict(supervised, EQUIVARIANCE)
    n = f"n={len(rotnet)} seed(s)"
    return [f"## RotNet and supervised NIN attend to the same regions (Figure 3): {similar}", "",
            f"- Paper: \"{PAPER_FIGURE3}\" (pictures, no number).",
            f"- Measured, RotNet vs supervised NIN, correlation of the attention maps "
            f"(control) per block, {n}: " + ("; ".join(similar_texts) or NOT_RUN) + ".",
            f"- Rule: {rule}.", "",
            f"## A RotNet's attention is the same on an image's rotated copies (Figure 6): "
            f"{turned}", "",
            f"- Paper: \"{PAPER_FIGURE6}\" (pictures, no number).",
            f"- Measured, RotNet, rotated copy's map turned back vs the upright one "
            f"(control) per block, {n}: " + ("; ".join(turned_texts) or NOT_RUN) + ".",
            f"- For comparison, the supervised NIN ({plain}): " + ("; ".join(plain_texts)
                                                                   or NOT_RUN) + ".",
            f"- Rule: {rule}.", ""]
