"""An Identity, and how a file's base is told: by its measured widths first, by its metadata
only as a second witness (it tells variants, and bases of the same widths)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from labkit.identify import rules as R


@dataclass(frozen=True)
class Identity:
    """What a file is: kind, base family, variants, how the base was told, and the reasons."""

    kind: str
    base: str
    variant: list[str] = field(default_factory=list)
    base_source: str = "none"
    evidence: list[str] = field(default_factory=list)


def metadata_base(metadata: Mapping[str, str]) -> tuple[str, tuple[str, ...], str] | None:
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


def told_base(dims_base: str | None, metadata: Mapping[str, str], evidence: list[str],
               widths: str = "") -> tuple[str, list[str], str]:
    """A file's base: the measured widths when they name one, and the metadata only where the
    widths fit it too (it tells variants, and bases of the same widths); else unknown."""
    meta = metadata_base(metadata)
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


def prediction_variants(metadata: Mapping[str, str], evidence: list[str]) -> list[str]:
    """["v_prediction"] when modelspec.prediction_type says so."""
    if metadata.get(R.PREDICTION_TYPE_KEY) in R.V_PREDICTION_VALUES:
        evidence.append(f"metadata {R.PREDICTION_TYPE_KEY}={metadata[R.PREDICTION_TYPE_KEY]!r}")
        return ["v_prediction"]
    return []
