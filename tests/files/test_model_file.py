"""labkit.files.model_file: tensors out of a loaded pickle come back as plain data."""

from __future__ import annotations

from pathlib import Path

import labkit
from tests.fixtures.wild_formats import ti_ldm, write_torch


def test_a_rinongal_ti_parameter_comes_back_detached(tmp_path: Path) -> None:
    """The ldm .pt holds a trained nn.Parameter (requires_grad): stats and numpy must still read it."""
    model = labkit.open_model(write_torch(tmp_path / "ti.pt", ti_ldm()))
    vector = model.tensor("string_to_param.*")
    assert not vector.requires_grad
    assert vector.numpy().shape == (2, 768)
    stats = labkit.stats.tensor_stats(model, progress=False)
    assert list(stats["name"]) == list(model.table)
