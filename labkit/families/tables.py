"""Model families side by side (SD1, SD2, SDXL, SD3, Flux and the lab's two demo models), from
their tensor tables alone: which parts a model has, how wide each is, how the denoiser is
conditioned, and how the keys of the same part are spelled in each family's files.

Real families are read from compact key tables shipped in data/layouts/ (names, shapes and
dtypes of real files, no weights; data/ is labkit.zoo.data_dir()); the demo families from the
demo files themselves.
"""

from __future__ import annotations

import gzip
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from labkit.errors import LabkitError
from labkit.identify import rules as R
from labkit.identify.blocks import LEVEL, component_of
from labkit.identify.identity import identify
from labkit.lora.keys import FileModule, group_keys
from labkit.tensors import TensorInfo

Table = Mapping[str, TensorInfo]

LAYOUT_SUFFIX = ".json.gz"

# The families compared by default: label -> real key table (data/layouts) or demo file (zoo).
REAL_FAMILIES = {"SD 1.5": "sd15", "SD 2.1": "sd21", "SDXL": "sdxl_base", "SD3 medium": "sd3_medium",
                 "Flux.1 dev": "flux_dev"}
DEMO_FAMILIES = {"demo SD1": "demo_sd1_single", "demo SDXL": "demo_sdxl_single"}

# blocks.component_of names -> part names here: a denoiser is a UNet or a transformer.
PART_NAMES = {"UNet": "denoiser"}
ROLE_OF_PART = {"denoiser": "denoiser", "VAE": "vae", "text encoder": "text_encoder",
                "text encoder 2": "text_encoder"}
NO_PREFIX = "(no prefix)"  # a bare file's keys (Flux's transformer) start with the part's own names
PART_ORDER = ("text encoder", "text encoder 2", "denoiser", "VAE", "EMA", "other")
# Integer tensors (CLIP's position_ids) are buffers, not parameters.
INTEGER_DTYPES = ("I", "U", "BOOL")

# What a part's width means, and where it is read: (key suffix, dim of that key's shape); the
# first suffix found wins. A denoiser's context width is what its cross-attention (UNet), joint
# attention (SD3's context_embedder) or text input (Flux's txt_in) takes per token.
WIDTHS: dict[str, tuple[str, tuple[tuple[str, int], ...]]] = {
    "text_encoder": ("hidden width", (("token_embedding.weight", 1),)),
    "vae": ("latent channels", (("decoder.conv_in.weight", 1),)),
    "denoiser": ("context width", ((R.CONTEXT_SUFFIX, 1), ("context_embedder.weight", 1),
                                   ("txt_in.weight", 1))),
}
# The denoiser's input for conditioning beside the time step, by key suffix (dim 1 is its
# width): SDXL's text_time embedding (pooled text + size/crop numbers), SD3's y_embedder and
# Flux's vector_in (pooled text).
ADDED_INPUTS = ("label_emb.0.0.weight", "add_embedding.linear_1.weight",
                "y_embedder.mlp.0.weight", "vector_in.in_layer.weight",
                "time_text_embed.text_embedder.linear_1.weight")
# A text encoder's projection of the pooled prompt: (key suffix, dim of its output width);
# OpenCLIP's matrix multiplies from the right, a torch Linear from the left.
PROJECTIONS = (("text_projection.weight", 0), ("text_projection", 1))
# Families whose files hold no text encoder: what their pipelines load beside them.
SEPARATE_ENCODERS = {"sd3": "CLIP-L 768 + CLIP-G 1280 + T5-XXL 4096 (separate files)",
                     "flux_dev": "CLIP-L 768 + T5-XXL 4096 (separate files)",
                     "flux_schnell": "CLIP-L 768 + T5-XXL 4096 (separate files)"}
SHORT_ARCH = {"clip": "CLIP", "openclip": "OpenCLIP", "t5": "T5"}

# UNet levels, in both namings: (pattern, 1 for original input-block numbers, 0 for diffusers
# level numbers). Channels: the first resnet's output; layers: transformer blocks of the first
# attention of the level.
LEVEL_CHANNELS = ((re.compile(r"(?:^|[./])input_blocks\.(\d+)\.0\.out_layers\.3\.weight$"), 1),
                  (re.compile(r"(?:^|[./])down_blocks\.(\d+)\.resnets\.0\.conv2\.weight$"), 0))
LEVEL_LAYERS = ((re.compile(r"(?:^|[./])input_blocks\.(\d+)\.1\.transformer_blocks\.(\d+)\."), 1),
                (re.compile(r"(?:^|[./])down_blocks\.(\d+)\.attentions\.0\.transformer_blocks\.(\d+)\."),
                 0))

