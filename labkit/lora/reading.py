"""A LoRA-like file as the lab sees it: which module each part patches, and its anatomy table."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from labkit.errors import IncompatibleModelError, NotAModelError
from labkit.files.diffusers_folder import PEFT_CONFIG, PEFT_METADATA
from labkit.lora import anatomy as M
from labkit.lora import keys as K
from labkit.lora import transformer_maps as T
from labkit.tensors import TensorInfo

# identify's kinds that this module reads, -> the kind the anatomy table calls them.
FILE_KINDS = {"lora": "lora", "loha": "loha", "lokr": "lokr", "lycoris_full": "full",
              "dora": "dora"}
# When a file's base cannot be told, its names and shapes are tried against these families.
# Real families first: where names fit several equally and no shapes do, a real one is named.
GUESS_FAMILIES = ("sd1", "sd2", "sdxl", "flux", "sd3", "demo_sd1", "demo_sdxl")
NO_FAMILY = "no known family"  # what a file fits when no family's modules fit it
NO_FAMILY_NOTE = ("no family the lab knows (the demo models, SD1, SD2, SDXL, SD3, Flux.1) has "
                  "modules of these names and shapes: the anatomy lists no module.")
COLUMNS = ["prefix", "component", "module", "block", "kind", "rank", "alpha", "scale",
           "up_shape", "down_shape", "shapes", "up_norm", "down_norm", "delta_norm",
           "eff_rank", "entropy_rank"]


@dataclass
class Adapter:
    """An opened adapter file: its modules matched to a model's modules, and what matched none."""

    path: Path
    kind: str
    base: str
    metadata: dict[str, str]
    targets: K.Targets
    table: Mapping[str, TensorInfo]
    matched: list[tuple[K.FileModule, K.Target]]
    unmatched: list[str] = field(default_factory=list)
    note: str = ""
    load: Callable[[str], torch.Tensor] | None = None

    def tensors(self, module: K.FileModule) -> dict[str, torch.Tensor]:
        """The module's tensors by role (down, up, alpha, hada_w1_a, ...); a PEFT module's
        alpha comes from diffusers' adapter metadata when the file has it."""
        if self.load is None:
            raise ValueError("this adapter was read from a table of shapes only")
        tensors = {role: self.load(key) for role, key in module.keys.items()}
        if "alpha" not in tensors:
            alpha = peft_alpha(self.metadata, module.prefix)
            if alpha is not None:
                tensors["alpha"] = torch.tensor(alpha)
        return tensors


def peft_config(metadata: Mapping[str, str], prefix: str) -> tuple[dict[str, Any], str]:
    """The PEFT LoraConfig that covers a module (from a save_pretrained folder's adapter_config.json,
    or diffusers' per-component `lora_adapter_metadata`) and the module's name inside it."""
    component, _, module = prefix.partition(".")
    try:
        if PEFT_CONFIG in metadata:
            return json.loads(metadata[PEFT_CONFIG]), module
        config = json.loads(metadata.get(PEFT_METADATA, "null")) or {}
    except ValueError:
        return {}, module
    inner = {k[len(component) + 1:]: v for k, v in config.items() if k.startswith(component + ".")}
    return inner, module


def peft_alpha(metadata: Mapping[str, str], prefix: str) -> float | None:
    """A PEFT module's lora_alpha (its alpha_pattern matched as peft matches it, else lora_alpha),
    None when the file does not say."""
    config, module = peft_config(metadata, prefix)
    for pattern, alpha in (config.get("alpha_pattern") or {}).items():
        if re.match(rf"(.*\.)?({pattern})$", module):
            return float(alpha)
    alpha = config.get("lora_alpha")
    return None if alpha is None else float(alpha)


def _kind_of(module: K.FileModule, shapes: Mapping[str, tuple[int, ...]]) -> str:
    kind = module.kind
    if kind == "lora" and shapes.get("down", ())[2:] not in ((), (1, 1)):
        return "locon"
    return kind


