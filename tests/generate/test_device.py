import pytest
import torch

from labkit.errors import LabkitError
from labkit.generate.device import pick_device


def test_auto_picks_cpu_fp32_without_a_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    choice = pick_device()
    assert choice.device.type == "cpu"
    assert choice.dtype == torch.float32
    assert "no CUDA GPU" in choice.reason


def test_asking_for_cuda_without_one_says_what_to_do(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(LabkitError, match="no CUDA GPU"):
        pick_device("cuda")


def test_unknown_dtype_is_refused():
    with pytest.raises(LabkitError, match="unknown dtype 'fp8'"):
        pick_device("cpu", "fp8")


def test_explicit_dtype_is_kept():
    assert pick_device("cpu", "bf16").dtype == torch.bfloat16
