import math
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from labkit.convert import forms as convert
from labkit.errors import CorruptFileError, LabkitError
from labkit.files.model_file import ModelFile
from labkit.files.opener import open_model
from labkit.stats import per_tensor as stats
from tests.fixtures.tiny_models import save_tiny

PROJ = "model.diffusion_model.input_blocks.1.1.proj_in.weight"
LORA = "lora_unet_down_blocks_0_attentions_0_proj_in"


@pytest.fixture(scope="module")
def forms(tmp_path_factory) -> dict[str, Path]:
    """One tiny SD1 model in the demo world's forms: a diffusers folder and an fp16 single file
    of its EMA weights, and a .ckpt of the raw weights with the EMA copy under model_ema."""
    root = tmp_path_factory.mktemp("forms")
    folder = save_tiny(root / "folder", "sd1")
    raw = save_tiny(root / "raw", "sd1", seed=1)
    for part in ("vae", "text_encoder"):  # training changes only the UNet
        shutil.rmtree(raw / part)
        shutil.copytree(folder / part, raw / part)
    return {"folder": folder,
            "fp16": convert.folder_to_single_file(folder, root / "m.fp16.safetensors",
                                                  dtype=torch.float16),
            "ckpt": convert.folder_to_single_file(raw, root / "m.ckpt", include_ema=folder)}


def write(path: Path, tensors: dict[str, torch.Tensor]) -> Path:
    save_file(tensors, str(path))
    return path


def test_one_row_per_tensor_with_known_stats(tmp_path):
    path = write(tmp_path / "m.safetensors", {
        PROJ: torch.tensor([[1.0, 2.0], [3.0, 4.0]]),
        "first_stage_model.bad": torch.tensor([0.0, math.nan, math.inf], dtype=torch.float16),
        f"{LORA}.alpha": torch.tensor(4.0),
    })
    table = stats.tensor_stats(path, progress=False).set_index("name")
    assert sorted(table.index) == sorted([PROJ, "first_stage_model.bad", f"{LORA}.alpha"])
    row = table.loc[PROJ]
    assert (row["component"], row["block"], row["dtype"], row["shape"], row["numel"],
            row["bytes"]) == ("UNet", "IN01", "F32", (2, 2), 4, 16)
    assert (row["mean"], row["l2_norm"], row["abs_max"]) == pytest.approx((2.5, math.sqrt(30), 4))
    bad = table.loc["first_stage_model.bad"]
    assert (bad["component"], bad["nan_count"], bad["inf_count"], bad["max"]) == ("VAE", 1, 1, 0)
    lora = table.loc[f"{LORA}.alpha"]
    assert (lora["component"], lora["block"], lora["lora_part"], lora["mean"]) == (
        "UNet", "IN01", "alpha", 4.0)


def test_pattern_filters_names_and_a_bad_pattern_is_a_clear_error(forms):
    table = stats.tensor_stats(forms["ckpt"], pattern=r"^model_ema\.", progress=False)
    assert len(table) > 10 and set(table["component"]) == {"EMA"}
    assert "IN01" in set(table["block"])
    with pytest.raises(LabkitError, match="regular expression"):
        stats.tensor_stats(forms["ckpt"], pattern="(", progress=False)


def test_every_form_gives_the_same_numbers(forms):
    tables = {k: stats.tensor_stats(open_model(p), progress=False).set_index("name")
              for k, p in forms.items()}
    assert len(tables["folder"]) < len(tables["ckpt"])
    conv = "first_stage_model.encoder.conv_in.weight"
    folder, ckpt = tables["folder"].loc["vae/encoder.conv_in.weight"], tables["ckpt"].loc[conv]
    for col in ("mean", "std", "l2_norm", "min", "max", "numel"):
        assert folder[col] == pytest.approx(ckpt[col], rel=1e-6)
    assert tables["fp16"].loc[conv, "l2_norm"] == pytest.approx(ckpt["l2_norm"], rel=1e-3)
    assert set(tables["fp16"]["dtype"]) <= {"F16", "I64"}


