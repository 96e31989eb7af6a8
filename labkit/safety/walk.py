"""Walk pickles without running them: the globals each names, found in zips, tars and raw streams."""

from __future__ import annotations

import io
import pickletools
import tarfile
import warnings
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

from labkit.sniff import ZIP_MAGIC, looks_like_pickle_start

MAX_LINE = 64 * 1024  # longest text line (GLOBAL / INST names, protocol-0 values) read at once
MAX_STRING_KEPT = 4096  # longer strings are not kept on the simulated stack
MAX_INFLATED = 256 * 1024 * 1024  # largest compressed zip pickle inflated for scanning
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # torch's legacy (pre-zip) stream starts with this int
LEGACY_PICKLES = 5  # magic, protocol, sys_info, the object, storage keys
_LOCAL_HEADER = 30

_STRING_OPS = frozenset(
    {"STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "BINUNICODE", "SHORT_BINUNICODE",
     "BINUNICODE8"}
)
_PUT_OPS = frozenset({"PUT", "BINPUT", "LONG_BINPUT"})
_GET_OPS = frozenset({"GET", "BINGET", "LONG_BINGET"})
_EXT_OPS = frozenset({"EXT1", "EXT2", "EXT4"})
_UNKNOWN = object()


class Window:
    """A read-only view of bytes [start, end) of a binary file; reads never exceed what is there."""

    def __init__(self, f: BinaryIO, start: int, end: int):
        self._f, self._start, self._end, self._pos = f, start, end, start

    def read(self, n: int = -1) -> bytes:
        """Read up to n bytes (all that is left when n < 0), never past the window."""
        left = self._end - self._pos
        n = left if n is None or n < 0 else min(n, left)
        self._f.seek(self._pos)
        data = self._f.read(n)
        self._pos += len(data)
        return data

    def readline(self, limit: int = -1) -> bytes:
        """Read one line of at most MAX_LINE bytes."""
        cap = min(MAX_LINE, self._end - self._pos)
        self._f.seek(self._pos)
        data = self._f.readline(cap)
        self._pos += len(data)
        return data

    def tell(self) -> int:
        """Position relative to the window start."""
        return self._pos - self._start

    def seek(self, offset: int) -> None:
        """Move to an offset relative to the window start."""
        self._pos = self._start + max(0, min(offset, self._end - self._start))

    @property
    def size(self) -> int:
        """Length of the window in bytes."""
        return self._end - self._start


