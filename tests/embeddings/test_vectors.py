"""Embeddings: tokens on real CLIP ids, nearest tokens, prompt vectors, maps, the TI pair."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from labkit.embeddings import vectors as E
from labkit.errors import LabkitError
from labkit.generate.sampling import generate
from labkit.zoo import TOKENIZER
from tests.fixtures.ti_samples import SD1_WIDTH, SDXL_WIDTHS, tiny_pipeline, write_forms

CAT_IDS = [49406, 320, 1125, 539, 320, 2368, 49407]  # "a photo of a cat" in CLIP's vocab


@pytest.fixture(scope="module")
def tokenizer():
    return CLIPTokenizer.from_pretrained(str(TOKENIZER))


@pytest.fixture(scope="module")
def encoder():
    torch.manual_seed(0)
    return CLIPTextModel(CLIPTextConfig(
        vocab_size=49408, hidden_size=16, intermediate_size=24, num_attention_heads=2,
        num_hidden_layers=1, max_position_embeddings=77, bos_token_id=49406, eos_token_id=49407,
        pad_token_id=49407)).eval()


@pytest.fixture(scope="module")
def sd1(tmp_path_factory):
    return tiny_pipeline(tmp_path_factory.mktemp("sd1") / "pipe", "sd1")


@pytest.fixture(scope="module")
def sdxl(tmp_path_factory):
    return tiny_pipeline(tmp_path_factory.mktemp("sdxl") / "pipe", "sdxl")


def test_token_table_on_real_clip_ids(tokenizer, encoder):
    t = E.token_table(tokenizer, encoder, "a photo of a cat")
    assert len(t) == 77 and t["in_window"].all()
    assert t["id"][:7].tolist() == CAT_IDS
    assert t["token"][1:6].tolist() == ["a</w>", "photo</w>", "of</w>", "a</w>", "cat</w>"]
    assert t["kind"][:8].tolist() == ["BOS", "word", "word", "word", "word", "word", "EOS",
                                      "padding"]
    assert (t["kind"][7:] == "padding").all() and (t["id"][7:] == 49407).all()
    row = encoder.get_input_embeddings().weight[2368].detach()
    assert t["norm"][5] == pytest.approx(float(row.norm()), abs=1e-4)


def test_token_table_shows_what_the_window_cuts(tokenizer, encoder):
    t = E.token_table(tokenizer, encoder, " ".join(["cat"] * 80))
    assert t["in_window"].sum() == 77
    assert t["kind"].value_counts().to_dict() == {"word": 75, "truncated": 5, "BOS": 1, "EOS": 1}
    assert t["kind"][76] == "EOS" and (t[~t["in_window"]]["id"] == 2368).all()


@pytest.mark.parametrize("query", ["cat", "cat</w>", 2368, 1125, 320])
def test_a_tokens_own_vector_is_its_nearest(tokenizer, encoder, query):
    vec = E.token_vector(query, encoder, tokenizer)
    top = E.nearest_tokens(vec, encoder, tokenizer, k=5)
    expected = query if isinstance(query, int) else 2368
    assert top["id"][0] == expected and top["cosine"][0] == pytest.approx(1.0, abs=1e-4)
    assert top["cosine"].is_monotonic_decreasing
    assert E.nearest_tokens(query, encoder, tokenizer, k=1)["id"][0] == expected


def test_nearest_tokens_agree_with_cosine_one_by_one(tokenizer, encoder):
    table = encoder.get_input_embeddings().weight.detach()
    query = torch.randn(16, generator=torch.Generator().manual_seed(3))
    one_by_one = torch.nn.functional.cosine_similarity(table, query[None], dim=-1)
    top = E.nearest_tokens(query, encoder, tokenizer, k=10)
    assert top["id"].tolist() == one_by_one.topk(10).indices.tolist()


def test_nearest_tokens_follow_a_changed_table(tokenizer):
    te = CLIPTextModel(CLIPTextConfig(vocab_size=49408, hidden_size=8, intermediate_size=8,
                                      num_attention_heads=2, num_hidden_layers=1))
    vec = torch.ones(8)
    E.nearest_tokens(vec, te, tokenizer, k=1)
    with torch.no_grad():
        te.get_input_embeddings().weight[777] = vec * 5
    assert E.nearest_tokens(vec, te, tokenizer, k=1)["id"][0] == 777


def test_bad_queries_say_what_is_wrong(tokenizer, encoder):
    with pytest.raises(LabkitError, match=r"is 3 tokens \(sun flower ish</w>\)"):
        E.nearest_tokens("sunflowerish", encoder, tokenizer)
    with pytest.raises(LabkitError, match="16-wide"):
        E.nearest_tokens(torch.ones(768), encoder, tokenizer)


def test_vocabulary_norms_cover_the_vocabulary(tokenizer, encoder):
    norms = E.vocabulary_norms(encoder, tokenizer)
    assert norms.shape == (49408,)
    assert norms[2368] == pytest.approx(float(encoder.get_input_embeddings().weight[2368].detach().norm()))


def test_prompt_vectors_are_what_the_unet_sees(sd1):
    pv = E.prompt_vectors(sd1, "a red circle")
    ids = sd1.tokenizer("a red circle", padding="max_length", max_length=77,
                        return_tensors="pt").input_ids
    with torch.no_grad():
        expected = sd1.text_encoder(ids)[0][0]
    assert pv.hidden.shape == (77, SD1_WIDTH) and pv.pooled is None
    assert torch.allclose(pv.hidden, expected, atol=1e-5)
    assert pv.eos_position == int(pv.tokens.index[pv.tokens["kind"] == "EOS"][0])
    assert torch.equal(pv.summary, pv.hidden[pv.eos_position])
    assert list(pv.norms().columns)[-1] == "text_encoder_output_norm"


def test_sdxl_prompt_vectors_have_both_encoders_and_a_pooled_vector(sdxl):
    pv = E.prompt_vectors(sdxl, "a red circle")
    assert pv.hidden.shape == (77, sum(SDXL_WIDTHS))
    assert {k: v.shape[-1] for k, v in pv.per_encoder.items()} == {
        "text_encoder": SDXL_WIDTHS[0], "text_encoder_2": SDXL_WIDTHS[1]}
    assert pv.pooled is not None and pv.pooled.shape == (SDXL_WIDTHS[1],)
    # the second encoder (CLIPTextModelWithProjection) has its own table to search
    near = E.nearest_tokens(300, sdxl.text_encoder_2, sdxl.tokenizer_2, k=2)
    assert near["id"][0] == 300 and near["cosine"][0] == pytest.approx(1.0, abs=1e-5)
    sim = E.prompt_similarity(sdxl, "a red circle", "a blue circle")
    assert {"cosine_text_encoder", "cosine_text_encoder_2"} <= set(sim.columns)


def test_prompt_similarity_token_by_token(sd1):
    same = E.prompt_similarity(sd1, "a red circle", "a red circle")
    assert same["cosine"].min() == pytest.approx(1.0, abs=1e-5)
    diff = E.prompt_similarity(sd1, "a red circle", "a blue circle")
    assert diff["token_a"].tolist()[:2] == diff["token_b"].tolist()[:2]
    # causal attention: positions before the first changed token see the same words
    first = next(i for i, (a, b) in enumerate(zip(diff["token_a"], diff["token_b"], strict=True))
                 if a != b)
    assert (diff["cosine"][:first] > 0.9999).all()
    assert diff["cosine"][first] < 0.9999


def test_cosine_matrix_and_map(tokenizer, encoder):
    words = ["cat", "dog", "car", "red"]
    vecs = [E.token_vector(w, encoder, tokenizer) for w in words]
    m = E.cosine_matrix(vecs, words)
    assert list(m.index) == words and m.loc["cat", "cat"] == pytest.approx(1.0, abs=1e-4)
    assert m.loc["cat", "dog"] == pytest.approx(m.loc["dog", "cat"])
    g = torch.Generator().manual_seed(0)
    far = torch.cat([torch.randn(3, 16, generator=g) * 0.1, torch.randn(3, 16, generator=g) * 0.1
                     + 10])
    xy = E.map_2d(far, list("abcdef"))
    assert list(xy.columns) == ["label", "x", "y", "norm"]
    left, right = xy["x"][:3], xy["x"][3:]
    assert (left.max() < right.min()) or (right.max() < left.min())
    assert xy.attrs["explained"][0] > 0.9 and sum(xy.attrs["explained"]) <= 1 + 1e-6
    with pytest.raises(LabkitError, match="unknown map method"):
        E.map_2d(far, list("abcdef"), method="umap")
    with pytest.raises(LabkitError, match="labels"):
        E.map_2d(far, list("abc"))


def test_with_and_without_uses_the_same_seed(tmp_path, sd1):
    vec = torch.randn(1, SD1_WIDTH, generator=torch.Generator().manual_seed(4)) * 5
    path = write_forms(tmp_path, vec)["kohya"]
    pair = E.with_and_without(sd1, path, "a red circle, <checker>", seed=3, steps=2,
                              guidance=1.0, progress=False)
    plain = generate(sd1, "a red circle", seed=3, steps=2, guidance=1.0, progress=False)[0]
    assert np.array_equal(np.asarray(pair["without"]), np.asarray(plain))
    assert not np.array_equal(np.asarray(pair["with"]), np.asarray(pair["without"]))
    assert E.loaded_tokens(sd1) == []
    with pytest.raises(LabkitError, match="does not use"):
        E.with_and_without(sd1, path, "a red circle", steps=2)


@pytest.mark.slow
def test_the_demo_ti_adds_checkerboards():
    from labkit import zoo
    from labkit.generate.pipelines import load_pipeline
    from labkit.zoo.metrics import checker_energy

    pipe = load_pipeline(zoo.path("demo_sd1"), device="cpu", progress=False)
    ti = E.read_textual_inversion(zoo.path("demo_ti_checker_diffusers"))
    for seed in (0, 1):
        pair = E.with_and_without(pipe, ti, "a red circle on a white background, <checker>",
                                  seed=seed, steps=20, progress=False)
        energy = {k: checker_energy(np.asarray(im) / 255) for k, im in pair.items()}
        assert energy["with"] > 2 * energy["without"], energy
