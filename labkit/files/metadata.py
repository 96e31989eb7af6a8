"""A safetensors file's `__metadata__` made readable: kohya's JSON-in-strings decoded, grouped, tabled."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping

import pandas as pd

# key prefix -> group shown in the metadata table, first match wins
GROUPS: tuple[tuple[str, str], ...] = (
    ("ss_", "kohya training"),
    ("sshs_", "kohya training"),
    ("modelspec.", "modelspec"),
)
OTHER_GROUP = "other"
GROUP_ORDER = ("kohya training", "modelspec", OTHER_GROUP)

MODELSPEC_PREFIX = "modelspec."
# kohya writes Python's own spellings for these
LITERALS: dict[str, object] = {"True": True, "False": False, "None": None}
# numbers with no leading zeros (so ids such as "007" stay text) and no hex
_NUMBER = re.compile(r"-?(0|[1-9]\d*)(\.\d+)?([eE][-+]?\d+)?|-?\.\d+([eE][-+]?\d+)?")
_INTEGER = re.compile(r"-?(0|[1-9]\d*)")
# keys whose values are identifiers even when they happen to be all digits
_TEXT_KEY_SUFFIXES = ("hash", "_id", "name", "title", "comment")


def _is_text_key(key: str) -> bool:
    return key.lower().endswith(_TEXT_KEY_SUFFIXES)


def decode_value(key: str, value: str) -> object:
    """One metadata value decoded: JSON objects/arrays, clear numbers, True/False/None; else as is."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text[:1] in ("{", "["):
        try:
            return json.loads(text)
        except ValueError:
            return value
    if _is_text_key(key):
        return value
    if text in LITERALS:
        return LITERALS[text]
    if _INTEGER.fullmatch(text):
        return int(text)
    if _NUMBER.fullmatch(text):
        return float(text)
    return value


def decode_metadata(raw: Mapping[str, str]) -> dict[str, object]:
    """Every metadata value decoded (see decode_value), keys in the file's order."""
    return {key: decode_value(key, value) for key, value in raw.items()}


def group_of(key: str) -> str:
    """The group a metadata key belongs to: kohya training, modelspec or other."""
    return next((group for prefix, group in GROUPS if key.startswith(prefix)), OTHER_GROUP)


def _shown(value: object, max_chars: int) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= max_chars else f"{text[:max_chars]}… ({len(text)} characters)"


def metadata_table(raw: Mapping[str, str], max_chars: int = 200) -> pd.DataFrame:
    """The metadata as a table (key, value, group), grouped then sorted by key; long values cut."""
    decoded = decode_metadata(raw)
    rows = [(key, _shown(value, max_chars), group_of(key)) for key, value in decoded.items()]
    frame = pd.DataFrame(rows, columns=["key", "value", "group"])
    order = {group: i for i, group in enumerate(GROUP_ORDER)}
    frame = frame.assign(_order=frame["group"].map(order))
    return frame.sort_values(["_order", "key"]).drop(columns="_order").reset_index(drop=True)


def _tag_counts(decoded: Mapping[str, object]) -> dict[str, dict]:
    """{dataset: {tag: count}} from ss_tag_frequency, else from each entry of ss_datasets."""
    frequency = decoded.get("ss_tag_frequency")
    if isinstance(frequency, dict):
        return frequency
    merged: dict[str, dict] = {}
    datasets = decoded.get("ss_datasets")
    for dataset in datasets if isinstance(datasets, list) else []:
        per_dataset = dataset.get("tag_frequency") if isinstance(dataset, dict) else None
        if isinstance(per_dataset, dict):
            merged.update(per_dataset)
    return merged


def _count(value: object) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def tag_frequency(raw: Mapping[str, str]) -> pd.DataFrame:
    """The training captions' tag counts (dataset, tag, count), most frequent first."""
    rows = []
    for dataset, tags in _tag_counts(decode_metadata(raw)).items():
        if not isinstance(tags, dict):
            continue
        for tag, value in tags.items():
            count = _count(value)
            if count is not None:
                rows.append((str(dataset), str(tag).strip(), count))
    frame = pd.DataFrame(rows, columns=["dataset", "tag", "count"])
    return frame.sort_values(["count", "dataset", "tag"], ascending=[False, True, True],
                             kind="stable").reset_index(drop=True)


def modelspec(raw: Mapping[str, str]) -> dict[str, str]:
    """The modelspec.* entries without their prefix ({"architecture": ..., "title": ...})."""
    return {key[len(MODELSPEC_PREFIX):]: value for key, value in raw.items()
            if key.startswith(MODELSPEC_PREFIX)}
