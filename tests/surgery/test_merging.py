"""merge on the demo SD1 checkpoint: the formulas per tensor, per-block alphas, integers, EMA,
inpainting channels, refusals, the recipe, and sources left as they were."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from labkit import zoo
from labkit.errors import IncompatibleModelError, LabkitError
from labkit.identify.blocks import block_labels
from labkit.surgery import merge, merging, recipe_of
from labkit.surgery.merging import key_action, merged_pieces, merged_tensor
from labkit.tensors import TensorInfo
from tests.surgery import samples as S


@pytest.fixture(scope="module")
def abc(tmp_path_factory):
    folder = tmp_path_factory.mktemp("merge")
    a, b, c = S.sd1_pair(folder)
    # B's position_ids differ, so that interpolating them would show
    b_tensors = load_file(str(b)) | {S.POSITION_IDS: torch.arange(77).flip(0)[None].clone()}
    S.save(b_tensors, b)
    return a, b, c


def loaded(*paths):
    return [load_file(str(p)) for p in paths]


def test_weighted_sum_is_the_formula_per_tensor_and_integers_come_from_a(abc, tmp_path):
    a, b, _ = abc
    out = tmp_path / "m.safetensors"
    report = merge(a, b, out=out, alpha=0.3, progress=False)
    ta, tb, tm = loaded(a, b, out)
    assert list(tm) == list(ta)
    for name, t in ta.items():
        if t.is_floating_point():
            torch.testing.assert_close(tm[name], ta[name] * 0.7 + tb[name] * 0.3, rtol=1e-6, atol=1e-7)
    assert torch.equal(tm[S.POSITION_IDS], ta[S.POSITION_IDS])
    assert report.attrs["counts"] == {"merged": len(ta) - 1, "integer": 1}


def test_sdxl_style_checkpoints_merge_with_their_two_text_encoders(tmp_path):
    xl = {k: v.float() if v.is_floating_point() else v
          for k, v in load_file(str(zoo.path("demo_sdxl_single"))).items()}
    a, b = S.save(xl, tmp_path / "xa.safetensors"), S.save(S.tuned(xl, 6), tmp_path / "xb.safetensors")
    out = tmp_path / "xm.safetensors"
    report = merge(a, b, out=out, alpha=0.6, blocks="BASE=0", progress=False)
    ta, tb, tm = loaded(a, b, out)
    second = [k for k in ta if k.startswith("conditioner.embedders.1.") and ta[k].is_floating_point()]
    unet = [k for k in ta if k.startswith("model.diffusion_model.")]
    assert second and all(torch.equal(tm[k], ta[k]) for k in second)  # BASE: both encoders
    for k in unet:
        torch.testing.assert_close(tm[k], ta[k] * 0.4 + tb[k] * 0.6, rtol=1e-6, atol=1e-7)
    assert set(report.loc[report["name"].isin(second), "block"]) == {"BASE"}


def test_add_difference_is_a_plus_b_minus_c_times_x(abc, tmp_path):
    a, b, c = abc
    out = tmp_path / "d.safetensors"
    merge(a, b, c, out=out, mode="add_difference", alpha=0.8, progress=False)
    ta, tb, tc, tm = loaded(a, b, c, out)
    for name, t in ta.items():
        if t.is_floating_point():
            torch.testing.assert_close(tm[name], ta[name] + (tb[name] - tc[name]) * 0.8,
                                       rtol=0, atol=1e-6)
    assert not torch.equal(tm[S.TEXT_Q], ta[S.TEXT_Q])


def test_block_alphas_pick_each_blocks_share_of_b(abc, tmp_path):
    a, b, _ = abc
    out = tmp_path / "blocks.safetensors"
    report = merge(a, b, out=out, alpha=0.5, blocks="BASE=0,OUT*=1", progress=False)
    ta, tb, tm = loaded(a, b, out)
    blocks = dict(zip(ta, block_labels(ta), strict=True))
    assert torch.equal(tm[S.TEXT_Q], ta[S.TEXT_Q])  # BASE: all A
    assert torch.equal(tm[S.OUT_KEY], tb[S.OUT_KEY])  # OUT05: all B
    torch.testing.assert_close(tm[S.VAE_KEY], (ta[S.VAE_KEY] + tb[S.VAE_KEY]) * 0.5)
    rows = report.set_index("name")
    assert {rows.loc[n, "alpha"] for n, blk in blocks.items() if blk.startswith("OUT")} == {1.0}


def test_half_inputs_are_merged_with_float32_arithmetic_and_written_in_as_dtype(tmp_path):
    a16 = S.demo_tensors(torch.float16)
    b16 = S.tuned(a16, 3)
    b32 = S.tuned(S.demo_tensors(), 3)
    a, b = S.save(a16, tmp_path / "a16.safetensors"), S.save(b16, tmp_path / "b16.safetensors")
    mixed = S.save(b32, tmp_path / "b32.safetensors")
    for other, b_tensors in ((b, b16), (mixed, b32)):
        out = tmp_path / f"m_{other.stem}.safetensors"
        merge(a, other, out=out, alpha=0.3, progress=False)
        tm = load_file(str(out))
        err32, err16 = 0.0, 0.0
        for name, t in a16.items():
            if not t.is_floating_point():
                continue
            assert tm[name].dtype == torch.float16
            exact = t.float() * 0.7 + b_tensors[name].float() * 0.3
            # float32 arithmetic rounded once: within one fp16 step of the exact value
            torch.testing.assert_close(tm[name].float(), exact, rtol=1e-3, atol=1e-5)
            err32 += float((tm[name].float() - exact).abs().sum())
            err16 += float(((t * 0.7 + b_tensors[name].half() * 0.3).float() - exact).abs().sum())
        assert err32 < 0.9 * err16  # fp16 arithmetic (A1111's) rounds at every step: further off


@pytest.mark.parametrize("piece", [7, 64, 1 << 20])
def test_pieces_of_any_size_give_the_bits_of_the_formula_on_whole_tensors(monkeypatch, piece):
    """merge computes a tensor in pieces of PIECE elements, the formulas in place on reused
    float32 copies: every bit is that of torch.lerp (one dtype) or of the formula written out
    on whole float32 tensors (mixed dtypes, add_difference), rounded once into A's dtype."""
    monkeypatch.setattr(merging, "PIECE", piece)
    g = torch.Generator().manual_seed(0)
    for dtype in (torch.float16, torch.bfloat16, torch.float32):
        a, b, c = (torch.randn(1001, generator=g).to(dtype) for _ in range(3))
        for x in (0.3, 0.77):
            cases = [
                (torch.lerp(a, b, x), [a, b], "weighted"),
                ((a.float() * (1 - x) + b.double().float() * x).to(dtype), [a, b.double()],
                 "weighted"),
                ((a.float() + (b.float() - c.float()) * x).to(dtype), [a, b, c], "add_difference"),
            ]
            for whole, tensors, mode in cases:
                got = torch.cat([p.clone() for p in merged_pieces(tensors, mode, x)])
                assert torch.equal(got, whole), (dtype, x, mode)
                shaped = [t.reshape(7, 11, 13) for t in tensors]
                assert torch.equal(merged_tensor("merged", shaped, mode, x), whole.reshape(7, 11, 13))


