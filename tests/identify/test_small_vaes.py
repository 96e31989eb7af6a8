"""identify on small VAEs, by content: TAESD (.pth halves, diffusers AutoencoderTiny) and A1111
VAE-approx, at both latent widths."""

from __future__ import annotations

import pytest
import torch

from labkit.identify import identify
from labkit.tensors import TensorInfo, info_of
from tests.fixtures.layout_files import load_layout
from tests.fixtures.wild_formats import TAESD_LATENT, taesd_diffusers, taesd_pth, vae_approx

WIDTH_EVIDENCE = {4: "4 latent channels: SD1/SD2/SDXL", 16: "16 latent channels: SD3/Flux"}


def table_of(sd: dict[str, torch.Tensor]) -> dict[str, TensorInfo]:
    return {k: info_of(v) for k, v in sd.items()}


def assert_small_vae(table: dict[str, TensorInfo], variant: str, latents: int) -> None:
    identity = identify(table)
    assert (identity.kind, identity.base, identity.variant, identity.base_source) == (
        "vae", "unknown", [variant], "none")
    assert any(line.startswith(WIDTH_EVIDENCE[latents]) for line in identity.evidence)
    assert f"{latents} latent channels" in identity.evidence[0]


@pytest.mark.parametrize("name", sorted(TAESD_LATENT))
@pytest.mark.parametrize("part", ["encoder", "decoder"])
def test_taesd_pth_halves_are_tiny_vaes(name, part):
    assert_small_vae(table_of(taesd_pth(name, part)), "tiny", TAESD_LATENT[name])


@pytest.mark.parametrize("name", sorted(TAESD_LATENT))
def test_taesd_diffusers_autoencoder_tiny_is_a_tiny_vae(name):
    sd, config = taesd_diffusers(name)
    assert config["latent_channels"] == TAESD_LATENT[name]
    assert_small_vae(table_of(sd), "tiny", TAESD_LATENT[name])


@pytest.mark.parametrize("latents", [4, 16])
def test_a1111_vae_approx_is_an_approx_vae(latents):
    assert_small_vae(table_of(vae_approx(latents)), "approx", latents)


def test_same_width_files_are_not_told_apart():
    """taesd and taesdxl (and taesd3 and taef1) have the same shapes: same identity."""
    assert identify(table_of(taesd_pth("taesd"))) == identify(table_of(taesd_pth("taesdxl")))
    assert identify(table_of(taesd_pth("taesd3"))) == identify(table_of(taesd_pth("taef1")))


def test_dtype_does_not_matter_but_shapes_do():
    table = table_of(taesd_pth("taesd", "decoder", dtype=torch.float32))
    assert identify(table).variant == ["tiny"]
    table["1.weight"] = TensorInfo((64, 8, 3, 3), "F32")  # the decoder's only latent-wide key
    identity = identify(table)
    assert (identity.kind, identity.base) == ("vae", "unknown")
    assert "8 latent channels: no known VAE" in identity.evidence
    table["5.conv.0.weight"] = TensorInfo((64, 32, 3, 3), "F32")  # not TAESD's Block(64, 64)
    assert identify(table).kind == "unknown"


def test_latent_width_must_agree_across_keys():
    table = table_of(taesd_diffusers("taesd")[0])
    table["decoder.layers.0.weight"] = TensorInfo((64, 16, 3, 3), "F16")  # encoder says 4
    assert identify(table).kind == "unknown"


def test_missing_or_extra_key_is_not_a_small_vae():
    table = table_of(vae_approx(4))
    assert identify({k: v for k, v in table.items() if k != "conv8.bias"}).kind == "unknown"
    assert identify({**table, "conv9.weight": TensorInfo((3, 3, 3, 3), "F32")}).kind == "unknown"


def test_a_small_conv_net_named_conv1_to_conv3_is_not_approx():
    g = torch.Generator().manual_seed(1)
    sd = {f"conv{n}.{p}": torch.randn(shape, generator=g)
          for n, (cout, cin) in enumerate([(8, 4), (16, 8), (3, 16)], 1)
          for p, shape in (("weight", (cout, cin, 3, 3)), ("bias", (cout,)))}
    identity = identify(table_of(sd))
    assert (identity.kind, identity.base, identity.variant) == ("unknown", "unknown", [])


def test_full_size_sd_vae_is_unchanged():
    identity = identify(load_layout("sd15_vae"))
    assert (identity.kind, identity.base, identity.variant, identity.base_source) == (
        "vae", "unknown", [], "none")
