"""labkit.hashes: the six Civitai hashes against hashlib/zlib/blake3 directly, and the cache."""

from __future__ import annotations

import hashlib
import json
import os
import struct
import zlib

import blake3
import pytest
import torch
from safetensors.torch import save_file

from labkit import hashes
from labkit.errors import LabkitError, NotAModelError


@pytest.fixture(autouse=True)
def cache_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("LABKIT_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def expected(data: bytes, safetensors: bool) -> dict[str, str | None]:
    """The six hashes computed the plain way, over the whole file in memory."""
    sha = hashlib.sha256(data).hexdigest().upper()
    skip = 8 + struct.unpack("<Q", data[:8])[0] if safetensors else None
    return {
        "sha256": sha,
        "autov1": (hashlib.sha256(data[0x100000:0x110000]).hexdigest()[:8].upper()
                   if len(data) >= 0x200000 else None),
        "autov2": sha[:10],
        "autov3": hashlib.sha256(data[skip:]).hexdigest().upper() if skip else None,
        "crc32": f"{zlib.crc32(data):08X}",
        "blake3": blake3.blake3(data).hexdigest().upper(),
    }


def write_safetensors(path, metadata, n=700_000):
    torch.manual_seed(0)
    save_file({"a.weight": torch.randn(n), "b.bias": torch.arange(100, dtype=torch.float16)},
              path, metadata=metadata)
    return path.read_bytes()


def test_published_vectors(tmp_path):
    path = tmp_path / "abc.bin"
    path.write_bytes(b"abc")
    assert hashes.file_hashes(path) == {
        "sha256": "BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD",
        "autov1": None,
        "autov2": "BA7816BF8F",
        "autov3": None,
        "crc32": "352441C2",
        "blake3": "6437B3AC38465133FFB63B75273A8DB548C558465D79DB03FD359C6CD5BD9D85",
    }


@pytest.mark.parametrize("size", [0, 1000, 0x1FFFFF, 0x200000, 3 * 1024 * 1024 + 17])
@pytest.mark.parametrize("chunk", [hashes.CHUNK, 100_003])
def test_plain_files(tmp_path, monkeypatch, size, chunk):
    monkeypatch.setattr(hashes, "CHUNK", chunk)
    data = os.urandom(size)
    path = tmp_path / "model.ckpt"
    path.write_bytes(data)
    assert hashes.file_hashes(path) == expected(data, safetensors=False)


@pytest.mark.parametrize("chunk", [hashes.CHUNK, 100_003, 4096])
def test_safetensors_autov3_skips_the_header(tmp_path, monkeypatch, chunk):
    monkeypatch.setattr(hashes, "CHUNK", chunk)
    path = tmp_path / "lora.safetensors"
    data = write_safetensors(path, {"ss_note": "x" * 10_000})  # header longer than a small chunk
    result = hashes.file_hashes(path)
    assert result == expected(data, safetensors=True)
    assert result["autov1"] is not None


def test_editing_metadata_keeps_autov3_and_changes_sha256(tmp_path):
    write_safetensors(tmp_path / "a.safetensors", {"title": "one"})
    write_safetensors(tmp_path / "b.safetensors", {"title": "two!"})
    one = hashes.file_hashes(tmp_path / "a.safetensors")
    two = hashes.file_hashes(tmp_path / "b.safetensors")
    assert one["autov3"] == two["autov3"]
    assert one["sha256"] != two["sha256"]


def test_civitai_large_header_edge_case(tmp_path, monkeypatch):
    monkeypatch.setattr(hashes, "CIVITAI_HEADER_LIMIT", 64)
    path = tmp_path / "big_header.safetensors"
    write_safetensors(path, {"ss_note": "y" * 200}, n=1000)
    result = hashes.file_hashes(path)
    assert result["autov3"] == result["sha256"]


@pytest.mark.parametrize("head", [b"PK\x03\x04" + b"\0" * 60, b"version https://git-lfs.github",
                                  struct.pack("<Q", 10) + b"[" + b" " * 20])
def test_not_safetensors_has_no_autov3(tmp_path, head):
    path = tmp_path / "x.safetensors"
    path.write_bytes(head)
    assert hashes.file_hashes(path)["autov3"] is None


def test_cache_hit_does_not_read_again(tmp_path, monkeypatch, cache_in_tmp):
    path = tmp_path / "m.bin"
    path.write_bytes(os.urandom(5000))
    first = hashes.file_hashes(path)

    def no_read(*_args):
        raise AssertionError("the file was read again")

    monkeypatch.setattr(hashes, "_compute", no_read)
    assert hashes.hashes(path) == first
    assert str(path.resolve()) in json.loads((cache_in_tmp / "hashes.json").read_text())


def test_cache_invalidated_by_mtime(tmp_path, monkeypatch):
    path = tmp_path / "m.bin"
    path.write_bytes(b"0" * 5000)
    hashes.file_hashes(path)
    calls = []
    compute = hashes._compute
    monkeypatch.setattr(hashes, "_compute", lambda p, prog: calls.append(p) or compute(p, prog))
    hashes.file_hashes(path)
    assert calls == []
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    hashes.file_hashes(path)
    assert calls == [path]


def test_cache_is_outside_the_model_folder(tmp_path, cache_in_tmp):
    models = tmp_path / "models"
    models.mkdir()
    (models / "m.safetensors").write_bytes(os.urandom(100))
    hashes.file_hashes(models / "m.safetensors")
    assert [p.name for p in models.iterdir()] == ["m.safetensors"]
    assert [p.name for p in cache_in_tmp.iterdir()] == ["hashes.json"]


def test_cache_dir_default_follows_xdg(tmp_path, monkeypatch):
    monkeypatch.delenv("LABKIT_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert hashes.cache_dir() == tmp_path / "xdg" / "labkit"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert hashes.cache_dir() == tmp_path / "home" / ".cache" / "labkit"


def test_damaged_cache_is_rebuilt(tmp_path, cache_in_tmp):
    cache_in_tmp.mkdir()
    (cache_in_tmp / "hashes.json").write_text("{not json")
    path = tmp_path / "m.bin"
    path.write_bytes(b"abc")
    assert hashes.file_hashes(path)["crc32"] == "352441C2"
    assert str(path.resolve()) in json.loads((cache_in_tmp / "hashes.json").read_text())


def test_folder_names_its_weight_files(tmp_path):
    (tmp_path / "unet").mkdir()
    (tmp_path / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"x")
    (tmp_path / "model_index.json").write_text("{}")
    with pytest.raises(LabkitError, match="per file") as err:
        hashes.file_hashes(tmp_path)
    assert "unet/diffusion_pytorch_model.safetensors" in str(err.value)
    assert "model_index.json" not in str(err.value)


def test_missing_file(tmp_path):
    with pytest.raises(NotAModelError, match="no such file"):
        hashes.file_hashes(tmp_path / "nope.safetensors")


@pytest.mark.parametrize("progress", [True, False])
def test_progress_bar_for_large_files(tmp_path, monkeypatch, capsys, progress):
    monkeypatch.setattr(hashes, "PROGRESS_ABOVE", 10)
    path = tmp_path / "m.bin"
    path.write_bytes(os.urandom(1000))
    hashes.file_hashes(path, progress=progress)
    assert ("hashing m.bin" in capsys.readouterr().err) == progress
