"""Key mapping between the original (LDM/SGM) single-file layout and diffusers folders, as data.

A layout is a table per diffusers component: the component's prefix in a single file, then
pairs of (original prefix, diffusers prefix). A pair may carry an inner table, applied to what
follows its prefix (resnet and attention parts are renamed inside blocks), and a reshape rule
(`conv1x1`: VAE attention weights are 1x1 convs in the original layout and linear in diffusers;
`transpose`: OpenCLIP's text_projection is a matrix used as x @ P, diffusers a Linear; `qkv`:
OpenCLIP fuses q, k and v into one in_proj tensor). Block numbering depends on the UNet and VAE
structure, so the UNet and VAE tables are built from their configs; SD1, SD2 and SDXL are the
real families' tables.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import torch


class Part(NamedTuple):
    """A rename inside a block: original part, diffusers part, reshape rule (or None)."""

    original: str
    diffusers: str
    rule: str | None = None


class Pair(NamedTuple):
    """A prefix pair; `indexed` means one numeric segment follows the prefix before `inner` applies."""

    original: str
    diffusers: str
    inner: tuple[Part, ...] = ()
    rule: str | None = None
    indexed: bool = False


class Component(NamedTuple):
    """One diffusers component's place in a single file: kind, key prefix and pair table."""

    kind: str
    prefix: str
    pairs: tuple[Pair, ...]


class Layout(NamedTuple):
    """A family's single-file layout: diffusers component name -> Component."""

    name: str
    components: dict[str, Component]


UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."

UNET_TOP = (
    Pair("time_embed.0.", "time_embedding.linear_1."),
    Pair("time_embed.2.", "time_embedding.linear_2."),
    Pair("label_emb.0.0.", "add_embedding.linear_1."),
    Pair("label_emb.0.2.", "add_embedding.linear_2."),
    Pair("input_blocks.0.0.", "conv_in."),
    Pair("out.0.", "conv_norm_out."),
    Pair("out.2.", "conv_out."),
)

UNET_RESNET = (
    Part("in_layers.0.", "norm1."),
    Part("in_layers.2.", "conv1."),
    Part("out_layers.0.", "norm2."),
    Part("out_layers.3.", "conv2."),
    Part("emb_layers.1.", "time_emb_proj."),
    Part("skip_connection.", "conv_shortcut."),
)

VAE_RESNET = (Part("nin_shortcut.", "conv_shortcut."),)

VAE_ATTENTION = (
    Part("norm.", "group_norm."),
    Part("q.", "to_q.", "conv1x1"),
    Part("k.", "to_k.", "conv1x1"),
    Part("v.", "to_v.", "conv1x1"),
    Part("proj_out.", "to_out.0.", "conv1x1"),
)

VAE_TOP = tuple(
    Pair(f"{side}.{orig}", f"{side}.{diff}", inner)
    for side in ("encoder", "decoder")
    for orig, diff, inner in (
        ("norm_out.", "conv_norm_out.", ()),
        ("mid.block_1.", "mid_block.resnets.0.", VAE_RESNET),
        ("mid.block_2.", "mid_block.resnets.1.", VAE_RESNET),
        ("mid.attn_1.", "mid_block.attentions.0.", VAE_ATTENTION),
    )
)

# transformers 5's CLIPTextModel has no `text_model.` level; older saves (and
# CLIPTextModelWithProjection) have it. The first pair wins when mapping to diffusers.
CLIP_PAIRS = (
    Pair("text_model.", ""),
    Pair("text_model.", "text_model."),
)

OPEN_CLIP_PAIRS = (
    Pair("positional_embedding", "text_model.embeddings.position_embedding.weight"),
    Pair("token_embedding.", "text_model.embeddings.token_embedding."),
    Pair("ln_final.", "text_model.final_layer_norm."),
    Pair("text_projection", "text_projection.weight", rule="transpose"),
    Pair("transformer.resblocks.", "text_model.encoder.layers.", indexed=True, inner=(
        Part("ln_1.", "layer_norm1."),
        Part("ln_2.", "layer_norm2."),
        Part("mlp.c_fc.", "mlp.fc1."),
        Part("mlp.c_proj.", "mlp.fc2."),
        Part("attn.out_proj.", "self_attn.out_proj."),
        Part("attn.in_proj_weight", "self_attn.q_proj.weight", "qkv"),
        Part("attn.in_proj_weight", "self_attn.k_proj.weight", "qkv"),
        Part("attn.in_proj_weight", "self_attn.v_proj.weight", "qkv"),
        Part("attn.in_proj_bias", "self_attn.q_proj.bias", "qkv"),
        Part("attn.in_proj_bias", "self_attn.k_proj.bias", "qkv"),
        Part("attn.in_proj_bias", "self_attn.v_proj.bias", "qkv"),
    )),
)