# LoRA modules whose input width tells the family: (component, module-name endings, what).
LORA_PROBES = (("UNet", R.CONTEXT_PROBES, "cross-attention context width"),
               ("text encoder", R.TE_PROBES, "text encoder width"),
               ("text encoder 2", R.TE_PROBES, "text encoder width"))

# What each conditioning input of a UNet is made of, formatted with the pipeline's widths.
MADE_OF = {
    "encoder_hidden_states": {
        1: "the text encoder's last hidden state: one {w1}-wide vector per token",
        2: "penultimate hidden states of text encoder ({w1}) and text encoder 2 ({w2}) side by "
           "side: {w1} + {w2} = {context} per token",
    },
    "text_embeds": {2: "text encoder 2's pooled output (the end token's state), projected to {p}"},
    "time_ids": {2: "original size (h, w), crop top-left (y, x), target size (h, w): {ids}"},
}


# ---------------------------------------------------------------- tables

def layouts_dir() -> Path:
    """data/layouts in the lab's data folder (labkit.zoo.data_dir(): $LABKIT_DATA or the
    checkout's data/). Raises LabkitError when there is no data folder."""
    from labkit.zoo import data_dir

    return data_dir() / "layouts"


def layout_names() -> list[str]:
    """The real key tables shipped in data/layouts (e.g. "sd15", "sdxl_base", "flux_dev")."""
    return sorted(p.name.removesuffix(LAYOUT_SUFFIX) for p in layouts_dir().glob(f"*{LAYOUT_SUFFIX}"))


