"""The weight change of each module kind, DoRA's wrapped kinds included."""

import pytest
import torch
from safetensors.torch import save_file

import labkit as lk
from labkit.lora import anatomy
from tests.fixtures.layout_files import load_layout, lora_modules, to_loha, to_lokr, write_sparse

G = torch.Generator().manual_seed(0)
LOHA = {"hada_w1_a": torch.randn(6, 2, generator=G), "hada_w1_b": torch.randn(2, 5, generator=G),
        "hada_w2_a": torch.randn(6, 2, generator=G), "hada_w2_b": torch.randn(2, 5, generator=G),
        "alpha": torch.tensor(1.0)}
LOKR = {"lokr_w1": torch.randn(2, 1, generator=G), "lokr_w2_a": torch.randn(3, 2, generator=G),
        "lokr_w2_b": torch.randn(2, 5, generator=G), "alpha": torch.tensor(1.0)}
LORA = {"down": torch.randn(2, 5, generator=G), "up": torch.randn(6, 2, generator=G),
        "alpha": torch.tensor(1.0)}


@pytest.mark.parametrize(("kind", "tensors"), [("loha", LOHA), ("lokr", LOKR), ("lora", LORA)])
def test_a_doras_weight_change_is_that_of_the_kind_it_wraps(kind, tensors):
    dora = {**tensors, "dora_scale": torch.ones(6, 1)}
    assert anatomy.part_kind("dora", dora) == kind
    assert torch.equal(anatomy.delta("dora", dora), anatomy.delta(kind, tensors))
    assert anatomy.scale_of("dora", dora) == anatomy.scale_of(kind, tensors)
    assert torch.equal(anatomy.singular_values("dora", dora), anatomy.singular_values(kind, tensors))


@pytest.mark.parametrize("wrapped", [to_loha, lambda table: to_lokr(table, factored=False)])
def test_a_lycoris_dora_over_loha_or_lokr_reads_as_dora(tmp_path, wrapped):
    modules = dict(list(lora_modules(load_layout("sd15_lora_kohya")).items())[:12])
    kohya = {k: v for k, v in load_layout("sd15_lora_kohya").items() if k.rsplit(".", 2)[0] in modules}
    table = wrapped(kohya)
    for m, (_down, up) in modules.items():
        table[f"{m}.dora_scale"] = type(up)((up.shape[0], 1), "F16")
    frame = lk.lora.read(write_sparse(tmp_path / "dora.safetensors", table))
    assert set(frame["kind"]) == {"dora"}
    assert len(frame) == len(modules) == 12


def test_a_lokr_conv_with_a_tucker_core_rebuilds_its_kernel_and_reads(tmp_path):
    """LyCORIS LoKr conv (use_tucker): lokr_t2 [r, r, k, k], lokr_w2_a [r, out_k], lokr_w2_b [r, in_n]."""
    g = torch.Generator().manual_seed(2)
    t = {"lokr_w1": torch.randn(4, 4, generator=g), "lokr_t2": torch.randn(2, 2, 3, 3, generator=g),
         "lokr_w2_a": torch.randn(2, 80, generator=g), "lokr_w2_b": torch.randn(2, 80, generator=g),
         "alpha": torch.tensor(2.0)}
    w2 = torch.einsum("ijkl,ip,jr->prkl", t["lokr_t2"], t["lokr_w2_a"], t["lokr_w2_b"]).contiguous()
    by_hand = torch.kron(t["lokr_w1"][:, :, None, None], w2)
    assert torch.allclose(anatomy.delta("lokr", t), by_hand, atol=1e-4)
    module = "lora_unet_down_blocks_0_resnets_0_conv1"
    save_file({f"{module}.{k}": v for k, v in t.items()}, tmp_path / "lokr.safetensors")
    frame = lk.lora.read(tmp_path / "lokr.safetensors")
    assert len(frame) == 1 and frame["kind"].iloc[0] == "lokr"
