"""Loading checkpoints into pipelines: every form, offline, memory placement, errors."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

from labkit.convert import forms as convert
from labkit.errors import IncompatibleModelError, LabkitError, NotAModelError, UnsafeFileError
from labkit.generate import pipelines, sampling
from labkit.generate.device import DeviceChoice
from tests.fixtures.hostile_corpus import entries as hostile_entries
from tests.fixtures.tiny_models import save_tiny

GIB = 1024**3
FAST = {"steps": 3, "size": 32, "progress": False, "seed": 5}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # torch's worker threads fight on a busy 2-core machine; tiny models run 20x faster alone.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def forms(tmp_path_factory) -> dict[str, dict[str, Path]]:
    """Tiny SD1- and SDXL-style models as a diffusers folder, a .safetensors and a .ckpt."""
    root = tmp_path_factory.mktemp("forms")
    out = {}
    for family in ("sd1", "sdxl"):
        folder = save_tiny(root / family, family)
        out[family] = {
            "folder": folder,
            "safetensors": convert.folder_to_single_file(folder, root / f"{family}.safetensors"),
            "ckpt": convert.folder_to_single_file(folder, root / f"{family}.ckpt"),
        }
    return out


def _image(pipe) -> np.ndarray:
    return np.asarray(sampling.generate(pipe, "a red square", **FAST)[0], dtype=np.float64)


@pytest.mark.parametrize("family,cls", [("sd1", StableDiffusionPipeline),
                                        ("sdxl", StableDiffusionXLPipeline)])
def test_every_form_gives_the_same_image(forms, family, cls):
    f = forms[family]
    folder = pipelines.load_pipeline(f["folder"], progress=False)
    assert type(folder) is cls
    reference = _image(folder)
    for form in ("safetensors", "ckpt"):
        pipe = pipelines.load_pipeline(f[form], config=f["folder"], progress=False)
        assert type(pipe) is cls
        assert np.abs(_image(pipe) - reference).mean() < 1.0, form


def test_the_unet_comes_from_the_ema_copy_unless_asked_otherwise(forms, tmp_path):
    f = forms["sd1"]
    other = save_tiny(tmp_path / "ema", "sd1", seed=1)
    ckpt = convert.folder_to_single_file(f["folder"], tmp_path / "with_ema.ckpt", include_ema=other)
    raw = pipelines.load_pipeline(f["folder"], progress=False)
    mixed = pipelines.load_pipeline(f["folder"], progress=False)
    mixed.unet = pipelines.load_pipeline(other, progress=False).unet
    ema = pipelines.load_pipeline(ckpt, config=f["folder"], progress=False)
    no_ema = pipelines.load_pipeline(ckpt, config=f["folder"], progress=False, ema=False)
    assert np.abs(_image(ema) - _image(mixed)).mean() < 1.0
    assert np.abs(_image(no_ema) - _image(raw)).mean() < 1.0
    assert np.abs(_image(ema) - _image(raw)).mean() > 1.0


def test_the_class_comes_from_the_tensors_not_the_name(forms, tmp_path):
    misleading = tmp_path / "sd15-pruned-emaonly.safetensors"
    misleading.write_bytes(forms["sdxl"]["safetensors"].read_bytes())
    pipe = pipelines.load_pipeline(misleading, config=forms["sdxl"]["folder"], progress=False)
    assert type(pipe) is StableDiffusionXLPipeline


def test_loading_never_touches_the_network(forms, monkeypatch):
    def refuse(*_args, **_kwargs):
        raise AssertionError("a network connection was attempted")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    for family, f in forms.items():
        for form, path in f.items():
            config = None if form == "folder" else f["folder"]
            pipe = pipelines.load_pipeline(path, config=config, progress=False)
            assert sampling.generate(pipe, "x", **FAST), (family, form)


def test_the_reader_follows_the_content_not_the_suffix(forms, tmp_path):
    f = forms["sd1"]
    reference = _image(pipelines.load_pipeline(f["folder"], progress=False))
    for src, name in ((f["safetensors"], "really_safetensors.ckpt"),
                      (f["ckpt"], "really_pickle.safetensors")):
        renamed = tmp_path / name
        renamed.write_bytes(src.read_bytes())
        pipe = pipelines.load_pipeline(renamed, config=f["folder"], progress=False)
        assert np.abs(_image(pipe) - reference).mean() < 1.0, name


def test_a_pickle_is_scanned_before_anything_runs(tmp_path):
    canary = tmp_path / "canary"
    evil = next(e for e in hostile_entries(str(canary)) if e.name == "zip_data_pkl.ckpt")
    path = tmp_path / "model.ckpt"
    path.write_bytes(evil.data)
    with pytest.raises(UnsafeFileError):
        pipelines.load_pipeline(path, progress=False)
    assert not canary.exists()


def test_missing_path_is_not_a_model(tmp_path):
    with pytest.raises(NotAModelError):
        pipelines.load_pipeline(tmp_path / "nothing.safetensors", progress=False)


def test_a_part_alone_is_not_a_checkpoint(forms):
    with pytest.raises(IncompatibleModelError, match="not a full checkpoint"):
        pipelines.load_pipeline(forms["sd1"]["folder"] / "unet", progress=False)


def test_a_config_that_does_not_fit_says_so_in_plain_words(forms):
    with pytest.raises(IncompatibleModelError, match="could not build"):
        pipelines.load_pipeline(forms["sd1"]["safetensors"], config=forms["sdxl"]["folder"],
                                progress=False)


def test_an_unknown_prediction_type_is_refused(forms):
    with pytest.raises(LabkitError, match="prediction"):
        pipelines.load_pipeline(forms["sd1"]["safetensors"], prediction="x0", progress=False)


def test_the_device_choice_is_said(forms, capsys):
    pipelines.load_pipeline(forms["sd1"]["folder"])
    out = capsys.readouterr().out
    assert "Device: cpu" in out and "no CUDA GPU" in out
    assert "checkpoint of base demo_sd1 -> StableDiffusionPipeline" in out


def test_progress_false_keeps_the_libraries_bars_quiet_and_restores_them(forms, capsys):
    import diffusers.utils.logging as diffusers_logging

    pipelines.load_pipeline(forms["sd1"]["folder"], progress=False)
    captured = capsys.readouterr()
    assert "Loading" not in captured.err + captured.out
    assert diffusers_logging.is_progress_bar_enabled()


def test_cached_pipeline_loads_once(forms, monkeypatch):
    calls = []
    real = pipelines.load_pipeline
    monkeypatch.setattr(pipelines, "load_pipeline", lambda *a, **k: calls.append(a) or real(*a, **k))
    a = pipelines.cached_pipeline(forms["sd1"]["folder"], progress=False)
    b = pipelines.cached_pipeline(forms["sd1"]["folder"], progress=False)
    assert a is b and len(calls) == 1


@pytest.mark.parametrize("free,model,mode", [
    (24 * GIB, 5 * GIB, "gpu"),
    (7 * GIB, 5 * GIB, "attention_slicing"),
    (4 * GIB, 5 * GIB, "cpu_offload"),
    (int(5 * GIB * pipelines.GPU_HEADROOM), 5 * GIB, "gpu"),
])
def test_memory_plan_from_free_memory(free, model, mode):
    plan = pipelines.memory_plan(free, model)
    assert plan.mode == mode
    assert "GiB free" in plan.reason


class _FakePipe:
    """Records the placement calls place() makes."""

    def __init__(self):
        self.calls = []
        self.components = {"unet": torch.nn.Linear(1000, 1000)}  # 4 MB of weights

    def to(self, device):
        self.calls.append(("to", str(device)))

    def enable_model_cpu_offload(self, device):
        self.calls.append(("offload", str(device)))

    def enable_attention_slicing(self):
        self.calls.append(("slicing",))


@pytest.mark.parametrize("free,calls", [
    (GIB, [("to", "cuda")]),
    (int(4.5e6), [("to", "cuda"), ("slicing",)]),
    (10, [("offload", "cuda")]),
])
def test_place_follows_the_plan_on_a_gpu(monkeypatch, free, calls):
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (free, 80 * GIB))
    pipe = _FakePipe()
    pipelines.place(pipe, DeviceChoice(torch.device("cuda"), torch.float16, "test"), progress=False)
    assert pipe.calls == calls


def test_place_on_cpu_moves_the_pipeline():
    pipe = _FakePipe()
    assert pipelines.place(pipe, DeviceChoice(torch.device("cpu"), torch.float32, "test")) == "cpu"
    assert pipe.calls == [("to", "cpu")]


# ---- the demo world's own files: no config given, the demo's folder is found in its manifest

DEMO_FORMS = ("demo_sd1", "demo_sd1_single", "demo_sd1_ckpt")


@pytest.fixture(scope="module")
def demo_images() -> dict[str, np.ndarray]:
    from labkit import zoo
    return {name: np.asarray(sampling.generate(
        pipelines.load_pipeline(zoo.path(name), progress=False), "a red circle", seed=1,
        steps=10, progress=False)[0], dtype=np.float64) for name in DEMO_FORMS}


def test_every_demo_form_draws_the_same_picture(demo_images):
    reference = demo_images["demo_sd1"]
    assert reference.shape == (64, 64, 3)
    for name in DEMO_FORMS[1:]:
        # the single files are fp16 copies of the fp32 folder: a little rounding, no more
        assert np.abs(demo_images[name] - reference).mean() < 3.0, name


def test_the_demo_single_file_takes_its_config_from_the_demo_folder():
    from labkit import zoo
    assert pipelines.demo_config("demo_sd1") == zoo.path("demo_sd1")


def test_every_demo_form_loads_with_the_network_blocked(monkeypatch):
    from labkit import zoo
    def refuse(*_args, **_kwargs):
        raise AssertionError("a network connection was attempted")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    for name in DEMO_FORMS:
        assert type(pipelines.load_pipeline(zoo.path(name), progress=False)).__name__ == \
            "StableDiffusionPipeline"


def test_the_demo_sdxl_loads_from_its_folder_and_its_single_file_and_draws():
    from labkit import zoo
    assert pipelines.demo_config("demo_sdxl") == zoo.path("demo_sdxl")
    images = {}
    for name in ("demo_sdxl", "demo_sdxl_single"):
        pipe = pipelines.load_pipeline(zoo.path(name), device="cpu", progress=False)
        assert type(pipe) is StableDiffusionXLPipeline, name
        assert pipe.text_encoder_2 is not None and pipe.unet.config.cross_attention_dim == 80
        images[name] = np.asarray(sampling.generate(pipe, "a red circle", seed=1, steps=4,
                                                     size=64, progress=False)[0],
                                  dtype=np.float64)
    assert images["demo_sdxl"].shape == (64, 64, 3) and images["demo_sdxl"].std() > 1.0
    # both are fp16 copies of the same weights: the single file takes the folder's config
    assert np.abs(images["demo_sdxl_single"] - images["demo_sdxl"]).mean() < 1.0


def test_the_torchvision_notice_is_filtered_and_other_transformers_warnings_are_not(caplog):
    import logging

    import labkit.generate.pipelines  # noqa: F401  (installs the filter)

    logger = logging.getLogger("transformers.utils.import_utils")
    with caplog.at_level(logging.WARNING, logger=logger.name):
        logger.warning("`CLIPImageProcessor` requires torchvision (not installed); falling back")
        logger.warning("something else worth seeing")
    assert [r.getMessage() for r in caplog.records] == ["something else worth seeing"]
