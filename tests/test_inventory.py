import hashlib
import json
import zipfile

import pandas as pd
import pytest
import torch
from safetensors.torch import save_file

from labkit.errors import NotAModelError
from labkit.inventory import COLUMNS, HASH_KEYS, catalog, content_format, find_models, summary
from tests.fixtures.sample_models import (
    write_checkpoint,
    write_lfs_pointer,
    write_lora,
    write_unsafe_pickle,
)


@pytest.fixture
def folder(tmp_path):
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


def test_finds_every_model_and_a_diffusers_folder_once(folder):
    found = {p.relative_to(folder).as_posix(): fmt for p, fmt in find_models(folder)}
    assert found == {"lora.safetensors": "safetensors", "broken.safetensors": "safetensors",
                     "no_extension": "pickle", "sub/model.ckpt": "pickle",
                     "sub/evil.pt": "pickle", "pipe": "diffusers"}


def test_a_component_folder_given_alone_is_one_unit(folder):
    unet = folder / "pipe" / "unet"
    assert [(p, fmt) for p, fmt in find_models(unet)] == [(unet, "diffusers")]


def test_content_format_reads_bytes_not_names(folder):
    assert content_format(folder / "no_extension") == "pickle"
    assert content_format(folder / "broken.safetensors") is None
    assert content_format(folder / "images.zip") is None
    assert content_format(folder / "lora.safetensors") == "safetensors"


def test_catalog_rows_with_errors_never_crash(folder):
    frame = catalog(folder, progress=False)
    assert list(frame.columns) == COLUMNS
    rows = frame.set_index("path")
    lora = rows.loc["lora.safetensors"]
    assert (lora["format"], lora["kind"], lora["n_tensors"]) == ("safetensors", "lora", 5)
    assert lora["size_mb"] == round((folder / "lora.safetensors").stat().st_size / 2**20, 3)
    assert pd.isna(lora["error"])
    assert rows.loc["sub/model.ckpt", "n_tensors"] == 2
    assert rows.loc["sub/evil.pt", "error"].startswith("unsafe: ")
    assert "system" in rows.loc["sub/evil.pt", "error"]
    assert "LFS" in rows.loc["broken.safetensors", "error"]
    assert rows.loc["pipe", "format"] == "diffusers"
    assert "notes.txt" not in rows.index and "images.zip" not in rows.index


def test_catalog_with_hashes_matches_hashlib(folder, monkeypatch, tmp_path_factory):
    monkeypatch.setenv("LABKIT_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    frame = catalog(folder, hashes=True, progress=False).set_index("path")
    assert list(frame.columns) == COLUMNS[1:] + HASH_KEYS
    expected = hashlib.sha256((folder / "lora.safetensors").read_bytes()).hexdigest().upper()
    assert frame.loc["lora.safetensors", "sha256"] == expected
    assert frame.loc["lora.safetensors", "autov2"] == expected[:10]
    assert pd.isna(frame.loc["sub/evil.pt", "sha256"]) and pd.isna(frame.loc["pipe", "sha256"])


def test_catalog_of_a_file_or_missing_folder_is_refused(folder):
    with pytest.raises(NotAModelError, match="not a folder"):
        catalog(folder / "lora.safetensors")
    with pytest.raises(NotAModelError, match="missing"):
        catalog(folder / "missing")


def test_summary_counts_params_and_dtypes(folder):
    from labkit.files.opener import open_model

    facts = summary(open_model(folder / "lora.safetensors"))
    assert facts["n_params"] == 4 * 4 * 320 + 1
    assert facts["dtypes"] == {"F32": 5}
    assert facts["kind"] == "lora" and facts["evidence"]
