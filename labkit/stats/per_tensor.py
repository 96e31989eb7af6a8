"""Per-tensor statistics of a model file streamed one tensor at a time, summaries of them, and
the comparison of two models matched by canonical name across forms.

The arithmetic is labkit.stats.moments's: float32 over chunks with float64 sums; NaN and Inf are
counted and every other statistic is taken over the finite values (see `describe`).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch

from labkit.errors import CorruptFileError, LabkitError
from labkit.identify.blocks import (
    EMA,
    block_labels,
    block_sort_key,
    component_of,
    ema_twins,
    layer_kind,
    lora_part,
)
from labkit.processes import cores
from labkit.stats.canonical import canonical_names, canonical_tensor, layout_of
from labkit.stats.moments import CHUNK, describe_parts, difference, one_thread
from labkit.stats.stream import describe_file, reading
from labkit.tensors import dtype_name

if TYPE_CHECKING:
    from labkit.files.model_file import ModelFile

STAT_COLUMNS = ("mean", "std", "min", "max", "abs_max", "l2_norm", "zero_fraction", "nan_count",
                "inf_count")
COLUMNS = ("name", "component", "block", "lora_part", "dtype", "shape", "numel", "bytes",
           *STAT_COLUMNS)


def as_model(model: ModelFile | str | os.PathLike) -> ModelFile:
    """A ModelFile from a ModelFile or a path (opened with labkit.files.opener.open_model)."""
    if isinstance(model, str | os.PathLike):
        from labkit.files.opener import open_model

        return open_model(model)
    return model


def stream(model: ModelFile, names: list[str], progress: bool, what: str,
           items: Iterator[tuple[str, Any]] | None = None) -> Iterator[tuple[str, Any]]:
    """`items` (default model.iter_tensors(names)) behind a tqdm bar; every read failure becomes
    CorruptFileError, and a stream that ends early raises instead of passing for the whole file."""
    from tqdm.auto import tqdm

    it = model.iter_tensors(names) if items is None else items
    seen = 0
    with tqdm(total=len(names), desc=what, unit="tensor", disable=not progress) as bar:
        while True:
            with reading(model.path, f"tensor {seen + 1} of {len(names)}"):
                item = next(it, None)
            if item is None:
                break
            seen += 1
            bar.update()
            yield item
    if seen != len(names):
        raise CorruptFileError(f"only {seen} of {len(names)} tensors could be read.", model.path,
                               "The file may be truncated: download it again.")


@one_thread()
def tensor_stats(model: ModelFile | str | os.PathLike, pattern: str | None = None,
                 progress: bool = True, jobs: int | None = None) -> pd.DataFrame:
    """One row per tensor (whose name matches the regex `pattern`, if given): name, component,
    block, lora_part, dtype, shape, numel, bytes and the statistics of `describe`. A single
    safetensors file is read in chunks (labkit.stats.stream), a large one over `jobs` worker
    processes (default: every core); other forms tensor by tensor.
    Raises NotAModelError, CorruptFileError (also for a file truncated past its header),
    UnsafeFileError, and LabkitError for a bad pattern."""
    model = as_model(model)
    names = list(model.table)
    if pattern:
        try:
            rx = re.compile(pattern)
        except re.error as e:
            raise LabkitError(f"the name filter {pattern!r} is not a valid regular expression "
                              f"({e}).", hint="Escape special characters such as ( [ . with \\."
                              ) from None
        names = [n for n in names if rx.search(n)]
    labels = dict(zip(model.table, block_labels(model.table), strict=True))
    if model.format == "safetensors":
        sizes = [model.table[n].nbytes for n in names]
        figures = describe_file(model.path, names, sizes, jobs or cores(), progress)
    else:
        figures = {}
        items = ((n, t.reshape(-1).split(CHUNK)) for n, t in model.iter_tensors(names))
        for name, chunks in stream(model, names, progress, "tensor stats", items):
            with reading(model.path, f"tensor {name!r}"):
                figures[name] = describe_parts(chunks)
    rows = []
    for name in names:
        info = model.table[name]
        rows.append({"name": name, "component": component_of(name), "block": labels[name],
                     "lora_part": lora_part(name), "dtype": info.dtype, "shape": tuple(info.shape),
                     "numel": info.numel, "bytes": info.nbytes, **figures[name]})
    return pd.DataFrame(rows, columns=list(COLUMNS))


# ---------------------------------------------------------------- summaries of a stats table

def by_component(stats: pd.DataFrame) -> pd.DataFrame:
    """Tensors, parameters and bytes per component, with the share of all parameters."""
    out = stats.groupby("component", sort=False).agg(
        tensors=("name", "size"), params=("numel", "sum"), bytes=("bytes", "sum")).reset_index()
    out["share"] = out["params"] / max(int(out["params"].sum()), 1)
    return out.sort_values("params", ascending=False, ignore_index=True)


def bytes_by_dtype(stats: pd.DataFrame) -> pd.DataFrame:
    """Bytes per component (rows) and dtype (columns), with totals."""
    table = stats.pivot_table(index="component", columns="dtype", values="bytes", aggfunc="sum",
                              fill_value=0, margins=True, margins_name="total")
    table.columns.name = None
    return table.reset_index()


def _rms(frame: pd.DataFrame) -> float:
    """The root mean square of all values of the tensors in `frame`, from their L2 norms."""
    n = frame["numel"].sum()
    return math.sqrt((frame["l2_norm"] ** 2).sum() / n) if n else math.nan


def _in_blocks(stats: pd.DataFrame) -> pd.DataFrame:
    """The rows with a block label, EMA copies left out (they would count each block twice)."""
    return stats[(stats["block"] != "") & (stats["component"] != EMA)]


def by_block(stats: pd.DataFrame) -> pd.DataFrame:
    """Tensors, parameters, bytes and the RMS of the values per SD block, in UNet order (EMA
    copies left out)."""
    labelled = _in_blocks(stats)
    rows = [{"block": block, "tensors": len(g), "params": int(g["numel"].sum()),
             "bytes": int(g["bytes"].sum()), "rms": _rms(g)}
            for block, g in labelled.groupby("block")]
    out = pd.DataFrame(rows, columns=["block", "tensors", "params", "bytes", "rms"])
    return out.sort_values("block", key=lambda s: s.map(block_sort_key), ignore_index=True)


def block_norms(stats: pd.DataFrame) -> pd.DataFrame:
    """RMS of the values per block (rows, UNet order) and layer kind (columns), EMA copies left
    out: the heatmap's data."""
    labelled = _in_blocks(stats).assign(kind=lambda f: f["name"].map(layer_kind))
    cells = {(block, kind): _rms(g) for (block, kind), g in labelled.groupby(["block", "kind"])}
    blocks = sorted({b for b, _ in cells}, key=block_sort_key)
    kinds = sorted({k for _, k in cells})
    return pd.DataFrame([[cells.get((b, k), math.nan) for k in kinds] for b in blocks],
                        index=pd.Index(blocks, name="block"), columns=kinds)


