"""The embeddings panel, driven from Python: live tokens, look-up, the with/without pair, errors;
with the SD1-style and the SDXL-style demo (two encoders) and a file of the other family."""

from __future__ import annotations

import ipywidgets as widgets
import pytest
import torch

from labkit.panels.common import NONE_CHOICE, PATH_CHOICE, png_size
from labkit.panels.embeddings import embeddings_panel
from tests.fixtures.ti_samples import SD1_WIDTH, save_tiny, write_forms

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield save_tiny(tmp_path_factory.mktemp("tiny") / "sd1", "sd1")
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def ti(tmp_path_factory):
    vec = torch.randn(1, SD1_WIDTH, generator=torch.Generator().manual_seed(5)) * 4
    return write_forms(tmp_path_factory.mktemp("ti"), vec)["kohya"]


def _walk(widget):
    yield widget
    for child in getattr(widget, "children", ()):
        yield from _walk(child)


def _one(panel, cls, description=None, css=None):
    found = [w for w in _walk(panel) if isinstance(w, cls)
             and (description is None or w.description == description)
             and (css is None or css in w._dom_classes)]
    assert found, f"no {cls.__name__} {description or css!r}"
    return found


def _parts(panel):
    images = _one(panel, widgets.Image)
    htmls = [w for w in _one(panel, widgets.HTML) if not w._dom_classes]
    return {
        "prompt": _one(panel, widgets.Text, "Prompt")[0],
        "tokens": _one(panel, widgets.HTML, css="labkit-tokens")[0],
        "error": _one(panel, widgets.HTML, css="labkit-error-box")[0],
        "word": _one(panel, widgets.Text, "Word")[0],
        "picker": _one(panel, widgets.Dropdown, "Embedding")[0],
        "ti_path": _one(panel, widgets.Text, "TI path")[0],
        "look": _one(panel, widgets.Button, "Look up")[0],
        "pair": _one(panel, widgets.Button, "Generate with and without")[0],
        "steps": _one(panel, widgets.IntSlider, "Steps")[0],
        "norms": images[0], "map": images[1], "pair_image": images[2],
        "html": htmls,
    }


def test_tokens_show_as_the_prompt_changes(tiny):
    p = _parts(embeddings_panel(model=str(tiny)))
    p["prompt"].value = "ab"
    first = p["tokens"].value
    assert p["error"].value == ""
    assert "&lt;|startoftext|&gt;" in first and "b&lt;/w&gt;" in first and "73 padding" in first
    p["prompt"].value = "abc"
    assert p["tokens"].value != first and "72 padding" in p["tokens"].value


def test_look_up_a_word_and_an_embedding(tiny, ti):
    p = _parts(embeddings_panel(model=str(tiny), embedding=str(ti)))
    assert p["ti_path"].value == str(ti)
    p["word"].value = "x"
    p["look"].click()
    assert p["error"].value == ""
    text = " ".join(h.value for h in p["html"])
    assert "Nearest tokens to x" in text and "Nearest tokens to &lt;checker&gt;" in text
    assert "kohya form, step 400" in text
    assert bytes(p["norms"].value).startswith(PNG) and bytes(p["map"].value).startswith(PNG)
    assert p["norms"].layout.display == "" and p["pair_image"].layout.display == "none"
    assert p["norms"].layout.width == f"{png_size(p['norms'].value)[0]}px"  # not stretched
    assert p["pair"].layout.align_self == "flex-start"  # the button as wide as its words


def test_the_pair_differs_and_leaves_the_pipeline_clean(tiny, ti):
    from labkit.generate import pipelines
    p = _parts(embeddings_panel(model=str(tiny), embedding=str(ti)))
    p["steps"].value = 2
    p["pair"].click()
    assert p["error"].value == ""
    assert bytes(p["pair_image"].value).startswith(PNG)
    pipe = pipelines.cached_pipeline(tiny, progress=False)
    assert pipe.tokenizer.added_tokens_encoder.keys() == {"<|startoftext|>", "<|endoftext|>"}


def test_errors_show_in_the_red_box(tiny, tmp_path):
    p = _parts(embeddings_panel(model=str(tiny), embedding=str(tmp_path / "gone.pt")))
    p["word"].value = "dog"  # three byte tokens here: said in the red box
    assert "is 3 tokens" in p["error"].value
    p["word"].value = "x"
    assert "labkit-error" in p["error"].value and "gone.pt" in p["error"].value
    p = _parts(embeddings_panel(model=str(tiny)))
    p["picker"].value = NONE_CHOICE
    p["word"].value = ""
    p["look"].click()
    assert "nothing to look up" in p["error"].value
    p["pair"].click()
    assert "no embedding chosen" in p["error"].value
    wide = tmp_path / "wide.safetensors"
    from safetensors.torch import save_file

    save_file({"emb_params": torch.ones(1, 768)}, wide)
    p["ti_path"].value = str(wide)
    p["picker"].value = PATH_CHOICE
    p["look"].click()
    assert "768-wide vectors are for SD1" in p["error"].value


