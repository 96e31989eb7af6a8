"""The figures of tensor statistics: sizes by component, dtype and block, one tensor's values,
per-block norms, where two models differ, and the parts of model families side by side. Each
returns a matplotlib Figure."""

from __future__ import annotations

import io
import math
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch

from labkit.stats import per_tensor as stats
from labkit.stats.moments import describe

if TYPE_CHECKING:
    from matplotlib.figure import Figure

SIDE_COLOURS = {"BASE": "#7e57c2", "IN": "#1e88e5", "MID": "#43a047", "OUT": "#fb8c00"}
DTYPE_COLOURS = {"F32": "#1e88e5", "F16": "#43a047", "BF16": "#8bc34a", "F64": "#0d47a1",
                 "I64": "#fb8c00", "I32": "#ffb74d"}
OTHER_COLOUR = "#9e9e9e"
PART_COLOURS = {"text encoder": "#fbc02d", "text encoder 2": "#7e57c2", "denoiser": "#1e88e5",
                "VAE": "#43a047"}
HIST_BINS = 100
FAMILY_FIGURE_MIN_WIDTH = 6.5  # inches: the title and the legend's one row fit over two families
LOG_FROM = 100  # a histogram's counts go on a log scale when its tallest bar is higher than this


def _figure(width: float, height: float, ncols: int = 1) -> tuple[Figure, list]:
    """A figure made through pyplot (so Jupyter knows how to show it) and closed at once, so it
    shows once, as the cell's value, and pyplot keeps no reference to it."""
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(width, height), layout="constrained")
    plt.close(fig)
    return fig, [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]


def _side(block: str) -> str:
    return next((s for s in SIDE_COLOURS if block.startswith(s)), "")