# SD 2.x reads OpenCLIP-H at its penultimate layer: diffusers holds it as a CLIPTextModel (no
# `text_model.` level in transformers 5, kept by older saves; no projection) without the last
# resblock. The original keys such an encoder does not hold, by kind (prefixes end in ".").
OPEN_CLIP_H_PAIRS = tuple(
    p._replace(diffusers=p.diffusers.removeprefix(level))
    for level in ("text_model.", "") for p in OPEN_CLIP_PAIRS if p.rule != "transpose")
NOT_HELD = {"open_clip_h": ("transformer.resblocks.23.", "text_projection", "logit_scale")}

# Tensors the original layout carries that no diffusers component has:
# (component kind, key in the component) -> how to make them on export.
ORIGINAL_ONLY = {
    ("clip", "text_model.embeddings.position_ids"): "position_ids",
    ("open_clip", "logit_scale"): "logit_scale",
}
# OpenCLIP's learned logit scale as released in SDXL's bigG (exp(4.6052) = 100).
LOGIT_SCALE = math.log(100.0)

# LDM training checkpoints carry an EMA copy of the UNet under model_ema., named by LitEma:
# the `model.` key without its first level and with its dots removed, plus two buffers.
EMA_PREFIX = "model_ema."
EMA_BUFFERS = {"model_ema.decay": torch.tensor(0.9999, dtype=torch.float32),
               "model_ema.num_updates": torch.tensor(0, dtype=torch.int32)}


def ema_key(key: str) -> str:
    """LDM's EMA name of a `model.` key (model.diffusion_model.out.0.weight ->
    model_ema.diffusion_modelout0weight)."""
    return EMA_PREFIX + key.removeprefix("model.").replace(".", "")


TEXT_PAIRS = {"clip": CLIP_PAIRS, "open_clip": OPEN_CLIP_PAIRS, "open_clip_h": OPEN_CLIP_H_PAIRS}

# Family -> the single-file prefix of each text encoder: (component, kind, prefix).
TEXT_ENCODERS = {
    "sd1": (("text_encoder", "clip", "cond_stage_model.transformer."),),
    "sd2": (("text_encoder", "open_clip_h", "cond_stage_model.model."),),
    "sdxl": (("text_encoder", "clip", "conditioner.embedders.0.transformer."),
             ("text_encoder_2", "open_clip", "conditioner.embedders.1.model.")),
    "sdxl_refiner": (("text_encoder_2", "open_clip", "conditioner.embedders.0.model."),),
}


def unet_pairs(down_attention: Sequence[bool], up_attention: Sequence[bool],
               layers_per_block: int) -> tuple[Pair, ...]:
    """The UNet's pair table for a block structure (which levels have attention, layers per block)."""
    step = layers_per_block + 1
    pairs = list(UNET_TOP)
    last = len(down_attention) - 1
    for i, attn in enumerate(down_attention):
        for j in range(layers_per_block):
            pairs.append(Pair(f"input_blocks.{step * i + j + 1}.0.", f"down_blocks.{i}.resnets.{j}.",
                              UNET_RESNET))
            if attn:
                pairs.append(Pair(f"input_blocks.{step * i + j + 1}.1.",
                                  f"down_blocks.{i}.attentions.{j}."))
        if i < last:
            pairs.append(Pair(f"input_blocks.{step * (i + 1)}.0.op.",
                              f"down_blocks.{i}.downsamplers.0.conv."))
    for i, attn in enumerate(up_attention):
        for j in range(step):
            pairs.append(Pair(f"output_blocks.{step * i + j}.0.", f"up_blocks.{i}.resnets.{j}.",
                              UNET_RESNET))
            if attn:
                pairs.append(Pair(f"output_blocks.{step * i + j}.1.", f"up_blocks.{i}.attentions.{j}."))
        if i < last:
            pairs.append(Pair(f"output_blocks.{step * i + layers_per_block}.{2 if attn else 1}.conv.",
                              f"up_blocks.{i}.upsamplers.0.conv."))
    pairs += [
        Pair("middle_block.0.", "mid_block.resnets.0.", UNET_RESNET),
        Pair("middle_block.1.", "mid_block.attentions.0."),
        Pair("middle_block.2.", "mid_block.resnets.1.", UNET_RESNET),
    ]
    return tuple(pairs)


