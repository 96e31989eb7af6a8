"""Write the demo base model in every form the field uses: diffusers folder, single files, VAE."""

from __future__ import annotations

import copy
import shutil
import sys
import tempfile
import types
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors.torch import load_file

from labkit.convert import forms as convert
from labkit.identify.layouts import VAE_PREFIX
from labkit.zoo.recipe.train import save_tensors

SHARD_SIZE = "2MB"
HALF_COMPONENTS = ("unet", "vae", "text_encoder")  # the text encoder is saved sharded, with its index json, as large models are
LIGHTNING_MODULE = "pytorch_lightning.callbacks.model_checkpoint"
LIGHTNING_VERSION = "1.4.2"
ARCHITECTURE = "labkit-demo-sd1"


def add_half_variants(pipe, folder: Path, components: tuple[str, ...]) -> None:
    """Write an fp16 variant (`*.fp16.safetensors`) of each component beside its fp32 files, as
    real SD repositories do: the plain files load as fp32 in every library, the variant on request."""
    with tempfile.TemporaryDirectory(dir=folder.parent) as half_dir:
        for name in components:
            half = copy.deepcopy(getattr(pipe, name)).to(torch.float16)
            half.save_pretrained(Path(half_dir) / name, variant="fp16")
        for f in Path(half_dir).glob("*/*.fp16.safetensors"):
            shutil.copy(f, folder / f.parent.name / f.name)


def save_folder(pipe, dst: Path, tokenizer_files: Path) -> Path:
    """Save a pipeline as a diffusers folder: fp32 files, an fp16 variant beside them, the text
    encoder sharded with its index json, the tokenizer as vocab.json + merges.txt as SD1.5's."""
    with convert.atomic_folder(dst) as tmp:
        pipe.save_pretrained(tmp, safe_serialization=True)
        add_half_variants(pipe, tmp, HALF_COMPONENTS)
        (tmp / "text_encoder" / "model.safetensors").unlink()
        pipe.text_encoder.save_pretrained(tmp / "text_encoder", max_shard_size=SHARD_SIZE)
        shutil.rmtree(tmp / "tokenizer")
        shutil.copytree(tokenizer_files, tmp / "tokenizer",
                        ignore=shutil.ignore_patterns("LICENSE*"))
    return dst


class _ModelCheckpointStandIn:
    """Pickled by name only: real SD1 .ckpt files carry Lightning's ModelCheckpoint class."""


@contextmanager
def _lightning_name() -> Iterator[type]:
    """Make the stand-in class picklable as Lightning's ModelCheckpoint, for one write only."""
    cls = type("ModelCheckpoint", (), {"__module__": LIGHTNING_MODULE,
                                       "__doc__": _ModelCheckpointStandIn.__doc__})
    names = LIGHTNING_MODULE.split(".")
    added = []
    for i in range(1, len(names) + 1):
        name = ".".join(names[:i])
        if name not in sys.modules:
            sys.modules[name] = types.ModuleType(name)
            added.append(name)
    sys.modules[LIGHTNING_MODULE].ModelCheckpoint = cls
    try:
        yield cls
    finally:
        for name in added:
            del sys.modules[name]


def write_ckpt(single_with_ema: Path, dst: Path, global_step: int, dtype: torch.dtype) -> Path:
    """Write a .ckpt zip pickle as SD1's trainers did: state_dict (with model_ema.), global_step,
    epoch, Lightning version and a callbacks dict keyed by the ModelCheckpoint class."""
    tensors = {k: v.to(dtype) if v.is_floating_point() and not k.startswith("model_ema.num")
               else v for k, v in load_file(str(single_with_ema)).items()}
    tmp = dst.with_name(dst.name + ".partial")
    with _lightning_name() as checkpoint_cls:
        torch.save({"state_dict": tensors, "global_step": global_step, "epoch": 0,
                    "pytorch-lightning_version": LIGHTNING_VERSION,
                    "callbacks": {checkpoint_cls: {"monitor": None, "best_model_score": None,
                                                   "best_model_path": "", "current_score": None,
                                                   "dirpath": "logs/demo_sd1/checkpoints"}}}, tmp)
    tmp.replace(dst)
    return dst


def write_vae(single_file: Path, dst: Path) -> Path:
    """A standalone VAE in the original layout (as vae-ft-mse: no first_stage_model. prefix)."""
    tensors = {k[len(VAE_PREFIX):]: v for k, v in load_file(str(single_file)).items()
               if k.startswith(VAE_PREFIX)}
    save_tensors(dst, tensors, {"format": "pt", "modelspec.architecture": f"{ARCHITECTURE}/vae"})
    return dst


def export_base(pipe, raw_unet, out: Path, work: Path, global_step: int,
                tokenizer_files: Path) -> dict[str, Path]:
    """Every base form: diffusers folder (EMA weights, as SD1.5's), single-file .safetensors (fp16,
    EMA only), .ckpt (fp16, raw weights + model_ema.) and the standalone VAE; name -> path."""
    folder = save_folder(pipe, out / "demo_sd1", tokenizer_files)
    shipped = copy.deepcopy(pipe.unet.state_dict())
    pipe.unet.load_state_dict(raw_unet)
    try:
        raw_folder = save_folder(pipe, work / "raw_pipeline", tokenizer_files)
    finally:
        pipe.unet.load_state_dict(shipped)
    full = work / "demo_sd1_with_ema.safetensors"
    full.unlink(missing_ok=True)
    convert.folder_to_single_file(raw_folder, full, include_ema=folder)
    single = convert.strip_ema(full, out / "demo_sd1.safetensors", keep="ema",
                               dtype=torch.float16, overwrite=True)
    return {
        "demo_sd1": folder,
        "demo_sd1_single": single,
        "demo_sd1_ckpt": write_ckpt(full, out / "demo_sd1.ckpt", global_step, torch.float16),
        "demo_sd1_vae": write_vae(single, out / "demo_sd1_vae.safetensors"),
    }
