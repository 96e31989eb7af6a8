"""lab.apply against diffusers' own `pipe.load_lora_weights`, for every key style the field writes.

Demo models (tiny, they generate on the CPU): the demo's kohya LoRA rewritten in each style
(labkit.lora.writing) gives the same image at strength 1 through the lab and through diffusers,
within 2/255 mean absolute difference on the same seed. Measured (diffusers 0.42.1, peft 0.21.2):
0/255 mean and max for every style on demo_sd1 and demo_sdxl, attention-only and full files; the
LoRA itself moves the image by 14-90/255 on average. diffusers fused (`fuse_lora`) against the lab:
0.0003/255 mean, 1/255 max on demo_sd1; 0 on demo_sdxl.

Real SD1, SD2 and SDXL (too big to generate here): skeleton pipelines with the real module names
(tests/fixtures/real_skeletons.py), LoRA files written by tests/fixtures/wild_formats.emit in each
style; every module's weight change through the lab equals diffusers' (measured: max and mean abs
diff 0, bit-identical, on 6-12 modules per file whose changes reach 1.6e-3 to 8.4e-3), and both
patch the same modules.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from labkit import lora
from labkit.lora import writing
from labkit.lora.sweeping import noise
from labkit.quiet import quiet_libraries
from tests.fixtures import real_skeletons as S
from tests.fixtures import wild_formats as W
from tests.fixtures.lora_samples import single_thread

one_thread = pytest.fixture(scope="module", autouse=True)(single_thread)

PROMPT, SEED, STEPS, SIDE = "a red circle on a white background, striped", 1, 8, 64
MEAN_TOLERANCE = 2  # of 255
# (key style, whole LoRA or its attention projections): the attention-processor era patched
# attention projections only.
CASES = [(style, full) for style in writing.KEY_STYLES for full in (False, True)
         if not (full and style == "attention processor")]


def render(pipe) -> np.ndarray:
    out = pipe(PROMPT, latents=noise(pipe, SEED, SIDE), num_inference_steps=STEPS, height=SIDE,
               width=SIDE, guidance_scale=5.0)
    return np.asarray(out.images[0]).astype(int)


def through_the_lab(pipe, path) -> np.ndarray:
    handle = lora.apply(pipe, path, 1.0)
    try:
        return render(pipe)
    finally:
        lora.remove(pipe, handle)


def through_diffusers(pipe, path) -> np.ndarray:
    with quiet_libraries():
        pipe.load_lora_weights(str(path))
    try:
        return render(pipe)
    finally:
        pipe.unload_lora_weights()


# Each demo model with its LoRA files as shipped: kohya (the first), and PEFT with diffusers'
# lora_adapter_metadata (alpha 4, rank 8).
DEMOS = {"demo_sd1": ("demo_lora_striped", "demo_lora_striped_peft"),
         "demo_sdxl": ("demo_lora_striped_xl",)}


@pytest.fixture(scope="module", params=list(DEMOS), ids=["sd1", "sdxl"])
def demo(request):
    """(pipeline, the demo kohya LoRA's parts, the base image, the shipped LoRA files)."""
    from labkit import zoo
    from labkit.generate import pipelines

    pipe = pipelines.load_pipeline(zoo.path(request.param), progress=False)
    pipe.set_progress_bar_config(disable=True)
    shipped = [zoo.path(name) for name in DEMOS[request.param]]
    parts = writing.adapter_parts(lora.open_adapter(shipped[0], pipe))
    return pipe, parts, render(pipe), shipped


@pytest.mark.parametrize(("style", "full"), CASES)
def test_the_demo_lora_in_each_style_makes_diffusers_image(demo, tmp_path, style, full):
    pipe, parts, base, _ = demo
    chosen = parts if full else writing.nameable(parts, "attention processor")
    path = writing.write_in_style(tmp_path / "lora.safetensors", chosen, style, writing.sgm_layout(pipe))
    lab, ours = through_the_lab(pipe, path), through_diffusers(pipe, path)
    assert np.abs(lab - base).mean() > 5 * MEAN_TOLERANCE  # the LoRA does change the image
    assert np.abs(lab - ours).mean() <= MEAN_TOLERANCE
    assert np.array_equal(render(pipe), base)  # both came off


def test_the_demo_files_as_shipped_make_diffusers_image(demo):
    pipe, _, base, shipped = demo
    for path in shipped:
        lab = through_the_lab(pipe, path)
        assert np.abs(lab - base).mean() > 5 * MEAN_TOLERANCE, path.name
        assert np.abs(lab - through_diffusers(pipe, path)).mean() <= MEAN_TOLERANCE, path.name


def test_diffusers_fused_lora_makes_the_lab_image_too(demo, tmp_path):
    """diffusers' default leaves the LoRA unfused (a branch, as the lab's); fused into the weights
    the image moves by rounding only."""
    pipe, parts, _, _ = demo
    path = writing.write_in_style(tmp_path / "lora.safetensors", parts, "kohya", writing.sgm_layout(pipe))
    lab = through_the_lab(pipe, path)
    with quiet_libraries():
        pipe.load_lora_weights(str(path))
    try:
        pipe.fuse_lora()
        fused = render(pipe)
        pipe.unfuse_lora()
    finally:
        pipe.unload_lora_weights()
    assert np.abs(lab - fused).mean() <= MEAN_TOLERANCE


# ---- real architectures: the weight change of every patched module ----

# (UNet style, UNet prefix, text-encoder style, kohya's text-encoder prefixes or None) of each
# writer; SDXL's attention-processor era (0.19-0.21) wrote its text encoders as lora_linear_layer.
WRITERS = {
    "kohya": ("kohya", "lora_unet.", "kohya", True),
    "attention processor": ("processor", "unet.", "te_processor", False),
    "LoRACompatibleLinear": ("compat", "unet.", "te_compat", False),
    "PEFT": ("peft", "unet.", "peft", False),
}
KOHYA_TE = {False: {"text_encoder": "lora_te."},  # one text encoder; two:
            True: {"text_encoder": "lora_te1.", "text_encoder_2": "lora_te2."}}
KOHYA_ALPHA, RANK = 1.0, 4  # kohya's alpha / rank scale (1/4) is part of what is compared


def wild_file(tmp_path, pipe, writer: str, full: bool):
    """The test LoRA for `pipe` written by wild_formats in one writer's style."""
    unet_style, unet_prefix, te_style, kohya = WRITERS[writer]
    two = getattr(pipe, "text_encoder_2", None) is not None
    te_style = "te_compat" if two and te_style == "te_processor" else te_style
    g, sd = W._gen(0), {}
    for component, module, shape in S.targets(pipe, full):
        kernel = int(len(shape) == 4)
        if component == "unet":
            style, prefix, name = unet_style, unet_prefix, module
        else:
            style, name = te_style, f"text_model.{module}"
            prefix = KOHYA_TE[two][component] if kohya else f"{component}."
        sd |= W.emit([(name, shape[1], shape[0], kernel)], style, prefix, RANK, g, torch.float32,
                     alpha=KOHYA_ALPHA)
    return W.write_safetensors(tmp_path / f"{writer}.safetensors", sd, {"format": "pt"})


def lab_deltas(pipe, path) -> dict:
    handle = lora.apply(pipe, path, 1.0, adapter_name="lab")
    try:
        return S.lora_deltas(pipe, "lab")
    finally:
        lora.remove(pipe, handle)


def diffusers_deltas(pipe, path) -> dict:
    with quiet_libraries():
        pipe.load_lora_weights(str(path), adapter_name="diffusers")
    try:
        return S.lora_deltas(pipe, "diffusers")
    finally:
        pipe.unload_lora_weights()


def deltas_of_both(pipe, path) -> tuple[dict, dict]:
    return lab_deltas(pipe, path), diffusers_deltas(pipe, path)


@pytest.fixture(scope="module", params=["sd1", "sd2", "sdxl"])
def skeleton(request):
    pipe = S.skeleton(request.param)
    S.materialize(pipe, S.unet_modules(request.param, full=True))
    return pipe


def assert_same_changes(lab: dict, theirs: dict, expected: int) -> None:
    assert len(lab) == expected and sorted(lab) == sorted(theirs)
    for name, delta in lab.items():
        assert delta.abs().max() > 1e-6, name  # the file does change this module
        assert torch.allclose(delta, theirs[name], rtol=1e-5, atol=1e-7), name


@pytest.mark.parametrize(("writer", "full"), CASES)
def test_each_module_changes_as_diffusers_changes_it(skeleton, tmp_path, writer, full):
    path = wild_file(tmp_path, skeleton, writer, full)
    lab, theirs = deltas_of_both(skeleton, path)
    assert_same_changes(lab, theirs, len(S.targets(skeleton, full)))


def test_peft_alphas_and_ranks_from_diffusers_metadata_change_what_diffusers_changes(skeleton, tmp_path):
    """diffusers >= 0.34 saves each component's LoraConfig in the `lora_adapter_metadata` header:
    here lora_alpha 8 over rank 4 (scale 2), and one UNet module at rank 8 with alpha 2."""
    import json

    found = S.targets(skeleton, full=True)
    odd = found[0][1]  # a UNet module
    g, sd, meta = W._gen(7), {}, {}
    for component in dict.fromkeys(c for c, _, _ in found):
        rows = [(m if c == "unet" else f"text_model.{m}", s[1], s[0], int(len(s) == 4))
                for c, m, s in found if c == component]
        ranks = {odd: 2 * RANK} if component == "unet" else {}
        sd |= W.emit(rows, "peft", f"{component}.", RANK, g, torch.float32, ranks=ranks)
        # target_modules by full name: leaf names ("to_q") would make peft wrap every to_q
        config = W.peft_config([m for c, m, _ in found if c == component], RANK, ranks,
                               {odd: 2} if component == "unet" else {}) | {"lora_alpha": 2 * RANK}
        meta |= {f"{component}.{k}": v for k, v in config.items()}
    path = W.write_safetensors(tmp_path / "peft_meta.safetensors", sd,
                               {"format": "pt", "lora_adapter_metadata": json.dumps(meta)})
    lab, theirs = deltas_of_both(skeleton, path)
    assert_same_changes(lab, theirs, len(found))
    layer = skeleton.unet.get_submodule(odd)
    down, up = sd[f"unet.{odd}.lora_A.weight"], sd[f"unet.{odd}.lora_B.weight"]
    by_hand = (2 / (2 * RANK)) * (up.flatten(1) @ down.flatten(1)).reshape(layer.weight.shape)
    assert torch.allclose(lab[f"unet.{odd}"], by_hand, atol=1e-7)  # the pattern's alpha and rank


def test_kohya_sdxl_original_block_names_change_the_modules_diffusers_changes(tmp_path):
    """sd-scripts writes SDXL UNet modules by their original names (lora_unet_input_blocks_4_1_...)."""
    pipe = S.skeleton("sdxl")
    S.materialize(pipe, S.unet_modules("sdxl", full=True))
    g = W._gen(3)
    parts = {f"{c}.{S.encoder_path(getattr(pipe, c), m) if c != 'unet' else m}":
             writing.LoraPart(torch.randn(RANK, s[1], *s[2:], generator=g) * 0.02,
                              torch.randn(s[0], RANK, *(1,) * (len(s) - 2), generator=g) * 0.02, 2.0)
             for c, m, s in S.targets(pipe, full=True)}
    path = writing.write_in_style(tmp_path / "sgm.safetensors", parts, "kohya", writing.sgm_layout(pipe))
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        names = list(f.keys())
    assert any(k.startswith("lora_unet_input_blocks_") for k in names)
    assert any(k.startswith("lora_te2_text_model_") for k in names)
    lab, theirs = deltas_of_both(pipe, path)
    assert_same_changes(lab, theirs, len(parts))


@pytest.mark.parametrize(("style", "prefix"), [("processor", ""), ("compat", "unet.unet.")])
def test_files_diffusers_no_longer_loads_change_what_their_loadable_form_changes(skeleton, tmp_path,
                                                                                 style, prefix):
    """Findings (diffusers 0.42.1): an unprefixed attention-processor file (`unet.save_attn_procs`,
    diffusers 0.12-0.23) loads nothing through `load_lora_weights` ("No LoRA keys associated to
    UNet2DConditionModel found with the prefix='unet'", a warning); a doubled `unet.unet.` prefix
    (the 0.22-0.24 training scripts) raises NoMatchingPeftModuleError. The lab applies both; each
    is compared with diffusers on the form its own warning asks for (one `unet.` prefix)."""
    unet = [(m, s[1], s[0], int(len(s) == 4)) for c, m, s in S.targets(skeleton, False) if c == "unet"]

    def write(name, key_prefix):
        sd = W.emit(unet, style, key_prefix, RANK, W._gen(5), torch.float32)
        return W.write_safetensors(tmp_path / f"{name}.safetensors", sd, {"format": "pt"})

    old, loadable = write("old", prefix), write("loadable", "unet.")
    assert_same_changes(lab_deltas(skeleton, old), diffusers_deltas(skeleton, loadable), len(unet))
