"""labkit.files.gguf: a hand-written GGUF v3 file reads; hostile counts and lengths are refused."""

from __future__ import annotations

import struct
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from labkit.errors import CorruptFileError, IncompatibleModelError
from labkit.files.gguf import read_gguf
from labkit.files.opener import open_model
from tests.fixtures.bounded import peak_bytes_reading


def gstr(text: str) -> bytes:
    data = text.encode()
    return struct.pack("<Q", len(data)) + data


def kv(key: str, vtype: int, payload: bytes) -> bytes:
    return gstr(key) + struct.pack("<I", vtype) + payload


def tensor_info(name: str, dims: list[int], ggml: int, offset: int) -> bytes:
    return (gstr(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
            + struct.pack("<I", ggml) + struct.pack("<Q", offset))


A = torch.arange(8, dtype=torch.float32)


def gguf_file(version: int = 3, n_tensors: int | None = None, extra_kv: bytes = b"",
              tensors: list[bytes] | None = None, data_size: int | None = None) -> bytes:
    """A GGUF v3 file per the spec: F32 [2, 4], Q8_0 [2, 32] and F16 [3] tensors, 32-aligned."""
    kvs = [
        kv("general.architecture", 8, gstr("flux")),
        kv("general.alignment", 4, struct.pack("<I", 32)),
        kv("general.file_type", 4, struct.pack("<I", 7)),
        kv("demo.scale", 6, struct.pack("<f", 0.5)),
        kv("demo.flag", 7, b"\x01"),
        kv("demo.ids", 9, struct.pack("<IQ", 4, 3) + struct.pack("<III", 1, 2, 3)),
        kv("demo.tokens", 9, struct.pack("<IQ", 8, 20) + b"".join(gstr(f"t{i}") for i in range(20))),
    ]
    infos = tensors if tensors is not None else [
        tensor_info("a", [4, 2], 0, 0), tensor_info("b", [32, 2], 8, 32),
        tensor_info("c", [3], 1, 128)]
    head = (b"GGUF" + struct.pack("<I", version)
            + struct.pack("<QQ", len(infos) if n_tensors is None else n_tensors, len(kvs) + (
                1 if extra_kv else 0)) + b"".join(kvs) + extra_kv + b"".join(infos))
    head += bytes(-len(head) % 32)
    data = bytearray(data_size if data_size is not None else 160)
    data[0:32] = A.numpy().tobytes()
    data[128:134] = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float16).numpy().tobytes()
    return head + bytes(data)


def test_hand_written_file_opens(tmp_path: Path) -> None:
    path = tmp_path / "flux-Q8_0.gguf"
    path.write_bytes(gguf_file())
    model = open_model(path)
    assert model.format == "gguf"
    assert {n: (i.shape, i.dtype) for n, i in model.table.items()} == {
        "a": ((2, 4), "F32"), "b": ((2, 32), "Q8_0"), "c": ((3,), "F16")}
    assert model.table["b"].nbytes == 68
    assert model.metadata["general.architecture"] == "flux"
    assert model.metadata["gguf.version"] == "3"
    assert model.metadata["demo.ids"] == "[1, 2, 3]"
    assert model.metadata["demo.tokens"] == "[20 x string]"
    assert model.metadata["demo.scale"] == "0.5" and model.metadata["demo.flag"] == "true"
    assert torch.equal(model.tensor("a"), A.reshape(2, 4))
    assert torch.equal(model.tensor("c"), torch.tensor([1.0, 2.0, 3.0], dtype=torch.float16))
    with pytest.raises(IncompatibleModelError, match="Q8_0-quantised"):
        model.tensor("b")
    assert "gguf" not in sys.modules


HOSTILE = {
    "version 1": (lambda: gguf_file(version=1), "version 1"),
    "tensor count": (lambda: gguf_file(n_tensors=2**40), "claims 1099511627776 tensors"),
    "string length": (lambda: gguf_file(extra_kv=kv("x", 8, struct.pack("<Q", 2**60))),
                      "claims a string"),
    "key length": (lambda: gguf_file(extra_kv=struct.pack("<Q", 70_000) + b"k" * 70_000),
                   "claims a string"),
    "array length": (lambda: gguf_file(extra_kv=kv("x", 9, struct.pack("<IQ", 4, 2**62))),
                     "array items"),
    "array of arrays": (lambda: gguf_file(extra_kv=kv("x", 9, struct.pack("<IQ", 9, 1)
                                                       + struct.pack("<IQ", 9, 1) * 4)),
                        "nested too deeply"),
    "value type": (lambda: gguf_file(extra_kv=kv("x", 99, b"")), "unknown metadata value type"),
    "dims": (lambda: gguf_file(tensors=[tensor_info("a", [1] * 5, 0, 0)]), "5 dimensions"),
    "huge dims": (lambda: gguf_file(tensors=[tensor_info("a", [2**40, 2**20], 0, 0)]),
                  "outside the data"),
    "beyond file": (lambda: gguf_file(data_size=100), "outside the data"),
    "unaligned": (lambda: gguf_file(tensors=[tensor_info("a", [4], 0, 4)]), "unaligned"),
    "ggml type": (lambda: gguf_file(tensors=[tensor_info("a", [4], 77, 0)]), "unknown ggml type"),
    "block size": (lambda: gguf_file(tensors=[tensor_info("a", [30], 8, 0)]), "multiple of 32"),
    "duplicate": (lambda: gguf_file(tensors=[tensor_info("a", [4], 0, 0)] * 2), "twice"),
    "cut short": (lambda: gguf_file()[:150], "cut short"),
}


@pytest.mark.parametrize("case", HOSTILE)
def test_hostile_headers_are_refused(tmp_path: Path, case: str) -> None:
    make, message = HOSTILE[case]
    path = tmp_path / "bad.gguf"
    path.write_bytes(make())
    with pytest.raises(CorruptFileError) as err:
        read_gguf(path)
    assert message in str(err.value) and "bad.gguf" in str(err.value)


def _read_bounded(data: bytes) -> None:
    assert peak_bytes_reading(read_gguf, data, "f.gguf") < 1_000_000 + 20 * len(data)


_VALID = gguf_file()


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes_after_the_magic(data: bytes) -> None:
    _read_bounded(b"GGUF" + data)


@settings(max_examples=200, deadline=None)
@given(st.integers(4, len(_VALID) - 1), st.binary(min_size=1, max_size=8))
def test_mutated_files(at: int, patch: bytes) -> None:
    _read_bounded(_VALID[:at] + patch + _VALID[at + len(patch):])
