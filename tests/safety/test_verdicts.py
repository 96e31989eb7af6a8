"""labkit.safety.verdicts: every hostile pickle is refused without running; real checkpoints load."""

from __future__ import annotations

import hashlib
import io
import pickle
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from labkit.errors import CorruptFileError, LabkitError, NotAModelError, UnsafeFileError
from labkit.files.opener import open_model
from labkit.safety import verdicts as safety
from labkit.safety.rules import (
    ALLOWED,
    LIGHTNING_CHECKPOINT_NAMES,
    NUMPY_SCALAR_NAMES,
    PARAMETER_DICT_NAME,
    grade,
)
from labkit.safety.walk import Window, walk, walk_stream
from tests.fixtures import hostile_corpus
from tests.fixtures.bounded import peak_bytes_reading

NAMES = [e.name for e in hostile_corpus.entries("CANARY")]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    folder = tmp_path_factory.mktemp("hostile")
    canary = folder / "CANARY"
    entries = hostile_corpus.build(folder, canary)
    return folder, canary, {e.name: e for e in entries}


def test_corpus_is_large_and_bites(tmp_path: Path) -> None:
    assert len(NAMES) >= 40
    canary = tmp_path / "CANARY"
    built = {e.name: e for e in hostile_corpus.build(tmp_path, canary)}
    for name in hostile_corpus.LIVE_CHECK:
        code = "import pickle, sys; pickle.load(open(sys.argv[1], 'rb'))"
        subprocess.run([sys.executable, "-c", code, str(tmp_path / built[name].name)],
                       capture_output=True, timeout=60)
        assert canary.exists(), f"{name} did not run its payload under plain pickle"
        canary.unlink()


@pytest.mark.parametrize("name", NAMES)
def test_hostile_file_is_refused(corpus: tuple[Path, Path, dict], name: str) -> None:
    folder, canary, entries = corpus
    path = folder / name
    before = sha256(path)
    verdict = safety.scan(path)
    assert not verdict.safe
    with pytest.raises(UnsafeFileError) as opened:
        open_model(path)
    with pytest.raises(UnsafeFileError) as loaded:
        safety.safe_load(path)
    for text in entries[name].names:
        assert text in verdict.summary()
        assert text in str(opened.value)
        assert text in str(loaded.value)
    assert opened.value.verdict is not None and not opened.value.verdict.safe
    assert not canary.exists()
    assert sha256(path) == before


def test_scanning_imports_nothing_the_file_names(tmp_path: Path) -> None:
    module = "xml.dom.pulldom"
    assert module not in sys.modules
    path = tmp_path / "f.pkl"
    path.write_bytes(hostile_corpus.wrap(hostile_corpus.call(hostile_corpus.glob(module, "parse"),
                                                             hostile_corpus.s("x")), 2))
    verdict = safety.scan(path)
    assert [(g.module, g.name, g.allowed) for g in verdict.globals] == [(module, "parse", False)]
    assert verdict.globals[0].why.startswith("unknown")
    with pytest.raises(UnsafeFileError):
        open_model(path)
    assert module not in sys.modules


def test_allowlist_is_within_torchs_weights_only_set() -> None:
    from torch._weights_only_unpickler import _get_allowed_globals

    ours = (set(ALLOWED) - set(LIGHTNING_CHECKPOINT_NAMES) - set(NUMPY_SCALAR_NAMES)
            - {"numpy.dtype", PARAMETER_DICT_NAME})  # the loader adds these to torch's set itself
    assert ours <= set(_get_allowed_globals())
    assert "torch._utils._rebuild_tensor_v2" in ours and "torch.FloatStorage" in ours


@pytest.mark.parametrize(("module", "name", "allowed", "why"), [
    ("torch._utils", "_rebuild_tensor_v2", True, "allowed"),
    ("collections", "OrderedDict", True, "allowed"),
    ("os", "system", False, "dangerous"),
    ("os.path", "join", False, "dangerous"),
    ("__builtin__", "eval", False, "dangerous"),
    ("pkgutil", "resolve_name", False, "dangerous"),
    ("torch.serialization", "os.system", False, "unknown"),
    ("mypackage", "Thing", False, "unknown"),
])
def test_grade(module: str, name: str, allowed: bool, why: str) -> None:
    ref = grade(module, name)
    assert ref.allowed is allowed
    assert ref.why.startswith(why)


