"""Test helper: small model files of every form a user meets, written into a test's tmp_path."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import torch
from safetensors.torch import save_file

LORA_MODULE = "lora_unet_down_blocks_0_attentions_0_proj_in"
LORA_METADATA = {
    "ss_network_dim": "4",
    "ss_network_alpha": "2.0",
    "ss_tag_frequency": json.dumps({"10_cat": {"cat": 12, "tabby": 4}, "5_dog": {"dog": 7}}),
    "modelspec.title": "test cat",
}


def write_lora(path: Path, metadata: dict[str, str] | None = None) -> Path:
    """A kohya-style LoRA (one module, rank 4, two extra UNet tensors) with training metadata."""
    tensors = {
        f"{LORA_MODULE}.lora_down.weight": torch.randn(4, 320),
        f"{LORA_MODULE}.lora_up.weight": torch.randn(320, 4),
        f"{LORA_MODULE}.alpha": torch.tensor(2.0),
        "lora_unet_mid_block_attentions_0_proj_out.lora_down.weight": torch.randn(4, 320),
        "lora_unet_mid_block_attentions_0_proj_out.lora_up.weight": torch.randn(320, 4),
    }
    save_file(tensors, str(path), metadata=LORA_METADATA if metadata is None else metadata)
    return path


def write_checkpoint(path: Path) -> Path:
    """A safe torch zip checkpoint with a state_dict of two tensors."""
    torch.save({"state_dict": {"layer.weight": torch.ones(3, 3), "layer.bias": torch.zeros(3)},
                "global_step": 7}, path)
    return path


class _NamesPrint:
    """Pickles as a call to builtins.print: harmless, but outside any allowlist."""

    def __reduce__(self):
        return (print, ("this pickle ran code",))


class _NamesSystem:
    """Pickles as a call to os.system; never unpickled by the tests."""

    def __reduce__(self):
        import os

        return (os.system, ("touch /nonexistent/labkit-canary",))


def write_unsafe_pickle(path: Path, dangerous: bool = True) -> Path:
    """A pickle whose REDUCE calls os.system (or builtins.print when not `dangerous`)."""
    path.write_bytes(pickle.dumps({"weights": _NamesSystem() if dangerous else _NamesPrint()}))
    return path


def write_lfs_pointer(path: Path) -> Path:
    """What a model file is after a git clone without git-lfs."""
    path.write_text("version https://git-lfs.github.com/spec/v1\n"
                    "oid sha256:4d7a0e2e\nsize 2132625894\n")
    return path
