"""One model file by its content: one read of its head names the form, and that is handed down."""

from __future__ import annotations

from pathlib import Path

from labkit.errors import NotAModelError
from labkit.files.gguf import open_gguf
from labkit.files.model_file import ModelFile, OneSource, SafetensorsSource, flatten_checkpoint
from labkit.files.safetensors_header import read_header
from labkit.safety.verdicts import Verdict, safe_load, scan
from labkit.sniff import Sniffed, not_a_model, not_pickle, sniff


def open_safetensors(path: Path) -> ModelFile:
    """Open a safetensors file by its header alone; tensors load on demand (mmap).

    Raises CorruptFileError if the header breaks a rule of the format.
    """
    header = read_header(path)
    return ModelFile(path, "safetensors", header.table, dict(header.metadata),
                     OneSource(SafetensorsSource(path), header.table), content_key=header.text)


def open_pickle(path: Path, verdict: Verdict | None = None) -> ModelFile:
    """Scan a pickle checkpoint (unless `verdict` is its scan), then load it with weights_only.

    Raises UnsafeFileError if a pickle names a global outside the allowlist, CorruptFileError
    if torch cannot load it, NotAModelError if it holds no tensors.
    """
    tensors, meta = flatten_checkpoint(safe_load(path, verdict))
    if not tensors:
        raise NotAModelError("is a pickle holding no tensors, not a model.", path,
                             "Check that you picked the model file.")
    return ModelFile.from_tensors(path, "pickle", tensors, meta)


def _pickle_verdict(sniffed: Sniffed) -> Verdict | None:
    """The scan of a file that may be a pickle (protocol 0/1 text or garbage), None if it is not."""
    try:
        verdict = scan(sniffed.path, sniffed)
    except NotAModelError:
        return None
    return verdict if verdict.pickles else None


def open_file(path: Path) -> ModelFile:
    """Open one model file by what its content is (see labkit.files.open_model for what it raises)."""
    sniffed = sniff(path)
    form, verdict = sniffed.form, None
    if form in ("pickle", "maybe_pickle"):
        verdict = scan(path, sniffed) if form == "pickle" else _pickle_verdict(sniffed)
        form = "pickle" if verdict else not_pickle(sniffed.head, path.suffix.lower())
    if form == "safetensors":
        return open_safetensors(path)
    if form == "pickle":
        return open_pickle(path, verdict)
    if form == "gguf":
        return open_gguf(path)
    raise not_a_model(form, path)
