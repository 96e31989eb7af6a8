"""Pickle verdicts by allowlist over every pickle in a file; the only module that calls torch.load."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from labkit.errors import CorruptFileError, LabkitError, NotAModelError, UnsafeFileError
from labkit.safety.rules import (
    LIGHTNING_CHECKPOINT_NAMES,
    NUMPY_SCALAR_NAMES,
    PARAMETER_DICT_NAME,
    GlobalRef,
    grade,
)
from labkit.safety.walk import scan_file
from labkit.sniff import Sniffed, container_of, not_a_model, not_pickle, sniff

__all__ = ["GlobalRef", "Verdict", "scan", "safe_load", "LightningCheckpointStandIn"]

NO_PICKLE = ("safetensors", "gguf")  # formats that cannot hold code
# torch.load's warning for a protocol-3 pickle (old Python writers) that it then reads fine.
_LOAD_NOISE = r"Detected pickle protocol"
_UNSAFE_HINT = ("Do not load it with torch.load or pickle. If you trust its source, ask for a "
                "safetensors version of this model instead.")


@dataclass(frozen=True)
class Verdict:
    """The scan of one file: safe only if every pickle names only allowed globals and parses."""

    path: Path
    container: str  # "zip", "tar", "stream", or a format in NO_PICKLE
    globals: list[GlobalRef] = field(default_factory=list)
    pickles: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    old_protocol: bool = False  # a raw stream of protocol 0/1 (no PROTO opcode), which torch's
    # weights_only loader cannot read

    @property
    def safe(self) -> bool:
        """True for a format with no pickle, or when pickles were read and nothing was refused."""
        if self.container in NO_PICKLE:
            return True
        return bool(self.pickles) and not self.problems and all(g.allowed for g in self.globals)

    @property
    def refused(self) -> list[GlobalRef]:
        """The globals outside the allowlist."""
        return [g for g in self.globals if not g.allowed]

    def summary(self) -> str:
        """One paragraph naming every refused global and problem."""
        if self.container in NO_PICKLE:
            return f"safe: a {self.container} file holds no pickle and cannot run code"
        if self.safe:
            return f"safe: {len(self.pickles)} pickle(s), {len(self.globals)} allowed global(s)"
        lines = [f"{g.module}.{g.name} ({g.why})" for g in self.refused] + list(self.problems)
        if not self.pickles:
            lines.append("no pickle found")
        return "unsafe: " + "; ".join(lines)


class LightningCheckpointStandIn:
    """Inert stand-in for Lightning's ModelCheckpoint callback, named in real SD1 .ckpt files."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        self.state: object = None

    def __setstate__(self, state: object) -> None:
        self.state = state


LightningCheckpointStandIn.__module__ = "pytorch_lightning.callbacks.model_checkpoint"
LightningCheckpointStandIn.__qualname__ = "ModelCheckpoint"


def scan(path: str | Path, sniffed: Sniffed | None = None) -> Verdict:
    """Grade every pickle inside a file without running or importing anything it names.

    A safetensors or GGUF file holds no pickle: its verdict is safe. Raises NotAModelError if
    the file is missing, unreadable, or neither a pickle nor a model format.
    """
    path = Path(path)
    path, head, size, form = sniffed or sniff(path)
    if form in NO_PICKLE:
        return Verdict(path, form)
    if form not in ("pickle", "maybe_pickle"):
        raise not_a_model(form, path)
    container = container_of(head)
    refs: dict[tuple[str, str], GlobalRef] = {}
    labels: list[str] = []
    problems: list[str] = []
    try:
        with open(path, "rb") as f:
            for found in scan_file(f, size, container):
                if form == "maybe_pickle" and not (found.complete or found.globals):
                    raise not_a_model(not_pickle(head, ""), path)
                labels.append(found.label)
                problems += [f"{found.label}: {p}" for p in found.problems]
                for module, name, _pos in found.globals:
                    ref = grade(module, name)
                    refs.setdefault((ref.module, ref.name), ref)
    except NotAModelError:
        raise
    except Exception as exc:  # each pickle's own parse errors are findings; these are the container's
        raise CorruptFileError(f"is damaged: its {container} structure cannot be read "
                               f"({_first_line(exc)}).", path,
                               "It may be cut short: download it again.") from None
    if container == "zip":
        problems += _torch_cross_check(path, refs)
    old_protocol = container == "stream" and head[:1] != b"\x80"
    return Verdict(path, container, list(refs.values()), labels, problems, old_protocol)