def vae_pairs(n_blocks: int, layers_per_block: int) -> tuple[Pair, ...]:
    """The VAE's pair table: encoder levels count up, decoder levels are numbered in reverse."""
    pairs = list(VAE_TOP)
    for i in range(n_blocks):
        up = n_blocks - 1 - i
        pairs += [Pair(f"encoder.down.{i}.block.{j}.", f"encoder.down_blocks.{i}.resnets.{j}.",
                       VAE_RESNET) for j in range(layers_per_block)]
        pairs += [Pair(f"decoder.up.{up}.block.{j}.", f"decoder.up_blocks.{i}.resnets.{j}.",
                       VAE_RESNET) for j in range(layers_per_block + 1)]
        if i < n_blocks - 1:
            pairs.append(Pair(f"encoder.down.{i}.downsample.", f"encoder.down_blocks.{i}.downsamplers.0."))
            pairs.append(Pair(f"decoder.up.{up}.upsample.", f"decoder.up_blocks.{i}.upsamplers.0."))
    return tuple(pairs)


def make_layout(family: str, unet: Mapping[str, Any], vae: Mapping[str, Any]) -> Layout:
    """The layout of a family ("sd1", "sd2", "sdxl", "sdxl_refiner") from its UNet and VAE configs."""
    if family not in TEXT_ENCODERS:
        raise ValueError(f"no single-file layout for family {family!r}; known: {sorted(TEXT_ENCODERS)}")
    has_attn = [("CrossAttn" in t) for t in unet["down_block_types"]]
    up_attn = [("CrossAttn" in t) for t in unet["up_block_types"]]
    components = {
        "unet": Component("unet", UNET_PREFIX, unet_pairs(has_attn, up_attn, int(unet["layers_per_block"]))),
        "vae": Component("vae", VAE_PREFIX, vae_pairs(len(vae["block_out_channels"]),
                                                int(vae["layers_per_block"]))),
    }
    for name, kind, prefix in TEXT_ENCODERS[family]:
        components[name] = Component(kind, prefix, TEXT_PAIRS[kind])
    return Layout(family, components)


