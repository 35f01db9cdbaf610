"""Figures 5a and 5b of the paper as PNG bytes, drawn from plain (x, accuracy) points.

Rendering is made byte-for-byte reproducible: no pyplot (a bare `Figure` on the Agg
canvas, so neither the user's backend nor pyplot's global state is involved), matplotlib's
default style instead of the user's matplotlibrc, a fixed size and dpi, and no "Software"
entry (the matplotlib version) in the PNG metadata. Same points, same matplotlib: same bytes.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import matplotlib
import matplotlib.style
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

SIZE = (6.4, 4.4)  # inches
DPI = 120


@dataclass
class Line:
    label: str
    points: list[tuple[float, float]] = field(default_factory=list)  # (x, accuracy %), sorted by x
    style: dict = field(default_factory=dict)


def accuracy_plot(title: str, xlabel: str, lines: list[Line], *, flat: tuple[str, float] | None = None,
                  log_x: bool = False, empty_note: str = "no runs yet") -> bytes:
    """A line plot of accuracy (%) against `xlabel`; `flat` is a (label, value) drawn as a
    dashed horizontal line. With no points at all, the figure says `empty_note`, so the
    file still exists (a DVC output must) and says why it is blank."""
    with matplotlib.style.context("default"):
        fig = Figure(figsize=SIZE, dpi=DPI)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        xs = sorted({x for line in lines for x, _ in line.points})
        for line in lines:
            if line.points:
                ax.plot([x for x, _ in line.points], [y for _, y in line.points],
                        label=line.label, **{"marker": "o", **line.style})
        if flat is not None:
            ax.axhline(flat[1], color="black", linestyle="--", linewidth=1.2,
                       label=f"{flat[0]} ({flat[1]:.2f})")
        if not xs:
            ax.text(0.5, 0.3, empty_note, transform=ax.transAxes, ha="center", va="center",
                    fontsize=13, color="0.3", bbox={"facecolor": "white", "edgecolor": "0.6"})
            ax.set_xticks([])  # no x values to show
            if flat is None:
                ax.set_yticks([])
        elif log_x:
            ax.set_xscale("log")
            ax.set_xticks(xs, labels=[f"{x:g}" for x in xs])  # the measured sizes, not 10^k
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("accuracy (%)")
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="best", fontsize=9)
        fig.tight_layout()
        out = io.BytesIO()
        fig.savefig(out, format="png", dpi=DPI, metadata={"Software": None})
    return out.getvalue()


def figure5a(rotation: list[tuple[float, float]], probe: list[tuple[float, float]],
             supervised: float | None, context: str = "", block: int = 2) -> bytes:
    """Paper Figure 5a: per pretraining snapshot, its rotation accuracy and the accuracy of a
    non-linear probe on its block-2 features; the supervised NIN as a flat line."""
    return accuracy_plot(
        f"Figure 5a: RotNet snapshots during pretraining {context}".strip(),
        "pretraining epoch of the snapshot",
        [Line("rotation prediction (snapshot)", rotation, {"color": "tab:orange"}),
         Line(f"non-linear probe on block {block}", probe, {"color": "tab:blue"})],
        flat=("supervised NIN", supervised) if supervised is not None else None,
        empty_note="no snapshot probe runs yet")


def figure5b(rotnet_conv: list[tuple[float, float]], supervised: list[tuple[float, float]],
             context: str = "") -> bytes:
    """Paper Figure 5b: accuracy against labelled images per class, RotNet + conv (frozen
    block 2) against a supervised NIN trained on the same subset."""
    return accuracy_plot(
        f"Figure 5b: semi-supervised setting {context}".strip(), "labelled training images per class (log scale)",
        [Line("RotNet + conv (block 2)", rotnet_conv, {"color": "tab:blue"}),
         Line("supervised NIN", supervised, {"color": "tab:red", "marker": "s"})],
        log_x=True, empty_note="no semi-supervised runs yet")
