"""extract-lora: the demo LoRA baked into the demo checkpoint, pulled back out at its rank, baked
again reproduces the baked checkpoint; the file is kohya's and diffusers loads all of it."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from labkit import zoo
from labkit.errors import IncompatibleModelError
from labkit.lora import anatomy, open_adapter
from labkit.quiet import quiet_libraries
from labkit.surgery import bake, extract_lora, recipe_of
from labkit.surgery.extracting import extracted_modules
from tests.surgery import samples as S

LORA_RANK = 8  # the demo LoRA's rank


@pytest.fixture(scope="module")
def baked(tmp_path_factory):
    folder = tmp_path_factory.mktemp("extract")
    base = S.save(S.demo_tensors(), folder / "base.safetensors")
    tuned = folder / "baked.safetensors"
    bake(base, zoo.path("demo_lora_striped"), out=tuned, strength=1.0, progress=False)
    extracted = folder / "extracted.safetensors"
    report = extract_lora(base, tuned, out=extracted, rank=LORA_RANK, progress=False)
    return base, tuned, extracted, report


def test_extract_then_bake_reproduces_the_baked_checkpoint_within_one_percent(baked, tmp_path):
    base, tuned, extracted, _ = baked
    again = tmp_path / "again.safetensors"
    bake(base, extracted, out=again, strength=1.0, progress=False)
    b0, b1, b2 = (load_file(str(p)) for p in (base, tuned, again))
    changed = [k for k in b0 if not torch.equal(b0[k], b1[k])]
    assert changed
    for key, t in b1.items():
        if t.is_floating_point():
            assert float((b2[key] - t).norm()) <= 0.01 * float(t.norm()), key
    for key in changed:  # the change itself, not only the weight, comes back
        assert float((b2[key] - b0[key] - (t1 := b1[key] - b0[key])).norm()) <= 0.01 * float(t1.norm())


def test_the_extracted_lora_is_kohya_with_the_loras_modules_and_all_its_energy(baked):
    _, _, extracted, report = baked
    with safe_open(str(extracted), "pt") as f:
        keys, meta = list(f.keys()), f.metadata()
    assert all(k.startswith(("lora_unet_", "lora_te_")) for k in keys)
    assert {k.rsplit(".", 2)[-2] if k.endswith(".weight") else "alpha" for k in keys} == {
        "lora_down", "lora_up", "alpha"}
    original = {t.module for _, t in open_adapter(zoo.path("demo_lora_striped")).matched}
    assert set(report["module"].str.partition(".")[2]) == original
    assert report["rank"].eq(LORA_RANK).all() and report["energy_kept"].min() > 0.9999
    made = recipe_of(meta)
    assert made["operation"] == "extract-lora" and [s["role"] for s in made["sources"]] == [
        "BASE", "TUNED"]


def test_diffusers_loads_the_extracted_lora_onto_as_many_modules_as_it_has(baked):
    from labkit.generate import pipelines

    _, _, extracted, report = baked
    pipe = pipelines.load_pipeline(zoo.path("demo_sd1"), progress=False)
    with quiet_libraries():
        pipe.load_lora_weights(str(extracted), adapter_name="extracted")
    loaded = [name for component in (pipe.unet, pipe.text_encoder)
              for name, m in component.named_modules()
              if "extracted" in getattr(m, "lora_A", {})]
    assert len(loaded) == len(report) == len(open_adapter(extracted).matched)


def test_a_lower_rank_keeps_part_of_the_energy_and_says_how_much(baked, tmp_path):
    base, tuned, _, _ = baked
    report = extract_lora(base, tuned, out=tmp_path / "r2.safetensors", rank=2, progress=False)
    assert report["rank"].eq(2).all()
    for row in report.itertuples():
        s = torch.tensor(row.singular_values)
        assert row.energy_kept == pytest.approx(float(s[:2].square().sum() / s.square().sum()))
    assert 0.1 < report["energy_kept"].min() < 0.9999


def test_conv_rank_also_extracts_the_resnet_kernels_and_dynamic_rules_pick_ranks(tmp_path):
    a = S.demo_tensors()
    base, tuned = S.save(a, tmp_path / "a.safetensors"), S.save(S.tuned(a, 4), tmp_path / "t.safetensors")
    report = extract_lora(base, tuned, out=tmp_path / "c.safetensors", rank=4, conv_rank=2,
                          dynamic="sv_fro", ratio=0.5, progress=False)
    kernels = report[report["shape"].map(lambda s: len(s) == 4 and s[2:] == (3, 3))]
    assert len(kernels) and kernels["rank"].max() <= 2
    assert report["rank"].max() <= 4 and (report["fro_error"] <= 1).all()
    with safe_open(str(tmp_path / "c.safetensors"), "pt") as f:
        names = f.keys()
        downs = [f.get_slice(k).get_shape() for k in names if "resnets" in k and "lora_down" in k]
    assert any(len(s) == 4 and s[2:] == [3, 3] for s in downs)


def test_the_module_table_is_kohyas(tmp_path):
    modules = extracted_modules("demo_sd1", 8, None)
    assert all(".attentions." in n or n.startswith("text_encoder.") for n in modules)
    with_conv = extracted_modules("demo_sd1", 8, 4)
    assert any(".resnets." in n for n in with_conv) and len(with_conv) > len(modules)


def test_two_identical_checkpoints_have_nothing_to_extract(baked, tmp_path):
    base = baked[0]
    copy = S.save(load_file(str(base)), tmp_path / "copy.safetensors")
    with pytest.raises(IncompatibleModelError, match="nothing to extract"):
        extract_lora(base, copy, out=tmp_path / "x.safetensors", progress=False)
    assert not (tmp_path / "x.safetensors").exists()


def test_sdxl_fused_qkv_rows_bake_and_extract_as_their_three_modules(tmp_path):
    """OpenCLIP (SDXL's second text encoder) keeps q, k and v as thirds of one in_proj_weight:
    a LoRA on q_proj moves only the first third, and extraction finds the three modules again."""
    xl = {k: v.float() if v.is_floating_point() else v
          for k, v in load_file(str(zoo.path("demo_sdxl_single"))).items()}
    base = S.save(xl, tmp_path / "xl.safetensors")
    tuned = tmp_path / "xl_baked.safetensors"
    lora = zoo.path("demo_lora_striped_xl")
    baked = bake(base, lora, out=tuned, progress=False)
    fused = baked[baked["key"].str.endswith("in_proj_weight")]
    assert len(fused) == 6 and fused["key"].nunique() == 2  # q, k, v of two layers
    b0, b1 = load_file(str(base)), load_file(str(tuned))
    key = fused["key"].iloc[0]
    adapter = open_adapter(lora)
    thirds = {t.module.rsplit(".", 1)[-1]: m for m, t in adapter.matched
              if t.component == "text_encoder_2" and ".layers.0.self_attn." in t.module}
    width = b0[key].shape[0] // 3
    for i, name in enumerate(("q_proj", "k_proj", "v_proj")):
        change = anatomy.delta("lora", adapter.tensors(thirds[name]))
        rows = slice(i * width, (i + 1) * width)
        torch.testing.assert_close(b1[key][rows] - b0[key][rows], change, rtol=1e-4, atol=1e-6)
    report = extract_lora(base, tuned, out=tmp_path / "xl_x.safetensors", rank=8, progress=False)
    names = set(report["module"])
    assert {f"text_encoder_2.{t.module}" for _, t in adapter.matched
            if t.component == "text_encoder_2"} <= names
    with safe_open(str(tmp_path / "xl_x.safetensors"), "pt") as f:
        keys = f.keys()
        assert any(k.startswith("lora_te2_") for k in keys)
        assert any(k.startswith("lora_unet_input_blocks_") for k in keys)  # kohya's SDXL names
