"""The `convert` subcommand of `python -m labkit` (a row of labkit.cli.dispatch.COMMANDS).

`convert SRC --out DST [--fp16] [--strip-ema {ema,model}] [--config FOLDER] [--overwrite]`:
what SRC is (read from its bytes), what DST names (by its suffix; none names a folder) and the
step the options ask pick one labkit.convert.forms function from ROUTES. SRC is only read; DST is
written atomically, and an existing one is replaced only with --overwrite.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from labkit.cli.result import Outcome

FORMS = {"pickle": "a pickle checkpoint", "safetensors": "a .safetensors file",
         "folder": "a diffusers folder"}

# (source form, destination form) -> {step: labkit.convert.forms function}. The step is what the
# options ask: "none", "fp16" (--fp16 alone) or "strip_ema" (--strip-ema, with --fp16 or not).
_FILE_TO_FILE = {"fp16": "to_fp16", "strip_ema": "strip_ema"}
_FOLDER_TO_FILE = {"none": "folder_to_single_file", "fp16": "folder_to_single_file"}
_FILE_TO_FOLDER = {"none": "single_file_to_folder"}
ROUTES: dict[tuple[str, str], dict[str, str]] = {
    ("pickle", "safetensors"): {**_FILE_TO_FILE, "none": "ckpt_to_safetensors",
                                "fp16": "ckpt_to_safetensors"},
    ("pickle", "pickle"): _FILE_TO_FILE,
    ("safetensors", "safetensors"): _FILE_TO_FILE,
    ("folder", "safetensors"): _FOLDER_TO_FILE,
    ("folder", "pickle"): _FOLDER_TO_FILE,
    ("pickle", "folder"): _FILE_TO_FOLDER,
    ("safetensors", "folder"): _FILE_TO_FOLDER,
}
# What to do instead, for a pair with no route and for a step a route does not take.
NO_ROUTE = {
    ("safetensors", "pickle"): "Keep the .safetensors file: the lab writes pickles only from "
                               "diffusers folders, for old tools. Give --out a .safetensors name "
                               "with --fp16 or --strip-ema to change it.",
    ("folder", "folder"): "Give --out a .safetensors or .ckpt name to write the folder as one "
                          "file.",
}
STEP_REFUSED = {
    "none": ("there is nothing to convert.",
             "Add --fp16 or --strip-ema {ema,model} to say what to change."),
    "fp16": ("--fp16 applies only when writing a single file.",
             "Write an fp16 .safetensors first (convert SRC --out X.safetensors --fp16), then "
             "convert that file to a folder: the folder keeps the file's dtype."),
    "strip_ema": ("--strip-ema applies only from a single file to a single file (a diffusers "
                  "folder holds no model_ema. copy).",
                  "Strip the EMA copy into a single file first, then convert that."),
}


def convert_arguments(parser: argparse.ArgumentParser) -> None:
    """--out, --fp16, --strip-ema, --config and --overwrite for `convert`."""
    parser.add_argument("--out", metavar="DST", required=True,
                        help="the file (.safetensors, or a pickle such as .ckpt) or folder to write")
    parser.add_argument("--fp16", action="store_true", help="floating tensors as float16")
    parser.add_argument("--strip-ema", choices=("ema", "model"), default=None,
                        help="drop the model_ema. copy; 'ema' keeps its weights as the model's")
    parser.add_argument("--config", metavar="FOLDER", default=None,
                        help="a diffusers folder of the same architecture, when DST is a folder "
                             "(default: the demo's own folder or the lab's shipped config)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing DST")


def _source_form(src: Path) -> str:
    """pickle, safetensors or folder, from SRC's bytes. Raises NotAModelError (missing, not a
    model), CorruptFileError, IncompatibleModelError (a model form that does not convert)."""
    from labkit.errors import IncompatibleModelError, NotAModelError
    from labkit.files.opener import open_model
    from labkit.inventory import content_format

    if not src.exists():
        raise NotAModelError("no such file or folder.", src, "Check the path.")
    if src.is_dir():
        return "folder"
    form = content_format(src)
    if form in FORMS:
        return form
    model = open_model(src)  # raises saying what the file is, when it is not a model
    raise IncompatibleModelError(f"is a {model.format} file; only pickle checkpoints, "
                                 ".safetensors files and diffusers folders convert.", src)


def _destination_form(dst: Path) -> str:
    """safetensors, pickle or folder, from DST's suffix (an existing folder is a folder)."""
    from labkit.convert.forms import PICKLE_SUFFIXES
    from labkit.errors import LabkitError

    forms = {".safetensors": "safetensors", "": "folder", **dict.fromkeys(PICKLE_SUFFIXES, "pickle")}
    form = "folder" if dst.is_dir() else forms.get(dst.suffix.lower())
    if form is None:
        raise LabkitError(f"has suffix {dst.suffix!r}, which names no form the lab writes.", dst,
                          f"End --out in .safetensors (or one of {', '.join(PICKLE_SUFFIXES)} for "
                          "a pickle), or give a folder name without a suffix.")
    return form


