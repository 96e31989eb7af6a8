"""The model-surgery subcommands of `python -m labkit` (rows of labkit.cli.dispatch.COMMANDS).

`merge A B [C] --mode weighted|add_difference --alpha X [--blocks SPEC] -o OUT`,
`bake CKPT LORA --strength S -o OUT`, `extract-lora BASE TUNED --rank R -o OUT`,
`resize-lora LORA --rank R | --dynamic M --ratio X -o OUT`, `merge-lora A B... --weights W... -o OUT`.
Each takes all its paths at once (dispatch calls `run` once per path: the first call does the
work, the later ones add nothing), prints one record and exits 0 when OUT was written, 2 on bad
input (1 when a pickle source is judged unsafe). Sources are only read; OUT is written atomically.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from labkit.cli.result import Outcome

ALPHA_HELP = ("the share of B: weighted gives A*(1-X) + B*X, add_difference A + (B-C)*X "
              "(AUTOMATIC1111's multiplier M; ComfyUI's ModelMergeSimple ratio is the share of "
              "the first model, the opposite)")
BLOCKS_HELP = ("per-block alphas: one number per block (SD1: 26 = BASE,IN00..IN11,MID,OUT00..OUT11; "
               "SDXL: 20) or LABEL=X pairs such as BASE=0,IN04=0.3,OUT*=1; unnamed blocks take "
               "--alpha")
DYNAMIC_HELP = "pick each module's rank: sv_ratio, sv_fro or sv_cumulative (with --ratio)"
# subcommand -> how many paths it takes (least, most; None: no limit) and what they are.
PATHS: dict[str, tuple[int, int | None, str]] = {
    "merge": (2, 3, "A B [C]"),
    "bake": (2, 2, "CKPT LORA"),
    "extract-lora": (2, 2, "BASE TUNED"),
    "resize-lora": (1, 1, "LORA"),
    "merge-lora": (2, None, "A B [...]"),
}
_DONE = "_surgery_done"


def _output(parser: argparse.ArgumentParser, hashing: bool = False) -> None:
    parser.add_argument("-o", "--out", metavar="OUT", required=True,
                        help="the .safetensors file to write (never one of the sources)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    if hashing:
        parser.add_argument("--no-hash", dest="hashes", action="store_false",
                            help="leave the sources' SHA256 out of the recipe (hashing reads each "
                                 "checkpoint once more the first time)")


def _rank_rule(parser: argparse.ArgumentParser, rank_default: int | None) -> None:
    parser.add_argument("--rank", type=int, default=rank_default,
                        help="the rank kept per module (with --dynamic: its cap)")
    parser.add_argument("--dynamic", choices=("sv_ratio", "sv_fro", "sv_cumulative"),
                        default=None, help=DYNAMIC_HELP)
    parser.add_argument("--ratio", type=float, default=None,
                        help="the dynamic method's target (sv_fro 0.9 keeps 90%% of the norm)")


def merge_arguments(parser: argparse.ArgumentParser) -> None:
    """--mode, --alpha, --blocks, --ema, -o and --overwrite for `merge`."""
    parser.add_argument("--mode", choices=("weighted", "add_difference"), default="weighted")
    parser.add_argument("--alpha", type=float, default=0.5, help=ALPHA_HELP)
    parser.add_argument("--blocks", metavar="SPEC", default=None, help=BLOCKS_HELP)
    parser.add_argument("--ema", choices=("drop", "keep"), default="drop",
                        help="model_ema. copies: dropped (default) or merged as any weight")
    _output(parser, hashing=True)


def bake_arguments(parser: argparse.ArgumentParser) -> None:
    """--strength, -o and --overwrite for `bake`."""
    parser.add_argument("--strength", type=float, default=1.0,
                        help="S in W + S * (alpha/rank) * up @ down (the weights move by S; a DoRA: W + S * (W' - W))")
    _output(parser, hashing=True)


def extract_arguments(parser: argparse.ArgumentParser) -> None:
    """--rank, --conv-rank, --dynamic, --ratio, --min-diff, -o and --overwrite for
    `extract-lora`."""
    _rank_rule(parser, 8)
    parser.add_argument("--conv-rank", type=int, default=None,
                        help="also extract the resnets' convs (3x3 kernels at this rank)")
    parser.add_argument("--min-diff", type=float, default=0.0,
                        help="leave out modules whose change is at most this everywhere")
    _output(parser, hashing=True)


def resize_arguments(parser: argparse.ArgumentParser) -> None:
    """--rank, --dynamic, --ratio, -o and --overwrite for `resize-lora`."""
    _rank_rule(parser, None)
    _output(parser)


def merge_lora_arguments(parser: argparse.ArgumentParser) -> None:
    """--weights, --rank, -o and --overwrite for `merge-lora`."""
    parser.add_argument("--weights", type=float, nargs="+", default=None,
                        help="one weight per LoRA (default 1 each): the sum of w_i * delta_i")
    parser.add_argument("--rank", type=int, default=None,
                        help="merge by SVD to this rank (default: exact, ranks concatenated)")
    _output(parser)


def _check_paths(command: str, paths: list[str]) -> None:
    from labkit.errors import LabkitError

    least, most, what = PATHS[command]
    if len(paths) < least or (most is not None and len(paths) > most):
        raise LabkitError(f"{command} takes {what}; {len(paths)} paths were given.", paths[0],
                          f"Run `python -m labkit {command} --help`.")


def _progress() -> bool:
    return sys.stderr.isatty()


def _merge(args: argparse.Namespace) -> dict[str, Any]:
    from labkit.surgery import merging

    paths = args.paths + [None] * (3 - len(args.paths))
    report = merging.merge(*paths, out=args.out, mode=args.mode, alpha=args.alpha,
                           blocks=args.blocks, ema=args.ema, overwrite=args.overwrite,
                           progress=_progress(), hashes=args.hashes)
    return merging.summary(report)


def _bake(args: argparse.Namespace) -> dict[str, Any]:
    from labkit.surgery import bake

    report = bake(*args.paths, out=args.out, strength=args.strength, overwrite=args.overwrite,
                  progress=_progress(), hashes=args.hashes)
    return {"output": report.attrs["output"], "strength": report.attrs["strength"],
            "n_modules": len(report), "n_tensors": report.attrs["n_tensors"],
            "relative_change_max": float(report["relative_change"].max())}


def _energy(report: Any) -> dict[str, Any]:
    from labkit.surgery.loras import energy_summary

    return {"output": report.attrs["output"], **energy_summary(report)}


def _extract(args: argparse.Namespace) -> dict[str, Any]:
    from labkit.surgery import extract_lora

    report = extract_lora(*args.paths, out=args.out, rank=args.rank, conv_rank=args.conv_rank,
                          dynamic=args.dynamic, ratio=args.ratio, min_diff=args.min_diff,
                          overwrite=args.overwrite, progress=_progress(), hashes=args.hashes)
    return _energy(report) | {"n_unchanged": len(report.attrs["skipped"])}


def _resize(args: argparse.Namespace) -> dict[str, Any]:
    from labkit.surgery import resize_lora

    return _energy(resize_lora(args.paths[0], out=args.out, rank=args.rank, dynamic=args.dynamic,
                               ratio=args.ratio, overwrite=args.overwrite, progress=_progress()))


def _merge_lora(args: argparse.Namespace) -> dict[str, Any]:
    from labkit.surgery import merge_lora

    report = merge_lora(args.paths, out=args.out, weights=args.weights, rank=args.rank,
                        overwrite=args.overwrite, progress=_progress())
    return _energy(report) | {"exact": report.attrs["exact"]}


def _once(command: str, work: Callable[[argparse.Namespace], dict[str, Any]]
          ) -> Callable[[str, argparse.Namespace], list[Outcome]]:
    """A dispatch `run` that does the work on its first call, with every path, and adds nothing
    on the later ones. Raises what the work raises (LabkitError and its kinds)."""
    def run(path: str, args: argparse.Namespace) -> list[Outcome]:
        from labkit.cli.result import OK, Outcome

        if getattr(args, _DONE, False):
            return []
        setattr(args, _DONE, True)
        _check_paths(command, args.paths)
        return [Outcome({"path": path, "command": command, "sources": list(args.paths),
                         **work(args)}, OK)]
    return run


def show(records: list[dict[str, Any]]) -> str:
    """One line per surgery: what was written, from what, and its figures."""
    lines = []
    for r in records:
        facts = ", ".join(f"{k} {v}" for k, v in r.items()
                          if k not in ("path", "command", "sources", "output"))
        lines.append(f"{r['command']}: wrote {r['output']} from {' + '.join(r['sources'])} "
                     f"({facts})")
    return "\n".join(lines)


# subcommand -> (help, add_arguments, run, show), the fields of labkit.cli.dispatch.Command.
COMMANDS: dict[str, tuple[str, Callable[..., Any], Callable[..., Any], Callable[..., Any]]] = {
    "merge": ("A B [C]: merge checkpoints: weighted sum A*(1-X)+B*X or add difference A+(B-C)*X, "
              "per-block alphas, streamed", merge_arguments, _once("merge", _merge), show),
    "bake": ("CKPT LORA: merge a LoRA (LoCon, LoHa, LoKr, DoRA) into a checkpoint's weights at a strength",
             bake_arguments, _once("bake", _bake), show),
    "extract-lora": ("BASE TUNED: a kohya LoRA from TUNED - BASE by truncated SVD per module",
                     extract_arguments, _once("extract-lora", _extract), show),
    "resize-lora": ("LORA: the LoRA at a lower rank (fixed or dynamic), with the energy each keeps",
                    resize_arguments, _once("resize-lora", _resize), show),
    "merge-lora": ("A B [...]: several LoRAs as one: exact (ranks concatenated) or by SVD to a rank",
                   merge_lora_arguments, _once("merge-lora", _merge_lora), show),
}