def summary_row(stats: pd.DataFrame) -> dict[str, Any]:
    """Totals of a stats table: tensors, parameters, bytes, and tensors holding NaN or Inf."""
    bad = stats[(stats["nan_count"] > 0) | (stats["inf_count"] > 0)]
    return {"n_tensors": len(stats), "n_params": int(stats["numel"].sum()),
            "n_bytes": int(stats["bytes"].sum()), "tensors_with_nan_or_inf": len(bad)}


# ---------------------------------------------------------------- comparing two models

STATUSES = ("equal", "close", "different", "shape changed", "only in a", "only in b")
DIFFERENCE_COLUMNS = ("status", "max_abs_diff", "rel_diff", "cosine", "l2_a", "l2_diff")
COMPARE_COLUMNS = ("name", "component", "block", "name_a", "name_b", "shape_a", "shape_b",
                   "dtype_a", "dtype_b", *DIFFERENCE_COLUMNS)


def _one_side(name: str, key: str, info: Any, side: str) -> dict[str, Any]:
    return {"name": name, "status": f"only in {side}", f"name_{side}": key,
            f"shape_{side}": tuple(info.shape), f"dtype_{side}": info.dtype}


class _Reader:
    """model.tensor with a one-tensor cache (a fused q/k/v tensor serves three names in a row)."""

    def __init__(self, model: ModelFile):
        self.model, self.key, self.tensor = model, None, None

    def __call__(self, key: str) -> torch.Tensor:
        if key != self.key:
            self.key, self.tensor = key, None  # let the last tensor go before reading the next
            self.tensor = self.model.tensor(key)
        return self.tensor


@one_thread()
def compare(a: ModelFile | str | os.PathLike, b: ModelFile | str | os.PathLike,
            progress: bool = True, ema: bool = False) -> pd.DataFrame:
    """One row per tensor of a and b, matched by canonical name across forms and layouts
    (.ckpt, single-file .safetensors, diffusers folder): status (see STATUSES), both names,
    shapes and dtypes, and for matching shapes the figures of `difference`. Streams a's tensors
    in file order, reading b's twin of each. EMA copies (`model_ema.`) are rows of their own
    (only in a side that has them) unless `ema`: then each side's EMA copy stands in for its
    UNet weights, as diffusers folders and most single files ship the EMA weights.
    Raises what open_model raises, and CorruptFileError when a tensor cannot be read."""
    a, b = as_model(a), as_model(b)
    names_a, names_b = canonical_names(a, ema), canonical_names(b, ema)
    layout_a, layout_b = layout_of(a), layout_of(b)
    twin_a, twin_b = ema_twins(a.table), ema_twins(b.table)
    read_b = _Reader(b)
    rows = []
    by_key: dict[str, list[str]] = {}
    for name, key in names_a.items():
        by_key.setdefault(key, []).append(name)
    for key, tensor in stream(a, list(by_key), progress, "compare"):
        for name in by_key[key]:
            if name not in names_b:
                rows.append(_one_side(name, key, a.table[key], "a"))
                continue
            ta = canonical_tensor(layout_a, twin_a.get(key, key), tensor, name)
            key_b = names_b[name]
            with reading(b.path, f"tensor {key_b!r}"):
                tb = canonical_tensor(layout_b, twin_b.get(key_b, key_b), read_b(key_b), name)
            row = {"name": name, "name_a": key, "name_b": key_b, "shape_a": tuple(ta.shape),
                   "shape_b": tuple(tb.shape), "dtype_a": dtype_name(ta.dtype),
                   "dtype_b": dtype_name(tb.dtype)}
            if ta.shape != tb.shape:
                row["status"] = "shape changed"
            else:
                row.update(difference(ta, tb))
            rows.append(row)
    rows += [_one_side(name, key, b.table[key], "b") for name, key in names_b.items()
             if name not in names_a]
    frame = pd.DataFrame(rows, columns=list(COMPARE_COLUMNS))
    frame["component"] = frame["name"].map(component_of)
    frame["block"] = block_labels(frame["name"])
    return frame


