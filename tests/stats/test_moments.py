import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from labkit.stats import moments as tensor_math
from labkit.stats.moments import describe, describe_parts, difference

NAN, INF = float("nan"), float("inf")


def test_known_tensor_gives_hand_computed_stats():
    got = describe(torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
    assert got == pytest.approx({"mean": 2.5, "std": math.sqrt(1.25), "min": 1.0, "max": 4.0,
                                 "abs_max": 4.0, "l2_norm": math.sqrt(30), "zero_fraction": 0.0,
                                 "nan_count": 0, "inf_count": 0})


def test_abs_max_takes_the_larger_side_and_zeros_are_counted():
    got = describe(torch.tensor([-5.0, 0.0, 1.0, 0.0], dtype=torch.float16))
    assert (got["abs_max"], got["min"], got["zero_fraction"]) == (5.0, -5.0, 0.5)


def test_nan_and_inf_are_counted_and_the_rest_is_over_finite_values():
    got = describe(torch.tensor([0.0, NAN, INF, -INF, 2.0]))
    assert (got["nan_count"], got["inf_count"]) == (1, 2)
    assert got["zero_fraction"] == pytest.approx(0.2)
    assert (got["mean"], got["std"], got["min"], got["max"], got["l2_norm"]) == pytest.approx(
        (1.0, 1.0, 0.0, 2.0, 2.0))


def test_a_tensor_with_no_finite_value_has_nan_stats():
    got = describe(torch.tensor([NAN, INF]))
    assert (got["nan_count"], got["inf_count"]) == (1, 1)
    assert all(math.isnan(got[k]) for k in ("mean", "std", "min", "max", "abs_max", "l2_norm"))


def test_integers_are_exact():
    got = describe(torch.tensor([2**40, 2**40 + 1], dtype=torch.int64))
    assert (got["min"], got["max"], got["mean"]) == (2**40, 2**40 + 1, 2**40 + 0.5)


def test_chunks_combine_to_the_whole(monkeypatch):
    monkeypatch.setattr(tensor_math, "CHUNK", 7)
    got = describe(torch.arange(20, dtype=torch.float32))
    assert (got["mean"], got["std"]) == pytest.approx((9.5, math.sqrt(399 / 12)))
    assert got["zero_fraction"] == pytest.approx(1 / 20)


def test_a_large_mean_does_not_swallow_a_small_spread():
    t = torch.tensor([10_000.0, 10_002.0] * 5000)
    assert describe(t)["std"] == pytest.approx(1.0, rel=1e-4)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-1e4, 1e4, width=32), min_size=1, max_size=300),
       st.integers(1, 50))
def test_matches_a_float64_reference(values, chunk):
    tensor_math.CHUNK, saved = chunk, tensor_math.CHUNK
    try:
        got = describe(torch.tensor(values, dtype=torch.float32))
    finally:
        tensor_math.CHUNK = saved
    ref = np.array(values, dtype=np.float64)
    scale = max(np.abs(ref).max(), 1.0)
    assert got["mean"] == pytest.approx(ref.mean(), abs=1e-6 * scale)
    assert got["std"] == pytest.approx(ref.std(), abs=1e-3 * scale)
    assert got["l2_norm"] == pytest.approx(np.linalg.norm(ref), rel=1e-5, abs=1e-6)
    assert (got["min"], got["max"]) == (ref.min(), ref.max())


def test_difference_of_known_vectors():
    got = difference(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0]))
    assert got["status"] == "different"
    assert (got["max_abs_diff"], got["rel_diff"], got["cosine"]) == pytest.approx(
        (1.0, math.sqrt(2), 0.0))
    scaled = difference(torch.tensor([3.0, 4.0]), torch.tensor([6.0, 8.0]))
    assert (scaled["rel_diff"], scaled["cosine"], scaled["l2_a"]) == pytest.approx((1.0, 1.0, 5.0))


def test_an_fp16_copy_is_close_and_a_real_change_is_not():
    a = torch.randn(1000, generator=torch.Generator().manual_seed(0))
    assert difference(a, a.clone())["status"] == "equal"
    assert difference(a, a.half())["status"] == "close"
    changed = a.half().clone()
    changed[3] += 0.01
    assert difference(a, changed)["status"] == "different"


def test_integer_ids_equal_their_float_copy_and_nan_in_the_same_place_is_equal():
    ids = torch.arange(77)
    assert difference(ids, ids.float())["status"] == "equal"
    assert difference(torch.tensor([1.0, NAN]), torch.tensor([1.0, NAN]))["status"] == "equal"
    assert difference(torch.tensor([1.0, NAN]), torch.tensor([1.0, 2.0]))["status"] == "different"


def test_parts_converted_in_one_reused_buffer_give_exactly_the_numbers_of_fresh_copies():
    values = torch.randn(1000, generator=torch.Generator().manual_seed(2)).half()
    values[5], values[700] = NAN, 0.0
    parts = [values[:10], values[10:400], values[400:401], values[401:]]  # the buffer grows
    fresh = tensor_math.Moments()
    for part in parts:
        fresh.add(part.float())
    assert describe_parts(parts) == pytest.approx(fresh.result(), rel=0, abs=0, nan_ok=True)
    assert describe_parts(parts)["nan_count"] == 1
