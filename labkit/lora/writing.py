"""Write a LoRA's weights in the key style of any writer the field has used: the way back from
labkit.identify.adapter_styles, which reads them all to one spelling.

A LoRA is, per patched module, a down and an up matrix and (for kohya) an alpha. kohya spells the
module with underscores under `lora_unet_` / `lora_te_` (SDXL: `lora_te1_` / `lora_te2_` and the
original UNet block names) and keeps alpha; diffusers' attention-processor era (0.12-0.23) names the
processor of an attention layer (`attn1.processor.to_q_lora.down.weight`); its LoRACompatibleLinear
form (from 0.22; the SD/SDXL training scripts still save it) hangs `.lora.down` under the module
(`.lora_linear_layer.down` in text encoders); PEFT writes `.lora_A` / `.lora_B`. The diffusers styles have no alpha slot: their scale is 1, so a
part's alpha / rank is folded into its up matrix. For lessons and tests: one adapter written in
every style reads to one table and applies to one image.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd
import torch

from labkit.errors import LabkitError
from labkit.identify import layouts
from labkit.identify.adapter_styles import PROCESSOR_TE_LEAVES, PROCESSOR_UNET_LEAVES
from labkit.lora import keys as K
from labkit.lora.reading import Adapter, open_adapter


class KeyStyle(NamedTuple):
    """One writer's key pattern. `unet` / `text`: the key of a module's matrix, from {c} the
    component prefix, {m} the module, {u} the module underscored, {p} its parent and {l} its
    processor leaf, {r} the role word; `alpha`: alpha's key, None when the style has no slot."""

    writer: str
    unet: str
    text: str
    roles: tuple[str, str]  # the words for (down, up)
    alpha: str | None
    kohya: bool  # component prefixes lora_unet_ / lora_te_ (else unet. / text_encoder.)
    processor: bool = False  # names only the attention projections, by processor leaf


KEY_STYLES: dict[str, KeyStyle] = {
    "kohya": KeyStyle("kohya / sd-scripts (also A1111, ComfyUI)", "{c}{u}.{r}.weight",
                      "{c}{u}.{r}.weight", ("lora_down", "lora_up"), "{c}{u}.alpha", True),
    "attention processor": KeyStyle("diffusers attention processors (0.12-0.23)",
                                    "{c}{p}.processor.{l}_lora.{r}.weight",
                                    "{c}{p}.{l}_lora.{r}.weight", ("down", "up"), None, False,
                                    processor=True),
    "LoRACompatibleLinear": KeyStyle("diffusers LoRACompatibleLinear (0.22 on; SD/SDXL scripts "
                                     "still save it)",
                                     "{c}{m}.lora.{r}.weight", "{c}{m}.lora_linear_layer.{r}.weight",
                                     ("down", "up"), None, False),
    "PEFT": KeyStyle("PEFT (diffusers >= 0.26 unconverted, peft)", "{c}{m}.{r}.weight",
                     "{c}{m}.{r}.weight", ("lora_A", "lora_B"), None, False),
}
# The attention-processor era's leaf names of the projections it patches, per component kind.
# (the reading table of identify.adapter_styles, turned around)
PROCESSOR_LEAVES = {part: {module: leaf for leaf, module in leaves.items()}
                    for part, leaves in (("unet", PROCESSOR_UNET_LEAVES), ("text", PROCESSOR_TE_LEAVES))}
METADATA = {"format": "pt"}


class LoraPart(NamedTuple):
    """One module's LoRA: down [r, in(, 1, 1)], up [out, r(, 1, 1)], alpha (None: the rank)."""

    down: torch.Tensor
    up: torch.Tensor
    alpha: float | None = None


Parts = Mapping[str, LoraPart]  # "component.module" (as the pipeline names it) -> its LoRA


def _leaf(style: KeyStyle, component: str, module: str) -> tuple[str, str] | None:
    """(parent, processor leaf) of a module the processor style can name, else None."""
    leaves = PROCESSOR_LEAVES["unet" if component == "unet" else "text"]
    return next(((module[: -len(m) - 1], leaf) for m, leaf in leaves.items()
                 if module.endswith("." + m)), None)


def can_name(style: str, name: str) -> bool:
    """Whether a style has keys for a module ("component.module")."""
    component, _, module = name.partition(".")
    return not KEY_STYLES[style].processor or _leaf(KEY_STYLES[style], component, module) is not None


