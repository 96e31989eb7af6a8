"""bake on the demo SD1 checkpoint: exactly the LoRA's modules move, each by
S * alpha/rank * up @ down (LoHa and LoKr by their anatomy delta); the rest is copied bit for bit."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from labkit import zoo
from labkit.errors import IncompatibleModelError, NotAModelError
from labkit.lora import anatomy, open_adapter
from labkit.stats.canonical import layout_of
from labkit.surgery import bake, recipe_of
from labkit.surgery.loras import place
from tests.surgery import samples as S


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return S.save(S.demo_tensors(), tmp_path_factory.mktemp("bake") / "a.safetensors")


def expected_changes(ckpt, lora, strength):
    """Single-file key -> the change the LoRA's modules make there, computed here from the file."""
    from labkit.files.opener import open_model

    adapter = open_adapter(lora, "demo_sd1")
    layout = layout_of(open_model(ckpt))
    changes = {}
    for module, target in adapter.matched:
        t = anatomy.as_float(adapter.tensors(module))
        if module.kind == "lora":
            alpha, rank = float(t["alpha"]), t["down"].shape[0]
            change = alpha / rank * (t["up"].flatten(1) @ t["down"].flatten(1))
        else:
            change = anatomy.delta(module.kind, t)
        changes[place(target.component, target.module, layout).key] = strength * change
    return changes


@pytest.mark.parametrize("name", ["demo_lora_striped", "demo_loha_outlined", "demo_lokr_twotone"])
def test_bake_moves_exactly_the_lora_modules_by_their_change(ckpt, tmp_path, name):
    lora = zoo.path(name)
    out = tmp_path / "baked.safetensors"
    report = bake(ckpt, lora, out=out, strength=0.7, progress=False)
    before, after = load_file(str(ckpt)), load_file(str(out))
    changes = expected_changes(ckpt, lora, 0.7)
    assert len(report) == len(changes) == len(open_adapter(lora).matched)
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert moved == set(changes)
    for key, change in changes.items():
        torch.testing.assert_close(after[key] - before[key], change.reshape(before[key].shape),
                                   rtol=1e-4, atol=1e-6)
    assert list(after) == list(before)


def test_a_negative_strength_moves_the_weights_the_other_way_by_as_much(ckpt, tmp_path):
    lora = zoo.path("demo_lora_striped")
    bake(ckpt, lora, out=tmp_path / "plus.safetensors", strength=0.5, progress=False)
    bake(ckpt, lora, out=tmp_path / "minus.safetensors", strength=-0.5, progress=False)
    base, plus, minus = (load_file(str(p)) for p in (ckpt, tmp_path / "plus.safetensors",
                                                     tmp_path / "minus.safetensors"))
    key = S.TEXT_Q
    torch.testing.assert_close(minus[key] - base[key], -(plus[key] - base[key]), rtol=1e-5, atol=1e-7)
    assert float((plus[key] - base[key]).abs().max()) > 1e-4


def test_bake_writes_in_the_checkpoints_dtype_and_records_the_recipe(tmp_path):
    half = S.save(S.demo_tensors(torch.float16), tmp_path / "a16.safetensors")
    out = tmp_path / "b16.safetensors"
    bake(half, zoo.path("demo_lora_striped"), out=out, strength=1.0, progress=False)
    after = load_file(str(out))
    assert {v.dtype for k, v in after.items() if k != S.POSITION_IDS} == {torch.float16}
    with safe_open(str(out), "pt") as f:
        made = recipe_of(f.metadata())
    assert made["operation"] == "bake" and made["parameters"]["strength"] == 1.0
    assert [s["role"] for s in made["sources"]] == ["CKPT", "LORA"]


def test_a_lora_for_another_base_is_refused_naming_both_files(ckpt, tmp_path):
    xl = zoo.path("demo_lora_striped_xl")
    with pytest.raises(IncompatibleModelError) as err:
        bake(ckpt, xl, out=tmp_path / "x.safetensors", progress=False)
    assert str(ckpt) in str(err.value) and str(xl) in str(err.value)


