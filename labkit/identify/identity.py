"""What a model file is (kind) and which family it belongs to (base), from its tensor table alone.

The rules are the ordered tables of labkit.identify.rules; the functions here only read them.
Never from file names: a renamed file is identified the same.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from operator import attrgetter
from typing import NamedTuple

from labkit.identify import rules as R
from labkit.tensors import TensorInfo

Table = Mapping[str, TensorInfo]


@dataclass(frozen=True)
class Identity:
    """What a file is: kind, base family, variants, how the base was told, and the reasons."""

    kind: str
    base: str
    variant: list[str] = field(default_factory=list)
    base_source: str = "none"
    evidence: list[str] = field(default_factory=list)


class _Component(NamedTuple):
    row: R.ComponentRow
    prefix: str


_ADAPTER_SUFFIXES = (*(s for _, ss in R.ADAPTER_KINDS for s in ss), *R.ADAPTER_EXTRA_SUFFIXES)
_ADAPTER_SUFFIX_SET = frozenset(_ADAPTER_SUFFIXES)
_MARKERS = tuple(row.marker for row in R.COMPONENTS)


def identify(table: Table, metadata: Mapping[str, str] | None = None) -> Identity:
    """Kind, base and variants of a model from its tensor table (names, shapes, dtypes) and metadata."""
    metadata = dict(metadata or {})
    keys = [k for k in table if not k.startswith(R.IGNORED_PREFIXES)
            and k not in R.SCHEDULE_BUFFERS]
    notes = _notes(table, len(table) - len(keys))
    for step in (_adapter, _embedding, _components, _small_vae):
        found = step(table, keys, metadata)
        if found is not None:
            return replace(found, evidence=found.evidence + notes)
    return Identity("unknown", "unknown", [], "none", [_looked_for(keys), *notes])


def _notes(table: Table, set_aside: int) -> list[str]:
    """Evidence about what identification set aside: EMA copies, schedule buffers, dtypes."""
    notes = []
    buffers = sorted(R.SCHEDULE_BUFFERS.intersection(table))
    if set_aside > len(buffers):
        notes.append(f"{set_aside - len(buffers)} EMA keys under model_ema. (set aside)")
    if buffers:
        notes.append("schedule buffers (set aside): " + ", ".join(buffers))
    dtypes = Counter(map(attrgetter("dtype"), table.values()))
    if dtypes:
        notes.append("dtypes: " + ", ".join(f"{d} x{n}" for d, n in dtypes.most_common()))
    return notes


def _looked_for(keys: list[str]) -> str:
    """The evidence of an unknown table: what was looked for, and what is there."""
    kinds = ", ".join(ss[0] for _, ss in R.ADAPTER_KINDS)
    first = ", ".join(keys[:3]) or "(no tensors)"
    return (f"no known layout among {len(keys)} keys: looked for adapter suffixes ({kinds}, "
            ".lora_A.weight), TI forms (string_to_param.*, emb_params, clip_l + clip_g, "
            "one {token: vector} key), TAESD / VAE-approx shapes and component marker keys ("
            + ", ".join(_MARKERS) + f"); first keys: {first}")


# ---- metadata ----

def _metadata_base(metadata: Mapping[str, str]) -> tuple[str, tuple[str, ...], str] | None:
    """(base, variants, the entry that says so) from ss_base_model_version or
    modelspec.architecture."""
    version = metadata.get("ss_base_model_version", "")
    if version in R.SS_BASE_VERSIONS:
        base, variant = R.SS_BASE_VERSIONS[version]
        return base, variant, f"ss_base_model_version={version!r}"
    arch = metadata.get("modelspec.architecture", "").split("/")[0]
    for prefix, base, variant in R.MODELSPEC_ARCHS:
        if arch.startswith(prefix):
            return base, variant, f"modelspec.architecture={arch!r}"
    return None


def same_widths(a: str, b: str) -> bool:
    """Whether two bases have the same widths (equal, or one shares the other's, as Playground
    shares SDXL's), so that neither widths nor shapes tell them apart."""
    return R.SAME_WIDTHS.get(a, a) == R.SAME_WIDTHS.get(b, b)


def _told_base(dims_base: str | None, metadata: Mapping[str, str], evidence: list[str],
               widths: str = "") -> tuple[str, list[str], str]:
    """A file's base: the measured widths when they name one, and the metadata only where the
    widths fit it too (it tells variants, and bases of the same widths); else unknown."""
    meta = _metadata_base(metadata)
    if meta is not None:
        base, variant, said = meta
        if dims_base and not same_widths(dims_base, base):
            evidence.append(f"metadata says {said} ({base}), but the widths {widths} are those "
                            f"of {R.BASE_NAMES.get(dims_base, dims_base)} ({dims_base}): the "
                            "widths decide")
            return dims_base, [], "dims"
        evidence.append(f"metadata {said} -> {base}")
        if dims_base and dims_base != base:
            evidence.append(f"the widths fit {dims_base} as well; the metadata tells {base}")
        return base, list(variant), "metadata"
    if dims_base:
        return dims_base, [], "dims"
    evidence.append("base not told: neither the layout nor the dims place it, and no base "
                    "metadata (ss_base_model_version, modelspec.architecture)")
    return "unknown", [], "none"


def _prediction_variants(metadata: Mapping[str, str], evidence: list[str]) -> list[str]:
    """["v_prediction"] when modelspec.prediction_type says so."""
    if metadata.get(R.PREDICTION_TYPE_KEY) in R.V_PREDICTION_VALUES:
        evidence.append(f"metadata {R.PREDICTION_TYPE_KEY}={metadata[R.PREDICTION_TYPE_KEY]!r}")
        return ["v_prediction"]
    return []


# ---- adapters (LoRA, LyCORIS, DoRA) ----

def _adapter_suffix(key: str) -> str | None:
    """The adapter suffix a key ends with (".lora_down.weight", ".alpha", ...), or None."""
    head, _, last = key.rpartition(".")
    suffix = f".{head.rpartition('.')[2]}.weight" if last == "weight" else f".{last}"
    return suffix if suffix in _ADAPTER_SUFFIX_SET else None


def _adapter(table: Table, keys: list[str], metadata: Mapping[str, str]) -> Identity | None:
    """LoRA / LoHa / LoKr / full diff / DoRA, when most keys end with adapter suffixes."""
    hits = [k for k in keys if k.endswith(_ADAPTER_SUFFIXES)]
    if not hits or 2 * len(hits) < len(keys):
        return None
    modules: dict[str, dict[str, str]] = {}
    for key in hits:
        suffix = _adapter_suffix(key)
        if suffix is not None:
            modules.setdefault(key[: -len(suffix)], {})[suffix] = key
    if not modules:
        return None
    found = {s for sfx in modules.values() for s in sfx}
    kind, kind_suffixes = next((k, ss) for k, ss in R.ADAPTER_KINDS if found.intersection(ss))
    naming = "PEFT/diffusers" if found.intersection(R.PEFT_SUFFIXES) else "kohya/LyCORIS"
    parts = Counter(_part(m) for m in modules)
    evidence = [f"{kind}: {len(modules)} modules in {naming} naming "
                f"({', '.join(sorted(found.intersection(kind_suffixes)))}); parts: "
                + ", ".join(f"{p} x{n}" for p, n in sorted(parts.items()))]
    if kind in ("lora", "dora") and naming == "kohya/LyCORIS" and R.ALPHA_SUFFIX not in found:
        evidence.append("no .alpha keys: alpha = rank, so the scale alpha/rank is 1")
    dims_base, widths = _adapter_dims_base(table, kind, modules, set(parts), evidence)
    base, variant, source = _told_base(dims_base, metadata, evidence, widths)
    variant += _prediction_variants(metadata, evidence)
    return Identity(kind, base, variant, source, evidence)


def _part(module: str) -> str:
    """Which part of the base model a module adapts: unet, te, te1, te2, transformer or other."""
    return next((part for prefix, part in R.ADAPTER_PARTS if module.startswith(prefix)), "other")


def _in_dim(table: Table, kind: str, suffixes: dict[str, str]) -> int | None:
    """Input width of one adapted module, from the shapes of its adapter tensors."""
    if kind == "lokr":
        factors = [next((table[suffixes[s]].shape for s in pair if s in suffixes), ())
                   for pair in R.LOKR_FACTORS]
        return factors[0][1] * factors[1][1] if all(len(f) >= 2 for f in factors) else None
    for s in R.IN_DIM_SUFFIXES[kind]:
        shape = table[suffixes[s]].shape if s in suffixes else ()
        if len(shape) >= 2:
            return shape[1]
    return None


def _adapter_dims_base(table: Table, kind: str, modules: dict[str, dict[str, str]],
                       parts: set[str], evidence: list[str]) -> tuple[str | None, str]:
    """The base told by cross-attention input dims and text-encoder widths if they agree, and
    the widths measured ("te1 32 / te2 48 / context 80")."""
    bases: dict[str, str] = {}
    seen: set[tuple[str, int]] = set()
    te_two = "te2" in parts  # PEFT names SDXL's first encoder text_encoder., kohya lora_te1_
    for module, suffixes in modules.items():
        if module.endswith(R.CONTEXT_PROBES):
            what, dim = "context", _in_dim(table, kind, suffixes)
            base = R.CONTEXT_BASES.get(dim)
        elif module.endswith(R.TE_PROBES):
            part = _part(module)
            what, dim = ("te1" if te_two and part == "te" else part), _in_dim(table, kind, suffixes)
            base = R.PART_WIDTH_BASES.get((what, dim))
        else:
            continue
        if dim is None or (what, dim) in seen:
            continue
        seen.add((what, dim))
        evidence.append(f"{module} input dim {dim} -> " + (f"{base} {what}" if base else
                                                            f"no real {what} width"))
        bases[what] = base
    widths = " / ".join(f"{what} {dim}" for what, dim in
                        sorted(seen, key=lambda w: (w[0] == "context", w)))
    for fragment, hint in R.ADAPTER_FAMILY_HINTS:
        if any(fragment in m for m in modules):
            evidence.append(hint)
            return None, widths
    told = set(bases.values())
    if len(told) == 1 and None not in told:
        return told.pop(), widths
    if len(told - {None}) > 1:
        evidence.append("the dims disagree: " + ", ".join(f"{w} -> {b}" for w, b in bases.items()))
    return None, widths


# ---- textual inversion ----

def _ti_vectors(table: Table, keys: list[str]) -> tuple[str, list[TensorInfo]] | None:
    """(container form, vectors per encoder) when the table is one of the four TI forms."""
    keys = [k for k in keys if not k.startswith(R.TI_TOKEN_PREFIX)]  # ldm's token id, a 0-d tensor
    if keys and all(k.startswith(R.TI_A1111_PREFIX) for k in keys):
        return "A1111 string_to_param", [table[k] for k in keys]
    if keys == [R.TI_EMB_PARAMS]:
        return "emb_params", [table[R.TI_EMB_PARAMS]]
    if sorted(keys) == sorted(R.TI_SDXL_KEYS):
        return "SDXL clip_l + clip_g", [table[k] for k in R.TI_SDXL_KEYS]
    if len(keys) == 1 and not keys[0].endswith((".weight", ".bias")):
        return f"diffusers {{token: vector}} ({keys[0]!r})", [table[keys[0]]]
    return None


def _embedding(table: Table, keys: list[str], metadata: Mapping[str, str]) -> Identity | None:
    """Textual inversion in any of its four container forms."""
    found = _ti_vectors(table, keys)
    if found is None:
        return None
    form, vectors = found
    if not all(len(v.shape) == 1 or (len(v.shape) == 2 and v.shape[0] <= R.TI_MAX_VECTORS)
               for v in vectors):
        return None
    widths = tuple(v.shape[-1] for v in vectors)
    counts = [v.shape[0] if len(v.shape) == 2 else 1 for v in vectors]
    dims_base = R.TI_WIDTH_BASES.get(widths)
    evidence = [f"textual inversion ({form}): {counts[0]} vector(s) of width "
                + " + ".join(map(str, widths))
                + (f" -> {dims_base}" if dims_base else " (no real text-encoder width)")]
    base, variant, source = _told_base(dims_base, metadata, evidence,
                                       " + ".join(map(str, widths)))
    return Identity("textual_inversion", base, variant, source, evidence)


# ---- full models and their components ----

def _find_components(table: Table, keys: list[str]) -> list[_Component]:
    """Components proven by marker keys, in table order; one component per key prefix."""
    candidates = [k for k in keys if k.endswith(_MARKERS)]
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
    base, told, source = _told_base(None, metadata, evidence)
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
        base, meta_variant, source = _told_base(None, metadata, evidence)
        variant += meta_variant
    variant += [v for v in _prediction_variants(metadata, evidence) if v not in variant]
    return Identity(kind, base, variant, source, evidence)


def _denoiser_features(table: Table, keys: list[str], comp: _Component,
                       encoders: list[_Component], evidence: list[str]) -> dict[str, object]:
    """The features DENOISER_BASES tests: arch, context dim, SDXL structure, EDM, guidance."""
    row, prefix = comp
    ctx_key = next((k for k in keys if k.endswith(R.CONTEXT_SUFFIX) and k.startswith(prefix)),
                   None)
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
