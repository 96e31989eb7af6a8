"""Original textual inversion .pt files (rinongal's ldm code, early A1111) scan safe and open;
a pickle naming ParameterDict next to a hostile global is still refused without running."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

import labkit
from labkit.embeddings import read_textual_inversion
from labkit.errors import UnsafeFileError
from labkit.safety import verdicts as safety
from labkit.safety.rules import ALLOWED, PARAMETER_DICT_NAME
from tests.fixtures.wild_formats import ti_a1111, ti_ldm, write_pickle, write_torch

LDM_GLOBALS = {
    "torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_parameter", "torch.LongStorage",
    "torch.FloatStorage", "collections.OrderedDict", "builtins.set", PARAMETER_DICT_NAME,
}
# Which module numpy's scalar comes from depends on the numpy that wrote the file.
A1111_NUMPY_GLOBALS = {"torch._utils._rebuild_tensor_v2", "torch.FloatStorage",
                       "collections.OrderedDict", "numpy.dtype", "_codecs.encode"}
def _whys(verdict: safety.Verdict) -> dict[str, str]:
    return {f"{g.module}.{g.name}": g.why for g in verdict.globals}


def _ldm(tmp_path: Path, width: int = 768) -> tuple[Path, torch.Tensor]:
    obj = ti_ldm(width=width)
    return write_torch(tmp_path / f"ldm_{width}.pt", obj), obj["string_to_param"]["*"].detach()


def _a1111(tmp_path: Path, width: int = 768) -> tuple[Path, torch.Tensor]:
    obj = ti_a1111(width=width, numpy_step=True)
    return write_torch(tmp_path / f"a1111_{width}.pt", obj), obj["string_to_param"]["*"]


def test_ldm_ti_scans_safe_naming_each_global_with_its_why(tmp_path: Path) -> None:
    verdict = safety.scan(_ldm(tmp_path)[0])
    assert verdict.safe, verdict.summary()
    whys = _whys(verdict)
    assert set(whys) == LDM_GLOBALS
    assert all(whys[n] == f"allowed: {ALLOWED[n]}" for n in whys)
    assert "ParameterDict" in whys[PARAMETER_DICT_NAME]


def test_a1111_numpy_step_ti_scans_safe_naming_each_global_with_its_why(tmp_path: Path) -> None:
    verdict = safety.scan(_a1111(tmp_path)[0])
    assert verdict.safe, verdict.summary()
    whys = _whys(verdict)
    scalars = {n for n in whys if n.endswith("multiarray.scalar")}
    assert set(whys) - scalars == A1111_NUMPY_GLOBALS and len(scalars) == 1
    assert all(whys[n] == f"allowed: {ALLOWED[n]}" for n in whys)


def test_ldm_ti_safe_load_rebuilds_the_parameter_dict(tmp_path: Path) -> None:
    path, vec = _ldm(tmp_path)
    loaded = safety.safe_load(path)
    assert isinstance(loaded, dict) and isinstance(loaded["string_to_param"], torch.nn.ParameterDict)
    assert torch.equal(loaded["string_to_param"]["*"].detach(), vec)
    assert int(loaded["string_to_token"]["*"]) == 265


@pytest.mark.parametrize(("width", "base"), [(768, "sd1"), (1024, "sd2")])
def test_a1111_numpy_step_ti_opens_and_reads(tmp_path: Path, width: int, base: str) -> None:
    path, vec = _a1111(tmp_path, width)
    ident = labkit.open_model(path).identity
    assert (ident.kind, ident.base) == ("textual_inversion", base)
    ti = read_textual_inversion(path)
    assert (ti.form, ti.base, ti.step, ti.name) == ("a1111", base, 1500, "my-embedding")
    assert torch.equal(ti.vectors["text_encoder"], vec)


@pytest.mark.parametrize(("width", "base"), [(768, "sd1"), (1024, "sd2")])
def test_ldm_ti_opens_and_reads(tmp_path: Path, width: int, base: str) -> None:
    path, vec = _ldm(tmp_path, width)
    ident = labkit.open_model(path).identity
    assert (ident.kind, ident.base) == ("textual_inversion", base)
    ti = read_textual_inversion(path)
    assert (ti.form, ti.base) == ("a1111", base)
    assert torch.equal(ti.vectors["text_encoder"], vec)


def test_every_allowed_global_is_one_safe_load_lets_torch_build() -> None:
    from torch._weights_only_unpickler import _get_allowed_globals

    loader_extras = {name for _obj, name in safety._stand_ins()}
    assert set(ALLOWED) <= set(_get_allowed_globals()) | loader_extras
    assert (torch.nn.ParameterDict, PARAMETER_DICT_NAME) in safety._stand_ins()


class _Hostile:
    """Pickles as a call of os.system that would create the canary file."""

    def __init__(self, canary: Path) -> None:
        self.canary = canary

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (f"touch {self.canary}",)


@pytest.mark.parametrize("writer", ["torch_zip", "torch_legacy", "bare_pickle"])
def test_parameter_dict_with_a_hostile_global_is_refused(tmp_path: Path, writer: str) -> None:
    canary = tmp_path / "CANARY"
    params = torch.nn.ParameterDict({"*": torch.nn.Parameter(torch.zeros(1, 768))})
    params.hook = _Hostile(canary)  # inside the ParameterDict's own state, built by BUILD
    obj = {"string_to_param": params, "x": _Hostile(canary)}
    path = tmp_path / "evil.pt"
    if writer == "bare_pickle":
        write_pickle(path, obj, protocol=2)
    else:
        write_torch(path, obj, legacy=writer == "torch_legacy")
    verdict = safety.scan(path)
    assert not verdict.safe
    system = f"{os.system.__module__}.system"  # posix.system on Linux
    refused = {f"{g.module}.{g.name}" for g in verdict.refused}  # bare pickles add _load_from_bytes
    assert system in refused and PARAMETER_DICT_NAME not in refused
    assert PARAMETER_DICT_NAME in _whys(verdict) and system in verdict.summary()
    with pytest.raises(UnsafeFileError):
        labkit.open_model(path)
    with pytest.raises(UnsafeFileError):
        safety.safe_load(path)
    assert not canary.exists()


@pytest.mark.parametrize("protocol", [0, 1])
def test_benign_old_protocol_pickle_is_safe_and_its_error_names_the_protocol(tmp_path: Path,
                                                                              protocol: int):
    import pickle

    from labkit.errors import CorruptFileError
    from labkit.safety.verdicts import scan

    path = tmp_path / f"state_proto{protocol}.pkl"
    path.write_bytes(pickle.dumps({"w": [1.0, 2.0], "step": 3}, protocol=protocol))
    verdict = scan(path)
    assert verdict.safe and verdict.old_protocol
    with pytest.raises(CorruptFileError, match="protocol 0 or 1: its scan found nothing unsafe"):
        labkit.open_model(path)


def test_a_modern_stream_pickle_is_not_called_old(tmp_path: Path):
    import pickle

    from labkit.safety.verdicts import scan

    path = tmp_path / "state.pkl"
    path.write_bytes(pickle.dumps({"step": 3}, protocol=2))
    assert not scan(path).old_protocol
