"""Test helper: real SD key tables as TensorInfo tables and sparse files, and real-world edits.

A sparse safetensors file is its header followed by a hole: zero-filled, full length, no disk.
The edits make what real files also look like: EMA copies and schedule buffers, demo-sized dims,
LyCORIS / DoRA / PEFT adapters derived from a kohya LoRA table or a diffusers model table.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from pathlib import Path

from labkit.tensors import TensorInfo

T = TensorInfo
LAYOUTS = Path(__file__).resolve().parent / "data" / "layouts"  # copies of /work/shared/layouts
LAYOUT_NAMES = sorted(p.stem for p in LAYOUTS.glob("*.json"))


def load_layout(name: str) -> dict[str, TensorInfo]:
    """The key table of one layout file (e.g. "sd15") as {key: TensorInfo}, in file order."""
    data = json.loads((LAYOUTS / f"{name}.json").read_text())
    return {k: TensorInfo(tuple(v["shape"]), v["dtype"]) for k, v in data["tensors"].items()}


def write_sparse(path: Path, table: Mapping[str, TensorInfo],
                 metadata: Mapping[str, str] | None = None) -> Path:
    """Write a valid zero-filled safetensors file for `table`: the header, then a hole."""
    header: dict[str, object] = {"__metadata__": dict(metadata)} if metadata else {}
    offset = 0
    for key, info in table.items():
        header[key] = {"dtype": info.dtype, "shape": list(info.shape),
                       "data_offsets": [offset, offset + info.nbytes]}
        offset += info.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        f.truncate(8 + len(raw) + offset)
    return path


def read_sparse(path: Path) -> tuple[dict[str, TensorInfo], dict[str, str]]:
    """(table, metadata) from a safetensors header: the minimal read, 8 + N bytes."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    metadata = header.pop("__metadata__", {})
    return {k: TensorInfo(tuple(v["shape"]), v["dtype"]) for k, v in header.items()}, metadata


def with_ema_and_buffers(table, dotted):
    """The table plus model_ema.* copies of the UNet (real files drop the dots) and DDPM buffers."""
    out = dict(table)
    for key, info in table.items():
        if key.startswith("model.diffusion_model."):
            rest = key[len("model.diffusion_model."):]
            out["model_ema.diffusion_model." + rest if dotted
                else "model_ema.diffusion_model" + rest.replace(".", "")] = info
    out["model_ema.decay"] = T((), "F32")
    out["model_ema.num_updates"] = T((), "I32")
    for buffer in ("betas", "alphas_cumprod", "alphas_cumprod_prev", "posterior_variance",
                   "sqrt_alphas_cumprod", "logvar"):
        out[buffer] = T((1000,), "F32")
    return out


def shrink_context(table, width):
    """A demo-sized checkpoint: cross-attention reads a context `width` wide."""
    return {k: T(v.shape[:-1] + (width,), v.dtype)
            if k.endswith(("attn2.to_k.weight", "attn2.to_v.weight")) else v
            for k, v in table.items()}


def lora_modules(table):
    """{module: (down TensorInfo, up TensorInfo)} of a kohya LoRA table."""
    return {k[: -len(".lora_down.weight")]: (v, table[k.replace("lora_down", "lora_up")])
            for k, v in table.items() if k.endswith(".lora_down.weight")}


def to_loha(table):
    """A LyCORIS LoHa table over the modules of a kohya LoRA table."""
    out = {}
    for m, (down, up) in lora_modules(table).items():
        rank, fan_in = down.shape[0], down.shape[1] * (down.shape[2] * down.shape[3]
                                                       if len(down.shape) == 4 else 1)
        for w in ("w1", "w2"):
            out[f"{m}.hada_{w}_a"] = T((up.shape[0], rank), "F16")
            out[f"{m}.hada_{w}_b"] = T((rank, fan_in), "F16")
        out[f"{m}.alpha"] = T((), "F16")
    return out


def to_lokr(table, factored):
    """A LyCORIS LoKr table (w1 4x4, w2 whole or factored) over a kohya LoRA's modules."""
    out, f = {}, 4
    for m, (down, up) in lora_modules(table).items():
        out[f"{m}.lokr_w1"] = T((f, f), "F16")
        w2 = (up.shape[0] // f, down.shape[1] // f, *down.shape[2:])
        if factored:
            out[f"{m}.lokr_w2_a"] = T((w2[0], 8), "F16")
            out[f"{m}.lokr_w2_b"] = T((8, *w2[1:]), "F16")
        else:
            out[f"{m}.lokr_w2"] = T(w2, "F16")
    return out


def to_full(table):
    """A LyCORIS full-diff table over a kohya LoRA's modules."""
    out = {}
    for m, (down, up) in lora_modules(table).items():
        out[f"{m}.diff"] = T((up.shape[0], *down.shape[1:]), "F16")
        out[f"{m}.diff_b"] = T((up.shape[0],), "F16")
    return out


def to_dora(table):
    """The kohya LoRA table plus LyCORIS DoRA dora_scale keys."""
    out = dict(table)
    for m, (_down, up) in lora_modules(table).items():
        out[f"{m}.dora_scale"] = T((up.shape[0], 1), "F16")
    return out


def shrink_lora(table, width):
    """A demo-sized LoRA: the cross-attention and text encoder inputs are `width` wide."""
    return {k: T((v.shape[0], width), v.dtype)
            if k.endswith(".lora_down.weight") and ("attn2_to_k" in k or "_te" in k) else v
            for k, v in table.items()}


def peft_lora(table, component, rank=8, magnitude=False):
    """A PEFT/diffusers LoRA over every attention projection of a diffusers model table."""
    out = {}
    targets = ("to_q.weight", "to_k.weight", "to_v.weight", "to_out.0.weight", "q_proj.weight",
               "k_proj.weight", "v_proj.weight", "out_proj.weight")
    for key, info in table.items():
        if key.endswith(targets) and len(info.shape) == 2:
            module = f"{component}.{key[: -len('.weight')]}"
            out[f"{module}.lora_A.weight"] = T((rank, info.shape[1]), "F16")
            out[f"{module}.lora_B.weight"] = T((info.shape[0], rank), "F16")
            if magnitude:
                out[f"{module}.lora_magnitude_vector"] = T((info.shape[0],), "F16")
    return out
