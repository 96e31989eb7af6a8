"""labkit.lora.reading and the weight-change math: anatomy of every kind, checked by hand."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from labkit import lora
from labkit.errors import CorruptFileError, NotAModelError
from labkit.lora import anatomy as M
from tests.fixtures.layout_files import load_layout, write_sparse
from tests.fixtures.lora_samples import (
    single_thread,
    truncate,
    write_adapter,
    write_sdxl_lora,
    write_ti,
)
from tests.fixtures.tiny_models import save_tiny

TO_Q_MODULE = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"
one_thread = pytest.fixture(scope="module", autouse=True)(single_thread)


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    from diffusers import StableDiffusionPipeline

    folder = save_tiny(tmp_path_factory.mktemp("tiny") / "sd1", "sd1")
    return StableDiffusionPipeline.from_pretrained(folder, safety_checker=None)


def _roles(path, prefix):
    return {k[len(prefix) + 1:]: v for k, v in load_file(str(path)).items() if k.startswith(prefix + ".")}


def test_read_kohya_lora_by_hand(pipe, tmp_path):
    path = write_adapter(tmp_path / "k.safetensors", pipe, "lora", rank=2, alpha=1.0)
    frame = lora.read(path, pipe)
    assert len(frame) == 7 and frame.attrs["unmatched"] == []
    row = frame.set_index("module").loc["down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"]
    assert (row.kind, row["rank"], row.alpha, row.scale, row.block) == ("lora", 2, 1.0, 0.5, "IN01")
    t = _roles(path, row.prefix)
    by_hand = 0.5 * t["lora_up.weight"] @ t["lora_down.weight"]
    assert row.delta_norm == pytest.approx(float(by_hand.norm()), rel=1e-5)
    assert row.up_norm == pytest.approx(float(t["lora_up.weight"].norm()), rel=1e-6)
    assert row.eff_rank == 2
    conv = frame.set_index("module").loc["up_blocks.1.resnets.0.conv1"]
    assert (conv.kind, conv.block, conv.down_shape) == ("locon", "OUT03", (2, 24, 3, 3))
    assert frame.set_index("component").loc["text_encoder", "block"].eq("BASE").all()


@pytest.mark.parametrize("kind", ["loha", "lokr", "full"])
def test_lycoris_delta_norms_match_the_product_by_hand(pipe, tmp_path, kind):
    path = write_adapter(tmp_path / f"{kind}.safetensors", pipe, kind, rank=2, alpha=1.0)
    frame = lora.read(path, pipe)
    row = frame.set_index("module").loc["mid_block.attentions.0.transformer_blocks.0.ff.net.2"]
    t = _roles(path, row.prefix)
    by_hand = {
        "loha": lambda: 0.5 * (t["hada_w1_a"] @ t["hada_w1_b"]) * (t["hada_w2_a"] @ t["hada_w2_b"]),
        "lokr": lambda: 0.5 * torch.kron(t["lokr_w1"], t["lokr_w2_a"] @ t["lokr_w2_b"]),
        "full": lambda: t["diff"],
    }[kind]()
    assert row.kind == kind
    assert row.delta_norm == pytest.approx(float(by_hand.norm()), rel=1e-4)
    assert row.eff_rank == M.threshold_rank(torch.linalg.svdvals(by_hand))


def test_singular_values_shortcuts_equal_a_full_svd():
    g = torch.Generator().manual_seed(0)
    lo = {"down": torch.randn(4, 40, generator=g), "up": torch.randn(30, 4, generator=g),
          "alpha": torch.tensor(2.0)}
    full = 0.5 * lo["up"] @ lo["down"]
    assert torch.allclose(M.singular_values("lora", lo)[:4], torch.linalg.svdvals(full)[:4], rtol=1e-4)
    kr = {"lokr_w1": torch.randn(2, 4, generator=g), "lokr_w2": torch.randn(6, 5, generator=g)}
    direct = torch.linalg.svdvals(torch.kron(kr["lokr_w1"], kr["lokr_w2"]))
    assert torch.allclose(M.singular_values("lokr", kr), direct, rtol=1e-4, atol=1e-5)


def test_effective_ranks():
    s = torch.tensor([4.0, 4.0, 4.0, 4.0, 1e-4])
    assert M.threshold_rank(s) == 4
    assert M.entropy_rank(s) == pytest.approx(4.0, rel=1e-3)
    assert M.entropy_rank(torch.tensor([1.0, 0.0])) == pytest.approx(1.0)
    assert M.threshold_rank(torch.zeros(3)) == 0


def test_tucker_conv_lora_and_lokr_conv_reshape():
    g = torch.Generator().manual_seed(1)
    t = {"down": torch.randn(2, 5, 1, 1, generator=g), "mid": torch.randn(2, 2, 3, 3, generator=g),
         "up": torch.randn(7, 2, 1, 1, generator=g)}
    d = M.delta("locon", t)
    by_hand = torch.einsum("or,rskl,si->oikl", t["up"][:, :, 0, 0], t["mid"], t["down"][:, :, 0, 0])
    assert d.shape == (7, 5, 3, 3) and torch.allclose(d, by_hand, atol=1e-5)
    k = {"lokr_w1": torch.randn(2, 2, generator=g), "lokr_w2": torch.randn(3, 4, 3, 3, generator=g)}
    assert M.delta("lokr", k).shape == (6, 8, 3, 3)


def test_read_peft_form_has_scale_one_without_alphas(pipe, tmp_path):
    frame = lora.read(write_adapter(tmp_path / "p.safetensors", pipe, "peft"), pipe)
    assert len(frame) == 7 and frame["scale"].eq(1.0).all() and frame.attrs["unmatched"] == []


def test_real_sd15_kohya_file_reads_whole(tmp_path):
    path = write_sparse(tmp_path / "sd15_lora.safetensors", load_layout("sd15_lora_kohya"))
    frame = lora.read(path)
    assert frame.attrs["base"] == "sd1" and frame.attrs["unmatched"] == []
    assert len(frame) == 264 and frame["delta_norm"].eq(0).all()  # a zero-filled file
    assert frame["rank"].eq(32).all()


def test_sdxl_lora_against_sd1_is_listed_not_dropped(tmp_path):
    frame = lora.read(write_sdxl_lora(tmp_path / "xl.safetensors"), "sd1")
    assert frame.empty and len(frame.attrs["unmatched"]) == 9
    assert "SDXL" in frame.attrs["note"] and "this model is sd1" in frame.attrs["note"]
    table = lora.unmatched(frame)
    assert list(table.columns) == ["key", "why"] and len(table) == 9


def test_bad_inputs_say_what_was_expected(pipe, tmp_path):
    with pytest.raises(NotAModelError, match="textual inversion.*expected kohya/PEFT LoRA keys"):
        lora.read(write_ti(tmp_path / "ti.safetensors"))
    cut = truncate(write_adapter(tmp_path / "cut.safetensors", pipe))
    with pytest.raises(CorruptFileError, match="missing"):
        lora.read(cut)
    with pytest.raises(NotAModelError):
        lora.read(tmp_path / "absent.safetensors")


def test_alpha_is_not_strength(pipe, tmp_path):
    """Doubling alpha doubles the delta, as doubling the strength would."""
    one = lora.read(write_adapter(tmp_path / "a1.safetensors", pipe, alpha=1.0), pipe)
    two = lora.read(write_adapter(tmp_path / "a2.safetensors", pipe, alpha=2.0), pipe)
    assert (two["delta_norm"] / one["delta_norm"]).map(lambda r: math.isclose(r, 2.0, rel_tol=1e-5)).all()


def test_peft_alphas_come_from_diffusers_adapter_metadata(pipe, tmp_path):
    import json

    from safetensors.torch import save_file

    tensors = load_file(str(write_adapter(tmp_path / "p.safetensors", pipe, "peft", rank=2)))
    meta = {"unet.r": 2, "unet.lora_alpha": 4, "unet.alpha_pattern": {"ff.net.2": 1},
            "text_encoder.r": 2, "text_encoder.lora_alpha": 2}
    path = tmp_path / "p_meta.safetensors"
    save_file(tensors, str(path), metadata={"lora_adapter_metadata": json.dumps(meta)})
    frame = lora.read(path, pipe).set_index("module")
    assert frame.loc[TO_Q_MODULE, "scale"] == 2.0
    assert frame.loc["mid_block.attentions.0.transformer_blocks.0.ff.net.2", "scale"] == 0.5
    assert frame.loc["encoder.layers.0.self_attn.q_proj", "scale"] == 1.0


@pytest.mark.parametrize(("name", "kind"), [("demo_lora_striped", "lora"),
                                            ("demo_lora_striped_peft", "lora"),
                                            ("demo_loha_outlined", "loha"),
                                            ("demo_lokr_twotone", "lokr")])
def test_every_zoo_adapter_reads_whole(name, kind):
    from labkit import zoo
    frame = lora.read(zoo.path(name))
    assert frame.attrs["unmatched"] == [] and frame.attrs["family"] == "demo_sd1"
    assert set(frame["kind"]) == {kind} and frame["delta_norm"].gt(0).all()
    assert frame["block"].ne("").all()


def test_the_kohya_and_peft_forms_of_the_demo_lora_agree():
    from labkit import zoo
    kohya = lora.read(zoo.path("demo_lora_striped")).set_index("module")
    peft = lora.read(zoo.path("demo_lora_striped_peft")).set_index("module")
    assert set(kohya.index) == set(peft.index)
    assert np.allclose(kohya["delta_norm"], peft.loc[kohya.index, "delta_norm"], rtol=1e-4)


def test_the_demo_sdxl_lora_reads_whole_against_its_own_family():
    """Its metadata names real SDXL; its widths name the demo SDXL, whose modules it fits."""
    from labkit import zoo
    frame = lora.read(zoo.path("demo_lora_striped_xl"))
    assert frame.attrs["unmatched"] == [] and frame.attrs["base"] == "demo_sdxl"
    assert frame.attrs["family"] == "demo_sdxl"
    assert set(frame["component"]) == {"text_encoder", "text_encoder_2", "unet"}
    assert frame["prefix"].str.startswith("lora_unet_input_blocks_").any()
    # SDXL reads the first encoder's penultimate layer: its last layer gets no gradient in
    # training, so its LoRA stays at its start, zero; every other module learned something
    config = json.loads((zoo.path("demo_sdxl") / "text_encoder" / "config.json").read_text())
    last = f"encoder.layers.{config['num_hidden_layers'] - 1}."
    untouched = frame["component"].eq("text_encoder") & frame["module"].str.startswith(last)
    assert frame.loc[untouched, "delta_norm"].eq(0).all() and untouched.any()
    assert frame.loc[~untouched, "delta_norm"].gt(0).all()
