"""Which model module each key of a LoRA-like file patches, in kohya, PEFT and LyCORIS namings.

kohya writes a module path with its dots turned to underscores (`lora_unet_down_blocks_0_...`),
which cannot be split back by rule (`to_q`, `transformer_blocks` hold underscores too). So the
lab lists the model's own module names (from the loaded pipeline, or from a family's config
folder built on the meta device) and looks each file prefix up in a table of every spelling a
trainer uses for that module: kohya with underscores (and SDXL's original block names,
`lora_unet_input_blocks_4_1_...`), PEFT/diffusers with dots.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from labkit.errors import LabkitError
from labkit.identify import layouts
from labkit.identify.adapter_styles import canonical_table
from labkit.identify.blocks import block_label, block_sort_key
from labkit.identify.fit import pipeline_family
from labkit.tensors import TensorInfo

# Tensor suffix -> role of the tensor in its module; the longest matching suffix wins.
ROLES: tuple[tuple[str, str], ...] = (
    (".lora_down.weight", "down"),
    (".lora_up.weight", "up"),
    (".lora_mid.weight", "mid"),
    (".lora_A.weight", "down"),
    (".lora_B.weight", "up"),
    (".lora_magnitude_vector.weight", "dora_scale"),
    (".lora_magnitude_vector", "dora_scale"),
    (".dora_scale", "dora_scale"),
    (".alpha", "alpha"),
    (".diff_b", "diff_b"),
    (".diff", "diff"),
    *((f".{n}", n) for n in ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "hada_t1",
                             "hada_t2", "lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2",
                             "lokr_w2_a", "lokr_w2_b", "lokr_t2")),
)
_ROLES_LONGEST_FIRST = tuple(sorted(ROLES, key=lambda r: -len(r[0])))

# Module kind from the roles it holds, first match wins (DoRA also holds down/up).
KINDS: tuple[tuple[str, str], ...] = (
    ("dora_scale", "dora"),
    ("hada_w1_a", "loha"),
    ("lokr_w1", "lokr"),
    ("lokr_w1_a", "lokr"),
    ("diff", "full"),
    ("down", "lora"),
)
ADAPTER_KINDS = ("lora", "locon", "loha", "lokr", "full", "dora")

# (component, its prefix in kohya names, its prefix in PEFT/diffusers names). SD1/SD2 have one
# text encoder (`lora_te_`); SDXL two (`lora_te1_`, `lora_te2_`).
COMPONENT_PREFIXES: dict[str, dict[str, tuple[str, str]]] = {
    "one_encoder": {"unet": ("lora_unet_", "unet."),
                    "text_encoder": ("lora_te_", "text_encoder.")},
    "two_encoders": {"unet": ("lora_unet_", "unet."),
                     "text_encoder": ("lora_te1_", "text_encoder."),
                     "text_encoder_2": ("lora_te2_", "text_encoder_2.")},
}
TEXT_MODEL = "text_model."

# Key prefixes that belong to another family's model: (prefixes, what they are for).
FOREIGN: tuple[tuple[tuple[str, ...], str], ...] = (
    (("lora_te1_", "lora_te2_", "text_encoder_2."), "SDXL (two text encoders: lora_te1_/lora_te2_)"),
    (("lora_unet_input_blocks_", "lora_unet_middle_block_", "lora_unet_output_blocks_"),
     "SDXL (original block names: lora_unet_input_blocks_...)"),
    (("lora_te_",), "SD1/SD2 (one text encoder: lora_te_)"),
    (("lora_transformer_", "transformer.", "lora_unet_double_blocks_", "lora_unet_single_blocks_",
      "lora_unet_joint_blocks_"), "a transformer model (Flux, SD3)"),
)

# Families the lab knows the architecture of: base -> shipped config folder (labkit/configs).
FAMILY_FOLDERS = {"sd1": "sd15", "sd2": "sd2_base", "sdxl": "sdxl_base"}


@dataclass(frozen=True)
class Target:
    """A module a LoRA can patch: pipeline component, module path in it, SD block label, and
    the shape of its weight."""

    component: str
    module: str
    block: str
    shape: tuple[int, ...] = ()


@dataclass(frozen=True)
class Targets:
    """Every patchable module of one model, by every file prefix that names it."""

    family: str
    by_prefix: dict[str, Target]
    blocks: tuple[str, ...] = field(default=())

    def lookup(self, prefix: str) -> Target | None:
        """The module a file prefix names, or None."""
        return self.by_prefix.get(prefix)


@dataclass
class FileModule:
    """One patched module of a file: its key prefix and the key of each role it holds."""

    prefix: str
    keys: dict[str, str]

    @property
    def kind(self) -> str:
        """lora, loha, lokr, full or dora (lora becomes locon once a conv shape is seen)."""
        return next((kind for role, kind in KINDS if role in self.keys), "unknown")


def weight_blocks(targets: Targets) -> list[str]:
    """The blocks a LoRA Block Weight list names, in order: BASE (the text encoders), then the
    UNet blocks that hold attention (17 for SD1, 12 for SDXL)."""
    with_attention = {t.block for t in targets.by_prefix.values() if ".attentions." in t.module}
    return ["BASE", *(b for b in targets.blocks if b in with_attention)]


def split_key(key: str) -> tuple[str, str] | None:
    """(module prefix, role) of an adapter key, None when no adapter suffix ends it."""
    for suffix, role in _ROLES_LONGEST_FIRST:
        if key.endswith(suffix):
            return key[: -len(suffix)], role
    return None


def group_keys(table: Mapping[str, TensorInfo] | Iterable[str]) -> tuple[list[FileModule], list[str]]:
    """The file's keys grouped by module (its canonical prefix, whatever the writer's key style),
    plus the keys with no adapter suffix. A tensor table also tells bare SDXL encoder keys apart."""
    if not isinstance(table, Mapping):
        table = dict.fromkeys(table, TensorInfo((), ""))
    modules: dict[str, FileModule] = {}
    stray = []
    for canonical, (key, _) in canonical_table(table).items():
        found = split_key(canonical)
        if found is None:
            stray.append(key)
            continue
        prefix, role = found
        modules.setdefault(prefix, FileModule(prefix, {})).keys[role] = key
    return list(modules.values()), stray


def _underscored(name: str) -> str:
    return name.replace(".", "_")


def original_unet_name(module: str, layout: layouts.Layout) -> str:
    """The original (LDM/SGM) layout's path of a diffusers UNet module."""
    key = layouts.to_original("unet", module + ".weight", layout)
    return key[len(layouts.UNET_PREFIX): -len(".weight")]


