"""SD 2.x single file <-> diffusers folder, with diffusers' own from_single_file as the peer, on a
tiny SD 2.x whose single file has every key of the real SD 2.1 file (768-v and 512-base)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from diffusers import StableDiffusionPipeline
from diffusers.loaders.single_file_utils import SD_2_TEXT_ENCODER_KEYS_TO_IGNORE
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from labkit.convert import forms as convert
from labkit.errors import IncompatibleModelError
from labkit.files.diffusers_folder import read_json
from labkit.files.opener import open_model
from labkit.generate.pipelines import config_for
from labkit.identify import layouts
from labkit.identify.rules import PREDICTION_TYPE_KEY
from labkit.quiet import quiet_libraries
from tests.convert.test_forms import WEIGHTS, assert_same_components, leftovers, tree_hash
from tests.fixtures.layout_files import load_layout, write_sparse
from tests.fixtures.tiny_sd2 import SD2_UNET, SD2_VAE, save_tiny_sd2, write_original

SD21 = load_layout("sd21")
LAYOUT = layouts.make_layout("sd2", SD2_UNET, SD2_VAE)
# What a real SD 2.x file holds that diffusers' folder does not: diffusers' own ignore list
# (the last resblock, text_projection) and the logit scale it never reads.
NOT_IN_FOLDER = {*SD_2_TEXT_ENCODER_KEYS_TO_IGNORE, "cond_stage_model.model.logit_scale"}
RECORDED = {"v_prediction": "v", "epsilon": "epsilon"}


def diffusers_folder(single: Path, config: Path, dst: Path) -> Path:
    """The peer: diffusers' StableDiffusionPipeline.from_single_file, saved as a folder."""
    with quiet_libraries():
        StableDiffusionPipeline.from_single_file(str(single), config=str(config),
                                                 local_files_only=True).save_pretrained(dst)
    return dst


@pytest.fixture(scope="module", params=sorted(RECORDED))
def world(request, tmp_path_factory):
    """A tiny SD 2.x folder of one prediction type, its original single file, diffusers' folder."""
    root = tmp_path_factory.mktemp(request.param)
    folder = save_tiny_sd2(root / "tiny", request.param)
    original = write_original(folder, root / "original.safetensors")
    peer = diffusers_folder(original, folder, root / "peer")
    return SimpleNamespace(prediction=request.param, folder=folder, original=original, peer=peer)


def scheduled(folder: Path) -> str:
    return read_json(folder / "scheduler" / "scheduler_config.json")["prediction_type"]


def test_the_tiny_original_has_every_key_of_the_real_sd21_file(world):
    with safe_open(str(world.original), "pt") as f:
        names = f.keys()
        ranks = {k: len(f.get_slice(k).get_shape()) for k in names}
    assert ranks == {k: len(v.shape) for k, v in SD21.items()}  # proj_in/proj_out linear too


def test_diffusers_reads_labkits_layout_as_the_folder_holds_it(world):
    assert_same_components(world.folder, world.peer)
    assert scheduled(world.peer) == world.prediction


@pytest.mark.parametrize("suffix", [".safetensors", ".ckpt"])
def test_real_layout_survives_diffusers_then_labkit_bit_exact(world, tmp_path, suffix):
    before = tree_hash(world.peer)
    back = convert.folder_to_single_file(world.peer, tmp_path / f"back{suffix}")
    model = open_model(back)
    original = load_file(world.original)
    assert set(model.table) == set(original) - NOT_IN_FOLDER
    for key, tensor in model.iter_tensors():
        assert tensor.dtype == original[key].dtype and torch.equal(tensor, original[key]), key
    assert model.metadata[PREDICTION_TYPE_KEY] == RECORDED[world.prediction]
    assert tree_hash(world.peer) == before and leftovers(tmp_path) == []