def _encoder(panel):
    return _one(panel, widgets.Dropdown, "Encoder")[0]


def test_sdxl_tokens_show_per_encoder_with_what_the_unet_sees():
    panel = embeddings_panel(model="demo_sdxl")
    p = _parts(panel)
    p["prompt"].value = "a red circle"
    assert p["error"].value == ""
    text = p["tokens"].value
    assert "text_encoder (tokenizer, 32 wide)" in text and "text_encoder_2 (tokenizer_2, 48 wide)" in text
    assert "each the token &lt;|endoftext|&gt;" in text and "each the token !" in text
    assert text.count("circle&lt;/w&gt;") == 2 and "output_norm" in text
    assert "77 vectors 80 wide" in text and "32 (text_encoder) + 48 (text_encoder_2)" in text
    assert "pooled vector" in text
    assert _encoder(panel).layout.display == ""


def test_sd1_tokens_say_one_encoder_and_no_pooled_vector():
    panel = embeddings_panel(model="demo_sd1")
    p = _parts(panel)
    p["prompt"].value = "a red circle"
    text = p["tokens"].value
    assert "text_encoder (tokenizer, 32 wide)" in text and "text_encoder_2" not in text
    assert "77 vectors 32 wide" in text and "pooled" not in text
    assert _encoder(panel).layout.display == "none"


def test_the_sdxl_embedding_looks_up_in_either_encoder():
    panel = embeddings_panel(model="demo_sdxl")
    p = _parts(panel)
    assert [n for _, n in p["picker"].options] == [NONE_CHOICE, "demo_ti_checker_xl", PATH_CHOICE]
    assert p["picker"].value == "demo_ti_checker_xl"
    p["word"].value = "x"
    p["look"].click()
    assert p["error"].value == ""
    text = " ".join(h.value for h in p["html"])
    assert "2 text encoders" in text and "looking up in <b>text_encoder</b> (32 wide)" in text
    assert "(sdxl form)" in text and "text_encoder_2 " in text
    assert "Nearest tokens to &lt;checker&gt;</b> (text_encoder)" in text
    first_map = bytes(p["map"].value)
    _encoder(panel).value = "text_encoder_2"
    text = " ".join(h.value for h in p["html"])
    assert p["error"].value == "" and "looking up in <b>text_encoder_2</b> (48 wide)" in text
    assert "Nearest tokens to x</b> (text_encoder_2)" in text
    assert bytes(p["map"].value).startswith(PNG) and bytes(p["map"].value) != first_map


def test_the_sdxl_pair_differs_and_leaves_both_tokenizers_clean():
    from labkit import zoo
    from labkit.generate import pipelines
    p = _parts(embeddings_panel(model="demo_sdxl", embedding="demo_ti_checker_xl"))
    p["steps"].value = 2
    p["pair"].click()
    assert p["error"].value == "" and bytes(p["pair_image"].value).startswith(PNG)
    pipe = pipelines.cached_pipeline(zoo.path("demo_sdxl"), progress=False)
    assert pipe.tokenizer_2.added_tokens_encoder.keys() == {"!", "<|startoftext|>",
                                                            "<|endoftext|>"}


def test_the_embeddings_offered_follow_the_model_without_a_look_up():
    panel = embeddings_panel(model="demo_sd1")
    p = _parts(panel)
    assert "demo_ti_checker_kohya" in [n for _, n in p["picker"].options]
    _one(panel, widgets.Dropdown, "Model")[0].value = "demo_sdxl"
    assert p["picker"].value == "demo_ti_checker_xl"
    assert "demo_ti_checker_kohya" not in [n for _, n in p["picker"].options]
    text = " ".join(h.value for h in p["html"])
    assert "Nearest tokens" not in text and "vocabulary" not in text and p["error"].value == ""


@pytest.mark.parametrize(("model", "embedding", "families"), [
    ("demo_sdxl", "demo_ti_checker_kohya", ("for demo_sd1", "pipeline is demo_sdxl")),
    ("demo_sd1", "demo_ti_checker_xl", ("for demo_sdxl", "pipeline is demo_sd1")),
])
def test_an_embedding_of_the_other_family_is_refused_in_plain_words(model, embedding, families):
    from labkit import zoo
    p = _parts(embeddings_panel(model=model, embedding=embedding))
    assert p["ti_path"].value == str(zoo.path(embedding))
    p["look"].click()
    assert "labkit-error" in p["error"].value and all(f in p["error"].value for f in families)
    p["steps"].value = 1
    p["pair"].click()
    assert all(f in p["error"].value for f in families)
    assert p["pair_image"].layout.display == "none"
