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