def test_merge_leaves_torch_threads_as_it_found_them(abc, tmp_path):
    """The maths runs on one thread inside merge; the caller's setting comes back, also after
    a refusal."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        merge(abc[0], abc[1], out=tmp_path / "m.safetensors", progress=False)
        assert torch.get_num_threads() == 2
        with pytest.raises(IncompatibleModelError):
            merge(abc[0], zoo.path("demo_lora_striped"), out=tmp_path / "x.safetensors",
                  progress=False)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_models_of_two_families_are_refused_naming_both_files(abc, tmp_path):
    xl = zoo.path("demo_sdxl_single")
    with pytest.raises(IncompatibleModelError) as err:
        merge(abc[0], xl, out=tmp_path / "x.safetensors", progress=False)
    assert str(abc[0]) in str(err.value) and str(xl) in str(err.value)
    assert not (tmp_path / "x.safetensors").exists()


def test_a_lora_given_as_a_model_is_refused(abc, tmp_path):
    with pytest.raises(IncompatibleModelError, match="lora, not a model"):
        merge(abc[0], zoo.path("demo_lora_striped"), out=tmp_path / "x.safetensors",
              progress=False)


def test_an_inpainting_a_keeps_its_extra_channels_and_merges_the_shared_ones(abc, tmp_path):
    a_tensors = S.inpainting(load_file(str(abc[0])))
    a = S.save(a_tensors, tmp_path / "inpaint.safetensors")
    out = tmp_path / "m.safetensors"
    report = merge(a, abc[1], out=out, alpha=0.4, progress=False)
    tb, tm = loaded(abc[1], out)
    conv = tm[S.CONV_IN]
    assert conv.shape[1] == 9
    torch.testing.assert_close(conv[:, :4], a_tensors[S.CONV_IN][:, :4] * 0.6 + tb[S.CONV_IN] * 0.4)
    assert torch.equal(conv[:, 4:], a_tensors[S.CONV_IN][:, 4:])
    assert report.set_index("name").loc[S.CONV_IN, "action"] == "partial"
    with pytest.raises(IncompatibleModelError, match="only as model A"):
        merge(abc[1], a, out=tmp_path / "swapped.safetensors", progress=False)


def test_ema_copies_are_dropped_unless_kept(abc, tmp_path):
    a = S.save(S.with_ema(load_file(str(abc[0]))), tmp_path / "ema_a.safetensors")
    b = S.save(S.with_ema(load_file(str(abc[1]))), tmp_path / "ema_b.safetensors")
    dropped = merge(a, b, out=tmp_path / "drop.safetensors", progress=False)
    assert S.EMA_KEY not in load_file(str(tmp_path / "drop.safetensors"))
    assert dropped.attrs["counts"]["ema_dropped"] == 1
    merge(a, b, out=tmp_path / "keep.safetensors", ema="keep", progress=False)
    kept = load_file(str(tmp_path / "keep.safetensors"))[S.EMA_KEY]
    torch.testing.assert_close(kept, (load_file(str(a))[S.EMA_KEY] + load_file(str(b))[S.EMA_KEY]) / 2)


def test_keys_in_one_model_only_are_reported(abc, tmp_path):
    a = S.save(load_file(str(abc[0])) | {"extra_in_a": torch.ones(3)}, tmp_path / "xa.safetensors")
    b = S.save(load_file(str(abc[1])) | {"extra_in_b": torch.ones(3)}, tmp_path / "xb.safetensors")
    report = merge(a, b, out=tmp_path / "m.safetensors", progress=False).set_index("name")
    out = load_file(str(tmp_path / "m.safetensors"))
    assert report.loc["extra_in_a", "action"] == "only_in_a" and "extra_in_a" in out
    assert report.loc["extra_in_b", "action"] == "only_in_b" and "extra_in_b" not in out


def test_key_action_table():
    f, i = TensorInfo((4, 9, 3, 3), "F16"), TensorInfo((1, 77), "I64")
    assert key_action("k", f, [f], "drop") == "merged"
    assert key_action("k", i, [i], "drop") == "integer"
    assert key_action("k", f, [None], "drop") == "only_in_a"
    assert key_action("k", f, [TensorInfo((4, 4, 3, 3), "F16")], "drop") == "partial"
    assert key_action("k", f, [TensorInfo((5, 9, 3, 3), "F16")], "drop") == "shape_mismatch"
    assert key_action("model_ema.x", f, [f], "drop") == "ema_dropped"
    assert key_action("model_ema.x", f, [f], "keep") == "merged"


def test_the_recipe_names_the_sources_hashes_and_keeps_lineage(abc, tmp_path):
    a, b, c = abc
    first = tmp_path / "first.safetensors"
    merge(a, b, out=first, alpha=0.25, progress=False)
    second = tmp_path / "second.safetensors"
    merge(first, c, out=second, alpha=0.5, blocks="BASE=0", progress=False)
    with safe_open(str(second), "pt") as f:
        meta = f.metadata()
    made = recipe_of(meta)
    assert made["operation"] == "merge" and made["parameters"]["blocks"] == "BASE=0"
    assert meta["modelspec.sai_model_spec"] and meta["modelspec.title"] == "second"
    parent, other = made["sources"]
    assert parent["sha256"] == hashlib.sha256(first.read_bytes()).hexdigest().upper()
    assert other["sha256"] == hashlib.sha256(c.read_bytes()).hexdigest().upper()
    grand = parent["recipe"]
    assert grand["parameters"]["alpha"] == 0.25
    assert [s["name"] for s in grand["sources"]] == ["a.safetensors", "b.safetensors"]
    assert json.loads(meta["labkit.recipe"]) == made


def test_sources_are_never_modified_and_outputs_are_refused_when_they_exist(abc, tmp_path):
    a, b, _ = abc
    before = [hashlib.sha256(p.read_bytes()).digest() for p in (a, b)]
    out = tmp_path / "m.safetensors"
    merge(a, b, out=out, progress=False)
    with pytest.raises(LabkitError, match="already exists"):
        merge(a, b, out=out, progress=False)
    with pytest.raises(LabkitError, match="one of the sources"):
        merge(a, b, out=a, overwrite=True, progress=False)
    assert [hashlib.sha256(p.read_bytes()).digest() for p in (a, b)] == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]  # no temp file left


def test_bad_modes_and_missing_c_are_refused(abc, tmp_path):
    a, b, c = abc
    with pytest.raises(LabkitError, match="unknown merge mode"):
        merge(a, b, out=tmp_path / "x.safetensors", mode="sum", progress=False)
    with pytest.raises(LabkitError, match="takes 3 models"):
        merge(a, b, out=tmp_path / "x.safetensors", mode="add_difference", progress=False)
    with pytest.raises(LabkitError, match="only by mode add_difference"):
        merge(a, b, c, out=tmp_path / "x.safetensors", progress=False)


MEASURE = """
import re, sys
from labkit.surgery import merge
from labkit.surgery.tensorio import readers

