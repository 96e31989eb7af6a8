"""Tell what a file holds from its first bytes (never from its name), and what to say if not a model."""

from __future__ import annotations

import os
import pickletools
import tarfile
from pathlib import Path
from typing import NamedTuple

from labkit.errors import NotAModelError

HEAD_BYTES = 512
MAX_HEADER = 100_000_000  # the reference safetensors reader's limit on the header length
ZIP_MAGIC = b"PK\x03\x04"
_OPCODE_BYTES = frozenset(op.code.encode("latin-1") for op in pickletools.opcodes)
GGUF_MAGIC = b"GGUF"
_LFS = b"version https://git-lfs"
_HTML_STARTS = (b"<!doctype html", b"<html", b"<head", b"<?xml", b"<!--", b"<body")

# What a file is instead of a model -> (message, what to do).
NOT_A_MODEL: dict[str, tuple[str, str]] = {
    "empty": ("is an empty file (0 bytes), not a model.",
              "The download or copy failed: download it again."),
    "lfs": ("is a Git LFS pointer, not the model.",
            "Run `git lfs pull` in its repository to fetch the real file."),
    "html": ("is an HTML page (a web page or an error page saved under the model's name), "
             "not the model.",
             "Download the file itself (on Hugging Face use the 'resolve' link, not 'blob')."),
    "text": ("is a text file, not a model.", "Check that you picked the model file."),
    "unknown": ("is not a model file the lab knows (not safetensors, a torch/pickle "
                "checkpoint, a diffusers folder or GGUF).",
                "Check the path; if it should be a model, download it again."),
}


def not_a_model(form: str, path: Path) -> NotAModelError:
    """The error for a file that is `form` (a key of NOT_A_MODEL) instead of a model."""
    message, hint = NOT_A_MODEL[form]
    return NotAModelError(message, path, hint)


def looks_like_pickle_start(head: bytes) -> bool:
    """Whether bytes start like a pickle: a PROTO 0..5 opcode, or any opcode for protocols 0/1."""
    if head[:1] == b"\x80":
        return len(head) > 1 and head[1] <= 5
    return head[:1] in _OPCODE_BYTES


def is_tar(head: bytes) -> bool:
    """Whether the first 512 bytes are a valid tar header (what torch's legacy loader tries first)."""
    try:
        tarfile.TarInfo.frombuf(head[:512], "utf-8", "surrogateescape")
    except (tarfile.HeaderError, ValueError):
        return False
    return True


def container_of(head: bytes) -> str:
    """How torch.load would read a file with these first bytes: "zip", "tar" or "stream"."""
    if head.startswith(ZIP_MAGIC):
        return "zip"
    return "tar" if is_tar(head) else "stream"


def _looks_like_safetensors(head: bytes, size: int) -> bool:
    if len(head) < 9:
        return False
    n = int.from_bytes(head[:8], "little")
    return n <= min(MAX_HEADER, size - 8) and head[8:9] == b"{"


def _is_text(head: bytes) -> bool:
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return all(c >= 32 or c in b"\t\r\n" for c in head)


def what_is(head: bytes, size: int, suffix: str) -> str:
    """Name what a file is from its first bytes and size; the extension only breaks a tie.

    One of: empty, lfs, html, gguf, safetensors, pickle, maybe_pickle (protocol 0/1 text
    or garbage: a scan decides), text, unknown.
    """
    if size == 0:
        return "empty"
    if head.startswith(_LFS):
        return "lfs"
    if head.lstrip()[:16].lower().startswith(_HTML_STARTS):
        return "html"
    if head.startswith(GGUF_MAGIC):
        return "gguf"
    if _looks_like_safetensors(head, size):
        return "safetensors"
    if head[:1] == b"\x80" and looks_like_pickle_start(head) or container_of(head) != "stream":
        return "pickle"
    if looks_like_pickle_start(head):
        return "maybe_pickle"
    return not_pickle(head, suffix)


def not_pickle(head: bytes, suffix: str) -> str:
    """What a file that is no pickle and has no known magic is: safetensors by name, text, unknown."""
    if suffix == ".safetensors":
        return "safetensors"
    return "text" if _is_text(head) else "unknown"


def read_head(path: Path) -> tuple[bytes, int]:
    """The first HEAD_BYTES bytes of a file and its size.

    Raises NotAModelError if it is missing, a folder or unreadable.
    """
    try:
        with open(path, "rb") as f:
            return f.read(HEAD_BYTES), os.fstat(f.fileno()).st_size
    except FileNotFoundError:
        raise NotAModelError("no such file.", path, "Check the path.") from None
    except IsADirectoryError:
        raise NotAModelError("is a folder, not a file.", path,
                             "Give the path of a file inside it.") from None
    except OSError as exc:
        raise NotAModelError(f"cannot be read ({exc.strerror}).", path,
                             "Check the path and its permissions.") from None


class Sniffed(NamedTuple):
    """What one read of a file's head told: its first bytes, its size and the form they name."""

    path: Path
    head: bytes
    size: int
    form: str  # a value of what_is


def sniff(path: Path) -> Sniffed:
    """Read a file's head once and name its form (see what_is); hand the result down.

    Raises NotAModelError if it is missing, a folder or unreadable.
    """
    head, size = read_head(path)
    return Sniffed(path, head, size, what_is(head, size, path.suffix.lower()))
