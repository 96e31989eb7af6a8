"""labkit.files.opener.open_model: every form a model comes in, and every thing that is not a model."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import labkit
from labkit.errors import CorruptFileError, IncompatibleModelError, NotAModelError
from labkit.files.opener import open_model
from labkit.tensors import TensorInfo


def test_import_labkit_is_cheap_and_open_model_is_lazy() -> None:
    code = ("import sys, labkit; assert 'torch' not in sys.modules; f = labkit.open_model; "
            "assert 'torch' in sys.modules; print(f.__module__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "labkit.files.opener"
    assert labkit.open_model is open_model


def test_safetensors_with_metadata(tmp_path: Path) -> None:
    path = tmp_path / "lora.safetensors"
    save_file({"lora_unet_x.lora_down.weight": torch.ones(4, 8),
               "lora_unet_x.alpha": torch.tensor(2.0)}, path,
              metadata={"ss_network_dim": "4", "ss_network_alpha": "2"})
    model = open_model(path)
    assert model.format == "safetensors" and model.path == path
    assert model.metadata == {"ss_network_dim": "4", "ss_network_alpha": "2"}
    assert model.table["lora_unet_x.lora_down.weight"] == TensorInfo((4, 8), "F32")
    assert torch.equal(model.tensor("lora_unet_x.lora_down.weight"), torch.ones(4, 8))
    assert [n for n, _ in model.iter_tensors()] == list(model.table)
    frame = model.tensors
    assert list(frame.columns) == ["name", "dtype", "shape", "nbytes"]
    assert frame.set_index("name").loc["lora_unet_x.lora_down.weight", "nbytes"] == 128
    assert model.n_params == 33
    with pytest.raises(IncompatibleModelError, match="no tensor named 'nope'"):
        model.tensor("nope")


def test_repr_and_html_summarise(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    save_file({"a": torch.ones(10, dtype=torch.float16), "b": torch.ones(2)}, path)
    model = open_model(path)
    text, page = repr(model), model._repr_html_()
    for part in ("safetensors", "12", "F16 x1", "F32 x1", "28 B"):
        assert part in text and part in page
    assert "<table>" in page and "m.safetensors" in page


def test_zip_checkpoint_nested_state_dict(tmp_path: Path) -> None:
    path = tmp_path / "model.ckpt"
    torch.save({"state_dict": {"first_stage_model.w": torch.ones(2), "ema": {"x": torch.zeros(3)}},
                "global_step": 12, "epoch": 1, "optimizer_states": [{"m": torch.ones(5)}]}, path)
    model = open_model(path)
    assert model.format == "pickle"
    assert list(model.table) == ["first_stage_model.w", "ema.x"]
    assert model.metadata["global_step"] == "12" and model.metadata["epoch"] == "1"
    assert "optimizer_states.0.m" not in model.table
    assert torch.equal(model.tensor("ema.x"), torch.zeros(3))


def test_a1111_embedding_is_flattened(tmp_path: Path) -> None:
    path = tmp_path / "emb.pt"
    torch.save({"string_to_token": {"*": 265}, "string_to_param": {"*": torch.ones(2, 768)},
                "name": "emb", "step": 500}, path)
    model = open_model(path)
    assert model.table == {"string_to_param.*": TensorInfo((2, 768), "F32")}
    assert model.metadata["name"] == "emb" and model.metadata["string_to_token.*"] == "265"


def test_content_not_extension_decides(tmp_path: Path) -> None:
    tensors = {"w": torch.ones(3)}
    save_file(tensors, tmp_path / "real.ckpt")
    torch.save(tensors, tmp_path / "real.safetensors")
    assert open_model(tmp_path / "real.ckpt").format == "safetensors"
    assert open_model(tmp_path / "real.safetensors").format == "pickle"


NOT_MODELS = {
    "lfs.safetensors": (b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 9\n",
                        NotAModelError, "git lfs pull"),
    "page.safetensors": (b"\n  <!DOCTYPE html>\n<html><body>Not found</body></html>",
                         NotAModelError, "HTML page"),
    "empty.ckpt": (b"", NotAModelError, "empty file"),
    "notes.ckpt": (b"just some notes\n", NotAModelError, "text file"),
}


@pytest.mark.parametrize("name", NOT_MODELS)
def test_not_a_model(tmp_path: Path, name: str) -> None:
    data, error, text = NOT_MODELS[name]
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(error) as err:
        open_model(path)
    assert text in str(err.value) and name in str(err.value)
    assert path.read_bytes() == data


def test_truncated_safetensors(tmp_path: Path) -> None:
    path = tmp_path / "cut.safetensors"
    save_file({"w": torch.ones(100)}, path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(CorruptFileError, match="missing"):
        open_model(path)


def test_truncated_zip_checkpoint(tmp_path: Path) -> None:
    buf = io.BytesIO()
    torch.save({"w": torch.ones(1000)}, buf)
    path = tmp_path / "cut.ckpt"
    path.write_bytes(buf.getvalue()[:2000])
    with pytest.raises(CorruptFileError, match="cut short"):
        open_model(path)


def test_missing_path_and_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(NotAModelError, match="no such file"):
        open_model(tmp_path / "nothing.safetensors")
    (tmp_path / "empty").mkdir()
    with pytest.raises(NotAModelError, match="no model"):
        open_model(tmp_path / "empty")


def test_pickle_without_tensors(tmp_path: Path) -> None:
    path = tmp_path / "config.pt"
    torch.save({"lr": 0.1}, path)
    with pytest.raises(NotAModelError, match="no tensors"):
        open_model(path)


# --- diffusers folders -------------------------------------------------------------------------

def _tiny_models() -> dict[str, torch.nn.Module]:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(8, 16), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=12,
        attention_head_dim=2, norm_num_groups=4)
    vae = AutoencoderKL(block_out_channels=(8,), down_block_types=("DownEncoderBlock2D",),
                        up_block_types=("UpDecoderBlock2D",), latent_channels=4, norm_num_groups=4,
                        sample_size=8)
    text = CLIPTextModel(CLIPTextConfig(hidden_size=12, intermediate_size=16, num_hidden_layers=1,
                                        num_attention_heads=2, vocab_size=50,
                                        max_position_embeddings=8))
    return {"unet": unet, "vae": vae, "text_encoder": text}


@pytest.fixture(scope="module")
def pipeline_folder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    import copy
    import json

    from diffusers import DDIMScheduler

    root = tmp_path_factory.mktemp("pipe")
    models = _tiny_models()
    models["unet"].save_pretrained(root / "unet", max_shard_size="20KB")
    copy.deepcopy(models["unet"]).half().save_pretrained(root / "unet", variant="fp16")
    models["vae"].save_pretrained(root / "vae")
    copy.deepcopy(models["vae"]).half().save_pretrained(root / "vae", variant="fp16")
    models["text_encoder"].save_pretrained(root / "text_encoder")
    DDIMScheduler().save_pretrained(root / "scheduler")
    (root / "tokenizer").mkdir()
    (root / "tokenizer" / "vocab.json").write_text("{}")
    (root / "model_index.json").write_text(json.dumps({
        "_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.42.1",
        "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
        "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers",
                                                                        "CLIPTokenizer"],
        "scheduler": ["diffusers", "DDIMScheduler"], "safety_checker": [None, None]}))
    return root, models


def test_pipeline_folder_names_tensors_by_component(pipeline_folder: tuple[Path, dict]) -> None:
    root, models = pipeline_folder
    assert len(list((root / "unet").glob("diffusion_pytorch_model-0*.safetensors"))) > 1
    model = open_model(root)
    assert model.format == "diffusers"
    assert model.components == {c: root / c for c in ("unet", "vae", "text_encoder")}
    expected = {f"{c}/{k}": (tuple(v.shape), "F32")
                for c, m in models.items() for k, v in m.state_dict().items()}
    assert {n: (i.shape, i.dtype) for n, i in model.table.items()} == expected
    assert "unet/conv_in.weight" in model.table and "vae/encoder.conv_in.weight" in model.table
    assert torch.equal(model.tensor("unet/conv_in.weight"), models["unet"].conv_in.weight.detach())
    assert model.metadata["_class_name"] == "StableDiffusionPipeline"
    assert model.metadata["unet"] == '["diffusers", "UNet2DConditionModel"]'


def test_pipeline_folder_fp16_variant(pipeline_folder: tuple[Path, dict]) -> None:
    root, _ = pipeline_folder
    model = open_model(root, variant="fp16")
    dtypes = {n.split("/")[0]: i.dtype for n, i in model.table.items()}
    assert dtypes == {"unet": "F16", "vae": "F16", "text_encoder": "F32"}
    assert model.tensor("vae/decoder.conv_out.weight").dtype == torch.float16


def test_component_folder_alone_sharded(pipeline_folder: tuple[Path, dict]) -> None:
    root, models = pipeline_folder
    model = open_model(root / "unet")
    assert model.format == "diffusers"
    assert set(model.table) == set(models["unet"].state_dict())
    assert model.metadata["_class_name"] == "UNet2DConditionModel"
    assert torch.equal(model.tensor("conv_out.bias"), models["unet"].conv_out.bias.detach())


def test_bin_component_goes_through_the_safe_loader(tmp_path: Path,
                                                    pipeline_folder: tuple[Path, dict]) -> None:
    _, models = pipeline_folder
    models["vae"].save_pretrained(tmp_path / "vae", safe_serialization=False)
    assert (tmp_path / "vae" / "diffusion_pytorch_model.bin").is_file()
    model = open_model(tmp_path / "vae")
    assert set(model.table) == set(models["vae"].state_dict())


def test_only_a_variant_present(tmp_path: Path, pipeline_folder: tuple[Path, dict]) -> None:
    root, _ = pipeline_folder
    folder = tmp_path / "vae"
    folder.mkdir()
    for name in ("config.json", "diffusion_pytorch_model.fp16.safetensors"):
        (folder / name).write_bytes((root / "vae" / name).read_bytes())
    assert {i.dtype for i in open_model(folder).table.values()} == {"F16"}


def _copy_tree(src: Path, dst: Path) -> None:
    import shutil

    shutil.copytree(src, dst)


def test_missing_component_weights(tmp_path: Path, pipeline_folder: tuple[Path, dict]) -> None:
    root, _ = pipeline_folder
    _copy_tree(root, tmp_path / "pipe")
    for f in (tmp_path / "pipe" / "vae").glob("*.safetensors"):
        f.unlink()
    with pytest.raises(CorruptFileError, match="component 'vae'"):
        open_model(tmp_path / "pipe")


def test_missing_shard(tmp_path: Path, pipeline_folder: tuple[Path, dict]) -> None:
    root, _ = pipeline_folder
    _copy_tree(root / "unet", tmp_path / "unet")
    next((tmp_path / "unet").glob("diffusion_pytorch_model-00002-*.safetensors")).unlink()
    with pytest.raises(CorruptFileError, match="which is missing"):
        open_model(tmp_path / "unet")


def test_tensors_the_table_cannot_name_go_to_metadata(tmp_path: Path) -> None:
    path = tmp_path / "odd.pt"
    torch.save({"w": torch.ones(2), "z": torch.zeros(2, dtype=torch.complex128)}, path)
    model = open_model(path)
    assert list(model.table) == ["w"]
    assert "complex128" in model.metadata["z"]


@pytest.mark.parametrize("protocol_form", ["zip", "legacy"])
def test_a_pickle_is_sniffed_once_and_scanned_once(tmp_path: Path, monkeypatch, protocol_form):
    from labkit import sniff
    from labkit.safety import verdicts

    path = tmp_path / "model.ckpt"
    torch.save({"state_dict": {"w": torch.ones(2)}}, path,
               _use_new_zipfile_serialization=protocol_form == "zip")
    heads, walks = [], []
    read_head, scan_file = sniff.read_head, verdicts.scan_file
    monkeypatch.setattr(sniff, "read_head", lambda p: heads.append(p) or read_head(p))
    monkeypatch.setattr(verdicts, "scan_file", lambda *a: walks.append(a) or scan_file(*a))
    model = open_model(path)
    assert list(model.table) == ["w"]
    assert (len(heads), len(walks)) == (1, 1)


def test_model_file_stats_comes_from_the_stats_layer(tmp_path: Path) -> None:
    from labkit.files.model_file import ANALYSES
    from labkit.stats import tensor_stats

    path = tmp_path / "m.safetensors"
    save_file({"w": torch.arange(4.0)}, path)
    assert ANALYSES["stats"] is tensor_stats
    assert open_model(path).stats(progress=False)["mean"].tolist() == [1.5]


def test_a_peft_adapter_folder_opens_as_its_weights_with_the_config_as_metadata(tmp_path):
    from tests.fixtures import wild_formats as W

    sd, config = W.peft_adapter("unet", "sd15")
    model = open_model(W.write_peft_folder(tmp_path / "adapter", sd, config))
    assert model.path.name == "adapter_model.safetensors" and set(model.table) == set(sd)
    assert json.loads(model.metadata["adapter_config.json"])["rank_pattern"] == config["rank_pattern"]
    assert model.identity.kind == "lora"


def test_a_peft_adapter_folder_without_weights_says_what_is_missing(tmp_path):
    (tmp_path / "adapter_config.json").write_text("{}")
    with pytest.raises(CorruptFileError, match="adapter_model.safetensors or adapter_model.bin"):
        open_model(tmp_path)
