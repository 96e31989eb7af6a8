"""The catalog tests' folder of models and private cache."""

import json
import zipfile

import pytest
import torch
from safetensors.torch import save_file

from tests.fixtures.sample_models import (
    write_checkpoint,
    write_lfs_pointer,
    write_lora,
    write_unsafe_pickle,
)


@pytest.fixture(autouse=True)
def private_cache(monkeypatch, tmp_path_factory):
    """Each test its own cache folder, as XDG_CACHE_HOME would give."""
    monkeypatch.delenv("LABKIT_CACHE_DIR", raising=False)
    home = tmp_path_factory.mktemp("xdg")
    monkeypatch.setenv("XDG_CACHE_HOME", str(home))
    return home / "labkit"


@pytest.fixture
def folder(tmp_path):
    """Models of every format, broken and unsafe ones, and files that are no model."""
    write_lora(tmp_path / "lora.safetensors")
    (tmp_path / "sub").mkdir()
    write_checkpoint(tmp_path / "sub" / "model.ckpt")
    write_unsafe_pickle(tmp_path / "sub" / "evil.pt")
    write_lfs_pointer(tmp_path / "broken.safetensors")
    write_checkpoint(tmp_path / "no_extension")  # a checkpoint known by its content
    (tmp_path / "notes.txt").write_text("not a model")
    with zipfile.ZipFile(tmp_path / "images.zip", "w") as z:
        z.writestr("a.txt", "a zip without a pickle is not a model")
    pipe = tmp_path / "pipe"
    (pipe / "unet").mkdir(parents=True)
    (pipe / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    (pipe / "unet" / "config.json").write_text("{}")
    save_file({"conv_in.weight": torch.zeros(2, 4, 3, 3)},
              str(pipe / "unet" / "diffusion_pytorch_model.safetensors"))
    return tmp_path
