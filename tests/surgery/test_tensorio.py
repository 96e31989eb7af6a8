"""Streamed reads and writes: the written file is a valid safetensors file (any dtype, metadata),
a write that stops early leaves nothing behind, and outputs that would hurt a source are refused."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from labkit import zoo
from labkit.errors import CorruptFileError, LabkitError
from labkit.surgery import tensorio
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


def test_the_mapped_reader_gives_what_safetensors_gives_and_leaves_the_file_alone(tmp_path):
    path = tmp_path / "s.safetensors"
    save_file(TENSORS | {"odd": torch.arange(1001, dtype=torch.float16)}, str(path))
    before = path.read_bytes()
    reader = Reader(path, mapped=True)
    try:
        for name, t in load_file(str(path)).items():
            got = reader.tensor(name)
            assert got.dtype == t.dtype and torch.equal(got, t), name
    finally:
        reader.close()
    del got, t  # their pages unmapped before the file is cut
    assert path.read_bytes() == before
    with readers(path, mapped=True) as (cut,):
        path.write_bytes(before[:len(before) // 2])  # cut short after its header was read
        with pytest.raises(CorruptFileError, match="ends inside tensor"):
            for name in cut.table:
                cut.tensor(name)  # never touched: a page past the end would be SIGBUS


def test_a_file_that_cannot_be_mapped_is_read(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError(19, "No such device")

    path = tmp_path / "s.safetensors"
    save_file(TENSORS, str(path))
    monkeypatch.setattr(tensorio.mmap, "mmap", refuse)
    with readers(path, mapped=True) as (reader,):
        for name, t in TENSORS.items():
            assert torch.equal(reader.tensor(name), t), name


def test_a_tensor_written_in_parts_reads_back_whole_with_write_behind(tmp_path, monkeypatch):
    """Pieces of a tensor make it up byte for byte; the write-behind hints (every 100 bytes
    here) change nothing of what is written; parts of the wrong dtype or size are refused."""
    monkeypatch.setattr(tensorio, "WRITE_BEHIND", 100)
    big = torch.arange(3000, dtype=torch.float16).reshape(30, 100)
    out = tmp_path / "parts.safetensors"
    plan = {"big": TensorInfo((30, 100), "F16"), "ids": TensorInfo((1, 77), "I64")}
    with stream_writer(out, plan, {"note": "parts"}) as w:
        w.write_parts("big", plan["big"], big.reshape(-1).split(7))
        w.write("ids", TENSORS["ids"])
    back = load_file(str(out))
    assert torch.equal(back["big"], big) and torch.equal(back["ids"], TENSORS["ids"])
    with pytest.raises(ValueError, match="got a torch.float32 part"), stream_writer(out, plan, {}) as w:
        w.write_parts("big", plan["big"], [big.reshape(-1).float()])
    with pytest.raises(ValueError, match="its parts gave 20"), stream_writer(out, plan, {}) as w:
        w.write_parts("big", plan["big"], [big.reshape(-1)[:10]])
    assert torch.equal(load_file(str(out))["big"], big)  # the refused writes left it as it was


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
