"""LoRA strength sweep: 5 strengths in one batched pass (labkit.lora.sweeping) vs the anchor, a loop
over `set_adapters` per strength, on the demo model (a tiny random model when the demo world is
not built), same seed and noise, 20 steps.

Run: .venv/bin/python benchmarks/bench_lora.py [--threads N]
(torch's thread count; on a busy shared CPU one thread avoids hand-off stalls)
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from loadavg import load_line

REPO = Path(__file__).resolve().parents[1]
REPEATS = 3
STRENGTHS = [0.0, 0.25, 0.5, 0.75, 1.0]
STEPS = 20
PROMPT = "a red circle"


def _seconds(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def alternate(lab: Callable[[], object], anchor: Callable[[], object]) -> tuple[float, float]:
    """Median seconds of lab and anchor, run alternately after one warm-up each."""
    lab(), anchor()
    times: dict[str, list[float]] = {"lab": [], "anchor": []}
    for _ in range(REPEATS):
        times["lab"].append(_seconds(lab))
        times["anchor"].append(_seconds(anchor))
    return statistics.median(times["lab"]), statistics.median(times["anchor"])


def _world(tmp: Path):
    """(pipeline, LoRA path, what) on the demo world, else a tiny model and a small LoRA."""
    from labkit.generate import pipelines
    try:
        from labkit import zoo
        folder = pipelines.demo_config("demo_sd1")
        lora = next(zoo.path(e["name"]) for e in zoo.manifest()
                    if e["kind"] == "lora" and e["base"] == "demo_sd1")
        what = "demo_sd1"
    except Exception:  # noqa: BLE001 - no demo world: fall back to a tiny model
        sys.path.insert(0, str(REPO))
        from diffusers import StableDiffusionPipeline

        from tests.fixtures.lora_samples import write_adapter
        from tests.fixtures.tiny_models import save_tiny

        folder, what = save_tiny(tmp / "tiny", "sd1"), "tiny random SD1"
        lora = write_adapter(tmp / "lora.safetensors",
                             StableDiffusionPipeline.from_pretrained(folder, safety_checker=None))
    return pipelines.load_pipeline(folder, progress=False), lora, what


def main() -> int:
    import torch

    from labkit import lora
    from labkit.lora.sweeping import image_size

    if "--threads" in sys.argv:
        torch.set_num_threads(int(sys.argv[sys.argv.index("--threads") + 1]))
    with tempfile.TemporaryDirectory() as tmp:
        pipe, path, what = _world(Path(tmp))
        pipe.set_progress_bar_config(disable=True)

        def run(batched: bool) -> Callable[[], object]:
            return lambda: lora.sweep(pipe, path, STRENGTHS, PROMPT, seed=0, steps=STEPS,
                                      batched=batched)

        lab, anchor = alternate(run(True), run(False))
        side = image_size(pipe, None)
        print(f"LoRA sweep {len(STRENGTHS)} strengths, {what} {side}px, "
              f"{STEPS} steps, {pipe.device}, {torch.get_num_threads()} threads "
              f"(batched vs set_adapters loop): {lab / anchor:.2f}x ({lab:.2f} s vs "
              f"{anchor:.2f} s, median of {REPEATS}) target <= 0.5", flush=True)
    print(load_line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