def status(field):
    return int(re.search(rf"{field}:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1)) * 1024

with readers(sys.argv[1], sys.argv[2]):
    pass  # headers, identities: what a merge does before its first tensor
open("/proc/self/clear_refs", "w").write("5")  # the peak (VmHWM) starts again from now
before = status("VmRSS")
merge(sys.argv[1], sys.argv[2], out=sys.argv[3], progress=False)
print(status("VmHWM") - before)
"""


def test_merge_holds_a_few_tensors_never_a_model(abc, tmp_path):
    """64 1 MB tensors beside the demo's: a merge that loaded both models would grow by over
    150 MB; streaming holds the hashing's read buffers and the largest tensor (6 MB) a few
    times (each source's read and the output)."""
    import subprocess
    import sys

    extra = {f"model.diffusion_model.extra.{i}.weight": torch.full((512, 512), float(i))
             for i in range(64)}
    a = S.save(load_file(str(abc[0])) | extra, tmp_path / "big_a.safetensors")
    b = S.save(load_file(str(abc[1])) | extra, tmp_path / "big_b.safetensors")
    both = a.stat().st_size + b.stat().st_size
    done = subprocess.run([sys.executable, "-c", MEASURE, str(a), str(b), str(tmp_path / "m.safetensors")],
                          capture_output=True, text=True, check=True)
    grew = int(done.stdout.split()[-1])
    assert both > 150 * 2**20 and 0 < grew < 64 * 2**20, grew
