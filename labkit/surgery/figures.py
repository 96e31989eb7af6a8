"""Surgery reports as short tables and figures: a merge's alpha per block, a bake's change per
block, an extracted or resized LoRA's energy kept per module. Each figure is a matplotlib Figure;
each table a DataFrame."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pandas as pd

from labkit.identify.blocks import block_sort_key
from labkit.stats.figures import OTHER_COLOUR, SIDE_COLOURS, _figure, _side
from labkit.surgery.merging import ACTIONS

if TYPE_CHECKING:
    from matplotlib.figure import Figure

ENERGY_SHOWN = ["module", "block", "shape", "rank", "energy_kept", "fro_error", "delta_norm"]
MAX_BARS = 25  # modules drawn in an energy figure: past this the labels no longer fit


def _colours(blocks: list[str]) -> list[str]:
    return [SIDE_COLOURS.get(_side(b), OTHER_COLOUR) for b in blocks]


def _side_legend(ax: Any, blocks: list[str]) -> None:
    """A legend of the block sides (BASE, IN, MID, OUT) the bars use."""
    from matplotlib.patches import Patch

    sides = [s for s in SIDE_COLOURS if any(_side(b) == s for b in blocks)]
    ax.legend(handles=[Patch(color=SIDE_COLOURS[s], label=s) for s in sides], fontsize=7,
              loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)


def _by_block(frame: pd.DataFrame, column: str, how: str) -> pd.Series:
    """One value per SD block of a report, in the UNet's order (keys in no block left out)."""
    values = frame[frame["block"] != ""].groupby("block")[column].agg(how)
    return values.reindex(sorted(values.index, key=block_sort_key))


def merge_actions(report: pd.DataFrame) -> pd.DataFrame:
    """A merge report in one row per action: how many keys, and what merge did with them."""
    counts = report["action"].value_counts()
    return pd.DataFrame({"action": counts.index, "keys": counts.to_numpy(),
                         "what merge did": [ACTIONS.get(a, "") for a in counts.index]})


def bake_blocks(report: pd.DataFrame) -> pd.DataFrame:
    """A bake report per block: modules moved and their median relative change."""
    grouped = report.groupby("block", sort=False)["relative_change"]
    frame = pd.DataFrame({"modules": grouped.count(), "median change": grouped.median(),
                          "largest change": grouped.max()}).reset_index()
    return frame.iloc[sorted(range(len(frame)), key=lambda i: block_sort_key(frame["block"][i]))]


def energy_table(report: pd.DataFrame) -> pd.DataFrame:
    """An energy report without its singular values, the worst-kept modules first."""
    return report[ENERGY_SHOWN].sort_values("energy_kept").reset_index(drop=True)


def block_alpha_figure(report: pd.DataFrame, title: str = "") -> Figure:
    """A merge's share of model B (alpha) per block, coloured by side (BASE, IN, MID, OUT)."""
    alphas = _by_block(report, "alpha", "first")
    fig, (ax,) = _figure(max(5.0, 0.32 * len(alphas) + 1.5), 2.8)
    ax.bar(alphas.index, alphas.to_numpy(), color=_colours(list(alphas.index)))
    ax.set_ylim(0, max(1.0, float(alphas.max()) if len(alphas) else 1.0) * 1.05)
    ax.set_ylabel("alpha (share of B)")
    ax.set_title(title or "Merge alpha per block")
    ax.tick_params(axis="x", labelrotation=90, labelsize=8)
    return fig


def bake_figure(report: pd.DataFrame, title: str = "") -> Figure:
    """A bake's median relative weight change per block (|S * scale * up@down| / |W|)."""
    change = _by_block(report, "relative_change", "median")
    fig, (ax,) = _figure(max(5.0, 0.32 * len(change) + 1.5), 2.8)
    ax.bar(change.index, change.to_numpy() * 100, color=_colours(list(change.index)))
    ax.set_ylabel("median change (% of |W|)")
    ax.set_title(title or "How far baking moved each block")
    ax.tick_params(axis="x", labelrotation=90, labelsize=8)
    return fig


def energy_figure(report: pd.DataFrame, title: str = "") -> Figure:
    """The energy each module keeps at its rank (share of |delta|_F^2), worst first, coloured
    by block side; at most MAX_BARS modules."""
    frame = report.sort_values("energy_kept").head(MAX_BARS)
    labels = [f"{b}  " + ".".join(m.split(".")[-4:])[-36:]
              for m, b in zip(frame["module"], frame["block"], strict=True)]
    fig, (ax,) = _figure(7.0, 0.2 * len(frame) + 1.4)
    ax.barh(range(len(frame)), frame["energy_kept"].to_numpy(), color=_colours(list(frame["block"])))
    ax.set_yticks(range(len(frame)), labels, fontsize=7)
    _side_legend(ax, list(frame["block"]))
    ax.invert_yaxis()
    low = float(frame["energy_kept"].min()) if len(frame) else 0.0
    ax.set_xlim(min(0.9, max(0.0, low - 0.05)), 1.0)
    ax.set_xlabel("energy kept")
    shown = "" if len(report) <= MAX_BARS else f" ({MAX_BARS} worst of {len(report)})"
    ax.set_title((title or "Energy kept per module") + shown, fontsize=10)
    return fig
