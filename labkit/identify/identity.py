"""What a model file is (kind) and which family it belongs to (base), from its tensor table alone.

The rules are the ordered tables of labkit.identify.rules; the functions here only read them.
Never from file names: a renamed file is identified the same.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from itertools import compress, repeat
from operator import methodcaller
from typing import NamedTuple

from labkit.identify import rules as R
from labkit.identify.adapters import adapter
from labkit.identify.embedding_forms import PART_FORMS, embedding
from labkit.identify.told import Identity, prediction_variants, told_base
from labkit.tensors import TensorInfo, dtype_counts

Table = Mapping[str, TensorInfo]


class _Component(NamedTuple):
    row: R.ComponentRow
    prefix: str


_MARKERS = tuple(row.marker for row in R.COMPONENTS)


def identify(table: Table, metadata: Mapping[str, str] | None = None) -> Identity:
    """Kind, base and variants of a model from its tensor table (names, shapes, dtypes) and metadata."""
    metadata = dict(metadata or {})
    keys = _kept_keys(table)
    notes = _notes(table, len(table) - len(keys))
    for step in (adapter, embedding, _components, _small_vae):
        found = step(table, keys, metadata)
        if found is not None:
            return replace(found, evidence=found.evidence + notes)
    return Identity("unknown", "unknown", [], "none", [_looked_for(keys), *notes])


def _kept_keys(table: Table) -> list[str]:
    """The keys identification reads: EMA copies and schedule buffers set aside."""
    keys = list(table)
    joined = "\n" + "\n".join(keys)  # one scan of all keys for each prefix, not a test per key
    if R.SCHEDULE_BUFFERS.isdisjoint(table) and not any(
            "\n" + prefix in joined for prefix in R.IGNORED_PREFIXES):
        return keys
    return [k for k in keys if not k.startswith(R.IGNORED_PREFIXES)
            and k not in R.SCHEDULE_BUFFERS]


def _notes(table: Table, set_aside: int) -> list[str]:
    """Evidence about what identification set aside: EMA copies, schedule buffers, dtypes."""
    notes = []
    buffers = sorted(R.SCHEDULE_BUFFERS.intersection(table))
    if set_aside > len(buffers):
        notes.append(f"{set_aside - len(buffers)} EMA keys under model_ema. (set aside)")
    if buffers:
        notes.append("schedule buffers (set aside): " + ", ".join(buffers))
    dtypes = dtype_counts(table)
    if dtypes:
        notes.append("dtypes: " + ", ".join(f"{d} x{n}" for d, n in dtypes.most_common()))
    return notes


def _looked_for(keys: list[str]) -> str:
    """The evidence of an unknown table: what was looked for, and what is there."""
    kinds = ", ".join(ss[0] for _, ss in R.ADAPTER_KINDS)
    first = ", ".join(keys[:3]) or "(no tensors)"
    parts = ", ".join(" + ".join(p.keys) for p in PART_FORMS)
    return (f"no known layout among {len(keys)} keys: looked for adapter suffixes ({kinds}, "
            f".lora_A.weight) in every writer's key style, TI forms (string_to_param.*, "
            f"emb_params, {parts}, one {{token: vector}} key), TAESD / VAE-approx shapes and "
            "component marker keys ("
            + ", ".join(_MARKERS) + f"); first keys: {first}")


# ---- full models and their components ----

def _find_components(table: Table, keys: list[str]) -> list[_Component]:
    """Components proven by marker keys, in table order; one component per key prefix."""
    candidates = list(compress(keys, map(str.endswith, keys, repeat(_MARKERS))))
    found: list[_Component] = []
    claimed: set[str] = set()
    for row in R.COMPONENTS:
        for key in candidates:
            if key in claimed or not key.endswith(row.marker):
                continue
            prefix = key[: -len(row.marker)]
            if prefix and not prefix.endswith((".", "/")):
                continue
            if any(prefix.startswith(c.prefix) for c in found):
                continue
            claimed.add(key)
            found.append(_Component(row, prefix))
    return found


def _small_vae(table: Table, keys: list[str], metadata: Mapping[str, str]) -> Identity | None:
    """TAESD-family and A1111 VAE-approx files, by exactly their keys and shapes."""
    if (found := R.small_vae({k: table[k].shape for k in keys})) is None:
        return None
    variant, form, c = found
    evidence = [f"{form}: its {len(keys)} tensors, {c} latent channels",
                R.SMALL_VAE_LATENTS.get(c, f"{c} latent channels: no known VAE")]
    base, told, source = told_base(None, metadata, evidence)
    return Identity("vae", base, [variant, *told], source, evidence)


def _describe(table: Table, comp: _Component) -> str:
    """One evidence line per component: what, where, and its telling width."""
    row, prefix = comp
    name = f"{R.ARCH_NAMES[row.arch]} at {prefix or '(no prefix)'}"
    if row.role == "text_encoder":
        return f"{name}: width {table[prefix + row.marker].shape[-1]}"
    if row.role == "vae":
        return f"{name}: {table[prefix + row.marker].shape[1]} latent channels"
    return f"{name} ({prefix + row.marker})"


def _components(table: Table, keys: list[str], metadata: Mapping[str, str]) -> Identity | None:
    """Checkpoints (several components) and single UNets, VAEs and text encoders."""
    comps = _find_components(table, keys)
    if not comps:
        return None
    roles = {c.row.role for c in comps}
    kind = "checkpoint" if len(roles) > 1 else R.KIND_OF_ROLE[roles.pop()]
    evidence = [_describe(table, c) for c in comps]
    denoiser = next((c for c in comps if c.row.role == "denoiser"), None)
    encoders = [c for c in comps if c.row.role == "text_encoder"]
    if denoiser is not None:
        base, variant = _denoiser_base(table, keys, denoiser, encoders, metadata, evidence)
    elif encoders:
        base, variant = _encoders_base(table, encoders, evidence), []
    else:
        vae = comps[0]
        latents = table[vae.prefix + vae.row.marker].shape[1]
        evidence.append(R.VAE_LATENTS.get(latents, f"{latents} latent channels: no known VAE"))
        base, variant = "unknown", []
    source = "layout"
    if base == "unknown":
        base, meta_variant, source = told_base(None, metadata, evidence)
        variant += meta_variant
    variant += [v for v in prediction_variants(metadata, evidence) if v not in variant]
    return Identity(kind, base, variant, source, evidence)


def _denoiser_features(table: Table, keys: list[str], comp: _Component,
                       encoders: list[_Component], evidence: list[str]) -> dict[str, object]:
    """The features DENOISER_BASES tests: arch, context dim, SDXL structure, EDM, guidance."""
    row, prefix = comp
    contexts = filter(methodcaller("endswith", R.CONTEXT_SUFFIX), keys)
    ctx_key = next((k for k in contexts if k.startswith(prefix)), None)
    context = table[ctx_key].shape[-1] if ctx_key else None
    if ctx_key:
        evidence.append(f"{ctx_key} last dim {context} = context dim")
    add = bool(row.add_key) and prefix + row.add_key in table
    xl_prefix = any(c.prefix.startswith(R.XL_PREFIXES) for c in encoders)
    if add or xl_prefix or len(encoders) >= 2:
        evidence.append("SDXL structure: " + ", ".join(
            why for cond, why in ((add, f"add embedding {prefix + row.add_key}"),
                                  (xl_prefix, "conditioner.embedders text encoders"),
                                  (len(encoders) >= 2, f"{len(encoders)} text encoders"))
            if cond))
    return {
        "arch": row.arch,
        "has_context": context is not None,
        "context_dim": context,
        "context_real": context in R.REAL_CONTEXT_DIMS,
        "xl": add or xl_prefix or len(encoders) >= 2,
        "edm": R.EDM_KEY in table,
        "guidance": bool(row.guidance_key) and prefix + row.guidance_key in table,
    }


def _denoiser_base(table: Table, keys: list[str], comp: _Component, encoders: list[_Component],
                   metadata: Mapping[str, str], evidence: list[str]) -> tuple[str, list[str]]:
    """Base by the first DENOISER_BASES rule the features meet, and the variants."""
    features = _denoiser_features(table, keys, comp, encoders, evidence)
    base = "unknown"
    for name, when, why in R.DENOISER_BASES:
        if all(features[k] == v for k, v in when.items()):
            base = name
            evidence.append(why.format(**features))
            break
    else:
        evidence.append(f"no base rule matched the {R.ARCH_NAMES[comp.row.arch]} "
                        f"(context dim {features['context_dim']})")
    variant = []
    in_key = comp.prefix + comp.row.in_key
    if in_key in table and len(table[in_key].shape) >= 2:
        channels = table[in_key].shape[1]
        if (comp.row.arch, channels) in R.IN_CHANNEL_VARIANTS:
            variant.append(R.IN_CHANNEL_VARIANTS[(comp.row.arch, channels)])
            evidence.append(f"{in_key} has {channels} input channels -> {variant[-1]}")
    for key, flag in R.FLAG_KEYS.items():
        if key in table:
            variant.append(flag)
            evidence.append(f"key {key!r} present -> {flag}")
    if base in R.V_PREDICTION_HINT and "v_prediction" not in variant:
        step_key, eps_step = R.V_PREDICTION_HINT[base]
        if metadata.get(step_key) == eps_step:
            evidence.append(f"{step_key} {eps_step}: the 512 epsilon model, no v_prediction")
        elif metadata.get(R.PREDICTION_TYPE_KEY) is None:
            variant.append("v_prediction")
            evidence.append("v_prediction is a hint from the layout only: SD2 512-base and "
                            "768-v share every key; diffusers assumes v unless global_step "
                            "is 875000")
    return base, variant


def _encoders_base(table: Table, encoders: list[_Component], evidence: list[str]) -> str:
    """Base of a file holding only text encoders, by their (arch, width) set."""
    widths = tuple(sorted((c.row.arch, table[c.prefix + c.row.marker].shape[-1])
                          for c in encoders))
    base, why = R.TEXT_ENCODER_BASES.get(widths, ("unknown", f"no known encoder set {widths}"))
    evidence.append(why)
    return base
