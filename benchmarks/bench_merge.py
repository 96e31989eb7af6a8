"""Merging two ~2 GB fp16 SD1.5-layout checkpoints: labkit.surgery.merge (streamed, float32
maths, fsync'd atomic write, recipe with the sources' SHA256) against reading both files once
(a warm `cat A B > /dev/null`, time; and, for the write's share, copying A to the output with
an fsync) and against 1 GiB (peak memory, the lab's target), beside
the AUTOMATIC1111 way (load both state dicts, merge in memory, save_file).

The held figure counts only the reads; a merge also writes 2 GB and waits for the disk. So a
context line sets the merge against the least any tool does for it: read both files once and
write the output once with an fsync (B read by cat, A copied to the output by the kernel's copy,
then fsync'd), measured in the same repeats; and another gives the time of the output's write
alone done as the merge does it (A copied in 32 MB pieces, the kernel asked after each to write
them out and drop the ones before, then fsync'd): what no merge on this disk goes below.

The files are made here from the SD1.5 key table in tests/data/layouts by bench_stats.make_file
(random fp16 values) in a temp folder and removed after. Each side runs in its own subprocess,
which reports its time (imports excluded) and its peak RSS (resource.getrusage). The lab's first
run computes the sources' hashes (six of them, one read per file, then cached by labkit.hashes):
its time is shown on its own line; the repeats find them cached.
Run: python benchmarks/bench_merge.py [repeats]
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_stats import make_file
from loadavg import load_line

REPO = Path(__file__).resolve().parents[1]
MB = 2**20
GIB = 2**30

# Each side as a script run in a fresh interpreter: prints {"seconds", "peak_mb", "base_mb"}.
SIDES = {
    "lab": """
from labkit.surgery import merge
def work(a, b, out):
    merge(a, b, out=out, alpha=0.5, overwrite=True, progress=False)
""",
    "load_all": """
from safetensors.torch import load_file, save_file
def work(a, b, out):
    ta, tb = load_file(a), load_file(b)
    merged = {k: (v.float() * 0.5 + tb[k].float() * 0.5).to(v.dtype) if v.is_floating_point()
              else v for k, v in ta.items()}
    save_file(merged, out)
""",
}
MEASURE = """
import json, resource, sys, time
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
start = time.perf_counter()
work(sys.argv[1], sys.argv[2], sys.argv[3])
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "base_mb": base,
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def run_side(side: str, a: Path, b: Path, out: Path, env: dict[str, str]) -> dict:
    done = subprocess.run([sys.executable, "-c", SIDES[side] + MEASURE, str(a), str(b), str(out)],
                          cwd=REPO, capture_output=True, text=True, check=True, env=env)
    out.unlink(missing_ok=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def copy_seconds(src: Path, dst: Path) -> float:
    """Copy one source to the output and fsync it: the least a merge's write can cost."""
    start = time.perf_counter()
    shutil.copyfile(src, dst)
    with open(dst, "rb+") as f:
        os.fsync(f.fileno())
    seconds = time.perf_counter() - start
    dst.unlink()
    return seconds


def write_behind_seconds(src: Path, dst: Path, piece: int = 32 << 20) -> float:
    """Copy one source to the output as labkit.surgery.tensorio writes (a hint per piece to write
    it out and drop the one before it from the cache) and fsync it: the write's own floor."""
    view = memoryview(bytearray(piece))
    start = time.perf_counter()
    with open(src, "rb", buffering=0) as f, open(dst, "wb", buffering=0) as g:
        asked = dropped = written = 0
        while n := f.readinto(view):
            rest = view[:n]
            while rest:
                rest = rest[g.write(rest):]
            written += n
            if hasattr(os, "posix_fadvise"):
                os.posix_fadvise(g.fileno(), dropped, written - dropped, os.POSIX_FADV_DONTNEED)
            dropped, asked = asked, written
        os.fsync(g.fileno())
    seconds = time.perf_counter() - start
    dst.unlink()
    return seconds


def cat_seconds(*paths: Path) -> float:
    start = time.perf_counter()
    subprocess.run(["cat", *map(str, paths)], stdout=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def main(repeats: int = 3) -> int:
    with tempfile.TemporaryDirectory(prefix="labkit-bench-merge-") as tmp:
        a, b, out = Path(tmp) / "a.safetensors", Path(tmp) / "b.safetensors", Path(tmp) / "m.safetensors"
        largest = max(make_file(a), make_file(b))
        env = os.environ | {"LABKIT_CACHE": str(Path(tmp) / "cache")}
        size = a.stat().st_size + b.stat().st_size
        print(f"  files: 2 x {a.stat().st_size / 1e9:.2f} GB, largest tensor {largest / MB:.0f} MB")
        cat_seconds(a, b)  # warm the page cache
        first = run_side("lab", a, b, out, env)
        runs: dict[str, list] = {"cat": [], "copy": [], "floor": [], "behind": [], "lab": [],
                                 "load_all": []}
        for _ in range(repeats):  # alternate the sides in each repeat
            runs["cat"].append(cat_seconds(a, b))
            runs["copy"].append(copy_seconds(a, out))
            runs["floor"].append(cat_seconds(b) + copy_seconds(a, out))
            runs["behind"].append(write_behind_seconds(a, out))
            for side in SIDES:
                runs[side].append(run_side(side, a, b, out, env))
    cat, copy = statistics.median(runs["cat"]), statistics.median(runs["copy"])
    floor, behind = statistics.median(runs["floor"]), statistics.median(runs["behind"])
    print(f"  merge time, first run (hashing the sources for the cache of hashes): "
          f"{first['seconds'] / cat:.1f}x ({first['seconds']:.2f} s vs cat A B {cat:.2f} s, 1 run)")
    for side, label in (("lab", "merge"), ("load_all", "A1111-style load, merge, save")):
        secs = statistics.median(r["seconds"] for r in runs[side])
        peak = statistics.median(r["peak_mb"] for r in runs[side])
        base = statistics.median(r["base_mb"] for r in runs[side])
        target = " target <= 1.5" if side == "lab" else ""
        indent = "" if side == "lab" else "  "  # the A1111-style side is a reference
        print(f"{indent}{label} time: {secs / cat:.1f}x ({secs:.2f} s vs cat A B {cat:.2f} s, median of "
              f"{repeats}){target}")
        print(f"  {label} time vs copying A to OUT with fsync: {secs / copy:.1f}x ({secs:.2f} s vs "
              f"{copy:.2f} s, median of {repeats})")
        if side == "lab":
            print(f"  merge time vs reading A and B once and writing OUT once with fsync (cat B, "
                  f"copy A to OUT, fsync): {secs / floor:.1f}x ({secs:.2f} s vs {floor:.2f} s, "
                  f"median of {repeats})")
            print(f"  writing OUT alone as the merge writes it (A copied in 32 MB pieces with "
                  f"write-behind hints, fsync): {behind / cat:.1f}x cat A B ({behind:.2f} s vs "
                  f"{cat:.2f} s, median of {repeats}); the merge is {secs / behind:.1f}x it")
        target = " target <= 1" if side == "lab" else ""
        print(f"{indent}{label} peak memory: {peak * MB / GIB:.2f}x ({peak:.0f} MB vs 1 GiB, median of "
              f"{repeats}; {base:.0f} MB of it after imports; both files {size / MB:.0f} MB)"
              f"{target}")
    print(load_line())
    return 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]) if len(sys.argv) > 1 else 3))