_SD_VAE = {"block_out_channels": [128, 256, 512, 512], "layers_per_block": 2}
# SD 2.x's UNet has SD1's blocks (its proj_in/proj_out are linear on both sides).
_SD_UNET = {"down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
            "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3, "layers_per_block": 2}
SD1 = make_layout("sd1", _SD_UNET, _SD_VAE)
SD2 = make_layout("sd2", _SD_UNET, _SD_VAE)
SDXL = make_layout("sdxl", {"down_block_types": ["DownBlock2D"] + ["CrossAttnDownBlock2D"] * 2,
                            "up_block_types": ["CrossAttnUpBlock2D"] * 2 + ["UpBlock2D"],
                            "layers_per_block": 2}, _SD_VAE)


def _matches(prefix: str, key: str) -> bool:
    return prefix == "" or key == prefix or (prefix.endswith(".") and key.startswith(prefix))


def _best(pairs: Iterable[Any], key: str, side: str) -> Any | None:
    """The pair (or part) whose `side` prefix matches key, longest first, first on ties."""
    found = None
    for p in pairs:
        prefix = getattr(p, side)
        if _matches(prefix, key) and (found is None or len(prefix) > len(getattr(found, side))):
            found = p
    return found


def _split_index(rest: str) -> tuple[str, str]:
    head, _, tail = rest.partition(".")
    return head + ".", tail


def _translate(pairs: Sequence[Pair], key: str, src: str, dst: str) -> tuple[str, str | None]:
    """Map key from side src to side dst: (mapped key, reshape rule or None)."""
    pair = _best(pairs, key, src)
    if pair is None:
        return key, None
    rest = key[len(getattr(pair, src)):]
    index = ""
    if pair.indexed:
        index, rest = _split_index(rest)
    part = _best(pair.inner, rest, src)
    if part is None:
        return getattr(pair, dst) + index + rest, pair.rule
    return getattr(pair, dst) + index + getattr(part, dst) + rest[len(getattr(part, src)):], part.rule


def _to_original(component: str, key: str, layout: Layout) -> tuple[str, str | None]:
    comp = layout.components[component]
    name, rule = _translate(comp.pairs, key, "diffusers", "original")
    return comp.prefix + name, rule


def to_original(component: str, key: str, layout: Layout = SD1) -> str:
    """The single-file key of a diffusers component's key (q/k/v map to one fused key)."""
    return _to_original(component, key, layout)[0]


def _locate(key: str, layout: Layout) -> tuple[str, str, str | None] | None:
    """(component, diffusers key, rule) of a single-file key, None outside the components."""
    for name, comp in sorted(layout.components.items(), key=lambda kv: -len(kv[1].prefix)):
        if not key.startswith(comp.prefix):
            continue
        inner_key = key[len(comp.prefix):]
        if (comp.kind, inner_key) in ORIGINAL_ONLY or any(
                _matches(p, inner_key) for p in NOT_HELD.get(comp.kind, ())):
            return None
        return (name, *_translate(comp.pairs, inner_key, "original", "diffusers"))
    return None


def _qkv_names(q_key: str) -> tuple[str, str, str]:
    head, _, tail = q_key.rpartition(".q_proj.")
    return tuple(f"{head}.{x}_proj.{tail}" for x in "qkv")


def to_diffusers(key: str, layout: Layout = SD1) -> tuple[str, tuple[str, ...]] | None:
    """(component, diffusers keys) of a single-file key: three keys (q, k, v) for a fused
    in_proj, one otherwise; None for keys no diffusers component holds (EMA, schedule buffers,
    position_ids, logit_scale, SD 2.x's last text resblock and text_projection)."""
    found = _locate(key, layout)
    if found is None:
        return None
    name, mapped, rule = found
    return name, _qkv_names(mapped) if rule == "qkv" else (mapped,)


# Reshape rules: name -> (diffusers -> original, original -> diffusers). qkv is handled by
# fuse_qkv / split_qkv because it joins three tensors.
RESHAPES = {
    "conv1x1": (lambda t: t.reshape(*t.shape, 1, 1) if t.ndim == 2 else t,
                lambda t: t.reshape(t.shape[:2]) if t.ndim == 4 else t),
    "transpose": (lambda t: t.T.contiguous(), lambda t: t.T.contiguous()),
}


def fuse_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """OpenCLIP's in_proj tensor from diffusers' q, k, v projections (stacked on dim 0)."""
    return torch.cat([q, k, v], dim=0)


def split_qkv(fused: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Diffusers' q, k, v projections from OpenCLIP's in_proj tensor."""
    q, k, v = fused.chunk(3, dim=0)
    return q.contiguous(), k.contiguous(), v.contiguous()


def original_only(component: str, tensors: Mapping[str, torch.Tensor],
                  layout: Layout = SD1) -> dict[str, torch.Tensor]:
    """The single-file tensors a component needs that diffusers does not store (position_ids,
    logit_scale), made from the component's own tensors."""
    comp = layout.components[component]
    out = {}
    for (kind, key), what in ORIGINAL_ONLY.items():
        if kind != comp.kind:
            continue
        if what == "position_ids":
            pos = next(t for n, t in tensors.items() if n.endswith("position_embedding.weight"))
            out[comp.prefix + key] = torch.arange(pos.shape[0], dtype=torch.int64)[None]
        else:
            ref = next(iter(tensors.values()))
            out[comp.prefix + key] = torch.tensor(LOGIT_SCALE, dtype=ref.dtype)
    return out


def component_to_original(component: str, tensors: Iterable[tuple[str, torch.Tensor]],
                          layout: Layout = SD1) -> Iterator[tuple[str, torch.Tensor]]:
    """Stream a diffusers component's (key, tensor) pairs as single-file (key, tensor) pairs."""
    pending: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in tensors:
        name, rule = _to_original(component, key, layout)
        if rule == "qkv":
            parts = pending.setdefault(name, {})
            parts[key.rsplit(".", 2)[-2][0]] = tensor
            if len(parts) == 3:
                yield name, fuse_qkv(parts["q"], parts["k"], parts["v"])
                del pending[name]
        elif rule is not None:
            yield name, RESHAPES[rule][0](tensor)
        else:
            yield name, tensor
    if pending:
        raise ValueError(f"{component}: q/k/v projections incomplete for {sorted(pending)}")


def state_dict_to_diffusers(tensors: Iterable[tuple[str, torch.Tensor]],
                            layout: Layout = SD1) -> dict[str, dict[str, torch.Tensor]]:
    """Single-file (key, tensor) pairs as {component: {diffusers key: tensor}}; keys no
    component holds are left out."""
    out: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in tensors:
        found = _locate(key, layout)
        if found is None:
            continue
        name, mapped, rule = found
        comp = out.setdefault(name, {})
        if rule == "qkv":
            comp.update(zip(_qkv_names(mapped), split_qkv(tensor), strict=True))
        else:
            comp[mapped] = RESHAPES[rule][1](tensor) if rule else tensor
    return out
