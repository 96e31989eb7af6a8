"""Write the demo adapters in the forms the field uses: kohya LoRA, PEFT LoRA, LyCORIS, TI x3."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch

from labkit.zoo.adapters import TrainedAdapter, TrainedEmbedding
from labkit.zoo.train import save_tensors

BASE_VERSION = "labkit_demo_sd1"
ARCHITECTURE = "labkit-demo-sd1"
RESOLUTION = "64,64"

# kohya names a module by its path with "_" for ".", after a prefix per component; its text
# encoder paths start with "text_model." (older transformers), which transformers 5 dropped.
KOHYA_PREFIX = {"unet": ("lora_unet_", ""), "text_encoder": ("lora_te_", "text_model.")}
# peft parameter suffix -> kohya / LyCORIS suffix
SUFFIXES = {
    "lora_A.weight": "lora_down.weight",
    "lora_B.weight": "lora_up.weight",
    **{s: s for s in ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b")},
    **{s: s for s in ("lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b")},
}
NETWORK_MODULE = {"lora": "networks.lora", "loha": "lycoris.kohya", "lokr": "lycoris.kohya"}
NETWORK_ARGS = {"loha": {"algo": "loha"}, "lokr": {"algo": "lokr"}}


def kohya_key(component: str, peft_key: str) -> tuple[str, str]:
    """(kohya module name, kohya suffix) of a peft state-dict key."""
    for suffix, kohya_suffix in SUFFIXES.items():
        if peft_key.endswith("." + suffix):
            module = peft_key[: -len(suffix) - 1]
            prefix, path_prefix = KOHYA_PREFIX[component]
            return prefix + (path_prefix + module).replace(".", "_"), kohya_suffix
    raise ValueError(f"no kohya name for {peft_key!r}")


def kohya_tensors(adapter: TrainedAdapter) -> dict[str, torch.Tensor]:
    """The adapter's tensors under kohya / LyCORIS names, with one `.alpha` per module."""
    out: dict[str, torch.Tensor] = {}
    for component, sd in (("text_encoder", adapter.text_encoder), ("unet", adapter.unet)):
        for key, tensor in sd.items():
            module, suffix = kohya_key(component, key)
            out[f"{module}.{suffix}"] = tensor.detach().float().contiguous()
            out[f"{module}.alpha"] = torch.tensor(float(adapter.spec.alpha))
    return dict(sorted(out.items()))


def kohya_metadata(adapter: TrainedAdapter, captions: list[str], title: str) -> dict[str, str]:
    """kohya sd-scripts style training metadata (all strings, JSON inside some)."""
    spec, stage = adapter.spec, adapter.stage
    tags: dict[str, int] = {}
    for c in captions:
        for tag in (t.strip() for t in c.split(",")):
            tags[tag] = tags.get(tag, 0) + 1
    folder = f"10_{spec.trigger}"
    meta = {
        "ss_network_module": NETWORK_MODULE[spec.method],
        "ss_network_dim": str(spec.rank),
        "ss_network_alpha": str(spec.alpha),
        "ss_base_model_version": BASE_VERSION,
        "ss_sd_model_name": "demo_sd1.safetensors",
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
        "modelspec.architecture": f"{ARCHITECTURE}/{spec.method}",
        "modelspec.implementation": "https://github.com/kohya-ss/sd-scripts",
        "modelspec.title": title,
        "modelspec.trigger_phrase": spec.trigger,
        "modelspec.resolution": "64x64",
    }
    if spec.method in NETWORK_ARGS:
        meta["ss_network_args"] = json.dumps(NETWORK_ARGS[spec.method])
    return meta


def write_kohya(adapter: TrainedAdapter, captions: list[str], dst: Path, title: str) -> Path:
    """A kohya LoRA / LyCORIS .safetensors with its training metadata."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    save_tensors(dst, kohya_tensors(adapter), kohya_metadata(adapter, captions, title))
    return dst


def write_peft_lora(adapter: TrainedAdapter, dst: Path) -> Path:
    """The same LoRA as diffusers' `save_lora_weights` writes it (PEFT lora_A/lora_B keys)."""
    from diffusers import StableDiffusionPipeline
    from peft import LoraConfig

    from labkit.zoo.adapters import peft_config

    spec = adapter.spec
    meta = {}
    for name, targets in (("unet", spec.unet_targets), ("text_encoder", spec.te_targets)):
        cfg: LoraConfig = peft_config(spec, targets)
        meta[name] = cfg.to_dict()
    with tempfile.TemporaryDirectory(dir=dst.parent) as tmp:
        StableDiffusionPipeline.save_lora_weights(
            tmp, unet_lora_layers=adapter.unet, text_encoder_lora_layers=adapter.text_encoder,
            weight_name=dst.name, unet_lora_adapter_metadata=meta["unet"],
            text_encoder_lora_adapter_metadata=meta["text_encoder"])
        (Path(tmp) / dst.name).replace(dst)
    return dst


def write_embeddings(emb: TrainedEmbedding, folder: Path, stem: str) -> dict[str, Path]:
    """The textual inversion as A1111 .pt, kohya `emb_params` and diffusers learned_embeds."""
    folder.mkdir(parents=True, exist_ok=True)
    vec = emb.vectors.detach().float().contiguous()
    a1111 = folder / f"{stem}.pt"
    tmp = a1111.with_name(a1111.name + ".partial")
    torch.save({"string_to_token": {"*": 265}, "string_to_param": {"*": vec},
                "name": stem, "step": emb.stage.steps,
                "sd_checkpoint": None, "sd_checkpoint_name": "demo_sd1"}, tmp)
    tmp.replace(a1111)
    kohya = folder / f"{stem}.safetensors"
    save_tensors(kohya, {"emb_params": vec}, {"ss_base_model_version": BASE_VERSION,
                                             "modelspec.architecture": f"{ARCHITECTURE}/textual-inversion",
                                             "modelspec.title": stem, "ss_steps": str(emb.stage.steps)})
    diffusers_form = folder / f"{stem}_learned_embeds.safetensors"
    save_tensors(diffusers_form, {emb.token: vec[0]},
                 {"modelspec.architecture": f"{ARCHITECTURE}/textual-inversion"})
    return {"a1111": a1111, "kohya": kohya, "diffusers": diffusers_form}
