"""The figures of the embeddings lab: how long token vectors are (with textual inversion vectors
marked), how alike tokens or prompts are, and a 2-D map of vectors. Each returns a matplotlib
Figure made without pyplot."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch

if TYPE_CHECKING:
    from matplotlib.figure import Figure

HIST_BINS = 120
VOCAB_COLOUR = "#90a4ae"
MARK_COLOURS = ("#e53935", "#8e24aa", "#fb8c00", "#43a047", "#1e88e5")
HIGHLIGHT_COLOUR = "#e53935"
POINT_COLOUR = "#1e88e5"
MAX_ANNOTATED = 12  # heatmaps larger than this show colours only


def drawable(text: object) -> str:
    """A label the figure's font can draw: characters it has no glyph for (CJK tokens of the CLIP
    vocabulary, say) are written as \\uXXXX instead of empty boxes."""
    from matplotlib.font_manager import FontProperties, findfont, get_font

    font = get_font(findfont(FontProperties()))
    return "".join(ch if ch.isspace() or font.get_char_index(ord(ch)) else f"\\u{ord(ch):04x}"
                   for ch in str(text))


def _figure(width: float, height: float) -> tuple[Figure, object]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    return fig, fig.add_subplot(1, 1, 1)


def norm_histogram(norms: torch.Tensor | np.ndarray,
                   marks: Mapping[str, float | Sequence[float]] | None = None,
                   title: str = "Length of every token's vector") -> Figure:
    """A histogram of the vocabulary's vector lengths, with each marked vector (a textual
    inversion's rows, a chosen word) as a labelled vertical line; the axis reaches the longest."""
    values = np.asarray(norms, dtype=float)
    fig, ax = _figure(8, 3.2)
    ax.hist(values, bins=HIST_BINS, color=VOCAB_COLOUR, label=f"vocabulary ({len(values):,} tokens)")
    ax.axvline(float(np.median(values)), color="black", linestyle=":", linewidth=1,
               label=f"vocabulary median {np.median(values):.3g}")
    for i, (label, value) in enumerate((marks or {}).items()):
        colour = MARK_COLOURS[i % len(MARK_COLOURS)]
        for j, v in enumerate(np.atleast_1d(np.asarray(value, dtype=float))):
            ax.axvline(v, color=colour, linewidth=2,
                       label=f"{drawable(label)} {v:.3g}" if j == 0 else None)
    ax.set_xlabel("vector length (L2 norm)")
    ax.set_ylabel("tokens")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="upper right")
    return fig


def similarity_heatmap(matrix: pd.DataFrame, title: str = "Cosine similarity") -> Figure:
    """A square cosine-similarity table (labelled rows and columns) as a heatmap from -1 to 1."""
    n = len(matrix)
    side = min(2.5 + 0.5 * n, 12)
    fig, ax = _figure(side + 1, side)
    image = ax.imshow(matrix.to_numpy(dtype=float), cmap="RdBu_r", vmin=-1, vmax=1)
    ax.set_xticks(range(n), [drawable(c) for c in matrix.columns], rotation=45, ha="right",
                  fontsize=8)
    ax.set_yticks(range(n), [drawable(r) for r in matrix.index], fontsize=8)
    if n <= MAX_ANNOTATED:
        for (r, c), v in np.ndenumerate(matrix.to_numpy(dtype=float)):
            ax.text(c, r, f"{v:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if abs(v) > 0.6 else "black")
    fig.colorbar(image, ax=ax, shrink=0.8, label="cosine")
    ax.set_title(title)
    return fig


def map_figure(frame: pd.DataFrame, highlight: Sequence[str] = (),
               title: str = "Vectors on their two main directions") -> Figure:
    """The points of map_2d with their labels; highlighted labels (a textual inversion) in red."""
    fig, ax = _figure(6.5, 5)
    marked = frame["label"].isin(list(highlight))
    for sel, colour, size in ((~marked, POINT_COLOUR, 25), (marked, HIGHLIGHT_COLOUR, 70)):
        ax.scatter(frame["x"][sel], frame["y"][sel], s=size, color=colour)
    for _, row in frame.iterrows():
        ax.annotate(drawable(row["label"]), (row["x"], row["y"]), textcoords="offset points",
                    xytext=(4, 3), fontsize=8,
                    color=HIGHLIGHT_COLOUR if row["label"] in highlight else "black")
    explained = frame.attrs.get("explained")
    axes = ("first", "second")
    for setter, i in ((ax.set_xlabel, 0), (ax.set_ylabel, 1)):
        share = f" ({explained[i]:.0%} of the spread)" if explained else ""
        setter(f"{axes[i]} main direction{share}")
    ax.set_title(title)
    return fig
