"""The module maps of the transformer families (Flux.1, SD3 / SD3.5) that LoRAs patch.

The lab cannot run these models here, but it can still read what a LoRA for them is made of:
which block each module sits in, rank, alpha, norms. Their diffusers module names come from the
model classes built on the meta device (no weights); the original names that kohya, ComfyUI and
XLabs write (BFL's `double_blocks.N.img_attn.qkv`, SD3's `joint_blocks.N.x_block.attn.qkv`) come
from the tables below (the layouts of flux1-dev.safetensors and sd3_medium.safetensors).
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from labkit.lora import keys as K

# (module under each block, out, in) in units of the hidden width; "C" is SD3's context_block.
FLUX_DOUBLE = tuple((f"{side}_{m}", o, i) for side in ("img", "txt") for m, o, i in
                    (("attn.qkv", 3, 1), ("attn.proj", 1, 1), ("mlp.0", 4, 1), ("mlp.2", 1, 4),
                     ("mod.lin", 6, 1)))
FLUX_SINGLE = (("linear1", 7, 1), ("linear2", 1, 5), ("modulation.lin", 3, 1))
SD3_JOINT = tuple((f"{side}.{m}", o, i) for side in ("x_block", "context_block") for m, o, i in
                  (("attn.qkv", 3, 1), ("attn.proj", 1, 1), ("mlp.fc1", 4, 1), ("mlp.fc2", 1, 4),
                   ("adaLN_modulation.1", 6, 1)))

# Each map: (diffusers class, its config, {original block name: (count, rows)}, block labels).
# Width 1536 is SD3 medium and SD3.5 medium: the 3.5 config is used, its modules are a superset
# (attn2 in the first 13 blocks).
_SD3_COMMON = {"attention_head_dim": 64, "in_channels": 16, "out_channels": 16, "patch_size": 2,
               "joint_attention_dim": 4096, "pooled_projection_dim": 2048, "sample_size": 128}
MAPS: dict[str, tuple[str, dict[str, Any], dict[str, tuple[int, tuple[Any, ...]]]]] = {
    "flux": ("FluxTransformer2DModel", {},
             {"double_blocks": (19, FLUX_DOUBLE), "single_blocks": (38, FLUX_SINGLE)}),
    "sd3_1536": ("SD3Transformer2DModel",
                 _SD3_COMMON | {"num_layers": 24, "num_attention_heads": 24,
                                "caption_projection_dim": 1536, "pos_embed_max_size": 384,
                                "qk_norm": "rms_norm", "dual_attention_layers": list(range(13))},
                 {"joint_blocks": (24, SD3_JOINT)}),
    "sd3_2432": ("SD3Transformer2DModel",
                 _SD3_COMMON | {"num_layers": 38, "num_attention_heads": 38,
                                "caption_projection_dim": 2432, "pos_embed_max_size": 192,
                                "qk_norm": "rms_norm"},
                 {"joint_blocks": (38, SD3_JOINT)}),
}
FAMILY_MAPS = {"flux": ("flux",), "flux_dev": ("flux",), "flux_schnell": ("flux",),
               "sd3": ("sd3_1536", "sd3_2432")}
# Block labels: Flux double (D) and single (S) blocks, SD3 joint (J) blocks, by either naming.
BLOCK_LABELS = ((r"(^|\.)(single_transformer_blocks|single_blocks)\.(\d+)\.", "S"),
                (r"(^|\.)(transformer_blocks|double_blocks)\.(\d+)\.", "D"),
                (r"(^|\.)joint_blocks\.(\d+)\.", "J"))
# The text encoders such LoRAs also patch: (component, shipped CLIP config or T5, kohya prefix).
T5 = "t5"
T5_XXL = {"d_model": 4096, "d_ff": 10240, "d_kv": 64, "num_heads": 64, "num_layers": 24,
          "feed_forward_proj": "gated-gelu", "vocab_size": 32128}
TEXT_ENCODERS = {"flux": (("text_encoder", "sdxl_base/text_encoder", "lora_te1_"),
                          ("text_encoder_2", T5, "lora_te3_")),
                 "sd3": (("text_encoder", "sdxl_base/text_encoder", "lora_te1_"),
                         ("text_encoder_2", "sdxl_base/text_encoder_2", "lora_te2_"),
                         ("text_encoder_3", T5, "lora_te3_"))}
TRANSFORMER_PREFIXES = ("transformer.", "lora_transformer_")  # diffusers names
ORIGINAL_PREFIXES = ("", "lora_unet_")  # BFL / SD3 original names, bare or kohya


def block_of(module: str, family: str) -> str:
    """The block label of a transformer module ("D03", "S17", "J00"; "" outside the blocks)."""
    for pattern, letter in BLOCK_LABELS:
        found = re.search(pattern, module)
        if found:
            return f"{'J' if family.startswith('sd3') else letter}{int(found.groups()[-1]):02d}"
    return ""


def original_modules(blocks: dict[str, tuple[int, tuple[Any, ...]]], width: int
                     ) -> dict[str, tuple[int, ...]]:
    """{original module name: weight shape} from a block table."""
    return {f"{name}.{n}.{m}": (o * width, i * width)
            for name, (count, rows) in blocks.items() for n in range(count) for m, o, i in rows}


def _diffusers_modules(cls_name: str, config: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    import diffusers
    import torch

    with torch.device("meta"):
        return K.patchable(getattr(diffusers, cls_name).from_config(config))


@lru_cache(maxsize=4)
def _encoder_modules(config_path: str) -> dict[str, tuple[int, ...]]:
    import torch
    import transformers

    from labkit.convert.shipped import CONFIG_ROOT

    with torch.device("meta"):
        if config_path == T5:
            return K.patchable(transformers.T5EncoderModel(transformers.T5Config(**T5_XXL)))
        config = K.read_config(CONFIG_ROOT / config_path / "config.json")
        cls = getattr(transformers, config.get("architectures", ["CLIPTextModel"])[0])
        return K.patchable(cls(transformers.CLIPTextConfig(**config)))


def _encoder_spellings(component: str, module: str, kohya: str, t5: bool) -> list[str]:
    """A text-encoder module's file prefixes (T5 modules have no text_model. level)."""
    if t5:
        return [kohya + module.replace(".", "_"), f"{component}.{module}"]
    return K.spellings(component, module, kohya, f"{component}.", None)


