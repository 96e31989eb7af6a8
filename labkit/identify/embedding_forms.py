"""Textual inversions identified: their container forms, and the base from the vector widths."""

from __future__ import annotations

from collections.abc import Mapping

from labkit.identify import rules as R
from labkit.identify.told import Identity, told_base
from labkit.tensors import TensorInfo

Table = Mapping[str, TensorInfo]


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


def embedding(table: Table, keys: list[str], metadata: Mapping[str, str]) -> Identity | None:
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
    base, variant, source = told_base(dims_base, metadata, evidence,
                                       " + ".join(map(str, widths)))
    return Identity("textual_inversion", base, variant, source, evidence)
