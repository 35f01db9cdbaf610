"""Figures 5a and 5b of the paper as PNG bytes, drawn from plain (x, accuracy) points.

What a reader needs to judge them: accuracy on a fixed 0-100 % axis (so chance-level noise
is not stretched into a trend), the chance levels as dashed lines, the paper's published
values as star markers, series told apart by marker and line style (identical curves
stay visible), and, where a point has several runs (one per seed), their mean with a
band of ± one standard deviation.

Rendering is made byte-for-byte reproducible: no pyplot (a bare `Figure` on the Agg
canvas, so neither the user's backend nor pyplot's global state is involved), matplotlib's
default style instead of the user's matplotlibrc, a fixed size and dpi, and no "Software"
entry (the matplotlib version) in the PNG metadata. Same points, same matplotlib: same bytes.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field

import matplotlib
import matplotlib.style
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, NullFormatter

from rotnet.spread import Spread

SIZE = (6.4, 5.4)  # inches; the lower part holds the legend
DPI = 120
Y_RANGE = (0.0, 100.0)  # accuracy in %, always the whole range
CHANCE_STYLE = {"color": "0.45", "linestyle": "--", "linewidth": 1.0}
PAPER_STYLE = {"marker": "*", "markersize": 13, "markeredgecolor": "black", "linestyle": "none"}
BAND_ALPHA = 0.2

Values = float | Sequence[float]  # one run's accuracy, or one per run (seed) at this x


@dataclass
class Line:
    label: str
    points: list[tuple[float, Values]] = field(default_factory=list)  # (x, accuracy %), sorted by x
    style: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Level:
    """A horizontal line across the plot: a chance level or an x-independent accuracy."""
    label: str
    value: Values
    style: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Mark:
    """A value published in the paper, drawn as a star at (x, y)."""
    label: str
    x: float
    y: float
    color: str = "black"


def summarise(values: Values) -> Spread:
    """One point's runs (one per seed) as the report's tables summarise them."""
    runs = [float(values)] if isinstance(values, (int, float)) else [float(v) for v in values]
    return Spread(tuple(runs), test_images=None)


def _spread_label(label: str, summaries: list[Spread]) -> str:
    counts = sorted({s.n for s in summaries})
    if counts[-1] == 1:
        return label
    n = str(counts[0]) if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
    return f"{label} (mean ± sd, n={n})"


def draw_line(ax: Axes, line: Line) -> None:
    """The mean per x; with several runs at some x, a ± sd band around it."""
    xs = [x for x, _ in line.points]
    stats = [summarise(v) for _, v in line.points]
    means = [s.mean for s in stats]
    style = {"marker": "o", **line.style}
    (drawn,) = ax.plot(xs, means, label=_spread_label(line.label, stats), **style)
    if max(s.n for s in stats) > 1:
        ax.fill_between(xs, [s.mean - s.sd for s in stats], [s.mean + s.sd for s in stats],
                        color=drawn.get_color(), alpha=BAND_ALPHA, linewidth=0,
                        gid=f"band:{line.label}")


def draw_level(ax: Axes, level: Level) -> None:
    stats = summarise(level.value)
    style = {"color": "black", "linestyle": "-.", "linewidth": 1.2, **level.style}
    label = _spread_label(f"{level.label} ({stats.mean:.2f})", [stats])
    ax.axhline(stats.mean, label=label, **style)
    if stats.n > 1:
        ax.axhspan(stats.mean - stats.sd, stats.mean + stats.sd, color=style["color"],
                   alpha=BAND_ALPHA, linewidth=0, gid=f"band:{level.label}")


def draw_mark(ax: Axes, mark: Mark) -> None:
    # above the curves, so a measured point on the same spot does not hide it
    ax.plot([mark.x], [mark.y], label=f"{mark.label} ({mark.y:.2f})", color=mark.color,
            markerfacecolor=mark.color, zorder=5, **PAPER_STYLE)


def _note_empty(ax: Axes, note: str) -> None:
    ax.text(0.5, 0.3, note, transform=ax.transAxes, ha="center", va="center",
            fontsize=13, color="0.3", bbox={"facecolor": "white", "edgecolor": "0.6"})
    ax.set_xticks([])  # no x values to show


def _x_axis(ax: Axes, xs: list[float], log_x: bool) -> None:
    if log_x:
        ax.set_xscale("log")
        ax.set_xticks(xs, labels=[f"{x:g}" for x in xs])  # the measured sizes, not 10^k
        ax.xaxis.set_minor_formatter(NullFormatter())
    else:  # epochs and counts: whole numbers only
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def accuracy_figure(title: str, xlabel: str, lines: list[Line], *, levels: Sequence[Level] = (),
                    marks: Sequence[Mark] = (), log_x: bool = False,
                    empty_note: str = "no runs yet") -> Figure:
    """A plot of accuracy (%) against `xlabel`, y fixed to 0-100. With no points at all, the
    figure says `empty_note`, so the file still exists (a DVC output must) and says why it
    is blank; levels and paper marks need measured points beside them to mean anything."""
    with matplotlib.style.context("default"):
        fig = Figure(figsize=SIZE, dpi=DPI)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        lines = [line for line in lines if line.points]
        if lines:
            for level in levels:
                draw_level(ax, level)
            for line in lines:
                draw_line(ax, line)
            for mark in marks:
                draw_mark(ax, mark)
            xs = sorted({x for line in lines for x, _ in line.points} | {m.x for m in marks})
            _x_axis(ax, xs, log_x)
        else:
            _note_empty(ax, empty_note)
        ax.set_ylim(*Y_RANGE)
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("accuracy (%)")
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            # below the axes: inside, it would cover points wherever they lie
            ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncols=2, fontsize=7.5,
                      frameon=False)
        fig.tight_layout()
    return fig


def png(fig: Figure) -> bytes:
    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=DPI, metadata={"Software": None})
    return out.getvalue()


def chance_levels(classes: int | None = None, rotations: int | None = None) -> list[Level]:
    """Dashed chance lines: guessing the class, guessing the rotation."""
    levels = []
    if classes:
        levels.append(Level(f"chance, {classes} classes", 100 / classes, CHANCE_STYLE))
    if rotations:
        levels.append(Level(f"chance, {rotations} rotations", 100 / rotations,
                            {**CHANCE_STYLE, "color": "tab:orange"}))
    return levels


def draw_figure5a(rotation: list[tuple[float, Values]], probe: list[tuple[float, Values]],
                  supervised: Values | None, context: str = "", block: int = 2, *,
                  classes: int | None = None, rotations: int | None = None,
                  paper: Sequence[Mark] = ()) -> Figure:
    """Paper Figure 5a: per pretraining snapshot, its rotation accuracy and the accuracy of a
    non-linear probe on its block-`block` features; the supervised NIN as a flat line. The
    rotation series has hollow, larger markers, so a probe point on the same spot shows."""
    levels = chance_levels(classes, rotations)
    if supervised is not None:
        levels.append(Level("supervised NIN", supervised, {"color": "tab:red"}))
    return accuracy_figure(
        f"Figure 5a: RotNet snapshots during pretraining {context}".strip(),
        "pretraining epoch of the snapshot",
        [Line("rotation prediction (snapshot)", rotation,
              {"color": "tab:orange", "marker": "^", "markersize": 9, "markerfacecolor": "none"}),
         Line(f"non-linear probe on block {block}", probe, {"color": "tab:blue"})],
        levels=levels, marks=paper, empty_note="no snapshot probe runs yet")


def draw_figure5b(rotnet_conv: list[tuple[float, Values]], supervised: list[tuple[float, Values]],
                  context: str = "", *, classes: int | None = None,
                  paper: Sequence[Mark] = ()) -> Figure:
    """Paper Figure 5b: accuracy against labelled images per class, RotNet + conv (frozen
    block 2) against a supervised NIN trained on the same subset. The supervised series is
    dashed with hollow, larger markers, so where both curves coincide both stay visible."""
    return accuracy_figure(
        f"Figure 5b: semi-supervised setting {context}".strip(),
        "labelled training images per class (log scale)",
        [Line("RotNet + conv (block 2)", rotnet_conv, {"color": "tab:blue"}),
         Line("supervised NIN", supervised, {"color": "tab:red", "marker": "s", "linestyle": "--",
                                             "markersize": 9, "markerfacecolor": "none"})],
        levels=chance_levels(classes), marks=paper, log_x=True,
        empty_note="no semi-supervised runs yet")


def figure5a(*args, **kwargs) -> bytes:
    """`draw_figure5a` as PNG bytes."""
    return png(draw_figure5a(*args, **kwargs))


def figure5b(*args, **kwargs) -> bytes:
    """`draw_figure5b` as PNG bytes."""
    return png(draw_figure5b(*args, **kwargs))