def test_arguments_given_the_wrong_way_round_are_refused(ckpt, tmp_path):
    lora = zoo.path("demo_lora_striped")
    with pytest.raises(IncompatibleModelError, match="given as model CKPT"):
        bake(lora, ckpt, out=tmp_path / "x.safetensors", progress=False)
    with pytest.raises(NotAModelError, match="not a LoRA-like file"):
        bake(ckpt, ckpt, out=tmp_path / "x.safetensors", progress=False)
    assert not (tmp_path / "x.safetensors").exists()


# DoRA: the demo LoRA (kohya names, 68 linear modules and 12 1x1 convs, several square) or its
# PEFT copy with one magnitude per module in each layout a trainer writes (samples.DORA_LAYOUTS).
DORAS = {"out": "demo_lora_striped", "in": "demo_lora_striped", "peft": "demo_lora_striped_peft"}


@pytest.fixture(scope="module")
def doras(ckpt, tmp_path_factory):
    folder = tmp_path_factory.mktemp("dora")
    return {layout: S.with_dora(zoo.path(name), ckpt, folder / f"dora_{layout}.safetensors", layout)
            for layout, name in DORAS.items()}


def decomposed(ckpt, dora, layout):
    """Single-file key -> the DoRA's weight at strength 1, computed here: m * V / ||V|| with
    V = W + (alpha/rank) * up @ down, the norm of each output row (axis 0) or input column
    (axis 1), plus float32's eps."""
    _, axis, _ = S.DORA_LAYOUTS[layout]
    weights = S.module_weights(dora, ckpt)
    adapter = open_adapter(dora, "demo_sd1")
    out = {}
    for module, _ in adapter.matched:
        t = anatomy.as_float(adapter.tensors(module))
        key, w = weights[next(k for k in module.keys.values() if k.endswith(S.DOWN_SUFFIXES))]
        alpha, rank = float(t["alpha"]), t["down"].shape[0]
        v = w + alpha / rank * (t["up"].flatten(1) @ t["down"].flatten(1)).reshape(w.shape)
        rows = v if axis == 0 else v.transpose(0, 1)
        norms = rows.reshape(rows.shape[0], -1).norm(dim=1) + torch.finfo(torch.float32).eps
        m = t["dora_scale"].flatten()
        shape = (-1, *[1] * (w.ndim - 1)) if axis == 0 else (1, -1, *[1] * (w.ndim - 2))
        out[key] = v * (m / norms).reshape(shape)
    return out


@pytest.mark.parametrize("layout", list(DORAS))
def test_a_dora_at_strength_1_gives_m_times_its_direction(ckpt, doras, tmp_path, layout):
    out = tmp_path / "baked.safetensors"
    report = bake(ckpt, doras[layout], out=out, strength=1.0, progress=False)
    before, after = load_file(str(ckpt)), load_file(str(out))
    expected = decomposed(ckpt, doras[layout], layout)
    assert len(expected) == len(report) == 80 and set(report["kind"]) == {"dora"}
    assert {k for k in before if not torch.equal(before[k], after[k])} == set(expected)
    for key, weight in expected.items():
        torch.testing.assert_close(after[key], weight, rtol=0, atol=1e-6)
    norms = report.set_index("key")["delta_norm"]
    assert float(norms.min()) > 1e-3  # each module moved: the check above had something to see
    with safe_open(str(out), "pt") as f:
        assert "m * (W + D)" in recipe_of(f.metadata())["parameters"]["formula"]


def test_a_dora_at_strength_0_leaves_every_tensor_as_it_was(ckpt, doras, tmp_path):
    out = tmp_path / "zero.safetensors"
    report = bake(ckpt, doras["in"], out=out, strength=0.0, progress=False)
    before, after = load_file(str(ckpt)), load_file(str(out))
    assert list(after) == list(before)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert len(report) == 80 and report["delta_norm"].eq(0).all()


