"""The facts of one model file or folder as a catalog row: read from its header, never its weights.

`read_facts` is the unit of work the local pool and a Dask cluster both run: a path in, a plain
JSON-ready dict out (or None for a file that is no model), so rows travel and cache as they are.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from labkit.errors import LabkitError, UnsafeFileError
from labkit.inventory.finding import DIFFUSERS, listed_format
from labkit.tensors import dtype_counts, n_params

if TYPE_CHECKING:
    from labkit.files.opener import ModelFile
    from labkit.identify.told import Identity

FACT_COLUMNS = ["format", "kind", "base", "variant", "base_source", "n_tensors", "n_params",
                "dtypes", "base_model", "trained_on", "trigger_words", "error"]
HASH_KEYS = ["sha256", "autov1", "autov2", "autov3", "crc32", "blake3"]
UNSAFE_PREFIX = "unsafe: "
# metadata entries that name the base a LoRA was trained for, first found wins
BASE_MODEL_KEYS = ("ss_base_model_version", "modelspec.architecture")
TRAINED_ON_KEY = "ss_sd_model_name"
TRIGGER_KEY = "modelspec.trigger_phrase"
TAG_FREQUENCY_KEY = "ss_tag_frequency"
TOP_TAGS = 5
# identify is a pure function of (table, metadata); files of one layout share its answer
_IDENTITIES: dict[object, Identity] = {}
_MEMO_LIMIT = 4096
_MEMO_BYTES = 256 * 2**20  # header texts kept as keys, at most (then the memo starts again)
_held = 0  # bytes of header texts the memo holds as keys


def identity_of(model: ModelFile) -> Identity:
    """model.identity, shared by every model of the same table and metadata in this process."""
    from labkit.identify import identify

    global _held
    key = model.content_key or (tuple(model.table.items()), tuple(model.metadata.items()))
    found = _IDENTITIES.get(key)
    if found is None:
        found = identify(model.table, model.metadata)
        if len(_IDENTITIES) >= _MEMO_LIMIT or _held > _MEMO_BYTES:
            forget_identities()
        _IDENTITIES[key] = found
        _held += len(key) if isinstance(key, bytes) else 0
    return found


def forget_identities() -> None:
    """Empty this process's shared identities (a benchmark's cold run starts from none)."""
    global _held
    _IDENTITIES.clear()
    _held = 0


def summary(model: ModelFile, identity: Identity | None = None) -> dict[str, object]:
    """The facts of an opened model: format, identity, tensor count, parameter count, dtypes."""
    identity = identity or model.identity
    dtypes = dtype_counts(model.table)
    return {
        "format": model.format,
        "kind": identity.kind,
        "base": identity.base,
        "variant": list(identity.variant),
        "base_source": identity.base_source,
        "evidence": list(identity.evidence),
        "n_tensors": len(model.table),
        "n_params": n_params(model.table),
        "dtypes": dict(sorted(dtypes.items(), key=lambda kv: -kv[1])),
    }


def _top_tags(raw: str | None) -> list[str]:
    """The most frequent caption tags of kohya's ss_tag_frequency ({folder: {tag: count}})."""
    try:
        folders = json.loads(raw) if raw else {}
    except ValueError:
        return []
    counts: dict[str, int] = {}
    for tags in folders.values() if isinstance(folders, dict) else ():
        for tag, n in tags.items() if isinstance(tags, dict) else ():
            counts[tag.strip()] = counts.get(tag.strip(), 0) + (n if isinstance(n, int) else 0)
    return sorted(counts, key=lambda t: (-counts[t], t))[:TOP_TAGS]


def key_metadata(metadata: Mapping[str, str]) -> dict[str, object]:
    """base_model (kohya's ss_base_model_version or modelspec.architecture), trained_on (the
    checkpoint kohya trained on) and trigger_words (modelspec's phrase, else the top tags)."""
    base_model = next((metadata[k] for k in BASE_MODEL_KEYS if metadata.get(k)), None)
    phrase = metadata.get(TRIGGER_KEY)
    triggers = ([w.strip() for w in phrase.split(",") if w.strip()] if phrase
                else _top_tags(metadata.get(TAG_FREQUENCY_KEY)))
    return {"base_model": base_model, "trained_on": metadata.get(TRAINED_ON_KEY) or None,
            "trigger_words": triggers}


def _without_path(error: LabkitError) -> str:
    """The message without its leading path: the catalog shows the path in its own column."""
    text = str(error)
    return text.removeprefix(f"{error.path}: ") if error.path else text


def _refusal(error: UnsafeFileError) -> str:
    refused = [f"{g.module}.{g.name}" for g in getattr(error.verdict, "globals", ())
               if not g.allowed]
    return f"names {', '.join(refused)}" if refused else _without_path(error)


def _model_facts(path: Path) -> dict[str, Any]:
    """The facts of one model, or its error; never raises for a file that cannot be read."""
    from labkit.files.opener import open_model

    try:
        model = open_model(path)
        facts = summary(model, identity_of(model))
        del facts["evidence"]
        return {**facts, **key_metadata(model.metadata)}
    except UnsafeFileError as e:
        return {"error": UNSAFE_PREFIX + _refusal(e)}
    except LabkitError as e:
        return {"error": _without_path(e)}
    except Exception as e:  # noqa: BLE001 - one odd file must not stop the catalog of the rest
        return {"error": f"{path}: could not be read ({type(e).__name__}: {e})"}


def read_facts(path: str, is_folder: bool, hashes: bool = False) -> dict[str, Any] | None:
    """The catalog facts of one file or diffusers folder (FACT_COLUMNS, HASH_KEYS when `hashes`);
    None for a file whose content and name say it is no model. Errors become the error column."""
    target = Path(path)
    claimed = DIFFUSERS if is_folder else listed_format(target)
    if claimed is None:
        return None
    row: dict[str, Any] = {"format": claimed, **_model_facts(target)}
    if hashes:
        row.update(dict.fromkeys(HASH_KEYS))
        if row.get("error") is None and not is_folder:
            from labkit.hashes import file_hashes

            try:
                found = file_hashes(target, progress=False)
            except LabkitError as e:
                row["error"] = _without_path(e)
            else:
                row.update({k: found[k] for k in HASH_KEYS})
    return {k: row.get(k) for k in FACT_COLUMNS + (HASH_KEYS if hashes else [])}
