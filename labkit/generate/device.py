"""Where the lab runs models: the GPU when there is one, else the CPU, and why."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from labkit.errors import LabkitError

_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class DeviceChoice:
    """A device and dtype with the plain-words reason they were picked."""

    device: torch.device
    dtype: torch.dtype
    reason: str

    def __str__(self) -> str:
        return f"{self.device} ({str(self.dtype).removeprefix('torch.')}): {self.reason}"


def pick_device(device: str = "auto", dtype: str = "auto") -> DeviceChoice:
    """Pick CUDA (fp16, or bf16 where supported) when present, else the CPU in fp32."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
        why = (f"a CUDA GPU was found ({torch.cuda.get_device_name(0)})" if device == "cuda"
               else "no CUDA GPU was found, so the CPU is used")
    else:
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise LabkitError(f"device={device!r} was asked for but torch sees no CUDA GPU.",
                              hint="Use device='auto' or 'cpu', or install a CUDA build of torch.")
        why = f"device {device!r} was asked for"
    if dtype == "auto":
        if device.startswith("cuda"):
            dtype = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
            why += f"; {dtype} halves memory on the GPU"
        else:
            dtype = "fp32"
            why += "; fp32 because half precision is slow or unsupported on CPUs"
    if dtype not in _DTYPES:
        raise LabkitError(f"unknown dtype {dtype!r}.", hint=f"Use one of {sorted(_DTYPES)} or 'auto'.")
    return DeviceChoice(torch.device(device), _DTYPES[dtype], why)