def test_a_truncated_file_is_refused_not_tabled(forms, tmp_path):
    data = forms["fp16"].read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[: len(data) - 100])
    with pytest.raises(CorruptFileError, match="cut.safetensors"):
        stats.tensor_stats(cut, progress=False)
    data = forms["ckpt"].read_bytes()
    cut_ckpt = tmp_path / "cut.ckpt"
    cut_ckpt.write_bytes(data[: len(data) // 2])
    with pytest.raises(LabkitError):
        stats.tensor_stats(cut_ckpt, progress=False)


class Failing:
    """A tensor source that fails on its third read, as a file cut short after opening would."""

    def __init__(self):
        self.reads = 0

    def load(self, key):
        self.reads += 1
        if self.reads == 3:
            raise RuntimeError("unexpected end of file")
        return torch.ones(2)


def test_a_read_failing_mid_stream_raises_instead_of_giving_part_of_the_table():
    from labkit.tensors import TensorInfo

    source = Failing()
    names = [f"t{i}" for i in range(5)]
    model = ModelFile(Path("mid.ckpt"), "pickle",
                      dict.fromkeys(names, TensorInfo((2,), "F32")), {},
                      {n: (source, n) for n in names})
    with pytest.raises(CorruptFileError, match=r"mid.ckpt.*tensor 3 of 5"):
        stats.tensor_stats(model, progress=False)


def test_a_stream_that_ends_early_raises(monkeypatch, forms):
    model = open_model(forms["ckpt"])
    monkeypatch.setattr(model, "iter_tensors",
                        lambda names: ((n, model.tensor(n)) for n in list(names)[:3]))
    with pytest.raises(CorruptFileError, match="only 3 of"):
        stats.tensor_stats(model, progress=False)


def matched(table):
    return table[~table["status"].str.startswith("only")]


def test_a_safetensors_file_cut_after_opening_is_refused(forms, tmp_path):
    path = tmp_path / "m.safetensors"
    shutil.copy(forms["fp16"], path)
    model = open_model(path)
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size - 10)
    with pytest.raises(CorruptFileError, match="m.safetensors"):
        stats.tensor_stats(model, progress=False)


@pytest.mark.parametrize(("a", "b"), [("ckpt", "folder"), ("folder", "fp16"), ("ckpt", "fp16")])
def test_the_three_forms_compare_equal_with_the_ema_weights(forms, a, b):
    table = stats.compare(forms[a], forms[b], progress=False, ema=True)
    assert len(matched(table)) > 400
    allowed = {"equal"} if "fp16" not in (a, b) else {"equal", "close"}
    assert set(matched(table)["status"]) <= allowed
    alone = table[table["status"].str.startswith("only")]
    assert all(n.endswith("position_ids") or n.startswith("model_ema.") and "_model" not in n
               for n in alone["name"])


def test_a_ckpts_raw_unet_differs_from_its_ema_and_the_ema_is_its_own_rows(forms):
    table = stats.compare(forms["ckpt"], forms["folder"], progress=False)
    unet = table[table["component"] == "UNet"]
    assert (matched(unet)["status"] == "different").mean() > 0.5  # norms start at 1 in both
    assert set(matched(table[table["component"] != "UNet"])["status"]) == {"equal"}
    ema = table[table["component"] == "EMA"]
    assert len(ema) == len(unet) + 2 and set(ema["status"]) == {"only in a"}
    fp16 = stats.compare(forms["folder"], forms["fp16"], progress=False)
    assert stats.status_counts(fp16)["close"] > 100
    assert (fp16["cosine"].dropna() > 0.9999).all()


def test_changes_shapes_and_missing_tensors_are_reported(forms, tmp_path):
    tensors = load_file(str(forms["fp16"]))
    tensors[PROJ] = tensors[PROJ] * 2
    tensors["model.diffusion_model.out.2.bias"] = torch.zeros(5, dtype=torch.float16)
    del tensors["model.diffusion_model.out.0.weight"]
    tensors["extra"] = torch.ones(1)
    table = stats.compare(forms["fp16"], write(tmp_path / "b.safetensors", tensors),
                          progress=False).set_index("name")
    assert table.loc["unet/down_blocks.0.attentions.0.proj_in.weight", "status"] == "different"
    assert table.loc["unet/down_blocks.0.attentions.0.proj_in.weight", "rel_diff"] == (
        pytest.approx(1.0))
    assert table.loc["unet/conv_out.bias", "status"] == "shape changed"
    assert table.loc["unet/conv_norm_out.weight", "status"] == "only in a"
    assert table.loc["extra", "status"] == "only in b"
    assert stats.status_counts(table)["different"] == 1


def test_a_merged_lora_shows_in_its_block_only(forms, tmp_path):
    base = load_file(str(forms["fp16"]))
    down, up = torch.randn(2, 8), torch.randn(8, 2)
    merged = dict(base)
    weight = merged[PROJ].float()
    merged[PROJ] = (weight + 0.5 * (up @ down).reshape(weight.shape)).half()
    table = stats.compare(forms["fp16"], write(tmp_path / "merged.safetensors", merged),
                          progress=False)
    by_block = stats.difference_by_block(table).set_index("block")
    assert by_block.loc["IN01", "changed"] == 1 and by_block.loc["IN01", "rel_diff"] > 0
    assert (by_block.drop(index="IN01")["rel_diff"] == 0).all()


def test_summaries_add_up(forms):
    table = stats.tensor_stats(forms["ckpt"], progress=False)
    comps = stats.by_component(table).set_index("component")
    assert comps["params"].sum() == table["numel"].sum()
    assert {"UNet", "VAE", "text encoder", "EMA"} <= set(comps.index)
    assert comps.loc["UNet", "params"] == comps.loc["EMA", "params"] - 2  # decay, num_updates
    dtypes = stats.bytes_by_dtype(table).set_index("component")
    assert dtypes.loc["total", "total"] == table["bytes"].sum()
    blocks = stats.by_block(table)
    assert list(blocks["block"][:2]) == ["BASE", "IN00"] and blocks["block"].iloc[-1].startswith("OUT")
    assert blocks.loc[blocks["block"] == "BASE", "params"].item() == comps.loc["text encoder", "params"]
    unet_in01 = table[(table["component"] == "UNet") & (table["block"] == "IN01")]["numel"].sum()
    assert blocks.loc[blocks["block"] == "IN01", "params"].item() == unet_in01
    norms = stats.block_norms(table)
    assert "other" not in norms.columns
    assert list(norms.index) == list(blocks["block"])
    assert "cross-attention" in norms.columns and norms.loc["IN01", "cross-attention"] > 0
    assert stats.summary_row(table)["n_tensors"] == len(table)


def test_ema_weights_against_the_trained_ones(tmp_path):
    w = torch.randn(4, 4)
    path = tmp_path / "ema.ckpt"
    torch.save({"state_dict": {PROJ: w, "model_ema.diffusion_modelinput_blocks11proj_inweight":
                               w * 0.9, "model.diffusion_model.out.2.bias": torch.ones(4)}}, path)
    table = stats.ema_difference(path, progress=False)
    assert list(table["name"]) == [PROJ]
    assert (table["block"].item(), table["status"].item()) == ("IN01", "different")
    assert table["rel_diff"].item() == pytest.approx(0.1, rel=1e-5)


def test_broken_position_ids_are_caught(tmp_path):
    ids = "cond_stage_model.transformer.text_model.embeddings.position_ids"
    broken = torch.arange(77, dtype=torch.float32)[None]
    broken[0, 76] = 75.9975
    path = write(tmp_path / "merged.safetensors", {ids: broken})
    row = stats.position_ids_check(path).iloc[0]
    assert (row["dtype"], row["integer_dtype"], row["ok"], row["non_integer"]) == (
        "F32", False, False, 1)
    assert row["wrong_positions"] == [76] and row["max_offset"] == pytest.approx(0.0025, rel=1e-3)
    good = write(tmp_path / "good.safetensors", {ids: torch.arange(77)[None]})
    assert stats.position_ids_check(good)["ok"].tolist() == [True]


def test_select_rows_filters_by_regex_or_substring_and_sorts():
    import pandas as pd

    table = pd.DataFrame({"name": ["unet/a(1)", "vae/b", "unet/c"], "mean": [2.0, 1.0, 3.0]})
    assert list(stats.select_rows(table, "^UNET/", "mean", False)["name"]) == ["unet/c",
                                                                            "unet/a(1)"]
    assert list(stats.select_rows(table, "a(1", "name")["name"]) == ["unet/a(1)"]
    assert list(stats.select_rows(table, sort_by="mean")["mean"]) == [1.0, 2.0, 3.0]
