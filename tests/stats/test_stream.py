import pytest
import torch
from safetensors.torch import save_file

from labkit.errors import CorruptFileError
from labkit.stats import moments as tensor_math
from labkit.stats.moments import describe, describe_parts
from labkit.stats.stream import file_parts

TENSORS = {
    "big": torch.randn(1000, generator=torch.Generator().manual_seed(0)).half(),
    "ids": torch.arange(77)[None],
    "empty": torch.zeros(0),
    "b16": torch.tensor([1.5, -2.0, 0.0], dtype=torch.bfloat16),
}


@pytest.fixture
def path(tmp_path, monkeypatch):
    monkeypatch.setattr(tensor_math, "CHUNK", 64)  # several chunks per tensor
    save_file(TENSORS, str(tmp_path / "m.safetensors"))
    return tmp_path / "m.safetensors"


def test_chunks_read_from_the_file_give_the_tensors_stats(path):
    got = {name: describe_parts(parts) for name, parts in file_parts(path, list(TENSORS))}
    for name, tensor in TENSORS.items():
        assert got[name] == pytest.approx(describe(tensor), nan_ok=True), name


def test_chunks_come_in_file_order_of_the_names_asked(path):
    sizes = {name: [p.numel() for p in parts] for name, parts in file_parts(path, ["big", "ids"])}
    assert sizes == {"big": [64] * 15 + [40], "ids": [64, 13]}


def test_a_file_cut_or_replaced_after_opening_is_refused(path):
    items = file_parts(path, ["big"])
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size - 100)
    with pytest.raises(CorruptFileError):
        for _, parts in items:
            list(parts)
    save_file({"other": torch.ones(1)}, str(path))
    with pytest.raises(CorruptFileError, match="no longer holds"):
        next(file_parts(path, ["big"]))