def test_a_doras_strength_moves_the_weight_linearly_from_w_to_its_decomposed_weight(
        ckpt, doras, tmp_path):
    """ComfyUI's and A1111's W + S * (W' - W), not PEFT's m * (W + S*D) / ||W + S*D||."""
    bake(ckpt, doras["peft"], out=tmp_path / "one.safetensors", strength=1.0, progress=False)
    bake(ckpt, doras["peft"], out=tmp_path / "part.safetensors", strength=0.3, progress=False)
    base, one, part = (load_file(str(p)) for p in (ckpt, tmp_path / "one.safetensors",
                                                   tmp_path / "part.safetensors"))
    for key in decomposed(ckpt, doras["peft"], "peft"):
        torch.testing.assert_close(part[key], base[key] + 0.3 * (one[key] - base[key]),
                                   rtol=0, atol=1e-6)


def test_a_dora_magnitude_that_fits_no_axis_is_refused_before_writing(ckpt, doras, tmp_path):
    tensors = load_file(str(doras["out"]))
    key = next(k for k in tensors if k.endswith(".dora_scale"))
    tensors[key] = torch.ones(tensors[key].shape[0] + 1, 1)
    bad = S.save(tensors, tmp_path / "bad_dora.safetensors")
    with pytest.raises(IncompatibleModelError, match="does not hold one norm per") as err:
        bake(ckpt, bad, out=tmp_path / "x.safetensors", progress=False)
    assert key in str(err.value) and not (tmp_path / "x.safetensors").exists()


def effective_weights(ckpt, dora):
    """Single-file key -> each DoRA module's weight once peft has merged it into the layer
    (DoraLinearLayer / DoraConv2dLayer: m * (W + D) / ||W + D||, no eps) on a pipeline built from
    the checkpoint. The UNet's modules go through diffusers' load_lora_weights; the text
    encoder's through transformers' own peft loader, the magnitude key spelt
    `lora_magnitude_vector.weight` (diffusers 0.42.1 and transformers 5.24 leave a bare
    `lora_magnitude_vector` of a text encoder out, the magnitude at its initial value)."""
    import json

    from peft import LoraConfig

    from labkit.files.opener import open_model
    from labkit.generate import pipelines
    from labkit.quiet import quiet_libraries

    pipe = pipelines.load_pipeline(ckpt, device="cpu", dtype="fp32", progress=False)
    tensors = load_file(str(dora))
    with safe_open(str(dora), "pt") as f:
        config = json.loads(f.metadata()["lora_adapter_metadata"])
    text = {k[len("text_encoder."):] + (".weight" if k.endswith("vector") else ""): v
            for k, v in tensors.items() if k.startswith("text_encoder.")}
    with quiet_libraries():
        pipe.load_lora_weights(str(dora), adapter_name="unet_dora")
        pipe.text_encoder.load_adapter(adapter_name="text_dora", adapter_state_dict=text,
                                       peft_config=LoraConfig(
                                           r=config["text_encoder.r"], use_dora=True,
                                           lora_alpha=config["text_encoder.lora_alpha"],
                                           target_modules=sorted({k.rsplit(".", 2)[0] for k in text})))
    layout = layout_of(open_model(ckpt))
    out = {}
    for _, target in open_adapter(dora, "demo_sd1").matched:
        layer = getattr(pipe, target.component).get_submodule(target.module)
        name = "text_dora" if target.component == "text_encoder" else "unet_dora"
        assert layer.use_dora[name]
        layer.merge(adapter_names=[name])
        out[place(target.component, target.module, layout).key] = layer.base_layer.weight.detach()
    return out


@pytest.mark.filterwarnings("ignore:Already found a `peft_config`")
def test_a_baked_dora_equals_the_weights_peft_merges_on_a_pipeline(ckpt, doras, tmp_path):
    out = tmp_path / "baked.safetensors"
    bake(ckpt, doras["peft"], out=out, strength=1.0, progress=False)
    before, after = load_file(str(ckpt)), load_file(str(out))
    merged = effective_weights(ckpt, doras["peft"])
    assert len(merged) == 80
    for key, weight in merged.items():
        assert float((weight - before[key]).abs().max()) > 1e-3
        torch.testing.assert_close(after[key], weight, rtol=1e-5, atol=1e-6)