def test_labkit_single_file_to_folder_matches_diffusers_bit_exact(world, tmp_path):
    before = tree_hash(world.original)
    ours = convert.single_file_to_folder(world.original, tmp_path / "ours",
                                         config_folder=world.folder)
    assert_same_components(ours, world.peer)
    assert read_json(ours / "scheduler" / "scheduler_config.json") == \
        read_json(world.peer / "scheduler" / "scheduler_config.json")
    assert tree_hash(world.original) == before and leftovers(tmp_path) == []


def test_labkits_own_mapping_gives_diffusers_tensors(world):
    mapped = layouts.state_dict_to_diffusers(load_file(world.original).items(), LAYOUT)
    assert sorted(mapped) == ["text_encoder", "unet", "vae"]
    for component, tensors in mapped.items():
        peer = load_file(world.peer / component / WEIGHTS[component])
        assert tensors.keys() == peer.keys(), component
        assert all(torch.equal(tensors[k], peer[k]) for k in peer), component


@pytest.mark.parametrize("suffix", [".safetensors", ".ckpt"])
def test_folder_single_file_folder_round_trip_is_exact(world, tmp_path, suffix):
    before = tree_hash(world.folder)
    single = convert.folder_to_single_file(world.folder, tmp_path / f"m{suffix}")
    assert open_model(single).metadata[PREDICTION_TYPE_KEY] == RECORDED[world.prediction]
    back = convert.single_file_to_folder(single, tmp_path / "back", config_folder=world.folder)
    assert_same_components(world.folder, back)
    assert scheduled(back) == world.prediction
    assert tree_hash(world.folder) == before and leftovers(tmp_path) == []


def test_fp16_file_records_the_prediction_and_converts_back(world, tmp_path):
    half = convert.folder_to_single_file(world.folder, tmp_path / "h.safetensors",
                                         dtype=torch.float16)
    back = convert.single_file_to_folder(half, tmp_path / "back", config_folder=world.folder)
    for comp in ("unet", "vae", "text_encoder"):
        a, b = load_file(world.folder / comp / WEIGHTS[comp]), load_file(back / comp / WEIGHTS[comp])
        assert a.keys() == b.keys() and all(torch.equal(a[k].half(), b[k]) for k in a), comp


def test_a_config_of_the_other_prediction_type_is_refused(world, tmp_path):
    other = save_tiny_sd2(tmp_path / "other", "epsilon" if world.prediction == "v_prediction"
                          else "v_prediction")
    single = convert.folder_to_single_file(world.folder, tmp_path / "m.safetensors")
    with pytest.raises(IncompatibleModelError, match="records prediction type") as e:
        convert.single_file_to_folder(single, tmp_path / "out", config_folder=other)
    assert world.prediction in str(e.value) and e.value.hint
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []


@pytest.mark.parametrize("metadata,shipped", [
    ({}, "sd2_v"),
    ({PREDICTION_TYPE_KEY: "v"}, "sd2_v"),
    ({PREDICTION_TYPE_KEY: "epsilon"}, "sd2_base"),
    ({"global_step": "875000"}, "sd2_base"),
])
def test_a_real_sized_sd21_file_gets_the_shipped_config_of_its_prediction(tmp_path, metadata,
                                                                          shipped):
    model = open_model(write_sparse(tmp_path / "sd21.safetensors", SD21, metadata))
    assert model.base == "sd2"
    assert config_for(model).name.startswith(shipped + "-")


def test_conv_shaped_proj_in_is_refused_as_diffusers_refuses_it(world, tmp_path):
    # SD 2.x's originals hold proj_in/proj_out as linear [C, C], as its folders do; a [C, C, 1, 1]
    # one (SD1's conv form) does not fit the linear config.
    sd = {k: v[:, :, None, None] if k.endswith((".proj_in.weight", ".proj_out.weight"))
          and k.startswith(layouts.UNET_PREFIX) else v for k, v in load_file(world.original).items()}
    conv = tmp_path / "conv.safetensors"
    save_file(sd, str(conv))
    with pytest.raises(IncompatibleModelError, match="proj_in.weight"):
        convert.single_file_to_folder(conv, tmp_path / "out", config_folder=world.folder)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["conv.safetensors"]
