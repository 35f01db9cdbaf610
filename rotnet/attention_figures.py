"""The paper's Figures 3, 4 and 6 as matplotlib figures, drawn from plain arrays.

Figure 3 (attention maps of each block beside the image) and Figure 6 (the maps of an
image's four rotated copies, turned back) are one kind of picture: a grid with one row per
image and one column per thing shown, each cell an image or a heat map (each map on its own
colour scale, its min to its max, as the paper shows them). Figure 4 tiles first-layer
filters, one panel per network. Drawn the way `rotnet.figures` draws Figure 5: a bare
`Figure` on the Agg canvas, matplotlib's default style, PNG without a version stamp.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import matplotlib.style
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

CELL = 1.0  # inches per grid cell
MAP_COLOURS = "jet"  # the paper's attention maps: blue (low) to red (high)


@dataclass(frozen=True)
class Column:
    """One column of a grid figure: its heading and one cell per row. `kind` "image": an
    H×W×C (C = 3) or H×W array of pixels in [0, 1]; "map": an H×W attention map."""

    title: str
    cells: Sequence[np.ndarray]
    kind: str = "map"


def _title(title: str, context: str) -> str:
    """The figure's title, its context (which runs, which data) on a line of its own."""
    return f"{title}\n{context}" if context else title


def _show(ax, cell: np.ndarray, kind: str) -> None:
    cell = np.asarray(cell)
    if kind == "map":
        ax.imshow(cell, cmap=MAP_COLOURS, interpolation="nearest")
    elif cell.ndim == 2:
        ax.imshow(cell, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    else:
        ax.imshow(np.clip(cell, 0.0, 1.0), interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def draw_grid(title: str, row_labels: Sequence[str], columns: Sequence[Column]) -> Figure:
    """One row per label, one column per `Column`; axes in row-major order (fig.axes)."""
    rows = len(row_labels)
    with matplotlib.style.context("default"):
        fig = Figure(figsize=(CELL * len(columns) + 0.6, CELL * rows + 0.9))
        FigureCanvasAgg(fig)
        grid = fig.subplots(rows, len(columns), squeeze=False)
        for r, label in enumerate(row_labels):
            for c, column in enumerate(columns):
                ax = grid[r][c]
                _show(ax, column.cells[r], column.kind)
                if r == 0:
                    ax.set_title(column.title, fontsize=7)
            grid[r][0].set_ylabel(label, fontsize=7)
        fig.suptitle(title, fontsize=9)
        fig.tight_layout()
    return fig


def draw_figure3(images: Sequence[np.ndarray], labels: Sequence[str],
                 models: Sequence[tuple[str, Sequence[Sequence[np.ndarray]]]],
                 context: str = "") -> Figure:
    """Paper Figure 3: each image, then every block's attention map of each model.
    `models`: (name, maps[block][image]) per model."""
    columns = [Column("image", images, "image")]
    columns += [Column(f"{name}\nblock {block}", maps, "map") for name, per_block in models
                for block, maps in enumerate(per_block, start=1)]
    return draw_grid(_title("Figure 3: attention maps $\\Sigma_c\\,|a_c|^p$ per block", context),
                     labels, columns)


def draw_figure6(copies: Sequence[Sequence[np.ndarray]], labels: Sequence[str],
                 maps: Sequence[Sequence[Sequence[np.ndarray]]], angles: Sequence[int],
                 model: str, context: str = "") -> Figure:
    """Paper Figure 6: each image's rotated copies (copies[angle][image]), then per block
    the maps of the copies turned back upright (maps[block][angle][image])."""
    columns = [Column(f"turned {angle}°", images, "image") for angle, images in zip(angles, copies)]
    columns += [Column(f"block {block}\nfrom {angle}°", per_angle[a], "map")
                for block, per_angle in enumerate(maps, start=1)
                for a, angle in enumerate(angles)]
    return draw_grid(_title(f"Figure 6: {model}'s attention on rotated copies, turned back",
                            context), labels, columns)


def draw_figure4(panels: Sequence[tuple[str, np.ndarray]], context: str = "") -> Figure:
    """Paper Figure 4: one mosaic of first-layer filters per network (H×W×C in [0, 1])."""
    with matplotlib.style.context("default"):
        fig = Figure(figsize=(4.2 * len(panels), 4.6))
        FigureCanvasAgg(fig)
        for index, (name, mosaic) in enumerate(panels, start=1):
            ax = fig.add_subplot(1, len(panels), index)
            mosaic = np.asarray(mosaic)
            _show(ax, mosaic[..., 0] if mosaic.shape[-1] == 1 else mosaic, "image")
            ax.set_title(name, fontsize=9)
        fig.suptitle(_title("Figure 4: first-layer filters", context), fontsize=10)
        fig.tight_layout()
    return fig
