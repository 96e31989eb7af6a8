"""Embeddings: token vectors, prompt vectors, textual inversions in every container (with
example files of each), and their maps."""

from __future__ import annotations

from labkit.embeddings.figures import map_figure, norm_histogram, similarity_heatmap
from labkit.embeddings.forms import forms_table, write_examples
from labkit.embeddings.textual_inversion import (
    TextualInversion,
    load_textual_inversion,
    loaded_tokens,
    read_textual_inversion,
    unload_textual_inversion,
)
from labkit.embeddings.vectors import (
    cosine_matrix,
    nearest_tokens,
    neighbour_map,
    prompt_similarity,
    prompt_vectors,
    token_table,
    token_vector,
    vocabulary_norms,
    with_and_without,
)

__all__ = ["TextualInversion", "cosine_matrix", "load_textual_inversion", "loaded_tokens",
           "forms_table", "map_figure", "nearest_tokens", "neighbour_map", "norm_histogram", "prompt_similarity",
           "prompt_vectors", "read_textual_inversion", "similarity_heatmap", "token_table",
           "token_vector", "unload_textual_inversion", "vocabulary_norms", "with_and_without",
           "write_examples"]
