"""The catalog at a glance: rows filtered by kind and base, counts by base and kind as a table
and as a stacked bar figure (a matplotlib Figure)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    from matplotlib.figure import Figure

SHOWN = ["path", "format", "kind", "base", "n_tensors", "n_params", "size_mb", "base_model",
         "trigger_words", "error"]
UNREAD = "(unread)"  # the kind / base of a row whose file could not be read


def _labels(column: pd.Series) -> pd.Series:
    return column.astype(object).where(column.notna() & (column.astype(str) != ""), UNREAD)


def choices(frame: pd.DataFrame, column: str) -> list[str]:
    """The values of a catalog's kind or base column, most common first (unread rows last)."""
    counts = _labels(frame[column]).value_counts()
    return sorted(counts.index, key=lambda v: (v == UNREAD, -counts[v], v))


def filtered(frame: pd.DataFrame, kinds: Iterable[str] = (), bases: Iterable[str] = ()
             ) -> pd.DataFrame:
    """The catalog rows whose kind is in `kinds` and base in `bases` (empty: any)."""
    kinds, bases = set(kinds), set(bases)
    keep = pd.Series(True, index=frame.index)
    if kinds:
        keep &= _labels(frame["kind"]).isin(kinds)
    if bases:
        keep &= _labels(frame["base"]).isin(bases)
    return frame[keep]


def shown_table(frame: pd.DataFrame) -> pd.DataFrame:
    """A catalog's columns worth reading in a panel: sizes in MB, lists joined."""
    out = frame.assign(size_mb=(frame["size"] / 1e6).round(2))
    for column in ("trigger_words",):
        out[column] = [", ".join(v) if isinstance(v, list) else "" for v in out[column]]
    return out[[c for c in SHOWN if c in out.columns]].reset_index(drop=True)


def counts(frame: pd.DataFrame) -> pd.DataFrame:
    """How many catalog rows there are per base (rows) and kind (columns)."""
    return pd.crosstab(_labels(frame["base"]).rename("base"), _labels(frame["kind"]).rename("kind"))


def counts_figure(frame: pd.DataFrame, title: str = "", kinds: Sequence[str] = ()) -> Figure:
    """Model files per base, stacked by kind; `kinds` (e.g. the whole catalog's) fixes each
    kind's colour, so that a filtered figure keeps the colours of the whole one."""
    from labkit.stats.figures import _figure

    table = counts(frame)
    table = table.loc[table.sum(axis=1).sort_values().index]
    fig, (ax,) = _figure(7.0, 0.4 * len(table) + 1.6)
    left = pd.Series(0, index=table.index)
    order = [*kinds, *(k for k in table.columns if k not in kinds)]
    colours = dict(zip(order, _palette(len(order)), strict=True))
    for kind in table.columns:
        ax.barh(table.index, table[kind], left=left, color=colours[kind], label=kind)
        left += table[kind]
    ax.set_xlabel("files")
    ax.set_title(title or f"{len(frame)} files by base and kind")
    ax.xaxis.get_major_locator().set_params(integer=True)
    if len(table.columns):
        ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    return fig


def _palette(n: int) -> list:
    import matplotlib

    cmap = matplotlib.colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i) for i in range(n)]