def _conversion(src: Path, dst: Path, args: argparse.Namespace) -> str:
    """The labkit.convert.forms function for SRC, DST and the options; raises IncompatibleModelError
    (a combination that makes no sense) or LabkitError (a DST that exists, without --overwrite)."""
    from labkit.errors import IncompatibleModelError, LabkitError

    src_form, dst_form = _source_form(src), _destination_form(dst)
    said = f"is {FORMS[src_form]} and --out {dst} names {FORMS[dst_form]}"
    routes = ROUTES.get((src_form, dst_form))
    if routes is None:
        raise IncompatibleModelError(f"{said}; the lab does not convert one into the other.", src,
                                     NO_ROUTE[(src_form, dst_form)])
    step = "strip_ema" if args.strip_ema else "fp16" if args.fp16 else "none"
    if step not in routes:
        message, hint = STEP_REFUSED[step]
        raise IncompatibleModelError(f"{said}; {message}", src, hint)
    if args.config is not None and dst_form != "folder":
        raise IncompatibleModelError(f"{said}; --config applies only when writing a folder from "
                                     "a single file.", src, "Leave --config out.")
    if dst.exists() and not args.overwrite:
        raise LabkitError("already exists.", dst,
                          "Pass --overwrite to replace it, or choose another --out.")
    return routes[step]


def _known_config(src: Path) -> Path:
    """The config folder of a single checkpoint: the demo world's for a demo base, else the lab's
    shipped one. Raises IncompatibleModelError when none fits (not a checkpoint, unknown family)."""
    from labkit.convert import shipped as model_configs
    from labkit.errors import IncompatibleModelError, LabkitError
    from labkit.files.opener import open_model
    from labkit.generate import pipelines

    model = open_model(src)
    try:
        model_configs.pipeline_class_name(model.base, model.kind)
        return pipelines.config_for(model)
    except LabkitError as e:
        raise IncompatibleModelError(f"has no config the lab knows ({e})", src,
                                     "Pass --config FOLDER, a diffusers folder of the same "
                                     "architecture.") from None


def _write(name: str, src: Path, dst: Path, args: argparse.Namespace) -> Path:
    """Call labkit.convert.forms's function `name` with what the options ask."""
    import torch

    from labkit.convert import forms as convert
    dtype = torch.float16 if args.fp16 else None
    calls: dict[str, Callable[[], Path]] = {
        "ckpt_to_safetensors": lambda: convert.ckpt_to_safetensors(
            src, dst, dtype=dtype, overwrite=args.overwrite),
        "to_fp16": lambda: convert.to_fp16(src, dst, overwrite=args.overwrite),
        "strip_ema": lambda: convert.strip_ema(src, dst, keep=args.strip_ema, dtype=dtype,
                                               overwrite=args.overwrite),
        "folder_to_single_file": lambda: convert.folder_to_single_file(
            src, dst, dtype=dtype, overwrite=args.overwrite),
        "single_file_to_folder": lambda: convert.single_file_to_folder(
            src, dst, config_folder=args.config or _known_config(src), overwrite=args.overwrite),
    }
    return calls[name]()


def _size(path: Path) -> int:
    """Bytes of a file, or of every file under a folder."""
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files)


def run_convert(path: str, args: argparse.Namespace) -> list[Outcome]:
    """Convert one SRC to --out as one record: path, output, conversion, n_tensors, bytes.
    Raises LabkitError (bad input or refused DST), UnsafeFileError (a pickle the scan refuses)."""
    from labkit.cli.result import OK, Outcome
    from labkit.errors import LabkitError
    from labkit.files.opener import open_model

    if len(args.paths) > 1:
        raise LabkitError(f"convert writes one SRC to --out; {len(args.paths)} were given.", path,
                          "Run convert once per source.")
    src, dst = Path(path), Path(args.out)
    name = _conversion(src, dst, args)
    written = _write(name, src, dst, args)
    record = {"path": path, "output": str(written), "conversion": name,
              "n_tensors": len(open_model(written).table), "bytes": _size(written)}
    return [Outcome(record, OK)]


def show_convert(records: list[dict[str, Any]]) -> str:
    """One line per conversion: what was written, how big, from what."""
    return "\n".join(f"wrote {r['output']} ({r['n_tensors']} tensors, {r['bytes'] / 1e6:.1f} MB) "
                     f"from {r['path']}" for r in records)