def module_keys(name: str, style: str, two_encoders: bool = False,
                layout: layouts.Layout | None = None) -> dict[str, str]:
    """The keys ({"down", "up"} and "alpha" where the style has it) of one module
    ("unet.down_blocks.0...to_q", "text_encoder.encoder.layers.0.self_attn.q_proj") in a style;
    `layout`: kohya's UNet names become that layout's original block names (SDXL).
    Raises LabkitError for a module the style has no name for."""
    s = KEY_STYLES[style]
    component, _, module = name.partition(".")
    if component != "unet":
        module = K.text_model_path(module)
    elif layout is not None and s.kohya:
        module = K.original_unet_name(module, layout)
    kohya, peft = K.COMPONENT_PREFIXES["two_encoders" if two_encoders else "one_encoder"][component]
    leaf = _leaf(s, component, module) if s.processor else ("", "")
    if leaf is None:
        raise LabkitError(f"the {s.writer} style has no key for {name}: it patched the attention "
                          "projections only.", hint="Write that module in another style.")
    fields = {"c": kohya if s.kohya else peft, "m": module, "u": module.replace(".", "_"),
              "p": leaf[0], "l": leaf[1]}
    pattern = s.unet if component == "unet" else s.text
    out = {role: pattern.format(r=word, **fields) for role, word in zip(("down", "up"), s.roles,
                                                                         strict=True)}
    if s.alpha is not None:
        out["alpha"] = s.alpha.format(**fields)
    return out


def key_table(names: Iterable[str], two_encoders: bool = False) -> pd.DataFrame:
    """One row per (style, module): the writer in words and the keys of down, up and alpha (empty
    where the style has no name for the module or no alpha slot)."""
    rows, names = [], list(names)
    for style, s in KEY_STYLES.items():
        for name in names:
            keys = module_keys(name, style, two_encoders) if can_name(style, name) else {}
            rows.append({"style": style, "writer": s.writer, "module": name,
                         **{role: keys.get(role, "") for role in ("down", "up", "alpha")}})
    return pd.DataFrame(rows)


def sgm_layout(pipe: Any) -> layouts.Layout | None:
    """The original block layout kohya names an SDXL-style pipeline's UNet in, None for SD1-style."""
    if getattr(pipe, "text_encoder_2", None) is None:
        return None
    return layouts.make_layout("sdxl", dict(pipe.unet.config), dict(pipe.vae.config))


def in_style(parts: Parts, style: str, layout: layouts.Layout | None = None) -> dict[str, torch.Tensor]:
    """The tensors of a LoRA file in one key style (a style with no alpha slot gets alpha / rank
    folded into up). Raises LabkitError for a module the style has no name for."""
    two = layout is not None or any(name.startswith("text_encoder_2.") for name in parts)
    out: dict[str, torch.Tensor] = {}
    for name, part in parts.items():
        keys = module_keys(name, style, two, layout)
        rank = part.down.shape[0]
        alpha = float(rank) if part.alpha is None else float(part.alpha)
        out[keys["down"]] = part.down.contiguous()
        if "alpha" in keys:
            out[keys["up"]], out[keys["alpha"]] = part.up.contiguous(), torch.tensor(alpha)
        else:
            out[keys["up"]] = (part.up * (alpha / rank)).contiguous()
    return out


def nameable(parts: Parts, style: str) -> dict[str, LoraPart]:
    """The parts a style has keys for (the attention-processor style: attention projections)."""
    return {name: part for name, part in parts.items() if can_name(style, name)}


def adapter_parts(adapter: Adapter) -> dict[str, LoraPart]:
    """The plain LoRA modules of an opened adapter (any key style), by "component.module".
    Raises LabkitError for LoHa, LoKr, full diffs and conv cores, which are no down/up pair."""
    parts: dict[str, LoraPart] = {}
    for module, target in adapter.matched:
        if module.kind != "lora" or "mid" in module.keys:
            raise LabkitError(f"{module.prefix} is a {module.kind} module, not a down/up pair.",
                              adapter.path, hint="Only plain LoRA files can be rewritten.")
        t = adapter.tensors(module)
        alpha = float(t["alpha"]) if "alpha" in t else None
        parts[f"{target.component}.{target.module}"] = LoraPart(t["down"], t["up"], alpha)
    return parts


def write_in_style(path: str | Path, parts: Parts, style: str,
                   layout: layouts.Layout | None = None) -> Path:
    """Write a LoRA's parts to a .safetensors file in one key style; returns the path."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(in_style(parts, style, layout), str(path), metadata=METADATA)
    return path


def convert(path: str | Path, out: str | Path, style: str, model: Any = None,
            only_nameable: bool = False) -> Path:
    """Rewrite a LoRA file (any key style) in another style, matched against `model` (a pipeline,
    a family name, or None: the file's own base); `only_nameable` drops what the style cannot name."""
    parts = adapter_parts(open_adapter(path, model))
    if only_nameable:
        parts = nameable(parts, style)
    layout = sgm_layout(model) if model is not None and not isinstance(model, str) else None
    return write_in_style(out, parts, style, layout)