def key_table(name: str) -> dict[str, TensorInfo]:
    """The key table of a real file (names, shapes, dtypes, in file order) from data/layouts.
    Raises LabkitError for an unknown name or an unreadable table."""
    path = layouts_dir() / f"{name}{LAYOUT_SUFFIX}"
    if not path.is_file():
        raise LabkitError(f"no key table named {name!r}.", path,
                          f"Known tables: {', '.join(layout_names())}.")
    try:
        tensors = json.loads(gzip.decompress(path.read_bytes()))["tensors"]
        return {k: TensorInfo(tuple(v["shape"]), v["dtype"]) for k, v in tensors.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise LabkitError(f"the key table could not be read ({type(e).__name__}: {e}).", path,
                          "Restore data/layouts from the repository.") from None


def family_tables() -> dict[str, Table]:
    """The tables compared by default: REAL_FAMILIES from data/layouts, DEMO_FAMILIES from the
    demo files. Raises LabkitError when a table or a demo file is missing."""
    from labkit import zoo
    from labkit.files.opener import open_model

    tables: dict[str, Table] = {label: key_table(name) for label, name in REAL_FAMILIES.items()}
    tables.update({label: open_model(zoo.path(name)).table for label, name in DEMO_FAMILIES.items()})
    return tables


# ---------------------------------------------------------------- parts of one model

def _part_of(key: str) -> str:
    component = component_of(key)
    return PART_NAMES.get(component, component)


def _architecture(keys: list[str]) -> tuple[str, str]:
    """(role, architecture) of a part by the first identify marker that ends one of its keys."""
    for row in R.COMPONENTS:
        if any(k.endswith(row.marker) for k in keys):
            return row.role, row.arch
    return "", ""


def _read(table: Table, keys: list[str], probes: tuple[tuple[str, int], ...]) -> int | None:
    """The dim of the first key (in `probes` order) ending with a probe suffix."""
    for suffix, dim in probes:
        key = next((k for k in keys if k.endswith(suffix)), None)
        if key is not None and len(table[key].shape) > dim:
            return table[key].shape[dim]
    return None


def _prefix(keys: list[str]) -> str:
    """The keys' common prefix, up to its last "." or "/"."""
    common = os.path.commonprefix(keys)
    return common[: max(common.rfind("."), common.rfind("/")) + 1]


def parts(table: Table) -> pd.DataFrame:
    """One row per part of a model (text encoders, denoiser, VAE, EMA copy): its architecture,
    key prefix, telling width (text encoder hidden width, denoiser context width, VAE latent
    channels), tensor and parameter counts. Works on original, diffusers and bare layouts."""
    groups: dict[str, list[str]] = {}
    for key in table:
        groups.setdefault(_part_of(key), []).append(key)
    rows = []
    for part, keys in groups.items():
        role, arch = _architecture(keys)
        if part == "other" and role == "denoiser":  # a bare transformer file (Flux)
            part = "denoiser"
        what, probes = WIDTHS.get(ROLE_OF_PART.get(part, ""), ("", ()))
        rows.append({"part": part, "architecture": R.ARCH_NAMES.get(arch, ""),
                     "prefix": _prefix(keys), "width": _read(table, keys, probes),
                     "width is": what, "tensors": len(keys),
                     "parameters": sum(table[k].numel for k in keys
                                       if not table[k].dtype.startswith(INTEGER_DTYPES))})
    frame = pd.DataFrame(rows, columns=["part", "architecture", "prefix", "width", "width is",
                                        "tensors", "parameters"])
    frame["width"] = frame["width"].astype("Int64")
    order = frame["part"].map(lambda p: PART_ORDER.index(p) if p in PART_ORDER else len(PART_ORDER))
    return frame.iloc[order.argsort(kind="stable")].reset_index(drop=True)


def family_parts(tables: Mapping[str, Table]) -> pd.DataFrame:
    """parts() of several models in one long table, with a `family` column first."""
    frames = [parts(t).assign(family=label) for label, t in tables.items()]
    frame = pd.concat(frames, ignore_index=True)
    return frame[["family", *frame.columns[:-1]]]


def conditioning_widths(table: Table) -> dict[str, int]:
    """The widths a denoiser is conditioned with: context (per token), added (its input beside
    the time step), pooled (the text part of it: the last text encoder's projection, or all of
    it when the file holds no text encoder) and micro (the rest: SDXL's size/crop numbers)."""
    frame = parts(table)
    keys = list(table)
    context = frame.loc[frame["part"] == "denoiser", "width"].dropna()
    added = _read(table, keys, tuple((s, 1) for s in ADDED_INPUTS)) or 0
    encoders = [[k for k in keys if _part_of(k) == part] for part in frame["part"]
                if ROLE_OF_PART.get(part) == "text_encoder"]
    projections = [w for ks in encoders if (w := _read(table, ks, PROJECTIONS)) is not None]
    pooled = min(added, projections[-1]) if projections else added
    return {"context": int(context.iloc[0]) if len(context) else 0, "added": added,
            "pooled": pooled, "micro": added - pooled}


def _encoders(table: Table, frame: pd.DataFrame) -> str:
    """The text encoders of a model as "CLIP 768 + OpenCLIP 1280" (or what is loaded beside)."""
    rows = frame[frame["part"].map(ROLE_OF_PART.get) == "text_encoder"]
    if rows.empty:
        return SEPARATE_ENCODERS.get(identify(table).base, "none in the file")
    names = {v: SHORT_ARCH[k] for k, v in R.ARCH_NAMES.items() if k in SHORT_ARCH}
    return " + ".join(f"{names.get(a, a)} {w}" for a, w in zip(rows["architecture"], rows["width"],
                                                               strict=True))


def family_table(tables: Mapping[str, Table]) -> pd.DataFrame:
    """One row per family: what identify calls it, its denoiser, text encoders, conditioning
    widths (context per token, pooled text, SDXL's size/crop numbers), VAE latent channels and
    millions of parameters per part (blank where the file holds no such part)."""
    rows = []
    for label, table in tables.items():
        frame = parts(table)
        widths = conditioning_widths(table)
        params = frame.groupby(frame["part"].map(ROLE_OF_PART.get))["parameters"].sum()
        latent = frame.loc[frame["part"] == "VAE", "width"]
        rows.append({
            "family": label, "identified as": identify(table).base,
            "denoiser": frame.loc[frame["part"] == "denoiser", "architecture"].str.cat(),
            "text encoders": _encoders(table, frame),
            "context width": widths["context"], "pooled text": widths["pooled"],
            "size/crop numbers": widths["micro"],
            "latent channels": latent.iloc[0] if len(latent) else pd.NA,
            **{f"{what} (M)": round(params[role] / 1e6, 2) if role in params else None
               for role, what in (("text_encoder", "text encoders"), ("denoiser", "denoiser"),
                                  ("vae", "VAE"))},
        })
    return pd.DataFrame(rows).set_index("family")


def layout_prefixes(tables: Mapping[str, Table]) -> pd.DataFrame:
    """The key prefix of each part (rows) in each family's files (columns): where the same part
    lives in SD1's, SDXL's, SD3's... single-file layout ("-" where a file has no such part)."""
    frame = family_parts(tables)
    frame = frame[frame["part"].isin(ROLE_OF_PART)]
    wide = frame.pivot(index="part", columns="family", values="prefix").replace("", NO_PREFIX)
    order = [p for p in PART_ORDER if p in wide.index]
    return wide.loc[order, list(tables)].fillna("-").rename_axis(columns=None)


# ---------------------------------------------------------------- the UNet's levels

def _levels(table: Table, patterns: tuple[tuple[re.Pattern[str], int], ...]
            ) -> dict[int, list[tuple[str, re.Match[str]]]]:
    """UNet keys matching one of `patterns`, by the level their numbers place them on (a VAE
    has down_blocks too: only the denoiser's keys count)."""
    found: dict[int, list[tuple[str, re.Match[str]]]] = {}
    for key in (k for k in table if _part_of(k) == "denoiser"):
        for pattern, original in patterns:
            m = pattern.search(key)
            if m is not None:
                n = int(m.group(1))
                found.setdefault((n - 1) // LEVEL if original else n, []).append((key, m))
                break
    return found


def unet_levels(tables: Mapping[str, Table]) -> pd.DataFrame:
    """Per family and UNet level (down the UNet): its channels and how many transformer blocks
    each of its attentions stacks (0: no attention on that level). Transformers have none."""
    rows = []
    for label, table in tables.items():
        channels = _levels(table, LEVEL_CHANNELS)
        layers = _levels(table, LEVEL_LAYERS)
        for level in sorted(channels):
            key = channels[level][0][0]
            depth = {int(m.group(2)) for _, m in layers.get(level, [])}
            rows.append({"family": label, "level": level, "channels": table[key].shape[0],
                         "transformer layers": max(depth) + 1 if depth else 0})
    return pd.DataFrame(rows, columns=["family", "level", "channels", "transformer layers"])


# ---------------------------------------------------------------- LoRA files

def lora_layout(tables: Mapping[str, Table]) -> pd.DataFrame:
    """Per LoRA file and key prefix (lora_te_, lora_te1_, lora_te2_, lora_unet_, ...): the part
    of the model it patches, how many modules, and the input width of a telling module (the
    cross-attention context for the UNet, the hidden width for a text encoder)."""
    rows = []
    for label, table in tables.items():
        modules, _ = group_keys(table)
        by_prefix: dict[str, list[FileModule]] = {}
        for module in modules:
            prefix = next((p for p, _ in R.ADAPTER_PARTS if module.prefix.startswith(p)), "")
            by_prefix.setdefault(prefix, []).append(module)
        for prefix, group in by_prefix.items():
            component = component_of(group[0].prefix)
            probe = next((p for p in LORA_PROBES if p[0] == component), None)
            width, what = None, ""
            if probe is not None:
                hit = next((m for m in group if m.prefix.endswith(probe[1])
                            and "down" in m.keys), None)
                if hit is not None:
                    width, what = table[hit.keys["down"]].shape[1], probe[2]
            rows.append({"file": label, "prefix": prefix, "patches": component,
                         "modules": len(group), "width": width, "width is": what})
    frame = pd.DataFrame(rows, columns=["file", "prefix", "patches", "modules", "width",
                                        "width is"])
    frame["width"] = frame["width"].astype("Int64")
    return frame


# ---------------------------------------------------------------- conditioning of a pipeline

def conditioning_tensors(pipe: Any, prompt: str) -> dict[str, torch.Tensor]:
    """What the pipeline's UNet is conditioned with for `prompt` (no guidance):
    encoder_hidden_states, and for SDXL-style pipelines text_embeds and time_ids, computed by
    the pipeline's own encode_prompt."""
    device = pipe.unet.device
    two = getattr(pipe, "text_encoder_2", None) is not None
    with torch.no_grad():
        if not two:
            hidden, _ = pipe.encode_prompt(prompt, device, 1, False)
            return {"encoder_hidden_states": hidden}
        hidden, _, pooled, _ = pipe.encode_prompt(prompt, device=device, num_images_per_prompt=1,
                                                  do_classifier_free_guidance=False)
    size = (pipe.default_sample_size * pipe.vae_scale_factor,) * 2
    # diffusers' own helper: it also checks that the numbers fit the UNet's add embedding
    time_ids = pipe._get_add_time_ids(size, (0, 0), size, hidden.dtype,
                                      pipe.text_encoder_2.config.projection_dim)
    return {"encoder_hidden_states": hidden, "text_embeds": pooled, "time_ids": time_ids}


def conditioning(pipes: Mapping[str, Any], prompt: str) -> pd.DataFrame:
    """Per pipeline, each input its UNet is conditioned with for `prompt`: shape and what it is
    made of (encoder widths, the size/crop numbers)."""
    rows = []
    for label, pipe in pipes.items():
        tensors = conditioning_tensors(pipe, prompt)
        encoders = [e for e in (pipe.text_encoder, getattr(pipe, "text_encoder_2", None)) if e]
        fields = {f"w{i + 1}": e.config.hidden_size for i, e in enumerate(encoders)}
        fields["context"] = tensors["encoder_hidden_states"].shape[-1]
        if "text_embeds" in tensors:
            fields["p"] = tensors["text_embeds"].shape[-1]
            fields["ids"] = tuple(int(v) for v in tensors["time_ids"][0].tolist())
        for name, tensor in tensors.items():
            rows.append({"pipeline": label, "input": name, "shape": tuple(tensor.shape),
                         "made of": MADE_OF[name][len(encoders)].format(**fields)})
    return pd.DataFrame(rows, columns=["pipeline", "input", "shape", "made of"])

