"""The `stats` and `compare` subcommands of `python -m labkit` (rows of labkit.cli.dispatch.COMMANDS).

`stats PATH... [--json|--csv] [--pattern RE]`: one row per tensor with its statistics.
`compare A... B [--json|--csv]`: each A against B, one row per tensor matched across forms.
Text output is a table per path; --json one object per path with the rows under "tensors";
--csv the rows as CSV, one CSV (with its header and a `path` column first) per path.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import pandas as pd

CSV_KEY = "csv"  # a record carrying CSV text is printed as is
STATS_SHOWN = ["name", "component", "block", "dtype", "shape", "mean", "std", "abs_max",
               "l2_norm", "zero_fraction", "nan_count", "inf_count"]
COMPARE_SHOWN = ["name", "block", "status", "dtype_a", "dtype_b", "max_abs_diff", "rel_diff",
                 "cosine"]


def _csv_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--csv", action="store_true",
                        help="the rows as CSV on stdout (ignored with --json)")


def stats_arguments(parser: argparse.ArgumentParser) -> None:
    """--csv and --pattern for `stats`."""
    _csv_argument(parser)
    parser.add_argument("--pattern", metavar="RE", default=None,
                        help="only tensors whose name matches this regular expression")


def compare_arguments(parser: argparse.ArgumentParser) -> None:
    """The model to compare with (after the paths) and --csv for `compare`."""
    parser.add_argument("other", metavar="B", help="the model each PATH is compared with")
    _csv_argument(parser)


def _rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as JSON-ready dicts (NaN as null, shapes as lists)."""
    return json.loads(frame.to_json(orient="records"))


def _record(head: dict[str, Any], frame: pd.DataFrame, args: argparse.Namespace) -> Any:
    from labkit.cli.result import OK, Outcome

    if args.csv and not args.json:
        table = frame.copy()
        table.insert(0, "path", head["path"])
        return [Outcome({**head, CSV_KEY: table.to_csv(index=False)}, OK)]
    return [Outcome({**head, "tensors": _rows(frame)}, OK)]


def run_stats(path: str, args: argparse.Namespace) -> list:
    """The stats of one model file or folder as one record."""
    from labkit.stats import per_tensor as stats
    frame = stats.tensor_stats(path, pattern=args.pattern, progress=False)
    return _record({"path": path, **stats.summary_row(frame)}, frame, args)


def run_compare(path: str, args: argparse.Namespace) -> list:
    """One model compared with args.other as one record."""
    from labkit.stats import per_tensor as stats
    frame = stats.compare(path, args.other, progress=False, ema=True)
    return _record({"path": path, "other": args.other, **stats.status_counts(frame)}, frame,
                   args)


def _show(columns: list[str], records: list[dict[str, Any]]) -> str:
    blocks = []
    for record in records:
        if CSV_KEY in record:
            blocks.append(record[CSV_KEY].rstrip("\n"))
            continue
        head = "  ".join(f"{k}: {v}" for k, v in record.items() if k != "tensors")
        frame = pd.DataFrame(record["tensors"], columns=columns)
        blocks.append(head + "\n" + frame.to_string(index=False, float_format="{:.4g}".format))
    return "\n\n".join(blocks)


def show_stats(records: list[dict[str, Any]]) -> str:
    """Stats records as text: a head line and a table per path (or their CSV)."""
    return _show(STATS_SHOWN, records)


def show_compare(records: list[dict[str, Any]]) -> str:
    """Comparison records as text: counts by status and a table per path (or their CSV)."""
    return _show(COMPARE_SHOWN, records)