def text_model_path(module: str) -> str:
    """A text encoder module's path as kohya spells it: under "text_model." (CLIPTextModel in
    transformers 5 drops that level, CLIPTextModelWithProjection keeps it)."""
    return module if module.startswith(TEXT_MODEL) else TEXT_MODEL + module


def spellings(component: str, module: str, kohya: str, peft: str,
               layout: layouts.Layout | None) -> list[str]:
    """Every file prefix that names `module` of `component`."""
    if component == "unet":
        names = [kohya + _underscored(module), peft + module]
        if layout is not None:
            names.append(kohya + _underscored(original_unet_name(module, layout)))
        return names
    full = text_model_path(module)
    return [kohya + _underscored(full), peft + module, peft + full]


def build_targets(family: str, modules: Mapping[str, Mapping[str, tuple[int, ...]]],
                  unet_config: Mapping[str, Any], vae_config: Mapping[str, Any]) -> Targets:
    """The prefix table of a model from its patchable modules ({component: {name: weight
    shape}}) and its UNet and VAE configs."""
    two = "text_encoder_2" in modules
    prefixes = COMPONENT_PREFIXES["two_encoders" if two else "one_encoder"]
    # SDXL trainers write the original block names; SD1 trainers the diffusers ones.
    layout = layouts.make_layout("sdxl", unet_config, vae_config) if two else None
    last_out = len(unet_config["up_block_types"]) * (int(unet_config["layers_per_block"]) + 1) - 1
    by_prefix: dict[str, Target] = {}
    for component, names in modules.items():
        if component not in prefixes:
            continue
        kohya, peft = prefixes[component]
        for module, shape in names.items():
            block = block_label(f"{component}.{module}.weight", last_out)
            target = Target(component, module, block, tuple(shape))
            for spelling in spellings(component, module, kohya, peft, layout):
                by_prefix.setdefault(spelling, target)
    labels = {t.block for t in by_prefix.values()}
    return Targets(family, by_prefix, tuple(sorted(labels, key=block_sort_key)))


