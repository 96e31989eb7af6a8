"""Two models side by side, as the families panel shows them: what each is, how wide it is, where
its parts' keys live, and in one line what made for one would not fit the other.

A model here is a key table (data/layouts), a demo file or any model file: only its names,
shapes and identity are read. Checkpoints (and bare denoisers, VAEs...) are read by
labkit.families.tables' part tables; adapters by the modules they patch (families.lora_layout).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import pandas as pd

from labkit.families.tables import (
    NO_PREFIX,
    PART_NAMES,
    PART_ORDER,
    REAL_FAMILIES,
    ROLE_OF_PART,
    Table,
    family_table,
    key_table,
    lora_layout,
    parts,
)
from labkit.identify.identity import Identity, identify
from labkit.lora.applying import KIND_NAMES
from labkit.lora.reading import FILE_KINDS

TABLE_LABELS = {name: label for label, name in REAL_FAMILIES.items()}
ADAPTER_KINDS = tuple(FILE_KINDS)
CHECKPOINT_KINDS = ("checkpoint", "unet")  # the models an adapter is made for (unet: a bare denoiser)
MISSING = "-"
# The comparison's rows, then one row per part's key prefix ("keys: text encoder", ...).
ROWS = ("kind", "base", "told by", "denoiser", "text encoders", "context width", "pooled text",
        "size/crop numbers", "latent channels")


class Model(NamedTuple):
    """A model to compare: the label it is shown under, its key table and its identity."""

    label: str
    table: Table
    identity: Identity


@dataclass
class Profile:
    """What the comparison reads of one model: identity, widths (None: not in the file) and the
    key prefix of each part."""

    kind: str
    base: str
    told_by: str
    denoiser: str = ""
    encoders: str = ""
    encoder_widths: tuple[int, ...] = ()
    context: int | None = None
    pooled: int | None = None
    micro: int | None = None
    latent: int | None = None
    prefixes: dict[str, str] = field(default_factory=dict)


def from_key_table(name: str) -> Model:
    """A real file's key table from data/layouts, labelled as notebook 07 labels it ("SD 1.5").
    Raises LabkitError for an unknown name."""
    table = key_table(name)
    return Model(TABLE_LABELS.get(name, name), table, identify(table))


def from_file(path: str | Path, label: str | None = None) -> Model:
    """A model file or folder, labelled by its name unless `label` is given; its identity reads
    its metadata too. Raises LabkitError (NotAModelError, CorruptFileError, UnsafeFileError)
    when it cannot be opened."""
    from labkit.files.opener import open_model

    model = open_model(path)
    return Model(label or Path(path).name, model.table, model.identity)


def _number(value: object) -> int | None:
    """A width as an int; None for a missing one (NA, None, or 0: the file has no such input)."""
    return None if pd.isna(value) or not value else int(value)


def _model_profile(model: Model) -> Profile:
    frame = parts(model.table)
    facts = family_table({model.label: model.table}).iloc[0]
    encoders = frame[frame["part"].map(ROLE_OF_PART.get) == "text_encoder"]
    identity = model.identity
    return Profile(identity.kind, identity.base, identity.base_source,
                   denoiser=facts["denoiser"], encoders=facts["text encoders"],
                   encoder_widths=tuple(int(w) for w in encoders["width"].dropna()),
                   context=_number(facts["context width"]), pooled=int(facts["pooled text"]),
                   micro=int(facts["size/crop numbers"]), latent=_number(facts["latent channels"]),
                   prefixes={p: prefix or NO_PREFIX for p, prefix in zip(frame["part"],
                                                                          frame["prefix"],
                                                                          strict=True)
                             if p in ROLE_OF_PART})


def _adapter_profile(model: Model) -> Profile:
    layout = lora_layout({model.label: model.table})
    part = layout["patches"].map(lambda c: PART_NAMES.get(c, c))
    encoders = layout.loc[part.map(ROLE_OF_PART.get) == "text_encoder", "width"].dropna()
    context = layout.loc[part == "denoiser", "width"].dropna()
    widths = tuple(int(w) for w in encoders)
    identity = model.identity
    return Profile(identity.kind, identity.base, identity.base_source,
                   encoders=" + ".join(map(str, widths)) or "none patched", encoder_widths=widths,
                   context=int(context.iloc[0]) if len(context) else None,
                   prefixes=dict(zip(part, layout["prefix"], strict=True)))


def profile(model: Model) -> Profile:
    """What the comparison reads of a model: an adapter by the widths of the modules it patches,
    anything else by its parts (labkit.families.tables)."""
    return (_adapter_profile if model.identity.kind in ADAPTER_KINDS else _model_profile)(model)


def compare_table(models: Sequence[Model]) -> pd.DataFrame:
    """The models side by side (one column each): kind, base and how it was told, denoiser, text
    encoders, conditioning widths, latent channels, then each part's key prefix ("-": not in the
    file). An adapter's widths and prefixes are those of the modules it patches."""
    profiles = [profile(m) for m in models]
    present = {p for pr in profiles for p in pr.prefixes}
    prefix_rows = [p for p in PART_ORDER if p in present] + sorted(present - set(PART_ORDER))
    columns = {}
    for model, pr in zip(models, profiles, strict=True):
        values = (pr.kind, pr.base, pr.told_by, pr.denoiser, pr.encoders, pr.context, pr.pooled,
                  pr.micro, pr.latent)
        cells = dict(zip(ROWS, values, strict=True))
        cells.update({f"keys: {p}": pr.prefixes.get(p) for p in prefix_rows})
        columns[model.label] = {k: MISSING if v in (None, "") else v for k, v in cells.items()}
    return pd.DataFrame(columns).rename_axis("what")


