"""The catalog as a table: list a folder, take unchanged rows from the cache, read the rest
(locally or on Dask), and write the table to Parquet or CSV."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from labkit.errors import LabkitError, NotAModelError
from labkit.inventory.cache import CatalogCache, Stamp, absolute, stamp_of
from labkit.inventory.facts import HASH_KEYS
from labkit.inventory.finding import candidates
from labkit.inventory.workers import Item, Row, run_dask, run_local
from labkit.processes import cores

COLUMNS = ["path", "format", "kind", "base", "variant", "base_source", "n_tensors", "n_params",
           "dtypes", "size", "mtime", "base_model", "trained_on", "trigger_words", "error"]
LIST_COLUMNS = ("variant", "trigger_words")
DICT_COLUMNS = ("dtypes",)
CSV_LIST_SEPARATOR = "; "
OUT_SUFFIXES = (".parquet", ".csv")


def _listing(folder: Path) -> tuple[list[Item], list[Stamp], list[str]]:
    """(items, stamps, shown paths) of every candidate under `folder`; unreadable ones skipped."""
    items, stamps, shown = [], [], []
    for path, is_folder in candidates(folder):
        try:
            stamp = stamp_of(path, is_folder)
        except OSError:
            continue
        items.append(Item(absolute(path), is_folder, stamp.size))
        stamps.append(stamp)
        shown.append(path.relative_to(folder).as_posix())
    return items, stamps, shown


def catalog(folder: str | Path, hashes: bool = False, progress: bool = True, *,
            jobs: int | None = None, cache: bool = True, dask: str | None = None) -> pd.DataFrame:
    """Every model under `folder`, one row each (COLUMNS, + HASH_KEYS when `hashes`).

    Paths are relative to `folder`; a file that cannot be read is a row with its error (an
    unsafe pickle's starts with "unsafe: "). Unchanged files come from the catalog cache unless
    `cache` is False; the rest are read over `jobs` processes (default: every core; under 1
    counts as 1), or by the Dask cluster at `dask` ("tcp://HOST:PORT"). Raises NotAModelError
    if `folder` is no folder, LabkitError if the Dask cluster cannot be used.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise NotAModelError("this is not a folder" if folder.exists() else "this folder is missing",
                             path=folder, hint="Give catalog a folder; use inspect for a single file.")
    items, stamps, shown = _listing(folder)
    by_path = dict(zip((i.path for i in items), stamps, strict=True))
    store = CatalogCache() if cache else None
    try:
        known = store.get(by_path, hashes) if store else {}
        todo = [i for i in items if i.path not in known]
        if not todo:
            read = []
        elif dask:
            read = run_dask(todo, hashes, dask, progress)
        else:
            read = run_local(todo, hashes, cores() if jobs is None else jobs, progress)
        fresh = dict(zip((i.path for i in todo), read, strict=True))
        if store:
            store.put((p, by_path[p], row) for p, row in fresh.items())
    finally:
        if store:
            store.close()
    rows = []
    for item, stamp, name in zip(items, stamps, shown, strict=True):
        row: Row = known[item.path] if item.path in known else fresh[item.path]
        if row is not None:
            rows.append({"path": name, "size": stamp.size, "mtime": stamp.mtime_ns, **row})
    return _frame(rows, hashes)


def _frame(rows: list[dict], hashes: bool) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=COLUMNS + (HASH_KEYS if hashes else []))
    frame["mtime"] = pd.to_datetime(frame["mtime"], unit="ns", utc=True)
    return frame.astype({"size": "int64", "n_tensors": "Int64", "n_params": "Int64"})


def _flat(frame: pd.DataFrame, lists_as_text: bool) -> pd.DataFrame:
    """The table with dict columns as JSON text (and lists as text, for CSV)."""
    out = frame.copy()
    for column in DICT_COLUMNS:
        out[column] = [None if v is None or v is pd.NA else json.dumps(v) for v in out[column]]
    if lists_as_text:
        for column in LIST_COLUMNS:
            out[column] = [CSV_LIST_SEPARATOR.join(v) if isinstance(v, list) else None
                           for v in out[column]]
    return out


def write_table(frame: pd.DataFrame, out: str | Path) -> Path:
    """Write a catalog to `out` (.parquet through pyarrow, or .csv) and return its path.

    Raises LabkitError for another suffix, or for .parquet when pyarrow is not installed.
    """
    out = Path(out)
    suffix = out.suffix.lower()
    if suffix not in OUT_SUFFIXES:
        raise LabkitError(f"cannot write a {suffix or 'suffix-less'} table.", out,
                          "Name the output .parquet or .csv.")
    if suffix == ".csv":
        _flat(frame, lists_as_text=True).to_csv(out, index=False)
        return out
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise LabkitError("writing Parquet needs pyarrow, which is not installed.", out,
                          "Install it (pip install pyarrow) or write .csv instead.") from None
    _flat(frame, lists_as_text=False).to_parquet(out, index=False)
    return out
