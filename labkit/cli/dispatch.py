"""`python -m labkit SUBCOMMAND PATH... [--json]`: inspect, hash, scan, convert and catalog models,
and the surgery commands of labkit.cli.surgery (merge, bake, extract-lora, resize-lora, merge-lora).

Exit codes: 0 done and safe, 1 a file was judged unsafe, 2 bad input; the worst over all paths.
A subcommand is one row of COMMANDS: its help, its extra arguments, and a function from one path
to the records it prints.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from labkit.cli import convert as convert_cli
from labkit.cli import stats as stats_cli
from labkit.cli import surgery as surgery_cli
from labkit.cli.result import BAD_INPUT, OK, UNSAFE, Outcome
from labkit.errors import LabkitError, NotAModelError, UnsafeFileError


class Command(NamedTuple):
    """A subcommand: help line, extra arguments, the work for one path, how a record reads."""

    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[str, argparse.Namespace], list[Outcome]]
    show: Callable[[list[dict[str, Any]]], str]
    finish: Callable[[argparse.Namespace], list[Outcome]] | None = None  # after every path


def _no_arguments(_: argparse.ArgumentParser) -> None:
    return None


def _inspect(path: str, _: argparse.Namespace) -> list[Outcome]:
    from labkit.files.metadata import decode_metadata
    from labkit.files.opener import open_model
    from labkit.inventory import summary

    model = open_model(path)
    facts = summary(model)
    del facts["evidence"]
    return [Outcome({"path": path, **facts, "metadata": decode_metadata(model.metadata)}, OK)]


def _hash(path: str, _: argparse.Namespace) -> list[Outcome]:
    from labkit.hashes import file_hashes

    if Path(path).is_dir():
        raise LabkitError("this is a folder; hashes are computed for one file.",
                          path=path, hint="Hash each weight file inside it.")
    hashes = file_hashes(path, progress=sys.stderr.isatty())
    return [Outcome({"path": path, **hashes}, OK)]


def _verdict_globals(path: Path) -> tuple[bool, list[dict[str, Any]]]:
    """(safe, globals) for one file: a safetensors or GGUF file names none and cannot run code.

    Raises NotAModelError / CorruptFileError (from open_model) for a broken or non-model file.
    """
    from labkit.files.opener import open_model
    from labkit.inventory import content_format
    from labkit.safety.verdicts import scan

    found = content_format(path)
    if found != "pickle" and path.is_file():
        open_model(path)  # reads a header only; raises saying what the file is instead
        return True, []
    verdict = scan(path)
    return verdict.safe, [g._asdict() for g in verdict.globals]


def _scan(path: str, _: argparse.Namespace) -> list[Outcome]:
    from labkit.inventory import content_format

    target = Path(path)
    files = [target]
    if target.is_dir():
        formats = {p: content_format(p) for p in sorted(target.rglob("*")) if p.is_file()}
        if not any(formats.values()):
            raise NotAModelError(
                "is a folder with no model file in it (no safetensors, pickle or GGUF file), so "
                "there is nothing to scan.", path=target,
                hint="Give the path of a model file, or of a folder that holds model files.")
        files = [p for p, found in formats.items() if found == "pickle"]
    safe, globals_ = True, []
    for file in files:
        file_safe, found = _verdict_globals(file)
        safe = safe and file_safe
        globals_ += [g for g in found if g not in globals_]
    record = {"path": path, "verdict": "safe" if safe else "unsafe", "globals": globals_}
    return [Outcome(record, OK if safe else UNSAFE)]


def _catalog_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--hashes", action="store_true",
                        help="also compute the six hashes of every file (cached)")
    parser.add_argument("--out", metavar="FILE",
                        help="also write the table of every folder to FILE (.parquet or .csv)")
    parser.add_argument("--jobs", type=int, metavar="N",
                        help="processes reading headers (default: every core)")
    parser.add_argument("--no-cache", action="store_true",
                        help="read every file again, neither using nor filling the catalog cache")
    parser.add_argument("--dask", metavar="tcp://HOST:PORT",
                        help="read on this Dask cluster (workers must see the same paths)")
    parser.set_defaults(frames=[])


def _catalog(path: str, args: argparse.Namespace) -> list[Outcome]:
    from labkit.inventory import UNSAFE_PREFIX, catalog

    frame = catalog(path, hashes=args.hashes, progress=sys.stderr.isatty(), jobs=args.jobs,
                    cache=not args.no_cache, dask=args.dask)
    frame["path"] = [str(Path(path) / p) for p in frame["path"]]
    args.frames.append(frame)
    outcomes = []
    for row in json.loads(frame.to_json(orient="records", date_format="iso")):
        error = row["error"] or ""
        code = UNSAFE if error.startswith(UNSAFE_PREFIX) else BAD_INPUT if error else OK
        outcomes.append(Outcome(row, code))
    return outcomes


def _catalog_finish(args: argparse.Namespace) -> list[Outcome]:
    """Write the tables of every folder to --out, when asked; an error is one record."""
    if not args.out:
        return []
    import pandas as pd

    from labkit.inventory import write_table

    try:
        write_table(pd.concat(args.frames, ignore_index=True) if args.frames else
                    pd.DataFrame(), args.out)
    except LabkitError as e:
        return [Outcome({"path": args.out, "error": _one_paragraph(str(e))}, BAD_INPUT)]
    return []


INLINE_CHARS = 60
TABLE_COLUMN_CHARS = 90  # a small flat dict (dtypes) reads best on one line


def _text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, list) and all(not isinstance(v, dict | list) for v in value):
        return ", ".join(map(str, value)) or "-"
    if isinstance(value, dict) and all(not isinstance(v, dict | list) for v in value.values()):
        return ", ".join(f"{k}: {_text(v)}" for k, v in value.items()) or "-"
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _nested(value: Any) -> bool:
    return (isinstance(value, dict) and len(_text(value)) > INLINE_CHARS) or (
        isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value))


def key_values(records: list[dict[str, Any]]) -> str:
    """Records as aligned `key: value` lines; a dict value is indented below, a list of dicts tabled."""
    import pandas as pd

    blocks = []
    for record in records:
        width = max(map(len, record)) + 1
        lines = []
        for key, value in record.items():
            if not _nested(value):
                lines.append(f"{key + ':':<{width}} {_text(value)}")
                continue
            lines.append(f"{key + ':':<{width}} ({len(value)})")
            if isinstance(value, dict):
                inner = max(map(len, value)) + 1
                lines += [f"  {k + ':':<{inner}} {_text(v)}" for k, v in value.items()]
            else:
                table = pd.DataFrame(value).to_string(index=False)
                lines += ["  " + line for line in table.splitlines()]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def rows_table(records: list[dict[str, Any]]) -> str:
    """Records as one table, a row each."""
    import pandas as pd

    if not records:
        return "(no model files found)"
    records = [{k: _text(v) if isinstance(v, list | dict) else v for k, v in r.items()}
               for r in records]  # lists and dicts as short text: "F16: 1130, I64: 1"
    frame = pd.DataFrame(records).convert_dtypes().astype(object).fillna("-")
    return frame.to_string(index=False, max_colwidth=TABLE_COLUMN_CHARS)


COMMANDS: dict[str, Command] = {
    "inspect": Command("format, kind, base, tensors, dtypes and metadata of each model",
                       _no_arguments, _inspect, key_values),
    "hash": Command("SHA256, AutoV1, AutoV2, AutoV3, CRC32 and BLAKE3 of each file (as Civitai)",
                    _no_arguments, _hash, key_values),
    "scan": Command("the globals each pickle inside a file names, and whether it is safe to load",
                    _no_arguments, _scan, key_values),
    "catalog": Command("every model file under each folder, one row each (cached; --out a "
                       ".parquet or .csv table)",
                       _catalog_arguments, _catalog, rows_table, _catalog_finish),
    "stats": Command("per-tensor statistics (mean, std, min, max, norm, zeros, NaN/Inf) of each model",
                     stats_cli.stats_arguments, stats_cli.run_stats, stats_cli.show_stats),
    "compare": Command("each model against the last one, tensor by tensor across file forms",
                       stats_cli.compare_arguments, stats_cli.run_compare, stats_cli.show_compare),
    "convert": Command("write a model in another form (pickle -> .safetensors, folder <-> single "
                       "file, fp16, EMA strip); sources are only read",
                       convert_cli.convert_arguments, convert_cli.run_convert,
                       convert_cli.show_convert),
    **{name: Command(*row) for name, row in surgery_cli.COMMANDS.items()},
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser, one subparser per row of COMMANDS."""
    parser = argparse.ArgumentParser(
        prog="python -m labkit",
        description="Look inside Stable Diffusion model files without running a stranger's code.",
        epilog="Exit codes: 0 done and safe, 1 a file was judged unsafe, 2 bad input.")
    sub = parser.add_subparsers(dest="command", metavar="SUBCOMMAND", required=True)
    for name, command in COMMANDS.items():
        p = sub.add_parser(name, help=command.help, description=command.help)
        p.add_argument("paths", nargs="+", metavar="PATH")
        p.add_argument("--json", action="store_true",
                       help="one JSON object per line on stdout, keys in snake_case")
        command.add_arguments(p)
    return parser