@dataclass
class PickleFindings:
    """What one walk found: globals (module, name, byte offset), problems, whether STOP was seen."""

    label: str
    globals: list[tuple[str, str, int]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    complete: bool = False
    constant: object = None  # the value of a pickle that is a single constant (torch's magic)


def _effect(op: pickletools.OpcodeInfo) -> tuple[int, bool, int, bool]:
    """(items popped below a mark, pops to a mark, items pushed, pushes a mark) of an opcode."""
    before, mark = op.stack_before, pickletools.markobject
    below = before[: before.index(mark)] if mark in before else before
    pushed = [item for item in op.stack_after if item is not mark]
    return len(below), mark in before, len(pushed), mark in op.stack_after


_EFFECTS = {op.name: _effect(op) for op in pickletools.opcodes}


class _Stack:
    """The unpickler's stack and marks, simulated with strings kept and everything else unknown."""

    def __init__(self) -> None:
        self.items: list[object] = []
        self.marks: list[int] = []
        self.memo: dict[int, object] = {}

    def pop(self) -> object:
        if len(self.items) <= (self.marks[-1] if self.marks else 0):
            raise ValueError("stack underflow")
        return self.items.pop()

    def top(self) -> object:
        if not self.items:
            raise ValueError("stack underflow")
        return self.items[-1]

    def apply(self, name: str) -> None:
        """Apply an opcode's generic stack effect (pops, mark handling, unknown results)."""
        below, to_mark, pushed, pushes_mark = _EFFECTS[name]
        items = self.items
        if to_mark:
            if not self.marks:
                raise ValueError("mark not found")
            del items[self.marks.pop():]
        if below:
            if len(items) - below < (self.marks[-1] if self.marks else 0):
                raise ValueError("stack underflow")
            del items[-below:]
        items.extend([_UNKNOWN] * pushed)
        if pushes_mark:
            self.marks.append(len(items))


def _stack_global(arg: object, pos: int, stack: _Stack, found: PickleFindings) -> None:
    attr, module = stack.pop(), stack.pop()
    if isinstance(module, str) and isinstance(attr, str):
        found.globals.append((module, attr, pos))
    else:
        found.problems.append(f"could not resolve the STACK_GLOBAL at byte {pos} to names")
    stack.items.append(_UNKNOWN)


def _named_global(arg: object, pos: int, stack: _Stack, found: PickleFindings) -> None:
    module, _, attr = str(arg).partition(" ")
    found.globals.append((module, attr, pos))


def _string(arg: object, pos: int, stack: _Stack, found: PickleFindings) -> None:
    keep = isinstance(arg, str) and len(arg) <= MAX_STRING_KEPT
    stack.items.append(arg if keep else _UNKNOWN)


def _memoize(arg: object, pos: int, stack: _Stack, found: PickleFindings) -> None:
    stack.memo[len(stack.memo)] = stack.top()


def _put(arg: object, pos: int, stack: _Stack, found: PickleFindings) -> None:
    stack.memo[int(arg)] = stack.top()


def _get(arg: object, pos: int, stack: _Stack, found: PickleFindings) -> None:
    stack.items.append(stack.memo.get(int(arg), _UNKNOWN))


def _dup(arg: object, pos: int, stack: _Stack, found: PickleFindings) -> None:
    stack.items.append(stack.top())


def _extension(arg: object, pos: int, stack: _Stack, found: PickleFindings) -> None:
    found.problems.append(f"an extension-registry opcode at byte {pos} cannot be checked")


def _proto(arg: object, pos: int, stack: _Stack, found: PickleFindings) -> None:
    if int(arg) > 5:
        found.problems.append(f"unknown pickle protocol {arg}")


# opcode name -> what it does beyond (GLOBAL, INST, EXT*, PROTO) or instead of (the others)
# its generic stack effect
_SPECIAL = {
    "GLOBAL": _named_global, "INST": _named_global, "STACK_GLOBAL": _stack_global,
    **dict.fromkeys(_STRING_OPS, _string), "MEMOIZE": _memoize,
    **dict.fromkeys(_PUT_OPS, _put), **dict.fromkeys(_GET_OPS, _get), "DUP": _dup,
    **dict.fromkeys(_EXT_OPS, _extension), "PROTO": _proto,
}
_ALSO_GENERIC = frozenset({"GLOBAL", "INST", "PROTO", *_EXT_OPS})


def _run(stream: Window | BinaryIO, found: PickleFindings, first_args: list[object]) -> None:
    stack = _Stack()
    for op, arg, pos in pickletools.genops(stream):
        if len(first_args) < 3:
            first_args.append(arg)
        name = op.name
        special = _SPECIAL.get(name)
        if special is not None:
            special(arg, pos, stack, found)
        if special is None or name in _ALSO_GENERIC:
            stack.apply(name)


def walk(stream: Window | BinaryIO, label: str) -> PickleFindings:
    """Walk one pickle from the stream's position to its STOP, recording every global it names."""
    found = PickleFindings(label)
    first_args: list[object] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # bad escapes in hostile text strings
        try:
            _run(stream, found, first_args)
            found.complete = True
        except Exception as exc:  # any parse failure of hostile bytes ends the walk; recorded
            found.problems.append(f"malformed pickle ({_short(exc)})")
    if found.complete and len(first_args) == 3 and not found.globals:
        found.constant = first_args[1]
    return found


def _short(exc: Exception) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:200]


def walk_stream(window: Window, label: str, strict_first: bool) -> list[PickleFindings]:
    """Walk consecutive pickles of a raw stream (torch's legacy format holds five, then data)."""
    results: list[PickleFindings] = []
    while window.tell() < window.size:
        start = window.tell()
        found = walk(window, f"{label} pickle {len(results) + 1} at byte {start}")
        first_strict = strict_first and not results
        if not (found.complete or found.globals or first_strict):
            break  # the rest is data (storages), not a pickle
        if not found.complete and not first_strict:
            found.problems = [p for p in found.problems if not p.startswith("malformed")]
            found.problems.append("a pickle cut short after naming globals")
        results.append(found)
        if not found.complete:
            break
        if results[0].constant == LEGACY_MAGIC and len(results) >= LEGACY_PICKLES:
            break
    if _legacy_cut_short(results):
        raise EOFError(f"a torch legacy file ends after {len(results)} of its "
                       f"{LEGACY_PICKLES} pickles")
    return results