def _torch_cross_check(path: Path, refs: dict[tuple[str, str], GlobalRef]) -> list[str]:
    """Names torch's own static check finds in data.pkl that the lab's walk did not: a bug guard."""
    import torch

    seen = {f"{m}.{n}" for m, n in refs}
    try:
        with torch.serialization.safe_globals(_stand_ins()):
            names = torch.serialization.get_unsafe_globals_in_checkpoint(os.fspath(path))
    except Exception:  # torch's checker knows fewer opcodes than the walk; the walk decides
        return []
    return [f"torch also reports {n}" for n in names if n not in seen]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]


def _stand_ins() -> list[tuple[object, str]]:
    """The inert objects the loader maps Lightning and numpy names to, and the torch classes
    beyond torch's own weights_only allowlist that it may build (ParameterDict)."""
    import numpy as np
    import torch

    core = getattr(np, "_core", None) or np.core
    dtypes = {type(np.dtype(c)) for c in "?bBhHiIlLqQefdgFD"}
    return (
        [(LightningCheckpointStandIn, n) for n in LIGHTNING_CHECKPOINT_NAMES]
        + [(core.multiarray.scalar, n) for n in NUMPY_SCALAR_NAMES]
        + [(np.dtype, "numpy.dtype")]
        + [(torch.nn.ParameterDict, PARAMETER_DICT_NAME)]
        + [(t, f"{t.__module__}.{t.__qualname__}") for t in dtypes]
    )


def refuse(verdict: Verdict) -> UnsafeFileError:
    """The error to raise for an unsafe verdict, naming each refused global."""
    return UnsafeFileError(f"refused: this pickle file is not safe to load: {verdict.summary()}.",
                           verdict.path, _UNSAFE_HINT, verdict=verdict)


def safe_load(path: str | Path, verdict: Verdict | None = None) -> object:
    """Scan, then load with torch.load(weights_only=True) mapping Lightning/numpy names to inert ones.

    Raises UnsafeFileError (with .verdict) when the scan refuses, NotAModelError when the file
    holds no pickle, CorruptFileError when torch cannot load it.
    """
    import torch

    path = Path(path)
    verdict = verdict or scan(path)
    if verdict.container in NO_PICKLE:
        raise NotAModelError("holds no pickle the lab can read.", path,
                             "Is it a model file? Open it with labkit.open_model to see what it is.")
    if not verdict.safe:
        raise refuse(verdict)
    if verdict.container == "tar":
        raise CorruptFileError(
            "is a legacy tar checkpoint, which torch cannot load with weights_only=True.", path,
            "Re-save it with torch.save in a trusted environment, or find a safetensors copy.")
    # torch.load treats a path ending .safetensors as safetensors, and mmap needs a path.
    by_path = verdict.container == "zip" and path.suffix != ".safetensors"
    try:
        with torch.serialization.safe_globals(_stand_ins()), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_LOAD_NOISE)
            if by_path:
                return torch.load(os.fspath(path), map_location="cpu", weights_only=True, mmap=True)
            with open(path, "rb") as f:
                return torch.load(f, map_location="cpu", weights_only=True)
    except LabkitError:
        raise
    except Exception as exc:  # torch/zip/pickle errors of a damaged file become the lab's error
        if verdict.old_protocol:
            raise CorruptFileError(
                "is a pickle of protocol 0 or 1: its scan found nothing unsafe, but torch's safe "
                f"loader (weights_only) cannot read these old protocols ({_first_line(exc)}).",
                path, "Re-save it with torch.save (protocol 2 or later) where you trust it, "
                "or ask for a safetensors copy.") from None
        raise CorruptFileError(f"torch could not load it: {_first_line(exc)}", path,
                               "The file may be truncated or damaged: download it again.") from None
