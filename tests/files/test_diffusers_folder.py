"""labkit.files.diffusers_folder: pipeline folders as users download them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from labkit.errors import CorruptFileError
from labkit.files.diffusers_folder import open_folder

INDEX = {"_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "UNet2DConditionModel"],
         "scheduler": ["diffusers", "PNDMScheduler"], "tokenizer": ["transformers", "CLIPTokenizer"],
         "feature_extractor": ["transformers", "CLIPImageProcessor"]}


def _weights_only_download(root: Path) -> Path:
    """model_index.json and unet/ only: `hf download --include "unet/*" model_index.json`."""
    (root / "unet").mkdir(parents=True)
    (root / "model_index.json").write_text(json.dumps(INDEX))
    (root / "unet" / "config.json").write_text(json.dumps({"_class_name": "UNet2DConditionModel"}))
    save_file({"conv_in.weight": torch.zeros(4, 4, 3, 3)},
              root / "unet" / "diffusion_pytorch_model.safetensors")
    return root


def test_a_folder_without_its_weightless_scheduler_and_tokenizer_folders_opens(tmp_path: Path) -> None:
    model = open_folder(_weights_only_download(tmp_path / "sd"))
    assert list(model.table) == ["unet/conv_in.weight"]


def test_a_missing_weight_folder_is_named_as_missing(tmp_path: Path) -> None:
    root = _weights_only_download(tmp_path / "sd")
    for f in (root / "unet").iterdir():
        f.unlink()
    (root / "unet").rmdir()
    with pytest.raises(CorruptFileError, match=r"missing its component folder unet/"):
        open_folder(root)
