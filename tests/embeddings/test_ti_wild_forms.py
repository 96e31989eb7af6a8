"""Textual inversions of every writer read to their vectors, per pipeline component, from the real
key names and widths (tests/fixtures/wild_formats.py); the SD3 / Flux forms are read but their
loading is refused in plain words; the example files of labkit.embeddings.forms are the real
layouts."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import labkit
from labkit.embeddings import forms_table, load_textual_inversion, read_textual_inversion
from labkit.embeddings.forms import EXAMPLES, write_examples
from labkit.errors import IncompatibleModelError, LabkitError
from labkit.safety.verdicts import scan
from tests.fixtures.ti_numpy1 import write_numpy1_step
from tests.fixtures.ti_samples import tiny_pipeline
from tests.fixtures.wild_formats import TI_KINDS, ti_a1111, ti_ldm, ti_safetensors, write_torch

# TI_KINDS kind -> (form, {vectors key: (file key, width)}, base)
READ = {
    "kohya": ("kohya", {"text_encoder": ("emb_params", 768)}, "sd1"),
    "kohya_sd2": ("kohya", {"text_encoder": ("emb_params", 1024)}, "sd2"),
    "diffusers": ("diffusers", {"text_encoder": ("<my-token>", 768)}, "sd1"),
    "sdxl": ("sdxl", {"text_encoder": ("clip_l", 768), "text_encoder_2": ("clip_g", 1280)},
             "sdxl"),
    "flux": ("flux", {"text_encoder": ("clip_l", 768), "text_encoder_2": ("t5", 4096)}, "flux"),
    "sd3": ("sd3", {"text_encoder": ("clip_l", 768), "text_encoder_2": ("clip_g", 1280),
                    "text_encoder_3": ("t5", 4096)}, "sd3"),
    "t5": ("t5", {"t5": ("t5", 4096)}, "unknown"),
}
# The families the refusal names, per form the lab cannot load.
REFUSED = {"flux": "Flux.1 (dev or schnell", "sd3": "SD3 (CLIP-L + CLIP-G + T5-XXL",
           "t5": "SD3 or Flux.1 (a T5-XXL part alone"}


def _write(tmp_path: Path, kind: str, dtype: torch.dtype = torch.float32) -> tuple[Path, dict]:
    sd, meta = ti_safetensors(kind, n_vectors=3, dtype=dtype)
    path = tmp_path / f"{kind}.safetensors"
    save_file(sd, path, meta or None)
    return path, sd


@pytest.fixture(scope="module")
def sd1(tmp_path_factory):
    return tiny_pipeline(tmp_path_factory.mktemp("sd1") / "pipe", "sd1")


def test_every_ti_kind_of_the_fixtures_is_read():
    assert set(READ) == set(TI_KINDS)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("kind", sorted(READ))
def test_each_safetensors_form_reads_its_vectors_per_component(tmp_path, kind, dtype):
    path, sd = _write(tmp_path, kind, dtype)
    ti = read_textual_inversion(path)
    form, parts, base = READ[kind]
    assert (ti.form, ti.base, ti.n_vectors) == (form, base, 3)
    assert ti.parts == {part: key for part, (key, _) in parts.items()}
    assert ti.widths == {part: width for part, (_, width) in parts.items()}
    for part, (key, _) in parts.items():
        assert ti.vectors[part].dtype == torch.float32
        assert torch.equal(ti.vectors[part], sd[key].float())
    assert ti.loadable == (kind not in REFUSED)


@pytest.mark.parametrize("kind", sorted(REFUSED))
def test_loading_an_sd3_or_flux_form_is_refused_naming_the_family(tmp_path, sd1, kind):
    ti = read_textual_inversion(_write(tmp_path, kind)[0])
    rows = sd1.text_encoder.get_input_embeddings().weight.shape[0]
    for pipe in (sd1, object()):  # object(): stands for the SD3 / Flux pipeline the lab lacks
        with pytest.raises(IncompatibleModelError) as e:
            load_textual_inversion(pipe, ti)
        message = str(e.value)
        assert f"this embedding is for {REFUSED[kind]}" in message
        assert "4096-wide t5" in message and f"{kind}.safetensors" in message
        assert "SD1, SD2 and SDXL-style pipelines only" in message
    assert isinstance(e.value, LabkitError)
    assert sd1.text_encoder.get_input_embeddings().weight.shape[0] == rows
    with pytest.raises(IncompatibleModelError, match="Flux.1"):  # from the path, the same
        load_textual_inversion(sd1, _write(tmp_path, "flux")[0])


@pytest.mark.parametrize("width", [768, 1024])
@pytest.mark.parametrize("writer", ["ldm", "a1111", "a1111_numpy_step"])
def test_the_pt_forms_open_through_the_safe_loader(tmp_path, writer, width):
    obj = ti_ldm(width=width) if writer == "ldm" else \
        ti_a1111(width=width, numpy_step=writer.endswith("numpy_step"))
    path = write_torch(tmp_path / f"{writer}.pt", obj)
    ti = read_textual_inversion(path)
    assert (ti.form, ti.base) == ("a1111", {768: "sd1", 1024: "sd2"}[width])
    assert ti.parts == {"text_encoder": "string_to_param.*"}
    assert torch.equal(ti.vectors["text_encoder"], obj["string_to_param"]["*"].detach())
    if writer == "ldm":  # the ldm code saves no name and no step
        assert (ti.name, ti.step) == ("ldm", None)
    else:
        assert (ti.name, ti.token, ti.step) == ("my-embedding", "<my-embedding>", 1500)


def test_a_numpy_1_step_file_opens_too(tmp_path):
    path = write_numpy1_step(tmp_path / "old_numpy.pt")
    verdict = scan(path)
    assert verdict.safe and "numpy.core.multiarray.scalar" in {f"{g.module}.{g.name}"
                                                               for g in verdict.globals}
    ti = read_textual_inversion(path)
    assert (ti.form, ti.base, ti.step, ti.n_vectors) == ("a1111", "sd1", 1500, 2)


# ---- the example files of every form ----

@pytest.fixture(scope="module")
def examples(tmp_path_factory):
    return write_examples(tmp_path_factory.mktemp("examples"))


def test_the_examples_have_the_real_key_layouts(tmp_path, examples):
    assert {p.name for p in examples.values()} == {ex.file for ex in EXAMPLES.values()}
    for kind in ("kohya", "diffusers", "sdxl", "flux", "sd3", "t5"):
        table = labkit.open_model(examples[kind]).table
        assert {k: t.shape for k, t in table.items()} == \
            {k: (2, w) for k, w in TI_KINDS[kind]}, kind
    for kind, obj in (("ldm", ti_ldm()), ("a1111", ti_a1111())):
        real = labkit.open_model(write_torch(tmp_path / f"{kind}.pt", obj))
        example = labkit.open_model(examples[kind])
        assert {k: t.shape for k, t in example.table.items()} == \
            {k: t.shape for k, t in real.table.items()}, kind
        assert set(example.metadata) == set(real.metadata), kind


def test_the_forms_table_tells_each_example(examples):
    table = forms_table(examples)
    assert list(table.index) == list(EXAMPLES)
    assert (table["kind"] == "textual_inversion").all() and (table["vectors"] == 2).all()
    assert table["base"].to_dict() == {"ldm": "sd1", "a1111": "sd1", "kohya": "sd1",
                                       "diffusers": "sd1", "sdxl": "sdxl", "flux": "flux",
                                       "sd3": "sd3", "t5": "unknown"}
    assert table.loc["sd3", "widths"] == "768 + 1280 + 4096"
    assert table.loc["flux", "parts"] == "clip_l -> text_encoder, t5 -> text_encoder_2"
    assert table.loc["t5", "parts"] == "t5 -> ?"  # SD3's text_encoder_3 or Flux's text_encoder_2
    assert list(table.columns[:4]) == ["file", "form", "kind", "base"]
    assert table["lab loads it"].to_dict() == {k: k not in REFUSED for k in EXAMPLES}


def test_the_forms_table_names_a_file_of_another_kind(tmp_path, examples):
    lora = tmp_path / "lora.safetensors"
    save_file({"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.ones(4, 8),
               "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": torch.ones(8, 4)},
              lora)
    table = forms_table({"lora": lora, "kohya": examples["kohya"]})
    assert table.loc["lora", "kind"] == "lora" and table.loc["kohya", "form"] == "kohya"
    assert table.loc["lora", ["form", "widths"]].isna().all()
