"""The shipped config folders build the real families' architectures: every key of a real
single file's layout maps, through diffusers' own conversion, to a parameter of the right shape
in a model built (on the meta device) from our configs; and every parameter is covered."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from diffusers.loaders import single_file_utils as sfu
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from labkit.convert import shipped as model_configs
from labkit.errors import IncompatibleModelError

LAYOUTS = Path(__file__).resolve().parents[1] / "data" / "layouts"
# layout file -> shipped folders with that architecture
FAMILIES = {"sd15.json": ["sd15"], "sd21.json": ["sd2_v", "sd2_base"], "sdxl_base.json": ["sdxl_base"]}
TEXT_ENCODERS = {  # folder component -> (model class, how the single file stores it)
    "text_encoder": CLIPTextModel,
    "text_encoder_2": CLIPTextModelWithProjection,
}


def _meta_checkpoint(layout: str) -> dict[str, torch.Tensor]:
    table = json.loads((LAYOUTS / layout).read_text())["tensors"]
    return {k: torch.empty(v["shape"], dtype=torch.float16, device="meta") for k, v in table.items()}


def _shapes(module: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def _assert_same(converted: dict[str, torch.Tensor], module: torch.nn.Module, what: str) -> None:
    want = _shapes(module)
    # position_ids is a fixed buffer (0..76) that transformers 5 no longer saves or loads
    got = {k: tuple(v.shape) for k, v in converted.items() if not k.endswith("position_ids")}
    assert set(got) - set(want) == set(), f"{what}: file keys with no parameter"
    missing = {k for k in set(want) - set(got) if not k.endswith("position_ids")}
    assert missing == set(), f"{what}: parameters the file does not fill"
    wrong = {k: (got[k], want[k]) for k in got if got[k] != want[k]}
    assert wrong == {}, f"{what}: shape mismatches"


def _text_converted(name: str, model: torch.nn.Module, checkpoint: dict) -> dict:
    """diffusers' own dispatch (create_diffusers_clip_model_from_ldm) for each encoder kind."""
    if sfu.is_open_clip_model(checkpoint):
        out = sfu.convert_open_clip_checkpoint(model, checkpoint, prefix="cond_stage_model.model.")
    elif name == "text_encoder_2":
        out = sfu.convert_open_clip_checkpoint(model, checkpoint,
                                               prefix="conditioner.embedders.1.model.")
    else:
        out = sfu.convert_ldm_clip_checkpoint(checkpoint)
    if not hasattr(model, "text_model"):  # transformers 5 flattened CLIPTextModel
        out = {k.removeprefix("text_model."): v for k, v in out.items()}
    return out


@pytest.mark.parametrize("layout,folder", [(lay, f) for lay, fs in FAMILIES.items() for f in fs])
def test_shipped_configs_build_the_real_architectures(layout, folder):
    root = model_configs.config_folder(folder)
    checkpoint = _meta_checkpoint(layout)
    unet_cfg = UNet2DConditionModel.load_config(root / "unet")
    vae_cfg = AutoencoderKL.load_config(root / "vae")
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(unet_cfg)
        vae = AutoencoderKL.from_config(vae_cfg)
    _assert_same(sfu.convert_ldm_unet_checkpoint(checkpoint, unet_cfg), unet, f"{folder} unet")
    _assert_same(sfu.convert_ldm_vae_checkpoint(checkpoint, vae_cfg), vae, f"{folder} vae")
    for name, cls in TEXT_ENCODERS.items():
        if not (root / name).is_dir():
            continue
        with torch.device("meta"):
            model = cls(CLIPTextConfig.from_pretrained(root / name))
        _assert_same(_text_converted(name, model, checkpoint), model, f"{folder} {name}")


def test_folders_are_complete_with_the_shared_tokenizer():
    for name in model_configs.shipped():
        root = model_configs.config_folder(name)
        index = json.loads((root / "model_index.json").read_text())
        parts = [k for k, v in index.items() if isinstance(v, list) and v[0] is not None]
        assert {"unet", "vae", "text_encoder", "tokenizer", "scheduler"} <= set(parts)
        for part in parts:
            assert (root / part).is_dir(), f"{name}: {part}/ missing"
        tok = CLIPTokenizer.from_pretrained(root / "tokenizer")
        assert tok("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
        assert tok.model_max_length == 77


def test_sd2_and_sdxl_second_tokenizer_pad_with_bang():
    assert CLIPTokenizer.from_pretrained(model_configs.config_folder("sd2_v") / "tokenizer").pad_token_id == 0
    sdxl = model_configs.config_folder("sdxl_base")
    assert CLIPTokenizer.from_pretrained(sdxl / "tokenizer_2").pad_token_id == 0
    assert CLIPTokenizer.from_pretrained(sdxl / "tokenizer").pad_token_id == 49407


def test_assembled_folder_is_reused(monkeypatch, tmp_path):
    monkeypatch.setenv("LABKIT_CACHE", str(tmp_path))
    first = model_configs.config_folder("sd15")
    assert first.parent.parent == tmp_path
    assert model_configs.config_folder("sd15") == first
    assert (first / "tokenizer" / "vocab.json").stat().st_size > 900_000


@pytest.mark.parametrize("base,variant,metadata,want", [
    ("sd1", [], {}, "sd15"),
    ("sd2", ["v_prediction"], {}, "sd2_v"),
    ("sd2", [], {}, "sd2_v"),
    ("sd2", [], {"global_step": "875000"}, "sd2_base"),
    ("sd2", [], {"modelspec.prediction_type": "epsilon"}, "sd2_base"),
    ("sd2", [], {"modelspec.prediction_type": "v"}, "sd2_v"),
    ("sdxl", [], {}, "sdxl_base"),
])
def test_folder_for_each_family(base, variant, metadata, want):
    assert model_configs.folder_name(base, model_configs.prediction_of(base, variant, metadata)) == want


@pytest.mark.parametrize("base,kind", [("sd3", "checkpoint"), ("sd1", "lora"), ("unknown", "checkpoint")])
def test_what_cannot_be_generated_says_so(base, kind):
    with pytest.raises(IncompatibleModelError, match=base if kind == "checkpoint" else kind):
        model_configs.pipeline_class_name(base, kind)


def test_pipeline_classes_by_family():
    assert model_configs.pipeline_class_name("sd2") == "StableDiffusionPipeline"
    assert model_configs.pipeline_class_name("demo_sdxl") == "StableDiffusionXLPipeline"
