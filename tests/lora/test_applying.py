"""labkit.lora.applying / remove / sweep on a tiny SD1 pipeline: exact restore, batched == loop."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from labkit import lora
from labkit.errors import CorruptFileError, IncompatibleModelError, LabkitError, NotAModelError
from labkit.lora.sweeping import noise
from tests.fixtures import wild_formats as W
from tests.fixtures.lora_samples import (
    single_thread,
    truncate,
    write_adapter,
    write_kohya_for,
    write_sdxl_lora,
    write_ti,
)
from tests.fixtures.tiny_models import save_tiny

STEPS = 2
TO_Q = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"


one_thread = pytest.fixture(scope="module", autouse=True)(single_thread)


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    from diffusers import StableDiffusionPipeline

    folder = save_tiny(tmp_path_factory.mktemp("tiny") / "sd1", "sd1")
    p = StableDiffusionPipeline.from_pretrained(folder, safety_checker=None)
    p.set_progress_bar_config(disable=True)
    return p


@pytest.fixture(scope="module")
def files(pipe, tmp_path_factory):
    folder = tmp_path_factory.mktemp("adapters")
    return {kind: write_adapter(folder / f"{kind}.safetensors", pipe, kind)
            for kind in ("lora", "peft", "loha", "lokr", "full")}


def image(pipe, prompt="a red circle", seed=1, side=32) -> np.ndarray:
    out = pipe(prompt, latents=noise(pipe, seed, side), num_inference_steps=STEPS, height=side,
               width=side)
    return np.asarray(out.images[0]).astype(int)


@pytest.fixture(scope="module")
def base(pipe):
    return image(pipe)


@pytest.mark.parametrize("kind", ["lora", "peft", "loha", "lokr", "full"])
def test_apply_changes_the_image_and_remove_restores_it_exactly(pipe, files, base, kind):
    handle = lora.apply(pipe, files[kind], 1.0)
    assert lora.applied(pipe) == [handle]
    assert np.abs(image(pipe) - base).max() > 0
    lora.remove(pipe, handle)
    assert lora.applied(pipe) == []
    assert np.array_equal(image(pipe), base)  # bit-identical
    assert type(pipe.unet.get_submodule(TO_Q)) is torch.nn.Linear  # peft wrappers gone


def test_the_patched_layer_computes_w_plus_strength_scale_up_down(pipe, files):
    t = load_file(str(files["lora"]))
    prefix = "lora_unet_" + TO_Q.replace(".", "_")
    up, down, alpha = t[f"{prefix}.lora_up.weight"], t[f"{prefix}.lora_down.weight"], t[f"{prefix}.alpha"]
    layer = pipe.unet.get_submodule(TO_Q)
    w = layer.weight.detach().clone()
    x = torch.randn(3, 5, w.shape[1])
    handle = lora.apply(pipe, files["lora"], 0.7)
    try:
        by_hand = x @ (w + 0.7 * (alpha / down.shape[0]) * up @ down).T
        with torch.no_grad():
            assert torch.allclose(pipe.unet.get_submodule(TO_Q)(x), by_hand, atol=1e-5)
    finally:
        lora.remove(pipe, handle)


def test_loha_branch_equals_the_merged_weight(pipe, files):
    layer = pipe.unet.get_submodule(TO_Q)
    x = torch.randn(2, 4, layer.weight.shape[1])
    with torch.no_grad():
        plain = layer(x)
    frame = lora.read(files["loha"], pipe).set_index("module")
    handle = lora.apply(pipe, files["loha"], 0.5)
    try:
        t = {k.split(".")[-1]: v for k, v in load_file(str(files["loha"])).items()
             if k.startswith(frame.loc[TO_Q, "prefix"] + ".")}
        delta = frame.loc[TO_Q, "scale"] * (t["hada_w1_a"] @ t["hada_w1_b"]) * (t["hada_w2_a"] @ t["hada_w2_b"])
        with torch.no_grad():
            assert torch.allclose(layer(x), plain + 0.5 * x @ delta.T, atol=1e-5)
    finally:
        lora.remove(pipe, handle)


def test_block_weights(pipe, files, base):
    names = lora.block_names(pipe)
    assert names == ["BASE", "IN01", "IN02", "MID", "OUT03", "OUT04", "OUT05"]
    for kind in ("lora", "loha"):
        handle = lora.apply(pipe, files[kind], 1.0, block_weights=[0.0] * len(names))
        try:
            assert np.abs(image(pipe) - base).max() <= 1  # every attention block off
        finally:
            lora.remove(pipe, handle)
    only_in = lora.apply(pipe, files["lora"], 1.0, block_weights={"IN01": 2.0, "BASE": 0.0})
    try:
        layer = pipe.unet.get_submodule(TO_Q)
        assert layer.scaling[only_in.name] == pytest.approx(2.0 * 0.5)
    finally:
        lora.remove(pipe, only_in)
    with pytest.raises(LabkitError, match="takes 7: BASE, IN01"):
        lora.apply(pipe, files["lora"], 1.0, block_weights=[1.0] * 17)
    assert lora.applied(pipe) == []


def test_two_adapters_then_remove_one_keeps_the_other(pipe, files, base):
    a = lora.apply(pipe, files["lora"], 1.0)
    only_a = image(pipe)
    b = lora.apply(pipe, files["loha"], 1.0)
    assert np.abs(image(pipe) - only_a).max() > 0
    lora.remove(pipe, b)
    assert np.abs(image(pipe) - only_a).max() <= 1
    lora.remove(pipe, a)
    assert np.array_equal(image(pipe), base)


@pytest.mark.parametrize("kind", ["peft", "lokr"])
def test_batched_sweep_equals_the_set_adapters_loop(pipe, files, kind):
    strengths = [0.0, 0.5, 1.0, 1.5]
    batched = lora.sweep(pipe, files[kind], strengths, "a red circle", seed=3, steps=STEPS)
    looped = lora.sweep(pipe, files[kind], strengths, "a red circle", seed=3, steps=STEPS,
                        batched=False)
    diffs = [np.abs(np.asarray(a).astype(int) - np.asarray(b)).max() for a, b in zip(batched, looped, strict=True)]
    assert max(diffs) <= 2
    assert np.abs(np.asarray(batched[0]).astype(int) - np.asarray(batched[-1])).max() > 0
    assert lora.applied(pipe) == []


def test_sweep_at_zero_is_the_base_image(pipe, files, base):
    zero = lora.sweep(pipe, files["lora"], [0.0, 1.0], "a red circle", seed=1, steps=STEPS)[0]
    assert np.abs(np.asarray(zero).astype(int) - base).max() <= 2


def test_xyz_grid_has_a_cell_per_row_and_column(pipe, files):
    grid = lora.xyz_grid(pipe, [files["lora"], files["loha"]], [0.0, 1.0], ["a", "b"], seeds=[1],
                         steps=STEPS)
    cell = 128
    assert grid.height >= 2 * cell and grid.width >= 4 * cell
    assert lora.applied(pipe) == []


def test_bad_inputs_give_clear_errors(pipe, tmp_path):
    with pytest.raises(IncompatibleModelError, match=r"LoRA is for sdxl \(SDXL-style: two text "
                       r"encoders, 768 \+ 1280 wide.*pipeline is demo_sd1 \(SD1-style: one "
                       r"text encoder, 16 wide"):
        lora.apply(pipe, write_sdxl_lora(tmp_path / "xl.safetensors"), 1.0)
    with pytest.raises(NotAModelError, match="textual inversion .*not a LoRA"):
        lora.apply(pipe, write_ti(tmp_path / "ti.safetensors"), 1.0)
    with pytest.raises(CorruptFileError, match="cut short"):
        lora.apply(pipe, truncate(write_adapter(tmp_path / "cut.safetensors", pipe)), 1.0)
    assert lora.applied(pipe) == []


def test_a_lora_for_wider_modules_names_both_shapes(pipe, tmp_path):
    from safetensors.torch import save_file

    name = "lora_unet_" + TO_Q.replace(".", "_")
    save_file({f"{name}.lora_down.weight": torch.zeros(2, 320), f"{name}.lora_up.weight": torch.zeros(320, 2)},
              str(tmp_path / "wide.safetensors"))
    with pytest.raises(IncompatibleModelError, match=r"shape \[320, 320\].*is \[8, 8\]"):
        lora.apply(pipe, tmp_path / "wide.safetensors", 1.0)


def test_sdxl_kohya_names_apply_and_sweep(tmp_path):
    from diffusers import StableDiffusionXLPipeline

    pipe = StableDiffusionXLPipeline.from_pretrained(save_tiny(tmp_path / "xl", "sdxl"))
    pipe.set_progress_bar_config(disable=True)
    path = write_kohya_for(tmp_path / "xl_lora.safetensors", pipe)
    frame = lora.read(path, pipe)
    assert frame.attrs["unmatched"] == [] and frame.attrs["family"] == "demo_sdxl"
    assert sorted(frame["block"]) == ["BASE", "BASE", "IN04", "OUT00"]
    assert sorted(frame["component"].unique()) == ["text_encoder", "text_encoder_2", "unet"]
    assert lora.block_names(pipe) == ["BASE", "IN04", "IN05", "MID", "OUT00", "OUT01", "OUT02"]
    strengths = [0.0, 1.0]
    batched = lora.sweep(pipe, path, strengths, "a cat", seed=1, steps=STEPS)
    looped = lora.sweep(pipe, path, strengths, "a cat", seed=1, steps=STEPS, batched=False)
    for a, b in zip(batched, looped, strict=True):
        assert np.abs(np.asarray(a).astype(int) - np.asarray(b)).max() <= 2
    assert np.abs(np.asarray(batched[0]).astype(int) - np.asarray(batched[1])).max() > 0
    base = lora.sweep(pipe, path, [0.0], "a cat", seed=1, steps=STEPS)[0]
    assert np.abs(np.asarray(base).astype(int) - np.asarray(batched[0])).max() <= 2
    assert type(pipe.text_encoder_2.get_submodule("text_model.encoder.layers.1.mlp.fc1")) is torch.nn.Linear


@pytest.fixture(scope="module")
def demo():
    from labkit import zoo
    from labkit.generate import pipelines
    pipe = pipelines.load_pipeline(zoo.path("demo_sd1"), progress=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.mark.parametrize("name", ["demo_lora_striped", "demo_lora_striped_peft",
                                  "demo_loha_outlined", "demo_lokr_twotone"])
def test_every_zoo_adapter_applies_and_comes_off_exactly(demo, name):
    from labkit import zoo
    before = image(demo, "a red circle on a white background", side=64)
    handle = lora.apply(demo, zoo.path(name), 1.0)
    assert np.abs(image(demo, "a red circle on a white background", side=64) - before).max() > 0
    lora.remove(demo, handle)
    assert np.array_equal(image(demo, "a red circle on a white background", side=64), before)


@pytest.mark.slow
def test_strength_curve_is_monotonic_on_the_demo_lora(demo):
    """The zoo's own measure and prompts (every colour x shape, trigger word last, guidance 5)."""
    from labkit import zoo
    from labkit.zoo.metrics import style_score
    from labkit.zoo.sample import colour_prompts

    prompts, _, seeds = colour_prompts(1, "striped")
    strengths = [0.0, 0.25, 0.5, 0.75, 1.0]
    handle = lora.apply(demo, zoo.path("demo_lora_striped"), 1.0)
    try:
        jobs = [lora.Job(p, seed, s) for s in strengths for p, seed in zip(prompts, seeds, strict=True)]
        images = lora.render(demo, handle, jobs, steps=20, guidance=5.0)
    finally:
        lora.remove(demo, handle)
    n = len(prompts)
    curve = [style_score([np.asarray(im) / 255 for im in images[i:i + n]], "striped")
             for i in range(0, len(images), n)]
    rise = curve[-1] - curve[0]
    assert rise > 0.5 * curve[0], curve  # the LoRA adds stripes
    assert all(b >= a - 0.1 * rise for a, b in pairwise(curve)), curve  # and more with strength