def blanks(frame: pd.DataFrame) -> pd.DataFrame:
    """A table for reading: missing values (NaN, <NA>, None) shown as blanks."""
    return frame.astype(object).where(frame.notna(), "")


def _lora_te_prefixes(n: int) -> str:
    """How kohya's LoRAs name the text encoders of a model with `n` of them."""
    return "lora_te_" if n == 1 else "/".join(f"lora_te{i + 1}_" for i in range(n))


def differences(a: Profile, b: Profile) -> list[str]:
    """What differs between two models, in words ("context 32 vs 80", ...): the denoiser's
    architecture, the context width, and the text encoders (for two checkpoints with different
    encoder counts, as the prefixes of their LoRAs: "lora_te_ vs lora_te1_/lora_te2_")."""
    found = []
    if a.denoiser and b.denoiser and a.denoiser != b.denoiser:
        found.append(f"{a.denoiser} vs {b.denoiser}")
    if a.context and b.context and a.context != b.context:
        found.append(f"context {a.context} vs {b.context}")
    wa, wb = a.encoder_widths, b.encoder_widths
    if wa and wb and wa != wb:
        if len(wa) != len(wb) and {a.kind, b.kind} <= set(CHECKPOINT_KINDS):
            found.append(f"{_lora_te_prefixes(len(wa))} vs {_lora_te_prefixes(len(wb))}")
        else:
            found.append("text encoders " + " + ".join(map(str, wa)) + " vs "
                         + " + ".join(map(str, wb)))
    return found


def verdict(a: Model, b: Model) -> str:
    """One line on what made for one model would not fit the other: for two checkpoints, whether
    a LoRA of one fits the other; for an adapter and a checkpoint, whether the adapter fits.
    Empty for other pairs, or when a base is not told."""
    pa, pb = profile(a), profile(b)
    if pb.kind in ADAPTER_KINDS:  # the adapter, if any, first
        pa, pb = pb, pa
    if "unknown" in (pa.base, pb.base) or pb.kind not in CHECKPOINT_KINDS:
        return ""
    if pa.kind in ADAPTER_KINDS:
        subject = f"this {pa.base} {KIND_NAMES[FILE_KINDS[pa.kind]]}"
    elif pa.kind in CHECKPOINT_KINDS:
        subject = f"a {pa.base} LoRA"
    else:
        return ""
    if pa.base == pb.base:
        return f"Both are {pb.base}: {subject} fits."
    found = differences(pa, pb)
    first = subject[0].upper() + subject[1:]  # (str.capitalize would lower "LoRA")
    if found:
        return f"{first} does not fit {pb.base}: {', '.join(found)}."
    if pa.context is None:  # an adapter whose keys hold no telling width
        return (f"{first} was made for {pa.base} (told by {pa.told_by}), not for "
                f"{pb.base}.")
    return (f"{pa.base} and {pb.base} share their widths: {subject} loads into {pb.base}, "
            "though it was trained for the other.")
