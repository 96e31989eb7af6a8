"""The catalog's cache: one SQLite file under the lab's cache folder (never beside the models),
a row per path, valid while the path's size, mtime_ns, device and inode are unchanged and the
code that read it (identify, files, ...) is too.

A damaged or unwritable cache is no error: the catalog then reads every file, as with no cache.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import sqlite3
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

CACHE_FILE = "catalog-v1.sqlite"  # the table layout: a new one never meets an old file
# bump when a row's facts change meaning (new columns); the readers' own code is stamped too
SCHEMA = 1
# the code a row's facts come from: an edit to any of these makes every cached row stale
READER_CODE = ("identify", "files", "safety", "inventory/facts.py", "inventory/finding.py",
               "sniff.py", "tensors.py")
_TIMEOUT_S = 30
_BATCH = 500  # paths per query, under SQLite's limit on parameters


class Stamp(NamedTuple):
    """What says a file (or a folder's files) is unchanged: size, mtime_ns, device, inode."""

    size: int
    mtime_ns: int
    dev: int
    ino: int


def stamp_of(path: Path, is_folder: bool) -> Stamp:
    """The stamp of a file; of a folder, its files' total size and latest mtime_ns.

    Raises OSError when the path cannot be stat'ed.
    """
    st = path.stat()
    if not is_folder:
        return Stamp(st.st_size, st.st_mtime_ns, st.st_dev, st.st_ino)
    inner = [p.stat() for p in path.rglob("*") if p.is_file()]
    return Stamp(sum(s.st_size for s in inner), max((s.st_mtime_ns for s in inner), default=0),
                 st.st_dev, st.st_ino)


@functools.cache
def readers_stamp() -> str:
    """SCHEMA and the size and mtime of every module of READER_CODE, as one short digest."""
    root = Path(__file__).resolve().parents[1]
    files = sorted(p for name in READER_CODE for p in
                   ((root / name).rglob("*.py") if (root / name).is_dir() else [root / name]))
    parts = [str(SCHEMA)] + [f"{p.relative_to(root)}:{p.stat().st_size}:{p.stat().st_mtime_ns}"
                             for p in files if p.is_file()]
    return hashlib.blake2b("\n".join(parts).encode(), digest_size=8).hexdigest()


def cache_path() -> Path:
    """Where the catalog cache lives: labkit.hashes.cache_dir() / catalog.sqlite."""
    from labkit.hashes import cache_dir

    return cache_dir() / CACHE_FILE


class CatalogCache:
    """Rows by path, each with the stamp it was read under; `get` returns only unchanged ones."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or cache_path()
        self._db: sqlite3.Connection | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=_TIMEOUT_S)
            db.execute("CREATE TABLE IF NOT EXISTS rows (path TEXT PRIMARY KEY, readers TEXT, "
                       "size INTEGER, mtime_ns INTEGER, dev INTEGER, ino INTEGER, row TEXT)")
            self._db = db
        except (OSError, sqlite3.Error):
            self._db = None

    def get(self, stamps: Mapping[str, Stamp], hashes: bool) -> dict[str, dict[str, Any] | None]:
        """{path: cached row (None: no model)} for the paths whose stamp matches; a row read
        without hashes does not serve a run that asks for them."""
        if self._db is None or not stamps:
            return {}
        found: dict[str, dict[str, Any] | None] = {}
        paths = list(stamps)
        try:
            for start in range(0, len(paths), _BATCH):
                batch = paths[start:start + _BATCH]
                cursor = self._db.execute(
                    "SELECT path, size, mtime_ns, dev, ino, row FROM rows WHERE readers = ? "
                    f"AND path IN ({', '.join('?' * len(batch))})", (readers_stamp(), *batch))
                for path, *stamp, text in cursor:
                    if stamps[path] == Stamp(*stamp):
                        row = json.loads(text)
                        if row is None or not hashes or "sha256" in row:
                            found[path] = row
        except (sqlite3.Error, ValueError):
            return {}
        return found

    def put(self, rows: Iterable[tuple[str, Stamp, dict[str, Any] | None]]) -> None:
        """Store (path, stamp, row) triples in one transaction; a failure only loses them."""
        if self._db is None:
            return
        try:
            with self._db:
                self._db.executemany(
                    "INSERT OR REPLACE INTO rows VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [(p, readers_stamp(), *s, json.dumps(r)) for p, s, r in rows])
        except sqlite3.Error:
            return

    def close(self) -> None:
        """Close the database."""
        if self._db is not None:
            self._db.close()
            self._db = None


def absolute(path: Path) -> str:
    """The cache's key for a path: absolute and normalised, symlinks left as they are."""
    return os.path.abspath(path)
