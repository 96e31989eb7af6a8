"""The catalog of a shelf of 1,000 sparse real-layout files (labkit.inventory) vs the anchor,
safetensors' safe_open().keys() over the same files in one process; then cached vs cold, and
after touching 10 files vs cold. Every ratio is measured side by side in one run, alternating.

The files are the real key tables of data/layouts (SD1.5, SD2.1, SDXL, SD3, Flux checkpoints,
VAEs, LoRAs) as sparse files: headers and holes, so the disk holds only the headers. A cold run
identifies files of one table and metadata once per process; a last line shows a shelf whose
every file has its own metadata (as trained LoRAs do), where that sharing cannot help.

Usage: python benchmarks/bench_catalog.py [n_files]   (default 1000)
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from loadavg import load_line
from safetensors import safe_open

import labkit.files.opener  # noqa: F401 - imported before timing, as the anchor's library is
from labkit.inventory import catalog
from labkit.inventory.facts import forget_identities
from labkit.processes import cores

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.fixtures.layout_files import LAYOUT_NAMES, load_layout, write_sparse  # noqa: E402

REPEATS = 2
TOUCHED = 10
OWN_METADATA_SHARE = 5  # the own-metadata shelf is n_files / 5 files
EXPECTED = {"sd15": ("checkpoint", "sd1"), "sd15_inpaint": ("checkpoint", "sd1"),
            "sd15_vae": ("vae", None), "sd21": ("checkpoint", "sd2"),
            "sdxl_base": ("checkpoint", "sdxl"), "sdxl_refiner": ("checkpoint", "sdxl_refiner"),
            "sd3_medium": ("checkpoint", "sd3"), "flux_dev": ("unet", "flux_dev"),
            "flux_schnell": ("unet", "flux_schnell"), "sd15_lora_kohya": ("lora", "sd1"),
            "sdxl_lora_kohya": ("lora", "sdxl")}


def make_shelf(folder: Path, n: int, own_metadata: bool) -> list[Path]:
    """n sparse files, the layouts in turn; with `own_metadata` each carries its own entry."""
    folder.mkdir(parents=True)
    tables = {name: load_layout(name) for name in LAYOUT_NAMES}
    paths = []
    for i in range(n):
        name = LAYOUT_NAMES[i % len(LAYOUT_NAMES)]
        metadata = {"ss_training_started_at": str(1_700_000_000 + i)} if own_metadata else None
        paths.append(write_sparse(folder / f"{i:05d}_{name}.safetensors", tables[name], metadata))
    return paths


def anchor(paths: list[Path]) -> None:
    """What a user would write to list every file's keys with safetensors."""
    for path in paths:
        with safe_open(str(path), "np") as f:
            f.keys()


def timed(fn, *args, **kwargs) -> tuple[float, object]:
    forget_identities()  # each catalog run starts with none, as a new process would
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return time.perf_counter() - start, result


def check(frame, paths: list[Path]) -> None:
    """Every row's kind and base as its layout says (a VAE's base is not checked)."""
    wrong = []
    for path, kind, base in frame[["path", "kind", "base"]].itertuples(index=False):
        want_kind, want_base = EXPECTED[path.split("_", 1)[1].removesuffix(".safetensors")]
        if kind != want_kind or (want_base is not None and base != want_base):
            wrong.append(f"{path}: {kind}/{base}")
    if len(frame) != len(paths) or wrong:
        raise SystemExit(f"catalog wrong: {len(frame)} rows for {len(paths)} files; {wrong[:5]}")


def line(name: str, lab: list[float], base: list[float], what: str, target: float | None) -> None:
    ratio = statistics.median(lab) / statistics.median(base)
    goal = f" target <= {target}" if target is not None else ""
    indent = "" if target is not None else "  "  # a figure without a target is context
    print(f"{indent}{name}: {ratio:.3f}x ({what}: {statistics.median(lab):.2f} s vs "
          f"{statistics.median(base):.2f} s, median of {len(lab)}){goal}")


def touch(paths: list[Path]) -> None:
    for path in paths:
        st = path.stat()
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    jobs = cores()
    with tempfile.TemporaryDirectory() as tmp:
        shelf = Path(tmp) / "shelf"
        paths = make_shelf(shelf, n, own_metadata=False)
        own = make_shelf(Path(tmp) / "own", n // OWN_METADATA_SHARE, own_metadata=True)
        times: dict[str, list[float]] = {k: [] for k in (
            "anchor", "cold", "cold_1", "cached", "touched", "own_anchor", "own_cold")}
        for repeat in range(REPEATS):
            os.environ["XDG_CACHE_HOME"] = str(Path(tmp) / f"cache{repeat}")  # an empty cache
            os.environ.pop("LABKIT_CACHE_DIR", None)
            times["anchor"].append(timed(anchor, paths)[0])
            took, frame = timed(catalog, shelf, progress=False, jobs=jobs)
            times["cold"].append(took)
            check(frame, paths)
            times["cached"].append(timed(catalog, shelf, progress=False, jobs=jobs)[0])
            touch(paths[:: n // TOUCHED][:TOUCHED])
            times["touched"].append(timed(catalog, shelf, progress=False, jobs=jobs)[0])
            times["cold_1"].append(timed(catalog, shelf, progress=False, jobs=1, cache=False)[0])
            times["own_anchor"].append(timed(anchor, own)[0])
            times["own_cold"].append(timed(catalog, Path(tmp) / "own", progress=False, jobs=jobs,
                                           cache=False)[0])
    print(f"bench_catalog: {n} sparse files of {len(LAYOUT_NAMES)} real layouts, jobs {jobs}")
    print(f"  files per second: cold {n / statistics.median(times['cold']):.0f}, "
          f"safe_open().keys() {n / statistics.median(times['anchor']):.0f}, "
          f"cached {n / statistics.median(times['cached']):.0f}")
    line("cold_vs_safe_open_keys", times["cold"], times["anchor"], "catalog cold vs keys", 1.5)
    line("cached_vs_cold", times["cached"], times["cold"], "unchanged folder vs cold", 0.15)
    line("touched_10_vs_cold", times["touched"], times["cold"], f"{TOUCHED} files touched", 0.3)
    line("jobs_n_vs_jobs_1_cold", times["cold"], times["cold_1"], f"{jobs} processes vs 1", None)
    line("own_metadata_cold_vs_safe_open_keys", times["own_cold"], times["own_anchor"],
         f"{len(own)} files, each its own metadata", None)
    print(load_line())


if __name__ == "__main__":
    main()
