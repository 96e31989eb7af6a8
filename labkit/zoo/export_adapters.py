"""Write the demo adapters in the forms the field uses: kohya LoRA, PEFT LoRA, LyCORIS, TI x3."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from labkit.lora.keys import text_model_path
from labkit.zoo.recipe.adapters import TrainedAdapter, TrainedEmbedding
from labkit.zoo.recipe.train import save_tensors

RESOLUTION = "64,64"


@dataclass(frozen=True)
class FamilyNames:
    """How one demo family's adapter files are named and labelled, as its trainers write them."""

    base_version: str  # ss_base_model_version
    architecture: str  # modelspec.architecture, before "/<adapter>"
    model_name: str  # ss_sd_model_name
    text_prefixes: tuple[str, ...]  # one kohya prefix per text encoder
    original_unet_names: bool  # SDXL trainers name UNet modules as the original layout does


# kohya names a module by its path with "_" for ".", after a prefix per component (text encoder
# paths under "text_model.": labkit.lora.keys.text_model_path). The SDXL-style demo's adapters say what kohya writes for SDXL: identify tells them by widths.
FAMILIES = {
    "demo_sd1": FamilyNames("labkit_demo_sd1", "labkit-demo-sd1", "demo_sd1.safetensors",
                            ("lora_te_",), False),
    "demo_sdxl": FamilyNames("sdxl_base_v1-0", "stable-diffusion-xl-v1-base",
                             "demo_sdxl.safetensors", ("lora_te1_", "lora_te2_"), True),
}
UNET_PREFIX = "lora_unet_"
# peft parameter suffix -> kohya / LyCORIS suffix
SUFFIXES = {
    "lora_A.weight": "lora_down.weight",
    "lora_B.weight": "lora_up.weight",
    **{s: s for s in ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b")},
    **{s: s for s in ("lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b")},
}
NETWORK_MODULE = {"lora": "networks.lora", "loha": "lycoris.kohya", "lokr": "lycoris.kohya"}
NETWORK_ARGS = {"loha": {"algo": "loha"}, "lokr": {"algo": "lokr"}}


def split_peft_key(peft_key: str) -> tuple[str, str]:
    """(module path, kohya / LyCORIS suffix) of a peft state-dict key."""
    for suffix, kohya_suffix in SUFFIXES.items():
        if peft_key.endswith("." + suffix):
            return peft_key[: -len(suffix) - 1], kohya_suffix
    raise ValueError(f"no kohya name for {peft_key!r}")


def kohya_tensors(adapter: TrainedAdapter, family: str = "demo_sd1") -> dict[str, torch.Tensor]:
    """The adapter's tensors under kohya / LyCORIS names, with one `.alpha` per module."""
    names = FAMILIES[family]
    unet_name = (original_unet_namer(adapter.model.config) if names.original_unet_names
                 else (lambda module: module))
    parts = [(prefix, sd, text_model_path)
             for prefix, sd in zip(names.text_prefixes, adapter.text_encoders, strict=False)]
    parts.append((UNET_PREFIX, adapter.unet, unet_name))
    out: dict[str, torch.Tensor] = {}
    for prefix, sd, rename in parts:
        for key, tensor in sd.items():
            module, suffix = split_peft_key(key)
            kohya = prefix + rename(module).replace(".", "_")
            out[f"{kohya}.{suffix}"] = tensor.detach().float().contiguous()
            out[f"{kohya}.alpha"] = torch.tensor(float(adapter.spec.alpha))
    return dict(sorted(out.items()))


def original_unet_namer(unet_config) -> Callable[[str], str]:
    """diffusers UNet module path -> its path in the original (SGM) layout, for this UNet."""
    from labkit.identify import layouts
    from labkit.lora.keys import original_unet_name
    from labkit.zoo.recipe.models import VAE

    layout = layouts.make_layout("sdxl", dict(unet_config), VAE)
    return lambda module: original_unet_name(module, layout)


def kohya_metadata(adapter: TrainedAdapter, captions: list[str], title: str,
                   family: str = "demo_sd1") -> dict[str, str]:
    """kohya sd-scripts style training metadata (all strings, JSON inside some)."""
    spec, stage, names = adapter.spec, adapter.stage, FAMILIES[family]
    tags: dict[str, int] = {}
    for c in captions:
        for tag in (t.strip() for t in c.split(",")):
            tags[tag] = tags.get(tag, 0) + 1
    folder = f"10_{spec.trigger}"
    meta = {
        "ss_network_module": NETWORK_MODULE[spec.method],
        "ss_network_dim": str(spec.rank),
        "ss_network_alpha": str(spec.alpha),
        "ss_base_model_version": names.base_version,
        "ss_sd_model_name": names.model_name,
        "ss_steps": str(stage.steps),
        "ss_epoch": "1",
        "ss_learning_rate": str(stage.lr),
        "ss_unet_lr": str(stage.lr),
        "ss_text_encoder_lr": str(stage.lr) if spec.te_targets else "0",
        "ss_resolution": RESOLUTION,
        "ss_num_train_images": str(len(captions)),
        "ss_tag_frequency": json.dumps({folder: tags}),
        "ss_datasets": json.dumps([{"batch_size_per_device": adapter.batch, "num_train_images": len(captions),
                                    "resolution": [64, 64], "subsets": [
                                        {"image_dir": folder, "num_repeats": 10,
                                         "class_tokens": spec.trigger}]}]),
        "ss_training_comment": f"labkit demo world: {spec.style} fills, trigger '{spec.trigger}'",
        "modelspec.sai_model_spec": "1.0.0",
        "modelspec.architecture": f"{names.architecture}/{spec.method}",
        "modelspec.implementation": "https://github.com/kohya-ss/sd-scripts",
        "modelspec.title": title,
        "modelspec.trigger_phrase": spec.trigger,
        "modelspec.resolution": "64x64",
    }
    if spec.method in NETWORK_ARGS:
        meta["ss_network_args"] = json.dumps(NETWORK_ARGS[spec.method])
    return meta


def write_kohya(adapter: TrainedAdapter, captions: list[str], dst: Path, title: str,
                family: str = "demo_sd1") -> Path:
    """A kohya LoRA / LyCORIS .safetensors with its training metadata."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    save_tensors(dst, kohya_tensors(adapter, family),
                 kohya_metadata(adapter, captions, title, family))
    return dst


def write_peft_lora(adapter: TrainedAdapter, dst: Path) -> Path:
    """The same LoRA as diffusers' `save_lora_weights` writes it (PEFT lora_A/lora_B keys)."""
    from diffusers import StableDiffusionPipeline
    from peft import LoraConfig

    from labkit.zoo.recipe.adapters import peft_config

    spec = adapter.spec
    meta = {}
    for name, targets in (("unet", spec.unet_targets), ("text_encoder", spec.te_targets)):
        cfg: LoraConfig = peft_config(spec, targets)
        meta[name] = cfg.to_dict()
    with tempfile.TemporaryDirectory(dir=dst.parent) as tmp:
        StableDiffusionPipeline.save_lora_weights(
            tmp, unet_lora_layers=adapter.unet, text_encoder_lora_layers=adapter.text_encoders[0],
            weight_name=dst.name, unet_lora_adapter_metadata=meta["unet"],
            text_encoder_lora_adapter_metadata=meta["text_encoder"])
        (Path(tmp) / dst.name).replace(dst)
    return dst


def write_embeddings(emb: TrainedEmbedding, folder: Path, stem: str) -> dict[str, Path]:
    """The textual inversion as A1111 .pt, kohya `emb_params` and diffusers learned_embeds."""
    folder.mkdir(parents=True, exist_ok=True)
    vec = emb.vectors[0].detach().float().contiguous()
    a1111 = folder / f"{stem}.pt"
    tmp = a1111.with_name(a1111.name + ".partial")
    torch.save({"string_to_token": {"*": 265}, "string_to_param": {"*": vec},
                "name": stem, "step": emb.stage.steps,
                "sd_checkpoint": None, "sd_checkpoint_name": "demo_sd1"}, tmp)
    tmp.replace(a1111)
    kohya = folder / f"{stem}.safetensors"
    sd1 = FAMILIES["demo_sd1"]
    save_tensors(kohya, {"emb_params": vec}, {"ss_base_model_version": sd1.base_version,
                                             "modelspec.architecture": f"{sd1.architecture}/textual-inversion",
                                             "modelspec.title": stem, "ss_steps": str(emb.stage.steps)})
    diffusers_form = folder / f"{stem}_learned_embeds.safetensors"
    save_tensors(diffusers_form, {emb.token: vec[0]},
                 {"modelspec.architecture": f"{sd1.architecture}/textual-inversion"})
    return {"a1111": a1111, "kohya": kohya, "diffusers": diffusers_form}


def write_sdxl_embedding(emb: TrainedEmbedding, dst: Path, stem: str) -> Path:
    """An SDXL textual inversion: one safetensors file, `clip_l` and `clip_g` vectors, titled
    `stem` (the name it is triggered by, as the SD1 forms are)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    l_vec, g_vec = (v.detach().float().contiguous() for v in emb.vectors)
    save_tensors(dst, {"clip_l": l_vec, "clip_g": g_vec}, {"modelspec.title": stem})
    return dst