def patchable(module: Any) -> dict[str, tuple[int, ...]]:
    """The Linear and Conv2d submodules of a torch module (what LoRAs patch) with their weight
    shapes; a layer already wrapped by peft counts once, under its own name."""
    import torch

    found: dict[str, tuple[int, ...]] = {}
    wrappers: tuple[str, ...] = ()
    for n, m in module.named_modules():
        if not n or n.startswith(wrappers):
            continue
        if hasattr(m, "base_layer"):
            wrappers += (n + ".",)
            found[n] = tuple(m.base_layer.weight.shape)
        elif isinstance(m, torch.nn.Linear | torch.nn.Conv2d):
            found[n] = tuple(m.weight.shape)
    return found


def pipeline_targets(pipe: Any) -> Targets:
    """The prefix table of a loaded diffusers pipeline."""
    comps = {name: getattr(pipe, name, None) for name in ("unet", "text_encoder", "text_encoder_2")}
    modules = {name: patchable(m) for name, m in comps.items() if m is not None}
    return build_targets(pipeline_family(pipe), modules, dict(pipe.unet.config),
                         dict(pipe.vae.config))


def read_config(path: Path) -> dict[str, Any]:
    """A shipped or folder config.json as a dict."""
    return json.loads(path.read_text())


def folder_targets(folder: Path, family: str) -> Targets:
    """The prefix table of a diffusers folder's architecture, built on the meta device."""
    import torch
    import transformers
    from diffusers import UNet2DConditionModel

    unet_config = read_config(folder / "unet" / "config.json")
    modules: dict[str, dict[str, tuple[int, ...]]] = {}
    with torch.device("meta"):
        modules["unet"] = patchable(UNet2DConditionModel.from_config(unet_config))
        for name in ("text_encoder", "text_encoder_2"):
            path = folder / name / "config.json"
            if not path.exists():
                continue
            config = read_config(path)
            cls = getattr(transformers, config.get("architectures", ["CLIPTextModel"])[0])
            modules[name] = patchable(cls(transformers.CLIPTextConfig(**config)))
    return build_targets(family, modules, unet_config, read_config(folder / "vae" / "config.json"))


def family_folder(base: str) -> Path | None:
    """The diffusers config folder of a family the lab knows ("sd1", "sdxl", "demo_sd1"...),
    None for other bases and for the demo bases while the demo world is not built."""
    if base in FAMILY_FOLDERS:
        from labkit.convert.shipped import CONFIG_ROOT

        return CONFIG_ROOT / FAMILY_FOLDERS[base]
    from labkit.generate.pipelines import DEMO_BASES, demo_config

    if base in DEMO_BASES:
        try:
            return demo_config(base)
        except LabkitError:
            return None
    return None


@lru_cache(maxsize=8)
def family_targets(base: str) -> Targets | None:
    """The prefix table of a known family's architecture (cached), None for other bases."""
    folder = family_folder(base)
    return None if folder is None else folder_targets(folder, base)


def foreign_note(prefixes: Iterable[str], family: str) -> str:
    """Why some module prefixes match nothing: which other family's names they carry."""
    prefixes = list(prefixes)
    if not prefixes:
        return ""
    parts, rest = [], len(prefixes)
    for starts, what in FOREIGN:
        n = sum(1 for p in prefixes if p.startswith(starts))
        if n:
            parts.append(f"{n} modules are named as for {what}")
            rest -= n
    if rest:
        parts.append(f"{rest} modules name nothing in the model")
    told = "; ".join(parts)
    return f"{told}; this model is {family}."
