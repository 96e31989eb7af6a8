"""Safe open of a .ckpt (labkit.safety.verdicts.safe_load: scan every pickle, then weights_only load, mmap)
vs torch.load(weights_only=True) alone, on a ~200 MB torch zip checkpoint with an SD-sized key
table (about 1,100 tensors), made in a temp folder and removed after.

A second line, context with no target, compares with torch.load(weights_only=True, mmap=True),
the loading mode the lab uses, so it shows the cost of the scan alone.
Usage: python benchmarks/bench_safe_load.py [size_mib]   (default 200)
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from loadavg import load_line  # noqa: E402

from labkit import safety  # noqa: E402

REPEATS = 7
N_TENSORS = 1100
TARGET = 1.2


def make_checkpoint(path: Path, size_mib: int) -> None:
    """An SD1-style checkpoint: state_dict of N_TENSORS float32 tensors, global_step, epoch."""
    per = size_mib * 1024 * 1024 // 4 // N_TENSORS
    state = {f"model.diffusion_model.block_{i}.weight": torch.full((per,), float(i))
             for i in range(N_TENSORS)}
    torch.save({"state_dict": state, "global_step": 470000, "epoch": 6}, path)


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    obj = fn()
    elapsed = time.perf_counter() - start
    assert len(obj["state_dict"]) == N_TENSORS
    return elapsed


def compare(name: str, lab: Callable[[], object], anchor: Callable[[], object],
            target: float | None) -> None:
    """Alternate lab and anchor REPEATS times (after one warm-up each) and print the median ratio
    (a line without a target is context, indented)."""
    lab(), anchor()
    lab_times, anchor_times = [], []
    for _ in range(REPEATS):
        lab_times.append(timed(lab))
        anchor_times.append(timed(anchor))
    lab_s, anchor_s = statistics.median(lab_times), statistics.median(anchor_times)
    goal = f" target <= {target}" if target is not None else ""
    print(f"{'' if target else '  '}{name}: {lab_s / anchor_s:.2f}x ({lab_s * 1000:.1f} ms vs "
          f"{anchor_s * 1000:.1f} ms, median of {REPEATS}){goal}")


def main() -> int:
    size_mib = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.ckpt"
        make_checkpoint(path, size_mib)
        compare("safe_load vs torch.load(weights_only=True)", lambda: safety.safe_load(path),
                lambda: torch.load(path, weights_only=True), TARGET)
        compare("safe_load vs torch.load(weights_only=True, mmap=True) (the lab's load mode: "
                "the rest is the scan)", lambda: safety.safe_load(path),
                lambda: torch.load(path, weights_only=True, mmap=True), None)
    print(load_line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
