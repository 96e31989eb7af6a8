"""labkit.files.safetensors_header: one refusal per rule of the reference reader, in its order."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

from labkit.errors import CorruptFileError
from labkit.files import safetensors_header
from labkit.files.safetensors_header import MAX_HEADER, _Bad, parse, read_header
from labkit.tensors import TensorInfo
from tests.fixtures.bounded import peak_bytes_reading


def build(header: object, data: bytes = b"", raw_header: bytes | None = None) -> bytes:
    """A safetensors file from a header object (or raw header bytes) and a data buffer."""
    text = raw_header if raw_header is not None else json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data


def good_header() -> dict:
    return {"__metadata__": {"ss_network_dim": "4"},
            "b": {"dtype": "F16", "shape": [2], "data_offsets": [8, 12]},
            "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}


def test_real_file_reads_in_data_order_with_metadata(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    save_file({"z": torch.ones(3, 2), "a": torch.zeros(4, dtype=torch.float16)}, path,
              metadata={"ss_tag_frequency": json.dumps({"cat": 3})})
    header = read_header(path)
    assert header.table == {"z": TensorInfo((3, 2), "F32"), "a": TensorInfo((4,), "F16")}
    assert list(header.table) == sorted(header.table, key=lambda n: header.offsets[n])
    assert json.loads(header.metadata["ss_tag_frequency"]) == {"cat": 3}
    assert header.data_start == 8 + int.from_bytes(path.read_bytes()[:8], "little")


def test_hand_made_header_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    path.write_bytes(build(good_header(), bytes(12)))
    header = read_header(path)
    assert list(header.table) == ["a", "b"]
    assert header.metadata == {"ss_network_dim": "4"}


def _with(**changes: object) -> dict:
    header = good_header()
    header.update(changes)
    return header


REFUSALS = {
    "short file": (b"\x05\x00\x00", "too short"),
    "N too large": (struct.pack("<Q", MAX_HEADER + 1) + b"{}", "over the 100000000"),
    "8+N beyond file": (struct.pack("<Q", 500) + b'{"a": 1}', "claims 500 bytes"),
    "not UTF-8": (build(None, raw_header=b'{"\xff\xfe": 1}'), "not UTF-8"),
    "not JSON": (build(None, raw_header=b"{not json"), "not valid JSON"),
    "JSON list": (build([1, 2]), "not a JSON object"),
    "entry missing keys": (build({"a": {"dtype": "F32", "shape": [1]}}, bytes(4)),
                           "must have dtype, shape and data_offsets"),
    "shape not ints": (build({"a": {"dtype": "F32", "shape": [1.5], "data_offsets": [0, 4]}},
                             bytes(4)), "shape that is not a list"),
    "negative shape": (build({"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}},
                             bytes(4)), "shape that is not a list"),
    "offsets not pair": (build({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0]}},
                               bytes(4)), "not two positions"),
    "metadata not strings": (build(_with(__metadata__={"steps": 100}), bytes(12)),
                             "__metadata__ must map strings to strings"),
    "bad dtype": (build({"a": {"dtype": "F128", "shape": [1], "data_offsets": [0, 16]}},
                        bytes(16)), "unknown dtype 'F128'"),
    "duplicate keys": (build(None, b"", raw_header=(
        b'{"a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]},'
        b' "a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}}')) + b"\x00",
                       "names 'a' twice"),
    "gap in offsets": (build(_with(b={"dtype": "F16", "shape": [2], "data_offsets": [9, 13]}),
                             bytes(13)), "must be contiguous"),
    "overlapping offsets": (build(_with(b={"dtype": "F16", "shape": [2], "data_offsets": [6, 10]}),
                                  bytes(10)), "must be contiguous"),
    "offsets not from 0": (build({"a": {"dtype": "U8", "shape": [2], "data_offsets": [2, 4]}},
                                 bytes(4)), "must be contiguous"),
    "size mismatch": (build({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}},
                            bytes(8)), "needs 12 bytes but its offsets give 8"),
    "trailing bytes": (build(good_header(), bytes(20)), "8 trailing bytes"),
    "missing data": (build(good_header(), bytes(10)), "2 bytes missing"),
}


@pytest.mark.parametrize("case", REFUSALS)
def test_each_refusal(tmp_path: Path, case: str) -> None:
    data, message = REFUSALS[case]
    path = tmp_path / "bad.safetensors"
    path.write_bytes(data)
    with pytest.raises(CorruptFileError) as err:
        read_header(path)
    assert message in str(err.value)
    assert "bad.safetensors" in str(err.value)


def test_refusal_order_follows_the_reference(tmp_path: Path) -> None:
    # Both a size mismatch and trailing bytes: the size mismatch is reported first.
    path = tmp_path / "two.safetensors"
    path.write_bytes(build({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}},
                           bytes(30)))
    with pytest.raises(CorruptFileError, match="needs 12 bytes"):
        read_header(path)


def test_sub_byte_dtypes_are_sized_in_bits(tmp_path: Path) -> None:
    path = tmp_path / "f4.safetensors"
    path.write_bytes(build({"a": {"dtype": "F4", "shape": [4], "data_offsets": [0, 2]}}, bytes(2)))
    assert read_header(path).table["a"] == TensorInfo((4,), "F4")
    path.write_bytes(build({"a": {"dtype": "F4", "shape": [3], "data_offsets": [0, 2]}}, bytes(2)))
    with pytest.raises(CorruptFileError, match="needs 1.5 bytes"):
        read_header(path)


def _read_bytes(data: bytes) -> None:
    assert peak_bytes_reading(read_header, data, "f.safetensors") < 1_000_000 + 20 * len(data)


_VALID = build(good_header(), bytes(12))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_give_a_header_or_a_labkit_error(data: bytes) -> None:
    _read_bytes(data)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, len(_VALID) - 1), st.binary(min_size=1, max_size=8))
def test_mutated_files_give_a_header_or_a_labkit_error(at: int, patch: bytes) -> None:
    _read_bytes(_VALID[:at] + patch + _VALID[at + len(patch):])


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 2**64 - 1))
def test_claimed_header_length_is_never_allocated(claim: int) -> None:
    _read_bytes(struct.pack("<Q", claim) + b'{"a": 1}')


def test_what_the_reference_reader_accepts(tmp_path: Path) -> None:
    path = tmp_path / "lenient.safetensors"
    entry = {"dtype": "F32", "shape": [1], "data_offsets": [0, 4], "extra": 1}
    path.write_bytes(build(None, bytes(4), raw_header=b"  " + json.dumps(
        {"__metadata__": None, "a": entry}).encode()))
    header = read_header(path)
    assert header.metadata == {} and header.table == {"a": TensorInfo((1,), "F32")}


def _verdict(data: bytes) -> object:
    """What parse makes of a file's bytes: the header, or the error message."""
    try:
        return parse(data, len(data))
    except _Bad as exc:
        return str(exc)


