"""Stats: per-tensor statistics streamed from any file form, comparisons of two models, figures.

`tensor_stats(model)` and `compare(a, b)` return DataFrames; names are canonical across forms.
"""

from __future__ import annotations

from labkit.files.model_file import ANALYSES
from labkit.stats.canonical import canonical_names
from labkit.stats.per_tensor import (
    block_norms,
    by_block,
    by_component,
    bytes_by_dtype,
    compare,
    difference_by_block,
    ema_difference,
    position_ids_check,
    status_counts,
    tensor_stats,
)

__all__ = ["block_norms", "by_block", "by_component", "bytes_by_dtype", "canonical_names",
           "compare", "difference_by_block", "ema_difference", "position_ids_check",
           "status_counts", "tensor_stats"]

ANALYSES["stats"] = tensor_stats  # ModelFile.stats()