def difference_by_block(comparison: pd.DataFrame) -> pd.DataFrame:
    """Per SD block: tensors compared, how many differ, and ||a-b|| / ||a|| over the block."""
    both = comparison[comparison["l2_a"].notna() & (comparison["block"] != "")]
    rows = [{"block": block, "tensors": len(g),
             "changed": int(g["status"].isin(["different", "shape changed"]).sum()),
             "rel_diff": math.sqrt((g["l2_diff"] ** 2).sum() / (g["l2_a"] ** 2).sum())
             if (g["l2_a"] ** 2).sum() else math.nan}
            for block, g in both.groupby("block")]
    out = pd.DataFrame(rows, columns=["block", "tensors", "changed", "rel_diff"])
    return out.sort_values("block", key=lambda s: s.map(block_sort_key), ignore_index=True)


def status_counts(comparison: pd.DataFrame) -> dict[str, int]:
    """How many rows of a comparison have each status (all statuses, zeros included)."""
    counts = comparison["status"].value_counts()
    return {s: int(counts.get(s, 0)) for s in STATUSES}


@one_thread()
def ema_difference(model: ModelFile | str | os.PathLike, progress: bool = True) -> pd.DataFrame:
    """Each `model.` weight against its EMA copy (`model_ema.`) in the same checkpoint: one row
    per pair with the figures of `difference` (a = the trained weight, b = its EMA).
    Raises what open_model raises, CorruptFileError when a tensor cannot be read."""
    model = as_model(model)
    twins = {k: e for e, k in ema_twins(model.table).items() if e in model.table}
    rows = []
    for key, weight in stream(model, list(twins), progress, "EMA vs weights"):
        with reading(model.path, f"tensor {twins[key]!r}"):
            ema = model.tensor(twins[key])
        rows.append({"name": key, "name_ema": twins[key], "component": component_of(key),
                     "dtype": dtype_name(weight.dtype), "shape": tuple(weight.shape),
                     **difference(weight, ema)})
    frame = pd.DataFrame(rows, columns=["name", "name_ema", "component", "dtype", "shape",
                                        *DIFFERENCE_COLUMNS])
    frame.insert(2, "block", block_labels(frame["name"]))
    return frame


def position_ids_check(model: ModelFile | str | os.PathLike) -> pd.DataFrame:
    """Each `position_ids` tensor against the integers 0..n-1 it should hold: its dtype, the
    largest distance from them, and the positions a cast to int64 (as loaders do) gets wrong.
    Merged checkpoints often store them as floats such as 75.9975, which truncates to 75.
    Raises what open_model raises."""
    model = as_model(model)
    rows = []
    for name in (n for n in model.table if n.endswith("position_ids")):
        with reading(model.path, f"tensor {name!r}"):
            values = model.tensor(name).reshape(-1)
        expected = torch.arange(values.numel(), dtype=torch.float64)
        offset = (values.to(torch.float64) - expected).abs()
        wrong = torch.nonzero(values.to(torch.int64) != expected.to(torch.int64)).reshape(-1)
        rows.append({"name": name, "dtype": dtype_name(values.dtype),
                     "integer_dtype": not (values.is_floating_point() or values.is_complex()),
                     "max_offset": float(offset.max()) if offset.numel() else 0.0,
                     "non_integer": int((values.to(torch.float64) % 1 != 0).sum()),
                     "wrong_positions": wrong.tolist(),
                     "ok": bool(offset.max() == 0) if offset.numel() else True})
    return pd.DataFrame(rows, columns=["name", "dtype", "integer_dtype", "max_offset",
                                       "non_integer", "wrong_positions", "ok"])


def select_rows(table: pd.DataFrame, pattern: str = "", sort_by: str | None = None,
                ascending: bool = True) -> pd.DataFrame:
    """The rows whose name matches `pattern` (a case-insensitive regex, or a plain substring
    when it is not a valid one), sorted by a column."""
    if pattern:
        try:
            rx = re.compile(pattern, re.IGNORECASE)
        except re.error:
            rx = re.compile(re.escape(pattern), re.IGNORECASE)
        table = table[table["name"].map(lambda n: rx.search(n) is not None)]
    if sort_by:
        table = table.sort_values(sort_by, ascending=ascending, kind="stable",
                                  key=lambda s: s.map(str) if s.dtype == object else s)
    return table
