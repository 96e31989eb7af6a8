"""labkit.lora.sweeping on the demo world: strength 0 is the base model's own image, and each
adapter's change grows with its strength."""

from __future__ import annotations

import numpy as np
import pytest

from labkit import zoo
from labkit.generate.pipelines import load_pipeline
from labkit.lora.sweeping import noise, sweep
from tests.fixtures.lora_samples import single_thread

one_thread = pytest.fixture(scope="module", autouse=True)(single_thread)
STRENGTHS = (0.0, 0.5, 1.0)
STEPS = 8


@pytest.fixture(scope="module")
def pipe():
    return load_pipeline(zoo.path("demo_sd1"), device="cpu", progress=False)


def _base_image(pipe, prompt: str, seed: int) -> np.ndarray:
    side = pipe.unet.config.sample_size * pipe.vae_scale_factor
    out = pipe(prompt=prompt, latents=noise(pipe, seed, side), num_inference_steps=STEPS)
    return np.asarray(out.images[0], dtype=np.int16)


@pytest.mark.slow
@pytest.mark.parametrize(("name", "trigger"), [("demo_lora_striped", "striped"),
                                               ("demo_loha_outlined", "outlined"),
                                               ("demo_lokr_twotone", "twotone")])
def test_strength_zero_is_the_base_and_the_change_grows(pipe, name, trigger):
    prompt, seed = f"a red circle on a white background, {trigger}", 3
    base = _base_image(pipe, prompt, seed)
    images = [np.asarray(im, dtype=np.int16)
              for im in sweep(pipe, zoo.path(name), STRENGTHS, prompt, seed, steps=STEPS)]
    assert np.abs(images[0] - base).max() <= 1  # the same image, up to the batch's rounding
    change = [float(np.abs(im - base).mean()) for im in images]
    assert change[0] < 0.5 < change[1] < change[2], change
    assert np.array_equal(_base_image(pipe, prompt, seed), base)  # the adapter came off again
