"""Embeddings: token vectors, prompt vectors, textual inversions in every container, and their maps."""

from __future__ import annotations

from labkit.embeddings.textual_inversion import (
    TextualInversion,
    load_textual_inversion,
    read_textual_inversion,
)
from labkit.embeddings.vectors import nearest_tokens, prompt_vectors, token_table, token_vector

__all__ = ["TextualInversion", "load_textual_inversion", "nearest_tokens", "prompt_vectors",
           "read_textual_inversion", "token_table", "token_vector"]
