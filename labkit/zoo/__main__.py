"""`python -m labkit.zoo build [--sdxl | --finetune] [--toy] [--out DIR] [--work DIR]`: build the
demo world (the SD1-style model and its adapters; with --sdxl the SDXL-style one, with --finetune
the SD1-style demo's full fine-tune: both need the first)."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from labkit.errors import LabkitError

ROOT = Path(__file__).resolve().parents[2]


def main(argv: list[str] | None = None) -> int:
    """Run the build; exit 0 when done, 2 with a message on a LabkitError."""
    import torch

    from labkit.zoo import data_dir
    from labkit.zoo.build import FULL_RECIPE, TOY_RECIPE, build
    from labkit.zoo.finetune import FULL_FINETUNE, TOY_FINETUNE, build_finetune
    from labkit.zoo.xl.build import build_xl

    parser = argparse.ArgumentParser(prog="python -m labkit.zoo")
    parser.add_argument("command", choices=["build"])
    parser.add_argument("--sdxl", action="store_true",
                        help="build the SDXL-style model (uses the built SD1-style VAE and encoder)")
    parser.add_argument("--finetune", action="store_true",
                        help="fine-tune the built SD1-style demo's whole UNet on a new look")
    parser.add_argument("--toy", action="store_true", help="the whole recipe at toy scale, seconds")
    parser.add_argument("--out", type=Path, help="output folder (default data/, toy: a temp folder)")
    parser.add_argument("--work", type=Path, help="checkpoints (default build/zoo-work/)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        # In the try: FULL_XL reuses the SD1-style demo in data_dir(), a LabkitError without it.
        from labkit.zoo.xl.recipe import FULL_XL, TOY_XL

        if args.toy:
            out = args.out or Path(tempfile.mkdtemp(prefix="labkit-zoo-toy-"))
            work = args.work or out / "work"
            if args.finetune:
                figures = build_finetune(out, work, TOY_FINETUNE, progress=False)
            else:
                figures = build_xl(out, work, TOY_XL) if args.sdxl else build(out, work, TOY_RECIPE)
        else:
            out = args.out or data_dir()
            if args.finetune:
                figures = build_finetune(out, args.work or ROOT / "build" / "zoo-work" / "finetune",
                                         FULL_FINETUNE)
            elif args.sdxl:
                figures = build_xl(out, args.work or ROOT / "build" / "zoo-work" / "xl", FULL_XL)
            else:
                figures = build(out, args.work or ROOT / "build" / "zoo-work" / "full", FULL_RECIPE)
    except LabkitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"out": str(out), "figures": figures}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
