"""Adapters identified by content in every writer's key style: kind, and base from the widths."""

import pytest

from labkit.identify import identify
from labkit.tensors import info_of
from tests.fixtures import wild_formats as W


def ident(fixture):
    sd, meta = fixture
    return identify({k: info_of(v) for k, v in sd.items()}, {k: str(v) for k, v in meta.items()})


@pytest.mark.parametrize("family", ["sd15", "sd21", "sdxl"])
@pytest.mark.parametrize("builder", [
    lambda f: W.lora_attn_processor(f), lambda f: W.lora_attn_processor(f, prefix=""),
    lambda f: W.lora_compatible(f), lambda f: W.lora_compatible(f, doubled=True),
    lambda f: W.lora_peft(f), lambda f: W.kohya_lora(f)])
def test_sd_loras_of_every_era_are_told_by_their_widths(family, builder):
    found = ident(builder(family))
    assert (found.kind, found.base) == ("lora", {"sd15": "sd1", "sd21": "sd2", "sdxl": "sdxl"}[family])


def test_the_writers_key_style_is_named_in_the_evidence():
    evidence = " ".join(ident(W.lora_attn_processor("sd21")).evidence)
    assert "diffusers attention processor (<= 0.20)" in evidence and "context 1024" not in evidence
    assert "input dim 1024 -> sd2" in evidence


@pytest.mark.parametrize("fixture", [
    W.flux_lora_diffusers(), W.flux_lora_aitoolkit(prefix="diffusion_model."), W.flux_lora_comfy(),
    W.flux_lora_xlabs(), W.flux_lora_diffusers(adapter_metadata=False, prefix="transformer.")])
def test_flux_loras_are_told_by_names_and_the_3072_width_not_dev_or_schnell(fixture):
    found = ident(fixture)
    assert (found.kind, found.base, found.base_source) == ("lora", "flux", "dims")
    assert any("input dim 3072 -> Flux.1 hidden width" in e for e in found.evidence)


def test_flux_metadata_names_the_variant_where_the_widths_agree():
    sd, meta = W.flux_lora_kohya()
    found = ident((sd, meta | {"ss_base_model_version": "", "modelspec.architecture": "flux-1-dev/lora"}))
    assert (found.base, found.base_source) == ("flux_dev", "metadata")


@pytest.mark.parametrize("variant", ["sd3_medium", "sd35_large"])
def test_sd3_loras_are_told_by_their_hidden_width_even_with_both_clip_encoders(variant):
    found = ident(W.sd3_lora(variant, te=True))
    assert (found.kind, found.base, found.base_source) == ("lora", "sd3", "dims")


def test_a_transformer_lora_of_unknown_width_is_not_given_a_base():
    sd, meta = W.sd3_lora()
    sd = {k: v[:, :100] if "lora_A" in k else v for k, v in sd.items()}
    found = ident((sd, meta))
    assert found.base == "unknown" and any("no known transformer width" in e for e in found.evidence)


def test_peft_dora_magnitudes_make_a_dora():
    sd, config = W.peft_adapter("unet", "sd15", dora=True)
    assert ident((sd, {})).kind == "dora"
