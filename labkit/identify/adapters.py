"""Adapters (LoRA, LyCORIS, DoRA) identified: kind from the key suffixes, base from the widths
of the modules they patch."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping

from labkit.identify import rules as R
from labkit.identify.adapter_styles import CANONICAL, canonical_table, looks_like_adapter
from labkit.identify.told import Identity, prediction_variants, told_base
from labkit.tensors import TensorInfo

Table = Mapping[str, TensorInfo]

_ADAPTER_SUFFIXES = (*(s for _, ss in R.ADAPTER_KINDS for s in ss), *R.ADAPTER_EXTRA_SUFFIXES)
_ADAPTER_SUFFIX_SET = frozenset(_ADAPTER_SUFFIXES)
_TRANSFORMER_NAMES = tuple((re.compile(p), base, why) for p, base, why in R.TRANSFORMER_NAMES)
_TRANSFORMER_PROBES = tuple(re.compile(p) for p in R.TRANSFORMER_PROBES)


def _adapter_suffix(key: str) -> str | None:
    """The adapter suffix a key ends with (".lora_down.weight", ".alpha", ...), or None."""
    head, _, last = key.rpartition(".")
    suffix = f".{head.rpartition('.')[2]}.weight" if last == "weight" else f".{last}"
    return suffix if suffix in _ADAPTER_SUFFIX_SET else None


def adapter(table: Table, keys: list[str], metadata: Mapping[str, str]) -> Identity | None:
    """LoRA / LoHa / LoKr / full diff / DoRA, when most keys end with adapter suffixes (in any
    writer's key style, read through adapter_styles' canonical spelling)."""
    if not looks_like_adapter(keys):
        return None
    canon = canonical_table({k: table[k] for k in keys})
    table = {key: table[orig] for key, (orig, _) in canon.items()}
    keys = list(canon)
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
    styles = Counter(s for _, found in canon.values() for s in found.styles or (CANONICAL,))
    if set(styles) != {CANONICAL}:
        evidence.append("key styles: " + ", ".join(f"{s} x{n}" for s, n in styles.most_common()))
    if kind in ("lora", "dora") and naming == "kohya/LyCORIS" and R.ALPHA_SUFFIX not in found:
        evidence.append("no .alpha keys: alpha = rank, so the scale alpha/rank is 1")
    dims_base, widths = _adapter_dims_base(table, kind, modules, set(parts), evidence)
    base, variant, source = told_base(dims_base, metadata, evidence, widths)
    variant += prediction_variants(metadata, evidence)
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
    transformer = _transformer_base(table, kind, modules, evidence)
    if transformer is not None:
        return transformer
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
    told = set(bases.values())
    if len(told) == 1 and None not in told:
        return told.pop(), widths
    if len(told - {None}) > 1:
        evidence.append("the dims disagree: " + ", ".join(f"{w} -> {b}" for w, b in bases.items()))
    return None, widths


def _transformer_base(table: Table, kind: str, modules: dict[str, dict[str, str]],
                      evidence: list[str]) -> tuple[str | None, str] | None:
    """(base, widths) of a Flux / SD3 adapter from its module names and hidden width; None when
    no module is a transformer family's."""
    named = {(base, why) for m in modules for p, base, why in _TRANSFORMER_NAMES if p.search(m)}
    probe = next(((m, _in_dim(table, kind, s)) for m, s in modules.items()
                  if any(p.search(m) for p in _TRANSFORMER_PROBES)), None)
    if not named and probe is None:
        return None
    evidence += [why for _, why in sorted(named)]
    by_name = {base for base, _ in named}
    if probe is None or probe[1] is None:
        return (by_name.pop() if len(by_name) == 1 else None), ""
    module, width = probe
    base = R.TRANSFORMER_WIDTH_BASES.get(width)
    evidence.append(f"{module} input dim {width} -> "
                    + (f"{R.BASE_NAMES[base]} hidden width" if base else "no known transformer width"))
    if base is not None and by_name - {base}:
        evidence.append(f"the names say {', '.join(sorted(by_name))} but the width says {base}")
        return None, f"hidden {width}"
    return base, f"hidden {width}"
