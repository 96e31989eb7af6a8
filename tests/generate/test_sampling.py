"""Generation on a tiny random SD1-style pipeline: seeds, schedulers, previews, teaching helpers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline
from PIL import Image

from labkit.errors import LabkitError
from labkit.generate import sampling
from tests.fixtures.tiny_models import save_tiny

SIZE = 32
FAST = {"steps": 3, "size": SIZE, "progress": False}


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    # One thread: on a busy 2-core machine torch's worker threads fight and a tiny model runs
    # 20x slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    folder = save_tiny(tmp_path_factory.mktemp("tiny") / "sd1", "sd1")
    p = StableDiffusionPipeline.from_pretrained(folder, local_files_only=True)
    p.set_progress_bar_config(disable=True)
    yield p
    torch.set_num_threads(threads)


def _pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.float64)


def test_same_seed_same_image_other_seed_other_image(pipe):
    a = sampling.generate(pipe, "a red square", seed=7, **FAST)[0]
    b = sampling.generate(pipe, "a red square", seed=7, **FAST)[0]
    c = sampling.generate(pipe, "a red square", seed=8, **FAST)[0]
    assert a.size == (SIZE, SIZE)
    assert np.array_equal(_pixels(a), _pixels(b))
    assert np.abs(_pixels(a) - _pixels(c)).mean() > 1.0


def test_n_images_and_native_size(pipe):
    images = sampling.generate(pipe, "x", n_images=2, steps=2, progress=False)
    side = 8 * 4  # the tiny UNet's sample_size x the tiny VAE's factor (3 levels: 4)
    assert sampling.native_size(pipe) == (side, side)
    assert len(images) == 2 and images[0].size == (side, side)


@pytest.mark.parametrize("name", sorted(sampling.SCHEDULERS))
def test_every_scheduler_in_the_table_runs(pipe, name):
    image = sampling.generate(pipe, "x", scheduler=name, **FAST)[0]
    cls_name, settings = sampling.SCHEDULERS[name]
    assert type(pipe.scheduler).__name__ == cls_name
    for key, value in settings.items():
        assert pipe.scheduler.config[key] == value
    assert image.size == (SIZE, SIZE)


def test_a_scheduler_setting_does_not_leak_into_the_next(pipe):
    first = sampling.generate(pipe, "x", scheduler="euler", seed=1, **FAST)[0]
    sampling.generate(pipe, "x", scheduler="dpm++", seed=1, **FAST)
    again = sampling.generate(pipe, "x", scheduler="euler", seed=1, **FAST)[0]
    assert pipe.scheduler.config.use_karras_sigmas is False
    assert np.array_equal(_pixels(first), _pixels(again))


def test_unknown_scheduler_names_the_known_ones(pipe):
    with pytest.raises(LabkitError, match="euler_a"):
        sampling.generate(pipe, "x", scheduler="heun?", **FAST)


def test_previews_and_steps_are_reported(pipe):
    previews, steps = [], []
    sampling.generate(pipe, "x", steps=6, size=SIZE, progress=False, preview_every=2,
                      on_preview=lambda i, img: previews.append((i, img)),
                      on_step=lambda i, total: steps.append((i, total)))
    assert [i for i, _ in previews] == [2, 4]
    assert all(isinstance(img, Image.Image) for _, img in previews)
    assert steps == [(i, 6) for i in range(1, 7)]


def test_previews_do_not_change_the_image(pipe):
    plain = sampling.generate(pipe, "x", seed=4, **FAST)[0]
    watched = sampling.generate(pipe, "x", seed=4, preview_every=1, on_preview=lambda i, im: None,
                                **FAST)[0]
    assert np.array_equal(_pixels(plain), _pixels(watched))


def test_denoise_strip_ends_with_the_image(pipe):
    strip = sampling.denoise_steps(pipe, "x", seed=2, steps=6, every=2, size=SIZE)
    final = sampling.generate(pipe, "x", seed=2, steps=6, size=SIZE, progress=False)[0]
    assert len(strip) == 3  # steps 2 and 4, then the final image
    assert np.array_equal(_pixels(strip[-1]), _pixels(final))


def test_compare_schedulers_gives_one_image_each(pipe):
    images = sampling.compare_schedulers(pipe, "x", seed=0, names=["euler", "ddim"], steps=3,
                                         size=SIZE)
    assert list(images) == ["euler", "ddim"]
    assert np.abs(_pixels(images["euler"]) - _pixels(images["ddim"])).mean() > 0


def test_encode_then_decode_gives_an_image_of_the_size(pipe):
    image = Image.new("RGB", (SIZE, SIZE), (200, 30, 30))
    latents = sampling.encode_image(pipe, image, size=SIZE)
    side = SIZE // pipe.vae_scale_factor
    assert latents.shape == (1, 4, side, side)
    assert sampling.decode_latents(pipe, latents).size == (SIZE, SIZE)
    assert sampling.decode_latents(pipe, latents[0]).size == (SIZE, SIZE)


def test_latent_channels_are_stretched_grey_images():
    latents = torch.arange(4 * 2 * 3, dtype=torch.float32).reshape(1, 4, 2, 3)
    channels = sampling.latent_channels(latents, scale=2)
    assert len(channels) == 4
    assert channels[0].mode == "L" and channels[0].size == (6, 4)
    assert channels[1].getextrema() == (0, 255)


def test_components_table_counts_parameters(pipe):
    table = sampling.components_table(pipe).set_index("part")
    assert table.loc["unet", "parameters"] == sum(p.numel() for p in pipe.unet.parameters())
    assert table.loc["unet", "dtype"] == "float32" and table.loc["unet", "device"] == "cpu"
    assert table.loc["tokenizer", "parameters"] == 0
    assert {"vae", "text_encoder", "scheduler"} <= set(table.index)


def test_size_and_crop_reach_an_sdxl_unet_and_are_refused_for_sd1(pipe, tmp_path):
    from diffusers import StableDiffusionXLPipeline

    xl = StableDiffusionXLPipeline.from_pretrained(save_tiny(tmp_path / "xl", "sdxl"),
                                                   local_files_only=True)
    plain = _pixels(sampling.generate(xl, "a red circle", seed=3, **FAST)[0])
    same = _pixels(sampling.generate(xl, "a red circle", seed=3, crop=(0, 0), **FAST)[0])
    cropped = _pixels(sampling.generate(xl, "a red circle", seed=3, original_size=(80, 80),
                                        crop=(16, 16), **FAST)[0])
    assert np.array_equal(plain, same)  # uncropped is the pipeline's own default
    assert np.abs(cropped - plain).max() > 0
    with pytest.raises(LabkitError, match="takes no size/crop conditioning"):
        sampling.generate(pipe, "a red circle", crop=(16, 16), **FAST)


def test_ddim_from_an_sdxl_euler_config_does_not_clip_latents(tmp_path):
    """SDXL folders ship an Euler config that says nothing of clip_sample; DDIM's own default
    (clip x0 to [-1, 1], meant for pixel models) turned the demo SDXL's images to noise."""
    from diffusers import EulerDiscreteScheduler

    class Pipe:  # set_scheduler only reads and swaps .scheduler
        scheduler = EulerDiscreteScheduler(beta_schedule="scaled_linear", steps_offset=1)

    p = Pipe()
    sampling.set_scheduler(p, "ddim")
    assert (p.scheduler.config.clip_sample, p.scheduler.config.set_alpha_to_one) == (False, False)


@pytest.mark.slow
def test_ddim_and_the_other_schedulers_draw_the_demo_sdxls_red_circle_red():
    from labkit.generate.pipelines import load_pipeline
    from labkit.zoo import path
    from labkit.zoo.metrics import dominant_hue, nearest_colour

    xl = load_pipeline(path("demo_sdxl"), progress=False)
    xl.set_progress_bar_config(disable=True)
    names = [n for n in sampling.SCHEDULERS if n != "pndm"]  # PNDM's colours: issue 21
    images = sampling.compare_schedulers(xl, "a red circle on a white background", names=names, steps=20)
    colours = {name: nearest_colour(dominant_hue(_pixels(im) / 255)) for name, im in images.items()}
    assert colours == dict.fromkeys(names, "red")
