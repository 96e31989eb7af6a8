import pytest
import torch
from safetensors.torch import save_file

from labkit.errors import CorruptFileError
from labkit.processes import process_pool
from labkit.stats import moments as tensor_math
from labkit.stats import stream
from labkit.stats.moments import describe, describe_parts
from labkit.stats.stream import batches, describe_file, file_parts

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


def test_batches_keep_the_order_and_share_the_bytes():
    names, sizes = list("abcdefgh"), [10, 1, 1, 1, 10, 1, 1, 1]
    runs = batches(names, sizes, 2)
    assert [n for run in runs for n in run] == names
    assert runs == [list("abcd"), list("efgh")]  # a run closes once it holds its share
    assert batches(["a"], [0], 4) == [["a"]]


@pytest.fixture
def spread(monkeypatch):
    """Every file is large enough for worker processes; the pools opened are recorded."""
    pools = []
    monkeypatch.setattr(stream, "PROCESS_MIN_BYTES", 0)
    monkeypatch.setattr(stream, "process_pool", lambda jobs: pools.append(jobs) or process_pool(jobs))
    return pools


def test_worker_processes_give_the_numbers_one_process_gives(path, spread):
    names = list(TENSORS)
    sizes = [t.numel() * t.element_size() for t in TENSORS.values()]
    alone = describe_file(path, names, sizes, jobs=1, progress=False)
    together = describe_file(path, names, sizes, jobs=2, progress=False)
    assert spread == [2]
    assert list(together) != [] and set(together) == set(names)
    for name in names:
        assert together[name] == pytest.approx(alone[name], rel=0, abs=0, nan_ok=True), name


def test_a_small_file_is_described_in_this_process(path, monkeypatch):
    monkeypatch.setattr(stream, "process_pool", lambda jobs: pytest.fail("a pool for a small file"))
    got = describe_file(path, ["big"], [2000], jobs=2, progress=False)
    assert got["big"] == pytest.approx(describe(TENSORS["big"]))


def test_a_worker_s_error_reaches_the_caller_with_the_file_named(path, spread):
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size - 100)
    with pytest.raises(CorruptFileError, match="100 bytes missing") as caught:
        describe_file(path, ["ids", "big"], [616, 2000], jobs=2, progress=False)
    assert spread == [2] and caught.value.path == str(path)


def test_a_file_that_cannot_be_read_again_is_a_corrupt_file_not_an_os_error(path, monkeypatch):
    def gone(*_):
        raise FileNotFoundError(2, "No such file or directory")
        yield

    monkeypatch.setattr(stream, "file_parts", gone)
    with pytest.raises(CorruptFileError, match="its tensor data could not be read") as caught:
        describe_file(path, ["big"], [2000], jobs=1, progress=False)
    assert caught.value.path == str(path)