def _legacy_cut_short(results: list[PickleFindings]) -> bool:
    """True when a stream opens with torch's legacy magic but fewer than its five pickles parse
    (what follows is not the storages: the object itself is missing, so nothing was checked)."""
    return (bool(results) and results[0].constant == LEGACY_MAGIC
            and len(results) < LEGACY_PICKLES and all(r.complete for r in results))


def _zip_entry(f: BinaryIO, info: zipfile.ZipInfo, file_size: int) -> Window | io.BytesIO:
    """The bytes of one zip entry, read via its local header as torch's reader does (flags ignored)."""
    f.seek(info.header_offset)
    head = f.read(_LOCAL_HEADER)
    if len(head) < _LOCAL_HEADER or head[:4] != ZIP_MAGIC:
        raise ValueError(f"entry {info.filename!r} has no local header")
    name_len = int.from_bytes(head[26:28], "little")
    extra_len = int.from_bytes(head[28:30], "little")
    start = info.header_offset + _LOCAL_HEADER + name_len + extra_len
    end = start + info.compress_size
    if end > file_size:
        raise ValueError(f"entry {info.filename!r} runs past the end of the file")
    window = Window(f, start, end)
    if info.compress_type == zipfile.ZIP_STORED:
        return window
    if info.compress_type != zipfile.ZIP_DEFLATED:
        raise ValueError(f"entry {info.filename!r} uses compression {info.compress_type}")
    data = zlib.decompressobj(-15).decompress(window.read(), MAX_INFLATED + 1)
    if len(data) > MAX_INFLATED:
        raise ValueError(f"entry {info.filename!r} inflates past {MAX_INFLATED} bytes")
    return io.BytesIO(data)


def in_memory(entry: Window | io.BytesIO) -> Window | io.BytesIO:
    """The same bytes held in memory (reads then cost no system calls), when small enough."""
    entry.seek(0)
    if isinstance(entry, io.BytesIO) or entry.size > MAX_INFLATED:
        return entry
    return io.BytesIO(entry.read())


def scan_zip(f: BinaryIO, file_size: int) -> list[PickleFindings]:
    """Walk every pickle in a zip: each entry named .pkl, and any other whose bytes are a pickle
    that names a global (a tensor's raw bytes often parse as a short pickle by chance: one of
    demo_sd1.ckpt's fp16 storages reads as an extension-registry opcode and a STOP; torch never
    unpickles them, and only a named global could run code if something did)."""
    results: list[PickleFindings] = []
    with zipfile.ZipFile(f) as zf:
        infos = zf.infolist()
    for info in infos:
        is_pkl = info.filename.endswith(".pkl")
        try:
            window = _zip_entry(f, info, file_size)
        except (ValueError, zlib.error) as exc:
            if is_pkl:
                results.append(PickleFindings(info.filename, problems=[_short(exc)]))
            continue
        if not is_pkl and not looks_like_pickle_start(window.read(2)):
            continue
        found = walk(in_memory(window), info.filename)
        if is_pkl or (found.complete and found.globals):
            results.append(found)
    return results


def scan_tar(f: BinaryIO, file_size: int) -> list[PickleFindings]:
    """Walk the pickles of each member of a legacy torch tar archive."""
    results: list[PickleFindings] = []
    # tarfile reads header blocks of the sizes they claim: the window caps them at the file
    with tarfile.open(fileobj=Window(f, 0, file_size), mode="r:") as tar:  # type: ignore[arg-type]
        members = [m for m in tar.getmembers() if m.isreg()]
    for member in members:
        end = min(member.offset_data + member.size, file_size)
        results += walk_stream(Window(f, member.offset_data, end), member.name, strict_first=False)
    return results


def scan_file(f: BinaryIO, file_size: int, container: str) -> Iterator[PickleFindings]:
    """Walk every pickle of a file by container kind."""
    if container == "zip":
        yield from scan_zip(f, file_size)
    elif container == "tar":
        yield from scan_tar(f, file_size)
    else:
        yield from walk_stream(Window(f, 0, file_size), "stream", strict_first=True)