def _exact_verdict(data: bytes, monkeypatch: pytest.MonkeyPatch) -> object:
    with monkeypatch.context() as m:
        m.setattr(safetensors_header, "_orjson_loads", None)
        return _verdict(data)


TRICKY = {
    "duplicate hidden by a colon in a name": build(None, b"\x00", raw_header=(
        b'{"a:": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]},'
        b' "a:": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}}')),
    "duplicate metadata key": build(None, bytes(1), raw_header=(
        b'{"__metadata__": {"k": "x:y", "k": "z"},'
        b' "a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}}')),
    "duplicate dtype in an entry": build(None, bytes(1), raw_header=(
        b'{"a": {"dtype": "U8", "dtype": "U8", "shape": [1], "data_offsets": [0, 1]}}')),
    "escaped colon in a name": build(None, bytes(1), raw_header=(
        b'{"a\\u003a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}}')),
    "escaped name equal to another": build(None, bytes(2), raw_header=(
        b'{"a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]},'
        b' "\\u0061": {"dtype": "U8", "shape": [1], "data_offsets": [1, 2]}}')),
    "offsets of two and three": build(None, bytes(2), raw_header=(
        b'{"a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]},'
        b' "b": {"dtype": "U8", "shape": [1], "data_offsets": [1, 2, 3]}}')),
    "bool shape": build({"a": {"dtype": "U8", "shape": [True], "data_offsets": [0, 1]}}, bytes(1)),
    "big integer": build({"a": {"dtype": "U8", "shape": [2**64], "data_offsets": [0, 1]}},
                         bytes(1)),
    "NaN literal": build(None, bytes(1), raw_header=(
        b'{"a": {"dtype": "U8", "shape": [NaN], "data_offsets": [0, 1]}}')),
    "metadata null": build({"__metadata__": None, "a": {"dtype": "U8", "shape": [1],
                                                        "data_offsets": [0, 1]}}, bytes(1)),
    "metadata empty string": build({"__metadata__": "", "a": {"dtype": "U8", "shape": [1],
                                                              "data_offsets": [0, 1]}}, bytes(1)),
    "empty tensors sharing an offset": build({
        "z": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]},
        "y": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]},
        "a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}}, bytes(1)),
    "no tensors": build({"__metadata__": {"a": "b"}}),
    "written out of data order": build({
        "b": {"dtype": "U8", "shape": [2], "data_offsets": [1, 3]},
        "a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}}, bytes(3)),
    "a gap out of data order": build({
        "b": {"dtype": "U8", "shape": [2], "data_offsets": [2, 4]},
        "a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}}, bytes(4)),
    "data_offsets a two-letter string": build(
        {"a": {"dtype": "U8", "shape": [1], "data_offsets": "01"}}, bytes(1)),
    "data_offsets an object of two keys": build(
        {"a": {"dtype": "U8", "shape": [1], "data_offsets": {"0": 0, "1": 1}}}, bytes(1)),
    "data_offsets of false and true": build(
        {"a": {"dtype": "U8", "shape": [1], "data_offsets": [False, True]}}, bytes(1)),
    "shape an empty string": build({"a": {"dtype": "U8", "shape": "", "data_offsets": [0, 1]}},
                                   bytes(1)),
    "entry a three-letter string": build({"a": "abc"}, bytes(1)),
    "entry a list of the three field names": build({"a": ["dtype", "shape", "data_offsets"]}),
    "a list inside a shape": build({"a": {"dtype": "U8", "shape": [[1]], "data_offsets": [0, 1]}},
                                   bytes(1)),
    "a shape of an int beside a list inside a shape": build({
        "a": {"dtype": "U8", "shape": 1, "data_offsets": [0, 1]},
        "b": {"dtype": "U8", "shape": [[1]], "data_offsets": [1, 2]}}, bytes(2)),
    "an offset that is a list": build({"a": {"dtype": "U8", "shape": [1], "data_offsets": [0, [1]]}},
                                      bytes(1)),
    "a negative size": build({"a": {"dtype": "U8", "shape": [-1, -1], "data_offsets": [0, 1]}},
                             bytes(1)),
    "a float size": build({"a": {"dtype": "U8", "shape": [1.0], "data_offsets": [0, 1]}}, bytes(1)),
    "a float offset": build({"a": {"dtype": "U8", "shape": [1], "data_offsets": [0.0, 1]}},
                            bytes(1)),
    "a size of 2**64 - 1": build({"a": {"dtype": "U8", "shape": [2**64 - 1, 0],
                                        "data_offsets": [0, 0]}}),
    "good": _VALID,
}


@pytest.mark.parametrize("case", TRICKY)
def test_the_fast_reader_agrees_with_the_exact_one(case: str, monkeypatch) -> None:
    data = TRICKY[case]
    assert _verdict(data) == _exact_verdict(data, monkeypatch)


def test_duplicates_the_fast_reader_could_miss_are_still_refused() -> None:
    for case in ("duplicate hidden by a colon in a name", "duplicate metadata key",
                 "duplicate dtype in an entry", "escaped name equal to another"):
        assert "twice" in str(_verdict(TRICKY[case])), case
    assert isinstance(_verdict(TRICKY["good"]), safetensors_header.SafetensorsHeader)
    body = _VALID[8 : 8 + int.from_bytes(_VALID[:8], "little")]
    assert safetensors_header._fast(body, len(_VALID)) is not None  # no detour
    assert list(_verdict(TRICKY["empty tensors sharing an offset"]).table) == ["z", "y", "a"]
    assert list(_verdict(TRICKY["written out of data order"]).table) == ["a", "b"]


@settings(max_examples=300, deadline=None)
@given(st.integers(0, len(_VALID) - 1), st.binary(min_size=1, max_size=8))
def test_both_readers_agree_on_mutated_files(at: int, patch: bytes) -> None:
    data = _VALID[:at] + patch + _VALID[at + len(patch):]
    saved = safetensors_header._orjson_loads
    fast = _verdict(data)
    safetensors_header._orjson_loads = None
    try:
        assert _verdict(data) == fast
    finally:
        safetensors_header._orjson_loads = saved


def test_metadata_that_is_not_text_names_the_key_and_does_not_say_download_again(
        tmp_path: Path) -> None:
    """A writer that stored a number in __metadata__ made a whole file: re-downloading cannot fix it."""
    head = json.dumps({"__metadata__": {"ss_network_dim": 4},
                       "w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
    path = tmp_path / "lora.safetensors"
    path.write_bytes(struct.pack("<Q", len(head)) + head + bytes(4))
    with pytest.raises(CorruptFileError) as caught:
        read_header(path)
    assert "'ss_network_dim' holds int" in str(caught.value)
    assert "download it again" not in str(caught.value) and "author" in str(caught.value)
