"""Small LoRA-like files for a tiny pipeline, in every naming the LoRA lab reads, for tests."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

# A few modules of the tiny SD1 pipeline of tests/tiny_models.py: attention, a conv, the text encoder.
UNET_MODULES = (
    "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q",
    "down_blocks.0.attentions.1.transformer_blocks.0.attn2.to_v",
    "mid_block.attentions.0.transformer_blocks.0.ff.net.2",
    "up_blocks.1.attentions.2.transformer_blocks.0.attn1.to_out.0",
    "up_blocks.1.resnets.0.conv1",
)
TE_MODULES = ("encoder.layers.0.self_attn.q_proj", "encoder.layers.1.mlp.fc1")
KOHYA = {"unet": "lora_unet_", "text_encoder": "lora_te_"}


def _kohya_name(component: str, module: str) -> str:
    full = module if component == "unet" else "text_model." + module
    return KOHYA[component] + full.replace(".", "_")


def _factors(kind: str, weight: torch.Tensor, rank: int, g: torch.Generator) -> dict[str, torch.Tensor]:
    out, inner = weight.shape[0], weight[0].numel()
    kernel = tuple(weight.shape[2:])

    def rnd(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * 0.3

    if kind in ("lora", "peft"):
        return {"lora_down.weight": rnd(rank, weight.shape[1], *kernel),
                "lora_up.weight": rnd(out, rank, *((1, 1) if kernel else ()))}
    if kind == "loha":
        return {"hada_w1_a": rnd(out, rank), "hada_w1_b": rnd(rank, inner),
                "hada_w2_a": rnd(out, rank), "hada_w2_b": rnd(rank, inner)}
    if kind == "lokr":
        return {"lokr_w1": rnd(2, 2), "lokr_w2_a": rnd(out // 2, rank),
                "lokr_w2_b": rnd(rank, inner // 2)}
    return {"diff": rnd(*weight.shape), "diff_b": rnd(out)}


def write_adapter(path: Path, pipe, kind: str = "lora", rank: int = 2, alpha: float = 1.0,
                  seed: int = 0, with_text: bool = True) -> Path:
    """A kohya/LyCORIS file (kind lora, loha, lokr or full) or a PEFT one (kind "peft") for a
    few modules of `pipe`."""
    g = torch.Generator().manual_seed(seed)
    tensors: dict[str, torch.Tensor] = {}
    targets = [("unet", m) for m in UNET_MODULES]
    if with_text:
        targets += [("text_encoder", m) for m in TE_MODULES]
    for component, module in targets:
        weight = getattr(pipe, component).get_submodule(module).weight
        if kind in ("loha", "lokr") and weight.ndim == 4:
            continue
        parts = _factors(kind, weight, rank, g)
        if kind == "peft":
            name = f"{component}.{'text_model.' if component != 'unet' else ''}{module}"
            tensors[f"{name}.lora_A.weight"] = parts["lora_down.weight"]
            tensors[f"{name}.lora_B.weight"] = parts["lora_up.weight"]
            continue
        name = _kohya_name(component, module)
        tensors.update({f"{name}.{k}": v for k, v in parts.items()})
        if kind != "full":
            tensors[f"{name}.alpha"] = torch.tensor(float(alpha))
    save_file(tensors, str(path), metadata={"ss_network_dim": str(rank),
                                            "ss_network_alpha": str(alpha)})
    return path


SDXL_PREFIXES = (  # kohya's SDXL naming: original block names, two text encoders
    "lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k",
    "lora_unet_output_blocks_0_1_transformer_blocks_1_ff_net_2",
    "lora_te1_text_model_encoder_layers_0_self_attn_q_proj",
    "lora_te2_text_model_encoder_layers_1_mlp_fc1",
)


def write_kohya_for(path: Path, pipe, prefixes=SDXL_PREFIXES, rank: int = 2) -> Path:
    """A kohya LoRA for the modules of `pipe` that `prefixes` name (shapes from the pipeline)."""
    from labkit.lora_keys import pipeline_targets

    targets = pipeline_targets(pipe)
    g = torch.Generator().manual_seed(2)
    tensors = {}
    for prefix in prefixes:
        target = targets.lookup(prefix)
        weight = getattr(pipe, target.component).get_submodule(target.module).weight
        tensors |= {f"{prefix}.{k}": v for k, v in _factors("lora", weight, rank, g).items()}
        tensors[f"{prefix}.alpha"] = torch.tensor(float(rank))
    save_file(tensors, str(path))
    return path


def write_sdxl_lora(path: Path) -> Path:
    """A kohya LoRA named as for SDXL (lora_te1_/lora_te2_ and original block names)."""
    g = torch.Generator().manual_seed(1)
    tensors = {}
    for name, (o, i) in {"lora_te1_text_model_encoder_layers_0_self_attn_q_proj": (768, 768),
                         "lora_te2_text_model_encoder_layers_0_self_attn_q_proj": (1280, 1280),
                         "lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k": (640, 2048),
                         }.items():
        tensors[f"{name}.lora_down.weight"] = torch.randn(2, i, generator=g)
        tensors[f"{name}.lora_up.weight"] = torch.randn(o, 2, generator=g)
        tensors[f"{name}.alpha"] = torch.tensor(1.0)
    save_file(tensors, str(path))
    return path


def write_ti(path: Path, dim: int = 16) -> Path:
    """A kohya-style textual inversion (emb_params)."""
    save_file({"emb_params": torch.randn(2, dim)}, str(path))
    return path


def truncate(path: Path, n: int = 64) -> Path:
    """Cut the last `n` bytes off a file (a download that stopped early)."""
    data = path.read_bytes()
    path.write_bytes(data[:-n])
    return path


def single_thread():
    """One torch thread for a test module: tiny models on a shared 2-core machine run tens of
    times faster without thread hand-offs; the previous count comes back after."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