def fits(shape: tuple[int, ...], weight: tuple[int, ...]) -> bool:
    """Whether a weight change of `shape` fits a weight of shape `weight` (conv kernels may
    come flattened)."""
    return (bool(weight) and shape[0] == weight[0]
            and math.prod(shape[1:]) == math.prod(weight[1:]))


def _candidates(name: str) -> list[K.Targets]:
    """The module maps a family name stands for (a transformer family may have several widths)."""
    if name in T.FAMILY_MAPS:
        return [T.transformer_targets(m) for m in T.FAMILY_MAPS[name]]
    found = K.family_targets(name)
    return [] if found is None else [found]


def _targets_for(model: Any, base: str, table: Mapping[str, TensorInfo]) -> K.Targets:
    """The model's prefix table: a pipeline's, a named family's, the file's own base's, or, when
    the base is not told, the known family whose modules its shapes, then its names, fit best (no
    family at all when no name fits: nothing falls back to a demo model)."""
    if model is not None and not isinstance(model, str):
        return K.pipeline_targets(model)
    candidates = _candidates(model or base)
    if not candidates:
        candidates = [t for f in GUESS_FAMILIES for t in _candidates(f)]
    modules, _ = K.group_keys(table)

    def score(targets: K.Targets) -> tuple[int, int]:
        hits = [(m, t) for m in modules if (t := targets.lookup(m.prefix)) is not None]
        return sum(fits(delta_shape(m, table), t.shape) for m, t in hits), len(hits)

    (_, names), best = max(((score(t), t) for t in candidates), key=lambda pair: pair[0])
    return best if len(candidates) == 1 or names else K.Targets(NO_FAMILY, {})


def match(table: Mapping[str, TensorInfo], targets: K.Targets, kind: str = "lora", base: str = "",
          metadata: Mapping[str, str] | None = None, path: Path | str = "",
          load: Callable[[str], torch.Tensor] | None = None) -> Adapter:
    """Match a file's tensor table to a model's modules (no tensor is read)."""
    modules, stray = K.group_keys(table)
    matched, missing = [], []
    for module in modules:
        target = targets.lookup(module.prefix)
        if target is None:
            missing.append(module)
        else:
            matched.append((module, target))
    unmatched = stray + [k for m in missing for k in m.keys.values()]
    note = (NO_FAMILY_NOTE if targets.family == NO_FAMILY and missing
            else K.foreign_note([m.prefix for m in missing], targets.family))
    if stray:
        note = f"{len(stray)} keys are no adapter part ({', '.join(stray[:3])}...). {note}"
    return Adapter(Path(path), kind, base, dict(metadata or {}), targets, table, matched,
                   unmatched, note.strip(), load)


def open_adapter(path: str | Path, model: Any = None) -> Adapter:
    """Open an adapter file and match it to `model` (a pipeline, a family name such as "sd1",
    or None for the file's own base).

    Raises NotAModelError (missing, unreadable, or not a LoRA-like file, such as a textual
    inversion or a checkpoint) and CorruptFileError (a truncated or damaged file).
    """
    from labkit.files.opener import open_model

    mf = open_model(path)
    ident = mf.identity
    if ident.kind not in FILE_KINDS:
        raise NotAModelError(
            f"this is a {ident.kind.replace('_', ' ')} (base {ident.base}), not a LoRA-like file: "
            "expected kohya/PEFT LoRA keys (.lora_down/.lora_up or .lora_A/.lora_B) or LyCORIS "
            "keys (.hada_w1_a, .lokr_w1, .diff).", mf.path,
            hint="Textual inversions go to labkit.embeddings.vectors; checkpoints to labkit.generate.pipelines.")
    targets = _targets_for(model, ident.base, mf.table)
    return match(mf.table, targets, FILE_KINDS[ident.kind], ident.base, mf.metadata, mf.path,
                 mf.tensor)


def _meta(module: K.FileModule, table: Mapping[str, TensorInfo]) -> dict[str, torch.Tensor]:
    """The module's tensors as shape-only meta tensors (alpha left out: it is a value)."""
    return {role: torch.empty(tuple(table[key].shape), device="meta")
            for role, key in module.keys.items() if role != "alpha"}


