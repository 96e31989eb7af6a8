import hashlib

import pandas as pd
import pytest

from labkit.errors import LabkitError, NotAModelError
from labkit.inventory import (
    COLUMNS,
    HASH_KEYS,
    catalog,
    content_format,
    find_models,
    summary,
    write_table,
)
from tests.fixtures.layout_files import load_layout, write_sparse
from tests.fixtures.sample_models import write_lora


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
    assert lora["n_params"] == 4 * 4 * 320 + 1 and lora["dtypes"] == {"F32": 5}
    assert lora["size"] == (folder / "lora.safetensors").stat().st_size
    assert lora["mtime"] == pd.Timestamp((folder / "lora.safetensors").stat().st_mtime_ns,
                                         unit="ns", tz="UTC")
    assert pd.isna(lora["error"])
    assert rows.loc["sub/model.ckpt", "n_tensors"] == 2
    assert rows.loc["sub/evil.pt", "error"].startswith("unsafe: ")
    assert "system" in rows.loc["sub/evil.pt", "error"]
    assert "LFS" in rows.loc["broken.safetensors", "error"]
    assert rows.loc["pipe", "format"] == "diffusers"
    assert rows.loc["pipe", "size"] > (folder / "pipe" / "unet" / "config.json").stat().st_size
    assert "notes.txt" not in rows.index and "images.zip" not in rows.index


def test_key_metadata_names_the_trained_base_and_trigger_words(tmp_path):
    write_lora(tmp_path / "tags.safetensors")  # ss_tag_frequency: cat 12, dog 7, tabby 4
    write_lora(tmp_path / "phrase.safetensors", metadata={
        "ss_base_model_version": "sd_v1", "ss_sd_model_name": "v1-5-pruned.safetensors",
        "modelspec.trigger_phrase": "zxc style, ink"})
    rows = catalog(tmp_path, progress=False).set_index("path")
    assert rows.loc["tags.safetensors", "trigger_words"] == ["cat", "dog", "tabby"]
    assert pd.isna(rows.loc["tags.safetensors", "base_model"])
    phrase = rows.loc["phrase.safetensors"]
    assert phrase["trigger_words"] == ["zxc style", "ink"]
    assert (phrase["base_model"], phrase["trained_on"]) == ("sd_v1", "v1-5-pruned.safetensors")


def test_catalog_with_hashes_matches_hashlib(folder):
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


REAL = {"sd15": ("checkpoint", "sd1"), "sd15_inpaint": ("checkpoint", "sd1"),
        "sd21": ("checkpoint", "sd2"), "sdxl_base": ("checkpoint", "sdxl"),
        "sdxl_refiner": ("checkpoint", "sdxl_refiner"), "sd3_medium": ("checkpoint", "sd3"),
        "flux_dev": ("unet", "flux_dev"), "flux_schnell": ("unet", "flux_schnell"),
        "sd15_lora_kohya": ("lora", "sd1"), "sdxl_lora_kohya": ("lora", "sdxl")}


@pytest.fixture
def real_folder(tmp_path):
    """Two sparse files of each real layout (the second shares the first's identity)."""
    for name in REAL:
        for copy in ("a", "b"):
            write_sparse(tmp_path / f"{name}_{copy}.safetensors", load_layout(name))
    return tmp_path


def test_real_layouts_keep_their_kind_and_base(real_folder):
    frame = catalog(real_folder, progress=False, jobs=1)
    found = {p.removesuffix(".safetensors"): (k, b)
             for p, k, b in frame[["path", "kind", "base"]].itertuples(index=False)}
    assert found == {f"{name}_{c}": kb for name, kb in REAL.items() for c in ("a", "b")}
    inpaint = frame.set_index("path").loc["sd15_inpaint_a.safetensors", "variant"]
    assert inpaint == ["inpainting"]


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_the_table_written_reads_back(folder, tmp_path_factory, suffix):
    frame = catalog(folder, progress=False)
    out = write_table(frame, tmp_path_factory.mktemp("out") / f"catalog{suffix}")
    back = pd.read_parquet(out) if suffix == ".parquet" else pd.read_csv(out)
    assert list(back.columns) == COLUMNS
    assert back["path"].tolist() == frame["path"].tolist()
    assert back["kind"].fillna("-").tolist() == frame["kind"].fillna("-").tolist()
    lora = back.set_index("path").loc["lora.safetensors"]
    assert lora["size"] == frame.set_index("path").loc["lora.safetensors", "size"]
    assert '"F32": 5' in lora["dtypes"]
    tags = lora["trigger_words"]
    assert (list(tags) if suffix == ".parquet" else tags.split("; ")) == ["cat", "dog", "tabby"]


def test_a_table_of_another_suffix_is_refused(folder, tmp_path):
    with pytest.raises(LabkitError, match=r"\.parquet or \.csv"):
        write_table(catalog(folder, progress=False), tmp_path / "catalog.xlsx")