def _one_paragraph(message: str) -> str:
    return " ".join(message.split())


def run_path(command: Command, path: str, args: argparse.Namespace) -> list[Outcome]:
    """The outcomes for one path; an error becomes {"path", "error"}, never an exception."""
    try:
        return command.run(path, args)
    except UnsafeFileError as e:
        return [Outcome({"path": path, "error": _one_paragraph(str(e))}, UNSAFE)]
    except LabkitError as e:
        return [Outcome({"path": path, "error": _one_paragraph(str(e))}, BAD_INPUT)]
    except Exception as e:  # noqa: BLE001 - the CLI never shows a traceback
        message = f"{path}: unexpected {type(e).__name__}: {_one_paragraph(str(e))}"
        return [Outcome({"path": path, "error": message}, BAD_INPUT)]


def _emit(outcomes: list[Outcome], command: Command, as_json: bool, separate: bool) -> bool:
    """Print outcomes (errors to stderr as well); True when something went to stdout."""
    errors = [o.record for o in outcomes if set(o.record) == {"path", "error"}]
    for record in errors:
        print(record["error"], file=sys.stderr)
    if as_json:
        for outcome in outcomes:
            print(json.dumps(outcome.record, ensure_ascii=False, default=str))
        return bool(outcomes)
    shown = [o.record for o in outcomes if o.record not in errors]
    if shown:
        print(("\n" if separate else "") + command.show(shown))
    return bool(shown)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI on `argv` (default sys.argv[1:]) and return the exit code."""
    args = build_parser().parse_args(argv)
    command = COMMANDS[args.command]
    worst, printed = OK, False
    try:
        for path in args.paths:
            outcomes = run_path(command, path, args)
            printed = _emit(outcomes, command, args.json, printed) or printed
            worst = max([worst, *(o.code for o in outcomes)])
        if command.finish is not None:
            outcomes = command.finish(args)
            _emit(outcomes, command, args.json, printed)
            worst = max([worst, *(o.code for o in outcomes)])
    except KeyboardInterrupt:
        print(f"labkit {args.command}: interrupted", file=sys.stderr)
        return BAD_INPUT
    except Exception as e:  # noqa: BLE001 - the CLI never shows a traceback
        print(f"labkit {args.command}: unexpected {type(e).__name__}: {e}", file=sys.stderr)
        return BAD_INPUT
    return worst
