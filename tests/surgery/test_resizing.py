"""resize-lora equals the truncated SVD of each module's up @ down; merge-lora is the weighted sum
of the LoRAs' changes (exact by concatenated ranks, checked against baking both)."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from labkit import zoo
from labkit.errors import IncompatibleModelError, LabkitError
from labkit.lora import anatomy, open_adapter
from labkit.surgery import bake, merge_lora, resize_lora
from tests.surgery import samples as S

LORA = "demo_lora_striped"


def changes(path) -> dict[str, torch.Tensor]:
    """"component.module" -> the module's change at strength 1, flattened to a matrix."""
    adapter = open_adapter(path)
    return {f"{t.component}.{t.module}": anatomy.delta(m.kind, adapter.tensors(m)).flatten(1)
            for m, t in adapter.matched}


def truncated(delta: torch.Tensor, rank: int) -> torch.Tensor:
    u, s, vh = torch.linalg.svd(delta, full_matrices=False)
    return u[:, :rank] @ torch.diag(s[:rank]) @ vh[:rank]


def test_resize_equals_the_truncated_svd_per_module_within_one_percent(tmp_path):
    out = tmp_path / "r4.safetensors"
    report = resize_lora(zoo.path(LORA), out=out, rank=4, progress=False)
    before, after = changes(zoo.path(LORA)), changes(out)
    assert set(after) == set(before) and len(report) == len(before)
    for name, delta in before.items():
        want = truncated(delta, 4)
        assert float((after[name] - want).norm()) <= 0.01 * float(want.norm()), name
    assert report["rank"].eq(4).all() and report["energy_kept"].lt(1).any()
    assert set(load_file(str(out))) == {k for k in load_file(str(zoo.path(LORA)))}


def test_dynamic_sv_fro_keeps_the_asked_share_of_each_modules_norm(tmp_path):
    report = resize_lora(zoo.path(LORA), out=tmp_path / "d.safetensors", dynamic="sv_fro",
                         ratio=0.9, progress=False)
    assert (report["energy_kept"] >= 0.81 - 1e-6).all()
    for row in report.itertuples():  # and the rank is the least that does
        s = torch.tensor(row.singular_values)
        if row.rank > 1:
            assert float(s[: row.rank - 1].square().sum() / s.square().sum()) < 0.81
    assert report["rank"].nunique() > 1


def test_a_loha_resizes_into_a_plain_lora_of_its_change(tmp_path):
    out = tmp_path / "loha_as_lora.safetensors"
    resize_lora(zoo.path("demo_loha_outlined"), out=out, rank=64, progress=False)
    assert {m.kind for m, _ in open_adapter(out).matched} == {"lora"}
    before, after = changes(zoo.path("demo_loha_outlined")), changes(out)
    for name, delta in before.items():
        torch.testing.assert_close(after[name], delta, rtol=1e-3, atol=1e-5)


def test_merge_lora_by_concatenation_is_baking_both(tmp_path):
    ckpt = S.save(S.demo_tensors(), tmp_path / "a.safetensors")
    first = zoo.path(LORA)
    second = tmp_path / "r2.safetensors"
    resize_lora(first, out=second, rank=2, progress=False)
    merged = tmp_path / "merged.safetensors"
    report = merge_lora([first, second], weights=[0.5, -0.25], out=merged, progress=False)
    assert report.attrs["exact"] and report["rank"].eq(8 + 2).all()
    bake(ckpt, first, out=tmp_path / "one.safetensors", strength=0.5, progress=False)
    bake(tmp_path / "one.safetensors", second, out=tmp_path / "both.safetensors",
         strength=-0.25, progress=False)
    bake(ckpt, merged, out=tmp_path / "once.safetensors", strength=1.0, progress=False)
    both, once = load_file(str(tmp_path / "both.safetensors")), load_file(str(tmp_path / "once.safetensors"))
    for key, t in both.items():
        torch.testing.assert_close(once[key], t, rtol=1e-5, atol=1e-6)


def test_merge_lora_to_a_rank_reports_the_energy_it_keeps(tmp_path):
    out = tmp_path / "m4.safetensors"
    report = merge_lora([zoo.path(LORA), zoo.path(LORA)], out=out, rank=4, progress=False)
    assert not report.attrs["exact"] and report["rank"].eq(4).all()
    before, after = changes(zoo.path(LORA)), changes(out)
    for name, delta in before.items():
        want = truncated(2 * delta, 4)
        assert float((after[name] - want).norm()) <= 0.01 * float(want.norm()), name


def test_merge_lora_refusals(tmp_path):
    out = tmp_path / "x.safetensors"
    with pytest.raises(LabkitError, match="one weight each"):
        merge_lora([zoo.path(LORA), zoo.path(LORA)], weights=[1.0], out=out, progress=False)
    with pytest.raises(LabkitError, match="concatenating ranks"):
        merge_lora([zoo.path(LORA), zoo.path("demo_loha_outlined")], out=out, progress=False)
    xl = zoo.path("demo_lora_striped_xl")
    with pytest.raises(IncompatibleModelError) as err:
        merge_lora([zoo.path(LORA), xl], out=out, progress=False)
    assert str(xl) in str(err.value) and str(zoo.path(LORA)) in str(err.value)
    with pytest.raises(LabkitError, match="needs a rank"):
        resize_lora(zoo.path(LORA), out=out, progress=False)
    assert not out.exists()
