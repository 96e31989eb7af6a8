"""The columnar tensor table answers as the dict of TensorInfo it stands for."""

from __future__ import annotations

import pytest

from labkit.tensors import TensorInfo, TensorTable, dtype_counts, n_params

NAMES = ["b.weight", "a.bias", "scalar"]
SHAPES = [[4, 3], [4], []]
DTYPES = ["F16", "F32", "I64"]


@pytest.fixture
def columns() -> TensorTable:
    return TensorTable(list(NAMES), SHAPES, DTYPES)


def as_dict() -> dict[str, TensorInfo]:
    return {n: TensorInfo(tuple(s), d) for n, s, d in zip(NAMES, SHAPES, DTYPES, strict=True)}


def test_a_table_of_columns_equals_its_dict(columns: TensorTable) -> None:
    assert columns == as_dict()
    assert list(columns) == NAMES  # file order, not sorted
    assert list(columns.items()) == list(as_dict().items())
    assert columns["b.weight"] == TensorInfo((4, 3), "F16")
    assert isinstance(columns["b.weight"].shape, tuple)  # a list column still gives a tuple


def test_membership_and_missing_names(columns: TensorTable) -> None:
    assert "a.bias" in columns and "c" not in columns and 3 not in columns
    assert columns.get("c") is None
    with pytest.raises(KeyError):
        columns["c"]


@pytest.mark.parametrize("table", [TensorTable(list(NAMES), SHAPES, DTYPES), as_dict()])
def test_counts_read_the_columns_or_the_values_alike(table) -> None:
    assert n_params(table) == 12 + 4 + 1
    assert dtype_counts(table) == {"F16": 1, "F32": 1, "I64": 1}


def test_given_element_counts_are_used_as_given() -> None:
    table = TensorTable(["x"], [[2, 5]], ["F32"], numels=[10])
    assert n_params(table) == 10 and table.numels == [10]
    assert n_params(TensorTable([], [], [])) == 0 and dtype_counts(TensorTable([], [], [])) == {}


def test_the_repr_shows_the_first_entries_and_the_count() -> None:
    table = TensorTable([f"k{i}" for i in range(5)], [[2]] * 5, ["F32"] * 5)
    text = repr(table)
    assert text.startswith("TensorTable(5 tensors: {'k0': TensorInfo(shape=(2,), dtype='F32')")
    assert "'k2'" in text and "'k3'" not in text and text.endswith("... 2 more})")
    assert repr(TensorTable(["a"], [[1]], ["U8"])).endswith("dtype='U8')})")
