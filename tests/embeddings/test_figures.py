"""The embeddings lab's figures draw what they are given (saved to test-output/ to look at)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from labkit.embeddings import figures as P
from labkit.embeddings.vectors import cosine_matrix, map_2d
from labkit.stats.figures import to_png

PNG = b"\x89PNG\r\n\x1a\n"


def test_norm_histogram_marks_each_vector(output_dir):
    norms = torch.rand(5000) * 0.1 + 0.35
    fig = P.norm_histogram(norms, {"<checker>": [2.5, 3.0], "cat": 0.4})
    ax = fig.axes[0]
    labels = ax.get_legend_handles_labels()[1]
    assert any(lb.startswith("<checker> 2.5") for lb in labels)
    assert any(lb.startswith("cat 0.4") for lb in labels)
    assert ax.get_xlim()[1] >= 3.0  # the long TI vector is on the axis, not clipped
    png = to_png(fig)
    assert png.startswith(PNG)
    (output_dir / "embeddings_norms.png").write_bytes(png)


def test_heatmap_annotates_small_tables(output_dir):
    words = ["cat", "dog", "car"]
    m = cosine_matrix(torch.tensor([[1.0, 0], [0.9, 0.1], [0, 1.0]]), words)
    fig = P.similarity_heatmap(m)
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert len(texts) == 9 and "1.00" in texts
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == words
    (output_dir / "embeddings_heatmap.png").write_bytes(to_png(fig))
    big = pd.DataFrame(np.eye(20), index=range(20), columns=range(20))
    assert len(P.similarity_heatmap(big).axes[0].texts) == 0


def test_map_highlights_and_labels(output_dir):
    g = torch.Generator().manual_seed(0)
    labels = ["<checker>", "pattern", "square", "circle"]
    frame = map_2d(torch.randn(4, 8, generator=g), labels)
    fig = P.map_figure(frame, highlight=["<checker>"])
    ax = fig.axes[0]
    assert sorted(t.get_text() for t in ax.texts) == sorted(labels)
    assert "main direction (" in ax.get_xlabel()
    red = [t for t in ax.texts if t.get_color() == P.HIGHLIGHT_COLOUR]
    assert [t.get_text() for t in red] == ["<checker>"]
    (output_dir / "embeddings_map.png").write_bytes(to_png(fig))


def test_labels_without_a_glyph_are_written_as_code_points():
    from labkit.embeddings.figures import drawable

    assert drawable("striped</w>") == "striped</w>"
    assert drawable("café") == "café"
    assert drawable("a》b") == "a\\u300bb"
