"""Textual inversion: every container form reads to the same vectors; loading fits or says why."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from labkit.embeddings.textual_inversion import (
    load_textual_inversion,
    loaded_tokens,
    read_textual_inversion,
    unload_textual_inversion,
)
from labkit.errors import IncompatibleModelError, LabkitError
from tests.fixtures.ti_samples import SD1_WIDTH, SDXL_WIDTHS, tiny_pipeline, write_forms, write_sdxl


@pytest.fixture(scope="module")
def sd1(tmp_path_factory):
    return tiny_pipeline(tmp_path_factory.mktemp("sd1") / "pipe", "sd1")


@pytest.fixture(scope="module")
def sdxl(tmp_path_factory):
    return tiny_pipeline(tmp_path_factory.mktemp("sdxl") / "pipe", "sdxl")


@pytest.fixture
def vectors():
    return torch.randn(2, SD1_WIDTH, generator=torch.Generator().manual_seed(1)) * 3


def _rows(pipe, tok_name, enc, token):
    ids = getattr(pipe, tok_name).convert_tokens_to_ids(token)
    return getattr(pipe, enc).get_input_embeddings().weight[ids].detach()


def test_every_form_reads_to_the_same_vectors(tmp_path, vectors):
    paths = write_forms(tmp_path, vectors, "checker", step=321)
    read = {form: read_textual_inversion(p) for form, p in paths.items()}
    assert {form: ti.form for form, ti in read.items()} == {f: f for f in paths}
    for form in ("a1111", "kohya"):
        assert torch.equal(read[form].vectors["text_encoder"], vectors)
        assert read[form].step == 321
        assert read[form].n_vectors == 2
    # the diffusers form holds one vector per token: the first row
    assert torch.equal(read["diffusers"].vectors["text_encoder"], vectors[:1])
    bin_file = tmp_path / "learned_embeds.bin"  # diffusers' older pickle form
    torch.save({"<checker>": vectors[0]}, bin_file)
    old_form = read_textual_inversion(bin_file)
    assert old_form.form == "diffusers" and old_form.token == "<checker>"
    assert torch.equal(old_form.vectors["text_encoder"], vectors[:1])
    assert {ti.token for ti in read.values()} == {"<checker>"}
    assert read["a1111"].name == read["kohya"].name == "checker"
    assert read["a1111"].metadata["sd_checkpoint_name"] == "test"
    assert read["kohya"].metadata["ss_steps"] == "321"
    assert read["kohya"].norms()["text_encoder"] == pytest.approx(vectors.norm(dim=-1).tolist(),
                                                                 abs=1e-3)


def test_the_sdxl_form_has_vectors_per_encoder(tmp_path):
    ti = read_textual_inversion(write_sdxl(tmp_path / "xl.safetensors", torch.ones(1, 768),
                                           torch.ones(1, 1280)))
    assert ti.form == "sdxl" and ti.base == "sdxl"
    assert ti.widths == {"text_encoder": 768, "text_encoder_2": 1280}
    assert ti.token == "<xl>"


def test_a_file_of_another_kind_is_refused_by_name(tmp_path):
    path = tmp_path / "lora.safetensors"
    save_file({"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.ones(4, 8),
               "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": torch.ones(8, 4)},
              path)
    with pytest.raises(IncompatibleModelError, match="not a textual inversion") as e:
        read_textual_inversion(path)
    assert "lora.safetensors" in str(e.value)


def test_an_unsafe_pickle_is_never_loaded(tmp_path):
    import os
    import pickle

    class Evil:
        def __reduce__(self):
            return os.system, ("echo owned",)

    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps({"string_to_param": {"*": Evil()}}))
    with pytest.raises(LabkitError, match="not safe"):
        read_textual_inversion(path)


def test_a_wrong_width_gives_the_clear_error(tmp_path, sd1):
    path = tmp_path / "sd1.safetensors"
    save_file({"emb_params": torch.ones(1, 768)}, path)
    with pytest.raises(IncompatibleModelError) as e:
        load_textual_inversion(sd1, path)
    assert (f"768-wide vectors are for SD1 (sd1); this pipeline's text encoder is "
            f"{SD1_WIDTH}-wide") in str(e.value)
    assert "sd1.safetensors" in str(e.value)
    assert loaded_tokens(sd1) == []


def test_load_adds_every_row_and_unload_restores(tmp_path, sd1, vectors):
    rows_before = sd1.text_encoder.get_input_embeddings().weight.shape[0]
    words_before = sd1.tokenizer("a <checker> b").input_ids
    decoded_before = [sd1.tokenizer.decode([i]) for i in words_before]
    word = load_textual_inversion(sd1, write_forms(tmp_path, vectors)["a1111"])
    try:
        assert word == "<checker>"
        assert loaded_tokens(sd1) == ["<checker>"]
        assert torch.equal(_rows(sd1, "tokenizer", "text_encoder", ["<checker>", "<checker>_1"]),
                           vectors)
        with pytest.raises(IncompatibleModelError, match="already"):
            load_textual_inversion(sd1, write_forms(tmp_path, vectors)["kohya"])
    finally:
        unload_textual_inversion(sd1, word)
    assert sd1.text_encoder.get_input_embeddings().weight.shape[0] == rows_before
    assert sd1.tokenizer("a <checker> b").input_ids == words_before
    assert [sd1.tokenizer.decode([i]) for i in words_before] == decoded_before  # no "</w>"
    with pytest.raises(LabkitError, match="not loaded"):
        unload_textual_inversion(sd1, word)


def test_a_token_can_be_chosen(tmp_path, sd1, vectors):
    word = load_textual_inversion(sd1, write_forms(tmp_path, vectors)["kohya"], token="<mine>")
    try:
        assert word == "<mine>" and loaded_tokens(sd1) == ["<mine>"]
    finally:
        unload_textual_inversion(sd1)
    assert loaded_tokens(sd1) == []


def test_the_sdxl_form_loads_into_both_encoders(tmp_path, sdxl):
    g = torch.Generator().manual_seed(2)
    clip_l, clip_g = torch.randn(2, SDXL_WIDTHS[0], generator=g), torch.randn(2, SDXL_WIDTHS[1],
                                                                              generator=g)
    path = write_sdxl(tmp_path / "style.safetensors", clip_l, clip_g)
    # diffusers alone refuses the two-key dict: the lab loads each half into its own encoder
    with pytest.raises(ValueError, match="string_to_param"):
        sdxl.load_textual_inversion({"clip_l": clip_l, "clip_g": clip_g}, token="<style>")
    rows = [sdxl.text_encoder.get_input_embeddings().weight.shape[0],
            sdxl.text_encoder_2.get_input_embeddings().weight.shape[0]]
    word = load_textual_inversion(sdxl, path)
    try:
        names = [word, f"{word}_1"]
        assert torch.equal(_rows(sdxl, "tokenizer", "text_encoder", names), clip_l)
        assert torch.equal(_rows(sdxl, "tokenizer_2", "text_encoder_2", names), clip_g)
    finally:
        unload_textual_inversion(sdxl, word)
    assert [sdxl.text_encoder.get_input_embeddings().weight.shape[0],
            sdxl.text_encoder_2.get_input_embeddings().weight.shape[0]] == rows
    assert loaded_tokens(sdxl) == []


def test_encoder_counts_must_match(tmp_path, sd1, sdxl, vectors):
    xl = write_sdxl(tmp_path / "xl.safetensors", torch.ones(1, SDXL_WIDTHS[0]),
                    torch.ones(1, SDXL_WIDTHS[1]))
    with pytest.raises(IncompatibleModelError, match="2 text encoder"):
        load_textual_inversion(sd1, xl)
    with pytest.raises(IncompatibleModelError, match="SDXL embeddings"):
        load_textual_inversion(sdxl, write_forms(tmp_path, vectors)["kohya"])


def test_the_zoo_forms_read_to_the_same_vector():
    from labkit import zoo
    read = {f: read_textual_inversion(zoo.path(f"demo_ti_checker_{f}"))
            for f in ("a1111", "kohya", "diffusers")}
    first = read["a1111"].vectors["text_encoder"]
    assert first.shape[0] >= 1
    for form, ti in read.items():
        assert ti.form == form and ti.token == "<checker>"
        assert torch.equal(ti.vectors["text_encoder"], first)
    assert read["kohya"].base == "demo_sd1" and read["a1111"].step == read["kohya"].step


def test_a_demo_embedding_into_another_model_names_the_demo(sd1):
    from labkit import zoo
    with pytest.raises(IncompatibleModelError) as e:
        load_textual_inversion(sd1, zoo.path("demo_ti_checker_kohya"))
    assert "-wide vectors are for the lab's demo SD1 (demo_sd1); this pipeline's text encoder " \
           f"is {SD1_WIDTH}-wide" in str(e.value)


# ---- the demo world's two families: SDXL-style and SD1-style embeddings never mix ----

@pytest.fixture(scope="module")
def demo_pipes():
    from labkit import zoo
    from labkit.generate import pipelines
    return {name: pipelines.load_pipeline(zoo.path(name), progress=False)
            for name in ("demo_sd1", "demo_sdxl")}


def test_the_demo_sdxl_embedding_loads_into_both_encoders(demo_pipes):
    from labkit import zoo
    from labkit.embeddings.vectors import prompt_vectors, with_and_without

    pipe = demo_pipes["demo_sdxl"]
    ti = read_textual_inversion(zoo.path("demo_ti_checker_xl"))
    assert (ti.form, ti.base, ti.widths) == ("sdxl", "demo_sdxl",
                                              {"text_encoder": 32, "text_encoder_2": 48})
    prompt = f"a red circle, {ti.token}"
    plain = prompt_vectors(pipe, prompt).per_encoder
    word = load_textual_inversion(pipe, ti)
    try:
        for tok_name, enc in (("tokenizer", "text_encoder"), ("tokenizer_2", "text_encoder_2")):
            assert torch.equal(_rows(pipe, tok_name, enc, [word]).float(),
                               ti.vectors[enc].to(pipe.dtype).float()), enc
        loaded = prompt_vectors(pipe, prompt).per_encoder
        for enc in ("text_encoder", "text_encoder_2"):  # each encoder sees its own vector
            assert not torch.allclose(loaded[enc], plain[enc]), enc
    finally:
        unload_textual_inversion(pipe, word)
    images = with_and_without(pipe, ti, prompt, seed=1, steps=4, size=64, progress=False)
    assert images["with"].size == images["without"].size == (64, 64)
    assert images["with"].tobytes() != images["without"].tobytes()
    assert loaded_tokens(pipe) == []


@pytest.mark.parametrize("name,into,said,other", [
    ("demo_ti_checker_kohya", "demo_sdxl",
     "this embedding is for demo_sd1 (SD1-style: one text encoder, 32 wide; UNet context 32; "
     "one set of vectors",
     "the pipeline is demo_sdxl (SDXL-style: two text encoders, 32 + 48 wide; UNet context 80 "
     "with text_time)"),
    ("demo_ti_checker_a1111", "demo_sdxl", "this embedding is for demo_sd1 (SD1-style",
     "the pipeline is demo_sdxl (SDXL-style"),
    ("demo_ti_checker_diffusers", "demo_sdxl", "this embedding is for demo_sd1 (SD1-style",
     "the pipeline is demo_sdxl (SDXL-style"),
    ("demo_ti_checker_xl", "demo_sd1",
     "this embedding is for demo_sdxl (SDXL-style: two text encoders, 32 + 48 wide; UNet "
     "context 80 with text_time; a clip_l + clip_g pair",
     "the pipeline is demo_sd1 (SD1-style: one text encoder, 32 wide; UNet context 32)"),
])
def test_an_embedding_of_the_other_demo_family_is_refused_naming_both(demo_pipes, name, into,
                                                                       said, other):
    from labkit import zoo
    pipe = demo_pipes[into]
    with pytest.raises(IncompatibleModelError) as e:
        load_textual_inversion(pipe, zoo.path(name))
    message = str(e.value)
    assert said in message and other in message and str(zoo.path(name)) in message
    assert "Use it with a demo_sd" in message and "demo_config(" in message
    assert loaded_tokens(pipe) == []