# ---- the SDXL-style demo: its LoRA applies; SD1-style and SDXL-style files never mix ----

@pytest.fixture(scope="module")
def demo_xl():
    from labkit import zoo
    from labkit.generate import pipelines
    pipe = pipelines.load_pipeline(zoo.path("demo_sdxl"), progress=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_the_demo_sdxl_lora_applies_to_both_encoders_and_comes_off_exactly(demo_xl):
    from labkit import zoo
    from labkit.embeddings.vectors import prompt_vectors

    prompt = "a red circle on a white background"
    before, encoded = image(demo_xl, prompt, side=64), prompt_vectors(demo_xl, prompt).per_encoder
    handle = lora.apply(demo_xl, zoo.path("demo_lora_striped_xl"), 1.0)
    try:
        after = prompt_vectors(demo_xl, prompt).per_encoder
        for enc in ("text_encoder", "text_encoder_2"):  # both encoders are patched
            assert not torch.allclose(after[enc], encoded[enc]), enc
        assert np.abs(image(demo_xl, prompt, side=64) - before).max() > 0
    finally:
        lora.remove(demo_xl, handle)
    assert np.array_equal(image(demo_xl, prompt, side=64), before)


def test_the_demo_sdxl_lora_encodes_as_its_weights_merged_by_hand(demo_xl):
    """kohya's lora_te1_/lora_te2_ names land on the right layers: the prompt encodes as with
    W + alpha/rank * up @ down written into copies of both encoders."""
    import copy

    from safetensors.torch import load_file

    from labkit import zoo
    file = zoo.path("demo_lora_striped_xl")
    tensors = load_file(str(file))
    merged = {name: copy.deepcopy(getattr(demo_xl, name)) for name in ("text_encoder", "text_encoder_2")}
    for prefix, name in (("lora_te1_", "text_encoder"), ("lora_te2_", "text_encoder_2")):
        modules = {("text_model." + n if not n.startswith("text_model.") else n).replace(".", "_"): m
                   for n, m in merged[name].named_modules()}
        downs = [k for k in tensors if k.startswith(prefix) and k.endswith(".lora_down.weight")]
        assert downs
        for key in downs:
            stem = key[: -len(".lora_down.weight")]
            down, up = tensors[key], tensors[stem + ".lora_up.weight"]
            with torch.no_grad():
                modules[stem[len(prefix):]].weight += float(tensors[stem + ".alpha"]) / down.shape[0] * up @ down

    def encode(pipe):
        with torch.no_grad():
            embeds, _, pooled, _ = pipe.encode_prompt(["a blue star, striped"], device="cpu",
                                                      do_classifier_free_guidance=False)
        return embeds, pooled

    base = encode(demo_xl)
    handle = lora.apply(demo_xl, file, 1.0)
    try:
        applied = encode(demo_xl)
    finally:
        lora.remove(demo_xl, handle)
    by_hand = copy.copy(demo_xl)
    by_hand.text_encoder, by_hand.text_encoder_2 = merged["text_encoder"], merged["text_encoder_2"]
    expected = encode(by_hand)
    for got, want, was in zip(applied, expected, base, strict=True):
        assert (want - was).abs().max() > 1e-2  # the merge changes the encoding
        assert torch.allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("name,into,said", [
    ("demo_lora_striped", "xl", "this LoRA is for demo_sd1 (SD1-style: one text encoder, 32 wide; "
     "UNet context 32; keys lora_te_"),
    ("demo_lora_striped_peft", "xl", "this LoRA is for demo_sd1 (SD1-style"),
    ("demo_loha_outlined", "xl", "this LoHa is for demo_sd1 (SD1-style"),
    ("demo_lora_striped_xl", "sd1", "this LoRA is for demo_sdxl (SDXL-style: two text encoders, "
     "32 + 48 wide; UNet context 80 with text_time; keys lora_te1_ / lora_te2_"),
])
def test_sd1_and_sdxl_style_loras_are_refused_by_the_other_family(demo, demo_xl, name, into, said):
    from labkit import zoo
    pipe = demo_xl if into == "xl" else demo
    with pytest.raises(IncompatibleModelError) as e:
        lora.apply(pipe, zoo.path(name), 1.0)
    message = str(e.value)
    assert said in message and str(zoo.path(name)) in message
    other = ("the pipeline is demo_sdxl (SDXL-style: two text encoders, 32 + 48 wide" if into == "xl"
             else "the pipeline is demo_sd1 (SD1-style: one text encoder, 32 wide")
    assert other in message
    base = "demo_sd1" if into == "xl" else "demo_sdxl"
    assert f"Use it with a {base} pipeline" in message and f"demo_config('{base}')" in message
    assert lora.applied(pipe) == []


# ---- Flux and SD3 adapters: the lab cannot run those families, and says so ----

@pytest.mark.parametrize(("builder", "family", "loader"), [
    (W.flux_lora_kohya, "Flux.1", "FluxPipeline"),
    (W.flux_lora_diffusers, "Flux.1", "FluxPipeline"),
    (W.flux_lora_xlabs, "Flux.1", "FluxPipeline"),
    (W.flux_lora_comfy, "Flux.1", "FluxPipeline"),
    (W.flux_lora_aitoolkit, "Flux.1", "FluxPipeline"),
    (W.sd3_lora, "SD3", "StableDiffusion3Pipeline"),
    (lambda: W.sd3_lora("sd35_large", te=True), "SD3", "StableDiffusion3Pipeline"),
])
def test_flux_and_sd3_adapters_are_refused_with_what_to_do(pipe, tmp_path, builder, family, loader):
    path = W.write_safetensors(tmp_path / "transformer_lora.safetensors", *builder())
    for attempt in (lambda: lora.apply(pipe, path, 1.0),
                    lambda: lora.sweep(pipe, path, [0.0, 1.0], "a cat", steps=STEPS)):
        with pytest.raises(IncompatibleModelError) as e:
            attempt()
        message = str(e.value)
        assert f"is for {family} (base " in message and "cannot run" in message
        assert str(path) in message and f"{loader}.load_lora_weights" in message
        assert "this pipeline is demo_sd1" in message  # named as the pipeline, never as the file's
    assert lora.applied(pipe) == []
    assert type(pipe.unet.get_submodule(TO_Q)) is torch.nn.Linear  # nothing was put on
