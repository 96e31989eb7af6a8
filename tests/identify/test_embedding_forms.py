"""Textual inversions of every writer identified from their real key names and widths: the
one-encoder forms, SDXL's clip_l + clip_g, and the T5 era's clip_l + t5 (Flux), clip_l + clip_g
+ t5 (SD3) and t5 alone (SD3 or Flux: base unknown, and the evidence says why)."""

from __future__ import annotations

import random

import pytest

from labkit.identify import embedding_forms as F
from labkit.identify.identity import identify
from labkit.tensors import TensorInfo
from tests.fixtures.wild_formats import TI_KINDS, ti_safetensors


def _table(sd):
    return {k: TensorInfo(tuple(v.shape), "F32") for k, v in sd.items()}


def _ident(kind: str, metadata: dict[str, str] | None = None, n_vectors: int = 2):
    sd, meta = ti_safetensors(kind, n_vectors=n_vectors)
    return identify(_table(sd), meta if metadata is None else metadata)


EXPECTED = {  # TI_KINDS kind -> (base, base_source, the form in evidence, widths in evidence)
    "kohya": ("sd1", "metadata", "emb_params", "768 -> sd1"),
    "kohya_sd2": ("sd2", "metadata", "emb_params", "1024 -> sd2"),
    "diffusers": ("sd1", "dims", "diffusers {token: vector} ('<my-token>')", "768 -> sd1"),
    "sdxl": ("sdxl", "dims", "SDXL clip_l + clip_g", "768 + 1280 -> sdxl"),
    "flux": ("flux", "dims", "Flux clip_l + t5", "768 + 4096 -> flux"),
    "sd3": ("sd3", "dims", "SD3 clip_l + clip_g + t5", "768 + 1280 + 4096 -> sd3"),
    "t5": ("unknown", "none", "T5-XXL t5 alone", "4096 (4096 is T5-XXL's width"),
}


def test_every_ti_kind_of_the_fixtures_is_expected():
    assert set(EXPECTED) == set(TI_KINDS)


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_each_writer_form_is_a_textual_inversion_with_its_base(kind):
    identity = _ident(kind)
    base, source, form, widths = EXPECTED[kind]
    assert (identity.kind, identity.base, identity.variant, identity.base_source) == \
        ("textual_inversion", base, [], source)
    assert identity.evidence[0].startswith(f"textual inversion ({form}): 2 vector(s) of width "
                                           f"{widths}"), identity.evidence[0]


def test_t5_alone_says_why_its_base_is_unknown():
    evidence = _ident("t5").evidence
    assert "SD3 (its third text encoder) and Flux (its second) both use T5-XXL" in evidence[0]
    assert any(line.startswith("base not told") for line in evidence)


@pytest.mark.parametrize(("arch", "base"), [("flux-1-dev", "flux_dev"),
                                            ("flux-1-schnell", "flux_schnell"),
                                            ("stable-diffusion-3-medium", "sd3")])
def test_t5_alone_takes_its_base_from_metadata(arch, base):
    identity = _ident("t5", {"modelspec.architecture": f"{arch}/textual-inversion"})
    assert (identity.kind, identity.base, identity.base_source) == ("textual_inversion", base,
                                                                     "metadata")


def test_the_widths_beat_metadata_of_another_family():
    identity = _ident("flux", {"modelspec.architecture": "stable-diffusion-3-medium/lora"})
    assert (identity.base, identity.base_source) == ("flux", "dims")
    assert any("768 + 4096 are those of" in line and "the widths decide" in line
               for line in identity.evidence)


@pytest.mark.parametrize("kind", ["flux", "sd3", "t5"])
def test_more_rows_than_a_prompt_holds_is_no_embedding(kind):
    assert _ident(kind, n_vectors=76).kind == "unknown"
    assert _ident(kind, n_vectors=75).kind == "textual_inversion"


def test_unknown_widths_in_t5_era_keys_name_no_base():
    identity = identify({"clip_l": TensorInfo((1, 32), "F32"), "t5": TensorInfo((1, 64), "F32")})
    assert (identity.kind, identity.base) == ("textual_inversion", "unknown")
    assert "(no real text-encoder width)" in identity.evidence[0]


@pytest.mark.parametrize(("kind", "form", "parts"), [
    ("kohya", "kohya", [("text_encoder", ["emb_params"])]),
    ("diffusers", "diffusers", [("text_encoder", ["<my-token>"])]),
    ("sdxl", "sdxl", [("text_encoder", ["clip_l"]), ("text_encoder_2", ["clip_g"])]),
    ("flux", "flux", [("text_encoder", ["clip_l"]), ("text_encoder_2", ["t5"])]),
    ("sd3", "sd3", [("text_encoder", ["clip_l"]), ("text_encoder_2", ["clip_g"]),
                    ("text_encoder_3", ["t5"])]),
    ("t5", "t5", [("t5", ["t5"])]),  # SD3's text_encoder_3 or Flux's text_encoder_2: not told
])
def test_parts_name_the_component_each_key_feeds_in_any_key_order(kind, form, parts):
    keys = [k for k, _ in TI_KINDS[kind]]
    for _ in range(3):
        random.Random(len(keys)).shuffle(keys)
        assert F.ti_parts(keys) == (form, parts)


def test_the_one_encoder_pickle_forms_set_the_token_id_aside():
    assert F.ti_parts(["string_to_token.*", "string_to_param.*"]) == \
        ("a1111", [("text_encoder", ["string_to_param.*"])])
    assert F.ti_parts(["clip_l", "t5", "extra"]) is None
    assert F.ti_parts(["model.weight"]) is None


def test_a_table_is_ruled_out_at_its_first_keys_only_when_no_form_can_fit():
    tokens = [f"string_to_token.{i}" for i in range(9)]
    assert F.ti_parts(tokens + ["emb_params"]) == ("kohya", [("text_encoder", ["emb_params"])])
    many = [f"string_to_param.{i}" for i in range(9)]
    assert F.ti_parts(many)[0] == "a1111"
    assert F.ti_parts(many + ["model.weight"]) is None
    assert F.ti_parts([f"model.{i}.weight" for i in range(1000)]) is None


@pytest.mark.parametrize(("widths", "base"), [
    ((768,), "sd1"), ((1024,), "sd2"), ((768, 1280), "sdxl"), ((768, 4096), "flux"),
    ((768, 1280, 4096), "sd3"), ((4096,), None), ((1280, 768), None), ((4096, 768), None)])
def test_width_base_reads_the_tables(widths, base):
    assert F.width_base(widths) == base


@pytest.mark.parametrize(("metadata", "base"), [
    ({"modelspec.architecture": "flux-1-dev/textual-inversion"}, "flux_dev"),
    ({"modelspec.architecture": "flux-1-schnell/textual-inversion"}, "flux_schnell"),
    ({"ss_base_model_version": "flux1"}, "flux")])
def test_metadata_tells_the_flux_variant_the_widths_cannot(metadata, base):
    identity = _ident("flux", metadata)
    assert (identity.base, identity.base_source) == (base, "metadata")
    assert identity.evidence[0].endswith("768 + 4096 -> flux")
