"""The SVD maths: the rank rules of kohya's resize_lora.py, the energy kept, and factor being
the best approximation of its rank."""

from __future__ import annotations

import pytest
import torch

from labkit.errors import LabkitError
from labkit.surgery.lowrank import check_rule, choose_rank, energy_kept, factor, rebuild

S = torch.tensor([8.0, 4.0, 2.0, 1.0])


@pytest.mark.parametrize(("rank", "dynamic", "ratio", "want"), [
    (2, None, None, 2),
    (None, None, None, 4),
    (9, None, None, 4),  # never more than the singular values
    (None, "sv_ratio", 3.0, 2),  # above 8/3: 8 and 4
    (None, "sv_ratio", 10.0, 4),
    (None, "sv_fro", 0.9, 2),  # |(8,)| / |S| = 0.868 < 0.9 <= |(8, 4)| / |S| = 0.970
    (None, "sv_fro", 0.8, 1),
    (None, "sv_cumulative", 0.5, 1),  # 8/15 = 0.53
    (None, "sv_cumulative", 0.8, 2),  # 12/15 = 0.8
    (1, "sv_ratio", 10.0, 1),  # the rank caps the dynamic pick
])
def test_rank_rules(rank, dynamic, ratio, want):
    assert choose_rank(S, rank, dynamic, ratio) == want


def test_energy_kept_is_the_share_of_the_squared_norm():
    assert energy_kept(S, 2) == pytest.approx(80 / 85)
    assert energy_kept(torch.zeros(3), 1) == 1.0


def test_factor_is_the_truncated_svd_and_its_error_is_the_dropped_values():
    g = torch.Generator().manual_seed(0)
    delta = torch.randn(24, 16, generator=g)
    f = factor(delta, 5)
    approx = rebuild(f)
    u, s, vh = torch.linalg.svd(delta, full_matrices=False)
    torch.testing.assert_close(approx, u[:, :5] @ torch.diag(s[:5]) @ vh[:5], rtol=1e-4, atol=1e-5)
    assert float((delta - approx).norm()) == pytest.approx(float(s[5:].square().sum().sqrt()),
                                                           rel=1e-4)
    assert f.rank == 5 and f.energy == pytest.approx(float(s[:5].square().sum() / s.square().sum()))


def test_conv_changes_factor_into_conv_shaped_loras():
    g = torch.Generator().manual_seed(1)
    delta = torch.randn(8, 6, 3, 3, generator=g)
    f = factor(delta, 54)  # the change has rank 8 at most: 8 are kept
    assert f.down.shape == (8, 6, 3, 3) and f.up.shape == (8, 8, 1, 1)
    torch.testing.assert_close(rebuild(f), delta, rtol=1e-4, atol=1e-5)


def test_bad_rules_are_refused():
    with pytest.raises(LabkitError, match="unknown dynamic method"):
        check_rule("sv_max", 0.5)
    with pytest.raises(LabkitError, match="needs a share"):
        check_rule("sv_fro", 1.5)
    with pytest.raises(LabkitError, match="ratio >= 1"):
        check_rule("sv_ratio", 0.5)
    check_rule(None, None)
