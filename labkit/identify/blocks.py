"""Which component and which SD block a tensor key belongs to, in every naming the lab meets.

Namings: the original single-file layout (`model.diffusion_model.input_blocks.4.1...`), diffusers
(`unet/down_blocks.1.attentions.0...`, or plain keys inside a component folder), PEFT LoRA
(`unet.down_blocks...lora_A.weight`) and kohya LoRA (`lora_unet_down_blocks_1_attentions_0_...`,
SDXL's `lora_unet_input_blocks_4_1_...`, `lora_te_`, `lora_te1_`, `lora_te2_`).

Block labels follow the merge-block-weight and LoRA-block-weight convention: `IN00`.. for the
original `input_blocks.N`, `MID` for the middle block, `OUT00`.. for `output_blocks.N`, `BASE`
for the text encoders. The time (and SDXL label) embedding and `conv_in` sit before the first
input block and count as `IN00`; `conv_norm_out` / `conv_out` follow the last output block and
count as it. Keys outside the UNet and the text encoders (VAE, schedule buffers) have no block:
the label is "".
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from labkit.identify.layouts import ema_key

# SD UNets (SD1, SD2, SDXL and the lab's demo models) have 2 layers per block, so each
# diffusers level spans 3 original input blocks (2 layers + downsampler) and 3 output blocks.
LAYERS_PER_BLOCK = 2
LEVEL = LAYERS_PER_BLOCK + 1
LAST_OUT = 11  # SD1/SD2's last output block; SDXL's is 8 (block_labels finds it from the keys)

EMA = "EMA"
# First match wins. A key matches `pattern` from its start.
COMPONENTS: tuple[tuple[str, str], ...] = (
    (r"model_ema\.", EMA),
    (r"model\.diffusion_model\.", "UNet"),
    (r"first_stage_model\.", "VAE"),
    (r"cond_stage_model\.", "text encoder"),
    (r"conditioner\.embedders\.0\.", "text encoder"),
    (r"conditioner\.embedders\.1\.", "text encoder 2"),
    (r"unet[/.]", "UNet"),
    (r"vae[/.]", "VAE"),
    (r"text_encoder_2[/.]", "text encoder 2"),
    (r"text_encoder[/.]", "text encoder"),
    (r"lora_unet_", "UNet"),
    (r"lora_te2_", "text encoder 2"),
    (r"lora_te1?_", "text encoder"),
    # plain keys of one diffusers component folder
    (r"(down_blocks|up_blocks|mid_block|conv_in|conv_norm_out|conv_out|time_embedding|"
     r"add_embedding)\.", "UNet"),
    (r"(encoder|decoder|quant_conv|post_quant_conv)\.", "VAE"),
    (r"(text_model|embeddings|encoder\.layers|final_layer_norm|text_projection)\.", "text encoder"),
)
TEXT_COMPONENTS = ("text encoder", "text encoder 2")

# UNet block rules, first match wins: pattern searched anywhere in the key (separators `.`, `_`
# or `/` so that kohya's underscored names match too) -> side and the block index as
# a * n0 + b * n1 + c of the pattern's numbers (None: the last output block).
_S = r"[._/]"
BLOCKS: tuple[tuple[str, str, tuple[int, int, int] | None], ...] = (
    (rf"(?:^|{_S})input_blocks{_S}(\d+){_S}", "IN", (1, 0, 0)),
    (rf"(?:^|{_S})middle_block{_S}", "MID", (0, 0, 0)),
    (rf"(?:^|{_S})output_blocks{_S}(\d+){_S}", "OUT", (1, 0, 0)),
    (rf"(?:^|{_S})down_blocks{_S}(\d+){_S}(?:resnets|attentions){_S}(\d+){_S}", "IN", (LEVEL, 1, 1)),
    (rf"(?:^|{_S})down_blocks{_S}(\d+){_S}downsamplers{_S}", "IN", (LEVEL, 0, LEVEL)),
    (rf"(?:^|{_S})mid_block{_S}", "MID", (0, 0, 0)),
    (rf"(?:^|{_S})up_blocks{_S}(\d+){_S}(?:resnets|attentions){_S}(\d+){_S}", "OUT", (LEVEL, 1, 0)),
    (rf"(?:^|{_S})up_blocks{_S}(\d+){_S}upsamplers{_S}", "OUT", (LEVEL, 0, LAYERS_PER_BLOCK)),
    (rf"(?:^|{_S})(?:time_embed|time_embedding|label_emb|add_embedding|conv_in){_S}", "IN",
     (0, 0, 0)),
    (rf"(?:^|[./])out\.|(?:^|{_S})conv_norm_out{_S}|(?:^|{_S})conv_out{_S}", "OUT", None),
)

# LoRA / LyCORIS tensor suffix -> part. PEFT's lora_A is the down projection, lora_B the up.
LORA_PARTS: tuple[tuple[str, str], ...] = (
    (".lora_down.weight", "down"),
    (".lora_up.weight", "up"),
    (".lora_mid.weight", "mid"),
    (".lora_A.weight", "down"),
    (".lora_B.weight", "up"),
    (".alpha", "alpha"),
    (".dora_scale", "dora_scale"),
    (".diff", "diff"),
    (".diff_b", "diff"),
    *((f".{n}", n) for n in ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "hada_t1",
                             "hada_t2", "lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2",
                             "lokr_w2_a", "lokr_w2_b", "lokr_t2")),
)

# Layer kind (for per-block heatmaps), first match wins: pattern searched anywhere in the key.
# A resnet's norms and convs count as "resnet" so that both namings give the same kind.
LAYER_KINDS: tuple[tuple[str, str], ...] = (
    (r"resnets|in_layers|out_layers|emb_layers|skip_connection|(?:^|\.)block[._]\d", "resnet"),
    (r"attn1|self_attn|[._]attn\.|attn_\d\.(?:q|k|v|proj_out)\.", "self-attention"),
    (r"attn2", "cross-attention"),
    (r"[._]ff[._]|mlp", "feed-forward"),
    (r"proj_in|proj_out|text_projection", "projection"),
    (r"samplers|(?:down|up)sample\.|(?:^|[._])op[._]|\.\d+\.conv\.", "resample"),
    (r"conv_in|conv_out|norm_out|(?:^|[./])out\.|input_blocks[._]0[._]0[._]|quant_conv", "in/out conv"),
    (r"norm|ln_", "norm"),
    (r"attentions|attn_\d", "self-attention"),
    (r"time_embed|label_emb|add_embedding|token_embedding|position_embedding|"
     r"positional_embedding|position_ids", "embedding"),
)

_COMPONENTS = tuple((re.compile(p), c) for p, c in COMPONENTS)
_BLOCKS = tuple((re.compile(p), side, coef) for p, side, coef in BLOCKS)
_LAYER_KINDS = tuple((re.compile(p), kind) for p, kind in LAYER_KINDS)


def component_of(key: str) -> str:
    """The component a key belongs to: "UNet", "VAE", "text encoder", "text encoder 2", "EMA"
    or "other"; a LoRA key gives the component it patches."""
    for pattern, component in _COMPONENTS:
        if pattern.match(key):
            return component
    return "other"


def lora_part(key: str) -> str:
    """The LoRA/LyCORIS part a key holds ("down", "up", "alpha", "hada_w1_a", ...), "" if none."""
    return next((part for suffix, part in LORA_PARTS if key.endswith(suffix)), "")


def layer_kind(key: str) -> str:
    """The kind of layer a key belongs to ("resnet", "self-attention", "cross-attention",
    "feed-forward", "projection", "resample", "norm", "embedding", "in/out conv") or "other"."""
    return next((kind for pattern, kind in _LAYER_KINDS if pattern.search(key)), "other")


def _unet_block(key: str) -> tuple[str, int | None] | None:
    """(side, index) of a UNet key, index None for the last output block; None if no rule fits."""
    for pattern, side, coef in _BLOCKS:
        m = pattern.search(key)
        if m is None:
            continue
        if coef is None:
            return side, None
        n0, n1 = ([int(g) for g in m.groups()] + [0, 0])[:2]
        return side, coef[0] * n0 + coef[1] * n1 + coef[2]
    return None


def _label(block: tuple[str, int | None] | None, last_out: int) -> str:
    if block is None:
        return ""
    side, index = block
    return "MID" if side == "MID" else f"{side}{last_out if index is None else index:02d}"


def block_label(key: str, last_out: int = LAST_OUT) -> str:
    """The SD block of a key: "BASE" (text encoders), "IN00".."IN11", "MID", "OUT00".."OUT11",
    or "" outside the UNet and text encoders; `last_out` is the index `conv_out` counts as."""
    component = component_of(key)
    if component in TEXT_COMPONENTS:
        return "BASE"
    return _label(_unet_block(key), last_out) if component == "UNet" else ""


def last_out_block(keys: Iterable[str]) -> int:
    """The highest output block index among UNet keys (LAST_OUT when none is numbered)."""
    blocks = (_unet_block(k) for k in keys if component_of(k) == "UNet")
    found = [b[1] for b in blocks if b is not None and b[0] == "OUT" and b[1] is not None]
    return max(found, default=LAST_OUT)


def ema_twins(keys: Iterable[str]) -> dict[str, str]:
    """EMA key -> the model key it shadows, for the `model.` keys among `keys` (LDM's EMA names
    drop the dots, so the twin is found by name, not parsed back)."""
    return {ema_key(k): k for k in keys if k.startswith("model.")}


def block_labels(keys: Iterable[str]) -> list[str]:
    """Block labels of a whole key list: `conv_out` counts as the list's own last output block,
    and an EMA key takes the label of its model twin."""
    keys = list(keys)
    last = last_out_block(keys)
    twins = ema_twins(keys)
    return [block_label(twins.get(k, k), last) for k in keys]


BLOCK_ORDER = ("BASE", *(f"IN{i:02d}" for i in range(12)), "MID",
               *(f"OUT{i:02d}" for i in range(12)), "")


def block_sort_key(label: str) -> int:
    """Position of a block label in the UNet's order (BASE first, "" last) for sorting."""
    return BLOCK_ORDER.index(label) if label in BLOCK_ORDER else len(BLOCK_ORDER)
