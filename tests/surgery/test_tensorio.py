"""Streamed reads and writes: the written file is a valid safetensors file (any dtype, metadata),
a write that stops early leaves nothing behind, and outputs that would hurt a source are refused."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from labkit import zoo
from labkit.errors import LabkitError
from labkit.surgery.tensorio import Reader, check_output, readers, stream_writer, write_tensors
from labkit.tensors import TensorInfo

TENSORS = {
    "half": torch.arange(6, dtype=torch.float16).reshape(2, 3),
    "brain": torch.tensor([1.5, -2.0], dtype=torch.bfloat16),
    "ids": torch.arange(77)[None],
    "scalar": torch.tensor(4.0),
    "empty": torch.zeros(0, 3),
}


def test_written_files_read_back_in_safetensors_with_their_metadata(tmp_path):
    out = write_tensors(tmp_path / "t.safetensors", TENSORS, {"note": "hello"})
    back = load_file(str(out))
    assert list(back) == sorted(TENSORS) or set(back) == set(TENSORS)
    for name, t in TENSORS.items():
        assert back[name].dtype == t.dtype and torch.equal(back[name], t), name
    with safe_open(str(out), "pt") as f:
        assert f.metadata() == {"note": "hello"}


def test_the_reader_gives_what_safetensors_gives(tmp_path):
    path = tmp_path / "s.safetensors"
    save_file(TENSORS, str(path))
    reader = Reader(path)
    try:
        for name, t in TENSORS.items():
            assert torch.equal(reader.tensor(name), t), name
    finally:
        reader.close()
    with readers(zoo.path("demo_sd1_ckpt"), None) as (pickle, nothing):
        name = next(iter(pickle.table))
        assert nothing is None and pickle.tensor(name).shape == pickle.table[name].shape


def test_a_write_that_stops_early_leaves_no_file(tmp_path):
    out = tmp_path / "half.safetensors"
    plan = {"a": TensorInfo((2,), "F32"), "b": TensorInfo((2,), "F32")}
    with pytest.raises(ValueError, match="not every planned tensor"), stream_writer(out, plan, {}) as w:
        w.write("a", torch.ones(2))
    with pytest.raises(ValueError, match="expected b"), stream_writer(out, plan, {}) as w:
        w.write("a", torch.ones(2))
        w.write("b", torch.ones(3))
    assert list(tmp_path.iterdir()) == []


def test_outputs_are_checked(tmp_path):
    source = tmp_path / "src.safetensors"
    source.write_bytes(b"x")
    with pytest.raises(LabkitError, match="suffix"):
        check_output(tmp_path / "out.ckpt", [source])
    with pytest.raises(LabkitError, match="one of the sources"):
        check_output(source, [source], overwrite=True)
    with pytest.raises(LabkitError, match="already exists"):
        check_output(source, [])
    assert check_output(source, [], overwrite=True) == source