@lru_cache(maxsize=4)
def transformer_targets(name: str) -> K.Targets:
    """The prefix table of one transformer map ("flux", "sd3_1536", "sd3_2432"), cached."""
    cls_name, config, blocks = MAPS[name]
    diffusers_names = _diffusers_modules(cls_name, config)
    width = diffusers_names["transformer_blocks.0.attn.to_q"][1]
    by_prefix: dict[str, K.Target] = {}
    for names, prefixes in ((diffusers_names, TRANSFORMER_PREFIXES),
                            (original_modules(blocks, width), ORIGINAL_PREFIXES)):
        for module, shape in names.items():
            target = K.Target("transformer", module, block_of(module + ".", name), shape)
            for prefix in prefixes:
                spelled = module.replace(".", "_") if prefix.endswith("_") else module
                by_prefix.setdefault(prefix + spelled, target)
    family = name.split("_")[0]
    for component, config_path, kohya in TEXT_ENCODERS[family]:
        for module, shape in _encoder_modules(config_path).items():
            target = K.Target(component, module, "BASE", shape)
            for spelling in _encoder_spellings(component, module, kohya, config_path == T5):
                by_prefix.setdefault(spelling, target)
    labels = sorted({t.block for t in by_prefix.values()}, key=lambda b: (b != "BASE", b))
    return K.Targets(family, by_prefix, tuple(labels))
