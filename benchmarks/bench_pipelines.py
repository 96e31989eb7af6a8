"""Pipelines: `import labkit` time, generation through labkit vs diffusers called directly, and
(with a GPU, or --real-size on a CPU) SD1.5-size weights loaded offline from a real-layout file.

Run: .venv/bin/python benchmarks/bench_pipelines.py [--real-size]
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from loadavg import load_line

REPO = Path(__file__).resolve().parents[1]
LAYOUTS = REPO / "tests" / "data" / "layouts"
REPEATS = 7
PROMPT = "a red circle on a blue background"
SAFETENSORS_BYTES = {"F16": 2, "BF16": 2, "F32": 4, "I64": 8}


def _seconds(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def alternate(lab: Callable[[], object], anchor: Callable[[], object],
              repeats: int = REPEATS) -> tuple[float, float]:
    """Median seconds of lab and anchor, run alternately after one warm-up each."""
    lab(), anchor()
    times: dict[str, list[float]] = {"lab": [], "anchor": []}
    for _ in range(repeats):
        times["lab"].append(_seconds(lab))
        times["anchor"].append(_seconds(anchor))
    return statistics.median(times["lab"]), statistics.median(times["anchor"])


def report(name: str, lab: float, anchor: float, target: str, repeats: int = REPEATS,
           unit: str = "s") -> None:
    print(f"{name}: {lab / anchor:.2f}x ({lab:.3f} {unit} vs {anchor:.3f} {unit}, "
          f"median of {repeats}) target {target}", flush=True)


def bench_import() -> None:
    run = lambda code: lambda: subprocess.run([sys.executable, "-c", code], check=True)  # noqa: E731
    lab, anchor = alternate(run("import labkit"), run("pass"))
    report("import labkit (vs python -c pass)", lab, anchor, "<= 0.5 s for import labkit")


def _demo_pipeline():
    """The demo SD1 folder when the demo world is built, else a tiny random model."""
    from labkit.generate import pipelines
    try:
        folder, what = pipelines.demo_config("demo_sd1"), "demo_sd1"
    except Exception:  # noqa: BLE001 - no demo world: fall back to a tiny model
        sys.path.insert(0, str(REPO))
        from tests.fixtures.tiny_models import save_tiny

        folder, what = save_tiny(Path(tempfile.mkdtemp()) / "tiny", "sd1"), "tiny random SD1"
    return pipelines.load_pipeline(folder, progress=False), what


def bench_generate(pipe, what: str, steps: int = 20) -> None:
    import torch

    from labkit.generate import sampling
    sampling.set_scheduler(pipe, "euler")
    height, width = sampling.native_size(pipe)

    def lab() -> object:
        return sampling.generate(pipe, PROMPT, seed=0, steps=steps, progress=False)

    def anchor() -> object:
        generator = torch.Generator(device=pipe.device).manual_seed(0)
        return pipe(PROMPT, num_inference_steps=steps, guidance_scale=7.5, height=height,
                    width=width, generator=generator).images

    lab_s, anchor_s = alternate(lab, anchor)
    report(f"generate {what} {width}x{height} {steps} steps (vs pipe() directly)", lab_s,
           anchor_s, "<= 1.05")


def zero_file(layout: str, dst: Path) -> Path:
    """A header-compatible real-layout .safetensors of zeros (sparse: costs no disk)."""
    tensors = json.loads((LAYOUTS / layout).read_text())["tensors"]
    header, offset = {}, 0
    for key, info in tensors.items():
        n = SAFETENSORS_BYTES[info["dtype"]]
        for d in info["shape"]:
            n *= d
        header[key] = {"dtype": info["dtype"], "shape": info["shape"],
                       "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with open(dst, "wb") as f:
        f.write(len(raw).to_bytes(8, "little") + raw)
        f.truncate(8 + len(raw) + offset)
    return dst


def bench_real_size(gpu: bool) -> None:
    """Load SD1.5 from a real-layout zero file offline; with a GPU, fp16 512x512 it/s."""
    import torch

    from labkit.generate import pipelines, sampling
    with tempfile.TemporaryDirectory() as tmp:
        path = zero_file("sd15.json", Path(tmp) / "sd15_zeros.safetensors")
        start = time.perf_counter()
        pipe = pipelines.load_pipeline(path, progress=False)
        print(f"  real-size SD1.5 zero file: {type(pipe).__name__} built offline in "
              f"{time.perf_counter() - start:.1f} s on {pipe.device} ({pipe.unet.dtype})")
        if not gpu:
            return
        steps = 20

        def anchor() -> object:
            generator = torch.Generator(device="cuda").manual_seed(0)
            return pipe(PROMPT, num_inference_steps=steps, height=512, width=512,
                        generator=generator).images

        lab_s, anchor_s = alternate(
            lambda: sampling.generate(pipe, PROMPT, steps=steps, size=512, progress=False),
            anchor, repeats=3)
        print(f"SD1.5-size fp16 512x512 on {torch.cuda.get_device_name(0)}: "
              f"{(anchor_s / lab_s):.2f}x ({steps / lab_s:.2f} it/s vs {steps / anchor_s:.2f} "
              f"it/s, median of 3) target >= 0.97")


def main() -> int:
    import torch

    if not torch.cuda.is_available():
        # CPU runs share few cores with other work: one thread keeps the timings steady.
        torch.set_num_threads(1)
    bench_import()
    pipe, what = _demo_pipeline()
    pipe.set_progress_bar_config(disable=True)
    bench_generate(pipe, what)
    gpu = torch.cuda.is_available()
    if gpu or "--real-size" in sys.argv:
        bench_real_size(gpu)
    else:
        print("  real-size SD1.5 check: no GPU here; run with --real-size to load it on the CPU")
    print(load_line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