def delta_shape(module: K.FileModule, table: Mapping[str, TensorInfo]) -> tuple[int, ...]:
    """The shape of the module's weight change, from the tensor shapes alone."""
    tensors = _meta(module, table)
    return tuple(M.DELTAS[M.part_kind(module.kind, tensors)](tensors).shape)


def _shapes(module: K.FileModule, table: Mapping[str, TensorInfo]) -> dict[str, tuple[int, ...]]:
    return {role: tuple(table[key].shape) for role, key in module.keys.items()}


def _measures(kind: str, tensors: dict[str, torch.Tensor]) -> dict[str, float]:
    t = M.as_float(tensors)
    s = M.singular_values(kind, t)
    out = {"delta_norm": float(s.square().sum().sqrt()), "eff_rank": M.threshold_rank(s),
           "entropy_rank": M.entropy_rank(s)}
    if "up" in t:
        out |= {"up_norm": float(t["up"].norm()), "down_norm": float(t["down"].norm())}
    return out


def _row(adapter: Adapter, module: K.FileModule, target: K.Target,
         with_norms: bool) -> dict[str, Any]:
    shapes = _shapes(module, adapter.table)
    kind = _kind_of(module, shapes)
    row: dict[str, Any] = {
        "prefix": module.prefix, "component": target.component, "module": target.module,
        "block": target.block, "kind": kind,
        "up_shape": shapes.get("up"), "down_shape": shapes.get("down"),
        "shapes": ", ".join(f"{r} {list(s)}" for r, s in shapes.items() if r != "alpha"),
    }
    if with_norms:
        tensors = adapter.tensors(module)
        row |= M.scale_of(kind, M.as_float(tensors))._asdict() | _measures(kind, tensors)
    else:  # alpha is a value, not a shape: unknown here
        row |= {"rank": M.scale_of(kind, _meta(module, adapter.table)).rank, "alpha": math.nan,
                "scale": math.nan}
    return row




def anatomy(adapter: Adapter, with_norms: bool = True) -> pd.DataFrame:
    """One row per patched module; `attrs` carries the unmatched keys and what they are for
    (without norms: from the shapes alone, alpha and scale unknown)."""
    rows = [_row(adapter, m, t, with_norms) for m, t in adapter.matched]
    frame = pd.DataFrame(rows).reindex(columns=COLUMNS)
    frame.attrs.update(path=str(adapter.path), kind=adapter.kind, base=adapter.base,
                       family=adapter.targets.family, unmatched=list(adapter.unmatched),
                       note=adapter.note)
    return frame


def read(path: str | Path, model: Any = None) -> pd.DataFrame:
    """The anatomy of a LoRA-like file: one row per patched module (module, SD block, kind,
    rank, alpha, scale, shapes, norms of up/down and of the delta, its effective rank).

    `model`: a pipeline, a family name ("sd1", "sdxl", ...) or None (the file's own base).
    `.attrs["unmatched"]` lists the keys that patch nothing in that model and
    `.attrs["note"]` says which family they are for. Raises NotAModelError (not a LoRA-like
    file) and CorruptFileError (truncated or damaged).
    """
    return anatomy(open_adapter(path, model))


def unmatched(frame: pd.DataFrame) -> pd.DataFrame:
    """The keys a read() table left unmatched, with the reason, as a DataFrame."""
    keys = frame.attrs.get("unmatched", [])
    return pd.DataFrame({"key": keys, "why": [frame.attrs.get("note", "")] * len(keys)})


def require_matched(adapter: Adapter, model_family: str) -> None:
    """Raise IncompatibleModelError when the adapter patches nothing, or some modules of another
    family, in the model."""
    if adapter.unmatched or not adapter.matched:
        raise IncompatibleModelError(
            f"this {adapter.kind} (base {adapter.base}) does not fit a {model_family} pipeline: "
            f"{len(adapter.unmatched)} of its keys patch nothing in it. {adapter.note}",
            adapter.path, hint="Load a pipeline of the family the file was trained for.")