def to_png(fig: Figure, dpi: int = 90) -> bytes:
    """A figure as PNG bytes (for an ipywidgets Image)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def component_figure(table: pd.DataFrame) -> Figure:
    """Left: parameters per component; right: bytes per component, stacked by dtype."""
    fig, (left, right) = _figure(10, 3.4, 2)
    comps = stats.by_component(table).iloc[::-1]
    left.barh(comps["component"], comps["params"] / 1e6, color="#1e88e5")
    left.set_xlabel("parameters (millions)")
    left.set_title("Parameters by component")
    dtypes = stats.bytes_by_dtype(table)
    dtypes = dtypes[dtypes["component"] != "total"].set_index("component")
    dtypes = dtypes.drop(columns="total").loc[comps["component"]]
    start = np.zeros(len(dtypes))
    for dtype in dtypes.columns:
        mb = dtypes[dtype].to_numpy() / 2**20
        right.barh(dtypes.index, mb, left=start, label=dtype,
                   color=DTYPE_COLOURS.get(dtype, OTHER_COLOUR))
        start += mb
    right.set_xlabel("MiB")
    right.set_title("Bytes by component and dtype")
    right.legend(fontsize="small")
    return fig


def block_figure(table: pd.DataFrame) -> Figure:
    """Parameters per SD block (text encoders as BASE), in UNet order."""
    blocks = stats.by_block(table)
    fig, (ax,) = _figure(10, 3)
    ax.bar(blocks["block"], blocks["params"] / 1e6,
           color=[SIDE_COLOURS.get(_side(b), OTHER_COLOUR) for b in blocks["block"]])
    ax.set_ylabel("parameters (millions)")
    ax.set_title("Parameters by block")
    ax.tick_params(axis="x", rotation=90, labelsize="small")
    return fig


def histogram_figure(tensor: torch.Tensor, name: str = "", bins: int = HIST_BINS,
                     log: bool = True) -> Figure:
    """The distribution of one tensor's finite values, with its mean and +-1 std marked (counts
    on a log scale when `log` and the tallest bar is over LOG_FROM)."""
    values = tensor.detach().reshape(-1).to(torch.float32)
    values = values[torch.isfinite(values)]
    fig, (ax,) = _figure(6.5, 3.2)
    figures = describe(tensor)
    if values.numel():
        lo, hi = float(values.min()), float(values.max())
        if lo == hi:
            lo, hi = lo - 0.5, hi + 0.5
        counts = torch.histc(values, bins=bins, min=lo, max=hi).numpy()
        edges = np.linspace(lo, hi, bins + 1)
        ax.stairs(counts, edges, fill=True, color="#1e88e5")
        for x, style in ((figures["mean"], "-"), (figures["mean"] - figures["std"], "--"),
                         (figures["mean"] + figures["std"], "--")):
            ax.axvline(x, color="#c62828", linestyle=style, linewidth=1)
        if log and counts.max() > LOG_FROM:
            ax.set_yscale("log")
    ax.set_xlabel("value")
    ax.set_ylabel("count")
    shape = "x".join(map(str, tensor.shape)) or "scalar"
    ax.set_title(f"{name or 'tensor'}  [{shape}]\nmean {figures['mean']:.4g}  "
                 f"std {figures['std']:.4g}  |max| {figures['abs_max']:.4g}", fontsize="small")
    return fig


def norm_heatmap_figure(table: pd.DataFrame) -> Figure:
    """RMS of the values per block (rows) and layer kind (columns); blank where a block has none."""
    norms = stats.block_norms(table)
    fig, (ax,) = _figure(1.6 + 0.9 * len(norms.columns), 1.2 + 0.26 * len(norms))
    from matplotlib.colors import LogNorm

    data = np.ma.masked_invalid(norms.to_numpy(dtype=float))
    data = np.ma.masked_less_equal(data, 0.0)
    image = ax.imshow(data, aspect="auto", cmap="viridis", norm=LogNorm())
    ax.set_xticks(range(len(norms.columns)), norms.columns, rotation=35, ha="right")
    ax.set_yticks(range(len(norms.index)), norms.index, fontsize="small")
    ax.set_title("RMS of the weights by block and layer kind")
    fig.colorbar(image, ax=ax, label="RMS (log scale)")
    return fig


def difference_figure(comparison: pd.DataFrame, title: str = "") -> Figure:
    """||a-b|| / ||a|| per SD block, the number of changed tensors written over each bar."""
    blocks = stats.difference_by_block(comparison)
    fig, (ax,) = _figure(10, 3.2)
    rel = blocks["rel_diff"].fillna(0.0)
    bars = ax.bar(blocks["block"], rel,
                  color=[SIDE_COLOURS.get(_side(b), OTHER_COLOUR) for b in blocks["block"]])
    for bar, changed in zip(bars, blocks["changed"], strict=True):
        if changed:
            ax.annotate(str(changed), (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        ha="center", va="bottom", fontsize="x-small")
    if (rel > 0).any() and rel[rel > 0].max() / max(rel[rel > 0].min(), 1e-30) > 100:
        ax.set_yscale("log")
    ax.set_ylabel("||a - b|| / ||a||")
    numbered = bool((blocks["changed"] > 0).any())
    ax.set_title(title or "Difference by block" + (" (numbers: tensors changed)" if numbered else ""))
    ax.tick_params(axis="x", rotation=90, labelsize="small")
    if not len(blocks) or math.isclose(float(rel.sum()), 0.0):
        ax.text(0.5, 0.5, "no difference", transform=ax.transAxes, ha="center", va="center")
    return fig


def _millions(n: int) -> str:
    """A parameter count in millions or billions, 3 significant digits ("860M", "2.57B")."""
    return f"{n / 1e9:.3g}B" if n >= 1e9 else f"{n / 1e6:.3g}M"


def family_parameters_figure(parts: pd.DataFrame) -> Figure:
    """Parameters of each part (text encoders, denoiser, VAE) per family, grouped bars on a log
    scale, from labkit.families.tables.family_parts; a part a family's file lacks has no bar."""
    shown = parts[parts["part"].isin(PART_COLOURS)]
    families = list(dict.fromkeys(parts["family"]))
    fig, (ax,) = _figure(max(FAMILY_FIGURE_MIN_WIDTH, 1.4 + 1.25 * len(families)), 3.8)
    width = 0.8 / len(PART_COLOURS)
    for i, (part, colour) in enumerate(PART_COLOURS.items()):
        rows = shown[shown["part"] == part]
        x = np.array([families.index(f) for f in rows["family"]])
        bars = ax.bar(x + (i - (len(PART_COLOURS) - 1) / 2) * width, rows["parameters"], width,
                      label=part, color=colour)
        ax.bar_label(bars, [_millions(n) for n in rows["parameters"]], rotation=90,
                     padding=2, fontsize="x-small")
    ax.set_yscale("log")
    counts = shown["parameters"][shown["parameters"] > 0]
    if len(counts):  # from a decade under the smallest bar; room for the labels over the tallest
        ax.set_ylim(10.0 ** (math.floor(math.log10(counts.min())) - 1), ax.get_ylim()[1] * 20)
    ax.set_xticks(range(len(families)), families)
    ax.set_ylabel("parameters (log scale)")
    ax.set_title("Parameters per part (no bar: not in the family's file)")
    ax.legend(fontsize="small", ncols=len(PART_COLOURS), loc="upper left")
    ax.grid(axis="y", which="major", alpha=0.3)
    return fig
