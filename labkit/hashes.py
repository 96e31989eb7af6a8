"""The six hashes Civitai shows for a model file, from one read of the file, cached per file version.

SHA256 (whole file), AutoV2 (its first 10 hex), AutoV1 (SHA256 of the 0x10000 bytes at 0x100000,
first 8 hex; None under 0x200000 bytes), AutoV3 (kohya's addnet hash: SHA256 of the bytes after
the safetensors header, so editing metadata keeps it; None for other files), CRC32 and BLAKE3 of
the whole file. All uppercase hex, as on Civitai.

Civitai's edge case, followed here: when a safetensors header is 16 MiB or larger, Civitai's
scanner does not skip it, so AutoV3 is then the SHA256 of the whole file (kohya's tools would
still skip the header: the two differ only for such files).

The file is read once, in chunks into a few reused buffers; each hasher runs in its own thread
(hashlib, zlib.crc32 and blake3 release the GIL on large buffers), fed the chunks in order.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
import zlib
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import blake3

try:  # ISA-L's CRC32 (carry-less multiply): ~3x zlib's, the same value, and it releases the GIL
    from isal.isal_zlib import crc32 as _crc32
except ImportError:  # pragma: no cover - isal is a dependency; zlib gives the same value
    _crc32 = zlib.crc32
from labkit.errors import LabkitError, NotAModelError

CHUNK = 8 * 1024 * 1024
DEPTH = 4  # buffers in flight: the reader fills one while the hashers work on the others
PROGRESS_ABOVE = 64 * 1024 * 1024
AUTOV1_OFFSET, AUTOV1_SIZE, AUTOV1_MIN_FILE = 0x100000, 0x10000, 0x200000
SAFETENSORS_MAX_HEADER = 100_000_000
CIVITAI_HEADER_LIMIT = 16 * 1024 * 1024
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".pt", ".pth", ".gguf")
CACHE_FILE = "hashes.json"


def cache_dir() -> Path:
    """The lab's cache folder: $LABKIT_CACHE_DIR, else $XDG_CACHE_HOME/labkit or ~/.cache/labkit."""
    if os.environ.get("LABKIT_CACHE_DIR"):
        return Path(os.environ["LABKIT_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "labkit"


def file_hashes(path: str | Path, progress: bool = True) -> dict[str, str | None]:
    """sha256, autov1, autov2, autov3, crc32, blake3 of a file, from the cache when unchanged.

    Raises NotAModelError when the path is missing or unreadable, LabkitError for a folder.
    """
    path = _checked(Path(path))
    stat = path.stat()
    key = str(path.resolve())
    cache = _read_cache()
    entry = cache.get(key)
    if entry and entry.get("size") == stat.st_size and entry.get("mtime_ns") == stat.st_mtime_ns:
        return dict(entry["hashes"])
    result = _compute(path, progress)
    cache[key] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "hashes": result}
    _write_cache(cache)
    return result


def hashes(path: str | Path) -> dict[str, str | None]:
    """The six hashes of a file without a progress bar, from the cache when the file is unchanged."""
    return file_hashes(path, progress=False)


def _checked(path: Path) -> Path:
    """The path, when it is a readable file; otherwise the lab's error saying what to do."""
    if path.is_dir():
        weights = sorted(str(p.relative_to(path)) for p in path.rglob("*")
                         if p.suffix in WEIGHT_SUFFIXES and p.is_file())
        named = ", ".join(weights[:8]) + (" ..." if len(weights) > 8 else "")
        raise LabkitError("is a folder; hashes are per file.", path,
                          f"Hash its weight files one by one: {named or '(none found)'}.")
    if not path.is_file():
        raise NotAModelError("no such file.", path, "Check the path and the spelling.")
    if not os.access(path, os.R_OK):
        raise NotAModelError("the file cannot be read (permission denied).", path,
                             "Check its permissions.")
    return path


def _safetensors_skip(head: bytes, size: int) -> int | None:
    """Bytes before the tensor data when `head` starts a safetensors file, else None."""
    if len(head) < 9 or head[8:9] != b"{":
        return None
    (n,) = struct.unpack("<Q", head[:8])
    if n > SAFETENSORS_MAX_HEADER or 8 + n > size:
        return None
    return 0 if n >= CIVITAI_HEADER_LIMIT else 8 + n


class _Crc32:
    """CRC32 (zlib's, computed by ISA-L where installed) with the update/digest shape of the other
    hashers."""

    def __init__(self) -> None:
        self.value = 0

    def update(self, data: memoryview) -> None:
        self.value = _crc32(data, self.value)

    def hexdigest(self) -> str:
        return f"{self.value:08x}"


class _Tail:
    """A SHA256 of the bytes from file offset `start` on (none while start is None), fed whole
    chunks with their offsets."""

    def __init__(self) -> None:
        self.start: int | None = None
        self.sha = hashlib.sha256()

    def update(self, data: memoryview, pos: int) -> None:
        if self.start is not None and pos + len(data) > self.start:
            self.sha.update(data[max(0, self.start - pos):])

    def hexdigest(self) -> str:
        return self.sha.hexdigest()


def _compute(path: Path, progress: bool) -> dict[str, str | None]:
    """The six hashes from one read of the file (no cache)."""
    from tqdm.auto import tqdm

    size = path.stat().st_size
    sha, crc = hashlib.sha256(), _Crc32()
    b3 = blake3.blake3(max_threads=blake3.blake3.AUTO if (os.cpu_count() or 1) > 4 else 1)
    tail = _Tail()
    feeders: list[Callable[[memoryview, int], None]] = [
        lambda v, _pos: sha.update(v), lambda v, _pos: crc.update(v), lambda v, _pos: b3.update(v),
        tail.update]
    autov1 = bytearray()
    slots = [bytearray(CHUNK) for _ in range(DEPTH)]
    pending: list[list[Future[None]]] = [[] for _ in range(DEPTH)]
    workers = [ThreadPoolExecutor(1) for _ in feeders]  # one thread per hasher, chunks in order
    bar = tqdm(total=size, unit="B", unit_scale=True, desc=f"hashing {path.name}",
               disable=not progress or size <= PROGRESS_ABOVE)
    skip: int | None = None
    pos = slot = 0
    try:
        with open(path, "rb") as f:
            while True:
                for done in pending[slot]:
                    done.result()
                n = f.readinto(slots[slot])
                if not n:
                    break
                view = memoryview(slots[slot])[:n]
                if pos == 0:
                    skip = _safetensors_skip(bytes(view[:9]), size)
                    tail.start = skip or None
                if size >= AUTOV1_MIN_FILE and pos < AUTOV1_OFFSET + AUTOV1_SIZE:
                    autov1 += view[max(0, AUTOV1_OFFSET - pos):AUTOV1_OFFSET + AUTOV1_SIZE - pos]
                pending[slot] = [w.submit(feed, view, pos) for w, feed in zip(workers, feeders, strict=True)]
                pos += n
                slot = (slot + 1) % DEPTH
                bar.update(n)
        for futures in pending:
            for done in futures:
                done.result()
    except OSError as e:
        raise NotAModelError(f"the file could not be read: {e.strerror or e}.", path,
                             "Check the disk and the file's permissions.") from None
    finally:
        bar.close()
        for w in workers:
            w.shutdown(wait=True)
    full = sha.hexdigest().upper()
    autov3 = tail.hexdigest().upper() if skip else (full if skip == 0 else None)
    return {
        "sha256": full,
        "autov1": hashlib.sha256(autov1).hexdigest()[:8].upper() if autov1 else None,
        "autov2": full[:10],
        "autov3": autov3,
        "crc32": crc.hexdigest().upper(),
        "blake3": b3.hexdigest().upper(),
    }


def _read_cache() -> dict[str, dict]:
    """The cache's entries; an unreadable or damaged cache counts as empty."""
    try:
        data = json.loads((cache_dir() / CACHE_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_cache(cache: dict[str, dict]) -> None:
    """Write the cache atomically (temp file, then os.replace); a failure only loses the cache."""
    folder = cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".hashes-", suffix=".tmp")
    except OSError:
        return
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(cache, f, indent=1)
        os.replace(tmp, folder / CACHE_FILE)
    except OSError:
        Path(tmp).unlink(missing_ok=True)