def _fake_lightning(monkeypatch: pytest.MonkeyPatch) -> type:
    """A class importable as Lightning's ModelCheckpoint while saving, without Lightning."""
    import types

    cls = type("ModelCheckpoint", (), {"__module__": "pytorch_lightning.callbacks.model_checkpoint"})
    for name in ("pytorch_lightning", "pytorch_lightning.callbacks",
                 "pytorch_lightning.callbacks.model_checkpoint"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setattr(sys.modules["pytorch_lightning.callbacks.model_checkpoint"],
                        "ModelCheckpoint", cls, raising=False)
    return cls


def test_sd1_style_ckpt_with_lightning_and_numpy_loads(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "model.ckpt"
    with monkeypatch.context() as m:
        cls = _fake_lightning(m)
        callback = cls()
        callback.best_model_score = np.float64(0.25)
        torch.save({"state_dict": {"model.diffusion_model.conv.weight": torch.ones(2, 3),
                                   "cond": {"scale": torch.zeros(1)}},
                    "global_step": 470000, "epoch": np.int64(3),
                    "callbacks": {cls: {"monitor": None}}, "hparams": callback}, path)
    assert "pytorch_lightning" not in sys.modules
    verdict = safety.scan(path)
    assert verdict.safe, verdict.summary()
    assert {f"{g.module}.{g.name}" for g in verdict.globals} >= {
        "pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint", "numpy.dtype"}
    obj = safety.safe_load(path)
    assert obj["global_step"] == 470000 and int(obj["epoch"]) == 3
    assert isinstance(obj["hparams"], safety.LightningCheckpointStandIn)
    assert "pytorch_lightning" not in sys.modules
    model = open_model(path)
    assert list(model.table) == ["model.diffusion_model.conv.weight", "cond.scale"]
    assert model.metadata["global_step"] == "470000"
    assert model.metadata["callbacks.ModelCheckpoint.monitor"] == "None"
    assert torch.equal(model.tensor("model.diffusion_model.conv.weight"), torch.ones(2, 3))


@pytest.mark.parametrize("protocol", range(6))
def test_clean_pickles_of_every_protocol_are_safe(tmp_path: Path, protocol: int) -> None:
    path = tmp_path / "clean.pkl"
    path.write_bytes(pickle.dumps({"a": [1, 2.5, "x", b"y", (None, True)], "b": {3}},
                                  protocol=protocol))
    verdict = safety.scan(path)
    assert verdict.safe, verdict.summary()
    assert verdict.pickles == ["stream pickle 1 at byte 0"]


def test_legacy_stream_checkpoint_scans_five_pickles_and_loads(tmp_path: Path) -> None:
    path = tmp_path / "old.pt"
    torch.save({"w": torch.arange(4.0)}, path, _use_new_zipfile_serialization=False)
    verdict = safety.scan(path)
    assert verdict.safe and len(verdict.pickles) == 5
    assert torch.equal(safety.safe_load(path)["w"], torch.arange(4.0))


def test_clean_legacy_tar_is_scanned_but_not_loaded(tmp_path: Path) -> None:
    path = tmp_path / "old.tar"
    clean = pickle.dumps({"step": 1}, protocol=2)
    path.write_bytes(hostile_corpus.make_tar({"sys_info": clean, "pickle": clean}))
    verdict = safety.scan(path)
    assert verdict.safe and verdict.container == "tar"
    with pytest.raises(CorruptFileError, match="legacy tar"):
        safety.safe_load(path)


def test_truncated_zip_is_corrupt_not_unsafe(tmp_path: Path) -> None:
    path = tmp_path / "cut.ckpt"
    buf = io.BytesIO()
    torch.save({"w": torch.ones(100)}, buf)
    path.write_bytes(buf.getvalue()[:300])
    with pytest.raises(CorruptFileError, match="cut.ckpt"):
        safety.scan(path)
    with pytest.raises(CorruptFileError):
        open_model(path)


def test_torch_cross_check_catches_what_a_broken_walk_would_miss(
        corpus: tuple[Path, Path, dict], monkeypatch: pytest.MonkeyPatch) -> None:
    from labkit.safety.walk import PickleFindings

    monkeypatch.setattr(safety, "scan_file",
                        lambda *a: iter([PickleFindings("data.pkl", complete=True)]))
    verdict = safety.scan(corpus[0] / "zip_data_pkl.ckpt")
    assert not verdict.safe
    assert "torch also reports os.system" in verdict.summary()


def test_non_pickles(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    save_file({"a": torch.ones(1)}, tmp_path / "a.safetensors")
    verdict = safety.scan(tmp_path / "a.safetensors")
    assert verdict.safe and verdict.pickles == [] and "no pickle" in verdict.summary()
    (tmp_path / "page.ckpt").write_bytes(b"<!DOCTYPE html><html>404</html>")
    with pytest.raises(NotAModelError, match="HTML"):
        safety.scan(tmp_path / "page.ckpt")
    with pytest.raises(NotAModelError, match="no such file"):
        safety.scan(tmp_path / "missing.ckpt")


_VALID = [pickle.dumps({"a": [1, "s", 2.0], "b": (b"x", None)}, protocol=p) for p in range(6)]


def _bounded_walk(data: bytes) -> None:
    """Walk bytes from a real file (whose read(n) would reserve n bytes) under a memory bound."""
    import tempfile

    with tempfile.TemporaryFile() as f:
        f.write(data)
        tracemalloc.start()
        try:
            found = walk_stream(Window(f, 0, len(data)), "t", strict_first=True)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert all(f.problems or f.complete for f in found)
    assert peak < 2_000_000 + 50 * len(data)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=512))
def test_walk_survives_random_bytes(data: bytes) -> None:
    _bounded_walk(data)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(_VALID), st.integers(0, 400), st.binary(min_size=1, max_size=8))
