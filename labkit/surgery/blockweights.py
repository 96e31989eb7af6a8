"""Per-block merge alphas (merge block weights, as in supermerger): one alpha per SD block.

A spec is either a list of numbers, one per block of the model in order (SD1: 26 = BASE for the
text encoders, IN00..IN11, MID, OUT00..OUT11; SDXL: 20 = BASE, IN00..IN08, MID, OUT00..OUT08;
the two-level demo models: 14),
or `LABEL=X` pairs (`BASE=0,IN04=0.3,OUT*=1`, `*` ending a label matches a prefix), the blocks not
named taking the merge's base alpha. `M00` is read as MID. Keys in no block (the VAE, schedule
buffers) take the base alpha.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable

from labkit.errors import LabkitError
from labkit.identify.blocks import block_labels, block_sort_key

ALIASES = {"M00": "MID", "MID00": "MID", "TE": "BASE"}
HINT = ("Give one number per block, comma separated (BASE,IN00..,MID,OUT..), or LABEL=X pairs "
        "such as BASE=0,IN04=0.3,OUT*=1.")


def model_blocks(keys: Iterable[str]) -> list[str]:
    """The block labels a model's keys hold, in the UNet's order (BASE first)."""
    return sorted({b for b in block_labels(keys) if b}, key=block_sort_key)


def _number(text: str, spec: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise LabkitError(f"block weights {spec!r}: {text!r} is not a number.", hint=HINT) from None


def parse_blocks(spec: str | None, blocks: list[str], alpha: float) -> dict[str, float]:
    """Block label -> alpha for every block of the model (and "" for keys in none), from a spec.
    Raises LabkitError for a spec of the wrong length or that names no block of the model."""
    out = dict.fromkeys([*blocks, ""], alpha)
    if not spec or not spec.strip():
        return out
    items = [s.strip() for s in spec.split(",") if s.strip()]
    if all("=" not in s for s in items):
        if len(items) != len(blocks):
            raise LabkitError(f"block weights {spec!r} give {len(items)} numbers; this model has "
                              f"{len(blocks)} blocks ({', '.join(blocks)}).", hint=HINT)
        return out | {b: _number(x, spec) for b, x in zip(blocks, items, strict=True)}
    for item in items:
        label, sep, value = item.partition("=")
        if not sep:
            raise LabkitError(f"block weights {spec!r}: {item!r} mixes a bare number with "
                              "LABEL=X pairs.", hint=HINT)
        label = label.strip().upper()
        label = ALIASES.get(label, label)
        named = fnmatch.filter(blocks, label)
        if not named:
            raise LabkitError(f"block weights {spec!r}: {label!r} names no block of this model "
                              f"({', '.join(blocks)}).", hint=HINT)
        out |= dict.fromkeys(named, _number(value, spec))
    return out
