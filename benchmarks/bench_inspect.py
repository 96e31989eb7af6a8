"""Inspect (header read + identify) of a 2 GB SD1.5-layout safetensors file vs safetensors' own
readers: safe_open(...).keys() (listing only) and safetensors.torch.load_file, both with its
default mmap backend (safetensors 0.8 maps the file: the data is read only when touched) and with
backend="pread" (reads every byte).

The file is zero-filled and sparse (the real SD1.5 key table, then a hole), made in a temp folder.
Usage: python benchmarks/bench_inspect.py
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

from loadavg import load_line  # noqa: E402
from safetensors import safe_open
from safetensors.torch import load_file

from labkit import open_model

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.fixtures.layout_files import load_layout, write_sparse  # noqa: E402

FAST_REPEATS, LOAD_REPEATS = 41, 3


def inspect(path: Path) -> tuple[str, str]:
    """What `labkit inspect` does: open_model (read and validate 8 + N bytes), then identify."""
    identity = open_model(path).identity
    return identity.kind, identity.base


def open_only(path: Path) -> int:
    """open_model alone: the header read, validated and tabled, without identify."""
    return len(open_model(path).table)


def keys(path: Path) -> list[str]:
    with safe_open(path, "pt") as f:
        return list(f.keys())


def load_pread(path: Path) -> dict:
    return load_file(path, backend="pread")


def read_bytes() -> int:
    """Bytes this process has read through read() so far (Linux /proc/self/io rchar)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    return 0


def bytes_read_by(fn, path: Path) -> int:
    """Bytes one call of fn reads through read()/pread() (mmap page-ins are not counted)."""
    before = read_bytes()
    fn(path)
    return read_bytes() - before


def alternate(lab, anchor, path: Path, repeats: int) -> tuple[float, float]:
    """Median seconds of lab and anchor, run alternately."""
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        for fn, out in ((lab, times[0]), (anchor, times[1])):
            start = time.perf_counter()
            fn(path)
            out.append(time.perf_counter() - start)
    return statistics.median(times[0]), statistics.median(times[1])


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = write_sparse(Path(tmp) / "sd15.safetensors", load_layout("sd15"))
        size = path.stat().st_size
        assert inspect(path) == ("checkpoint", "sd1")
        lab, anchor = alternate(inspect, keys, path, FAST_REPEATS)
        print(f"inspect_vs_safe_open_keys: {lab / anchor:.2f}x ({lab * 1e3:.2f} ms vs "
              f"{anchor * 1e3:.2f} ms, median of {FAST_REPEATS}) target <= 1.5")
        opened, anchor = alternate(open_only, keys, path, FAST_REPEATS)
        print(f"  of it, open_model alone (header read, validated, tabled): {opened * 1e3:.2f} ms "
              f"({opened / anchor:.2f}x keys' {anchor * 1e3:.2f} ms); identify the rest")
        for name, loader in (("load_file", load_file), ("load_file_pread", load_pread)):
            lab, anchor = alternate(inspect, loader, path, LOAD_REPEATS)
            print(f"  reference, {name}: {anchor * 1e3:.0f} ms ({anchor / lab:.0f}x inspect's "
                  f"{lab * 1e3:.2f} ms, median of {LOAD_REPEATS})")
        read = {fn.__name__: bytes_read_by(fn, path) for fn in (inspect, load_file, load_pread)}
        print(f"  bytes read (read/pread calls) from the {size:,}-byte file: "
              + ", ".join(f"{name} {n:,}" for name, n in read.items()))
        print(load_line())


if __name__ == "__main__":
    main()