def test_walk_survives_mutated_pickles(valid: bytes, at: int, patch: bytes) -> None:
    at %= len(valid)
    _bounded_walk(valid[:at] + patch + valid[at + len(patch):])


@settings(max_examples=100, deadline=None)
@given(st.sampled_from([b"X", b"\x8d", b"B", b"\x8e", b"T"]), st.integers(2**20, 2**62))
def test_walk_never_allocates_a_claimed_length(op: bytes, claim: int) -> None:
    size = 8 if op in (b"\x8d", b"\x8e") else 4
    claim %= 256 ** size
    _bounded_walk(b"\x80\x04" + op + claim.to_bytes(size, "little") + b"abc")


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=256))
def test_scan_gives_a_verdict_or_a_labkit_error(data: bytes) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "f.bin"
        path.write_bytes(data)
        try:
            verdict = safety.scan(path)
        except LabkitError:
            return
        assert isinstance(verdict.safe, bool)


def test_walk_reports_a_single_constant() -> None:
    data = pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2)
    assert walk(Window(io.BytesIO(data), 0, len(data)), "m").constant == 0x1950A86A20F9469CFC6C


def _clean_containers() -> list[bytes]:
    buf = io.BytesIO()
    torch.save({"state_dict": {"w": torch.ones(4)}, "global_step": 3}, buf)
    clean = pickle.dumps({"step": 1}, protocol=2)
    return [buf.getvalue(), hostile_corpus.make_tar({"sys_info": clean, "pickle": clean})]


_CONTAINERS = _clean_containers()


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(_CONTAINERS), st.integers(0, 10**6), st.binary(min_size=1, max_size=8))
def test_mutated_zip_and_tar_give_a_verdict_or_a_labkit_error(valid: bytes, at: int,
                                                              patch: bytes) -> None:

    at %= len(valid)
    def scan(path: Path) -> None:
        assert isinstance(safety.scan(path).safe, bool)

    mutated = valid[:at] + patch + valid[at + len(patch):]
    assert peak_bytes_reading(scan, mutated, "f.ckpt") < 4_000_000 + 50 * len(valid)


def test_a_protocol_3_pickle_loads_without_torchs_protocol_warning(tmp_path: Path) -> None:
    """torch.save(pickle_protocol=3) files load under weights_only; torch's warning is noise to users."""
    import warnings

    path = tmp_path / "old.pt"
    torch.save({"emb_params": torch.ones(2, 768)}, path, pickle_protocol=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = safety.safe_load(path)
    assert torch.equal(loaded["emb_params"], torch.ones(2, 768))


def test_a_legacy_torch_file_cut_before_its_object_is_damaged_not_safe(tmp_path: Path) -> None:
    """Legacy torch files are five pickles then storages; cut inside the fourth (the state dict),
    nothing of the model was checked: the scan must not call that safe."""
    whole = tmp_path / "whole.ckpt"
    torch.save({"state_dict": {"w": torch.ones(3)}}, whole, _use_new_zipfile_serialization=False)
    assert safety.scan(whole).safe
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(whole.read_bytes()[:140])  # magic, protocol, sys_info, then a few bytes
    with pytest.raises(CorruptFileError, match="ends after 3 of its 5 pickles"):
        safety.scan(cut)


@pytest.mark.parametrize("first_bytes", [b"\x82\x01.", b"\x83\x01\x00.", b"N.", b"K\x07."])
def test_a_storage_whose_bytes_parse_as_a_harmless_pickle_is_not_refused(tmp_path, first_bytes):
    # real fp16 weights: one of demo_sd1.ckpt's storages starts with an extension opcode and a STOP
    weights = torch.frombuffer(bytearray(first_bytes + bytes(64 - len(first_bytes))), dtype=torch.uint8)
    path = tmp_path / "model.ckpt"
    torch.save({"w": weights.clone()}, path)
    verdict = safety.scan(path)
    assert verdict.safe, verdict.summary()
    assert torch.equal(safety.safe_load(path)["w"], weights)
