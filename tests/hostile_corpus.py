"""Build a corpus of hostile pickle files into a folder; every payload, if run, creates a canary file.

Each entry lists the texts a refusal must name (a global such as "os.system", or a problem).
The pickles are assembled opcode by opcode so each form is exactly what the test means.
"""

from __future__ import annotations

import io
import pickle
import struct
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import torch

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


class Hostile(NamedTuple):
    """One hostile file: its name in the folder, its bytes, and texts the refusal must name."""

    name: str
    data: bytes
    names: tuple[str, ...]


# --- a tiny pickle assembler -------------------------------------------------------------------

def s(text: str, proto: int = 2) -> bytes:
    """Push a string: UNICODE (text form) for protocol 0, BINUNICODE otherwise."""
    if proto == 0:
        return b"V" + text.encode("raw_unicode_escape") + b"\n"
    data = text.encode()
    return b"X" + struct.pack("<I", len(data)) + data


def glob(module: str, name: str) -> bytes:
    """GLOBAL module name."""
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def stack_glob(module: str, name: str) -> bytes:
    """STACK_GLOBAL with both names pushed directly."""
    return s(module) + s(name) + b"\x93"


def call(fn: bytes, *args: bytes) -> bytes:
    """fn(*args) by MARK ... TUPLE REDUCE."""
    return fn + b"(" + b"".join(args) + b"tR"


def lst(*items: bytes) -> bytes:
    """A list from MARK ... LIST."""
    return b"(" + b"".join(items) + b"l"


def wrap(body: bytes, proto: int) -> bytes:
    """Add the PROTO header (protocol 2+) and STOP."""
    return (b"\x80" + bytes([proto]) if proto >= 2 else b"") + body + b"."


# --- payloads: each creates the canary when run -------------------------------------------------

def _payloads(canary: str) -> dict[str, tuple[bytes, tuple[str, ...]]]:
    touch = f"touch {canary}"
    code = f"open({canary!r}, 'w').close()"
    argv = lst(s("touch"), s(canary))
    getattr_ = glob("builtins", "getattr")
    os_mod = call(glob("builtins", "__import__"), s("os"))
    return {
        "os_system": (call(glob("os", "system"), s(touch)), ("os.system",)),
        "posix_system": (call(glob("posix", "system"), s(touch)), ("posix.system",)),
        "os_popen": (call(glob("os", "popen"), s(touch)), ("os.popen",)),
        "builtins_exec": (call(glob("builtins", "exec"), s(code)), ("builtins.exec",)),
        "builtins_eval": (call(glob("builtins", "eval"), s(code)), ("builtins.eval",)),
        "py2_builtin_eval": (call(glob("__builtin__", "eval"), s(code)), ("builtins.eval",)),
        "exec_compile": (call(glob("builtins", "exec"), call(glob("builtins", "compile"), s(code),
                                                                s("x"), s("exec"))),
                         ("builtins.exec", "builtins.compile")),
        "subprocess_popen": (call(glob("subprocess", "Popen"), argv), ("subprocess.Popen",)),
        "subprocess_call": (call(glob("subprocess", "call"), argv), ("subprocess.call",)),
        "subprocess_check_output": (call(glob("subprocess", "check_output"), argv),
                                    ("subprocess.check_output",)),
        "subprocess_getoutput": (call(glob("subprocess", "getoutput"), s(touch)),
                                 ("subprocess.getoutput",)),
        "runpy_run_code": (call(glob("runpy", "_run_code"), s(code), b"}"), ("runpy._run_code",)),
        "webbrowser_open": (call(call(getattr_, call(glob("webbrowser", "GenericBrowser"),
                                                     lst(s("touch"), s(canary))), s("open")),
                                 s("x")), ("webbrowser.GenericBrowser", "builtins.getattr")),
        "pip_main": (call(glob("pip", "main"), lst(s("--log"), s(canary), s("--version"))),
                     ("pip.main",)),
        "pkgutil_resolve_name": (call(call(glob("pkgutil", "resolve_name"), s("os:system")),
                                      s(touch)), ("pkgutil.resolve_name",)),
        "importlib_import_module": (
            call(call(getattr_, call(glob("importlib", "import_module"), s("os")), s("system")),
                 s(touch)), ("importlib.import_module", "builtins.getattr")),
        "builtins_import": (call(call(getattr_, os_mod, s("system")), s(touch)),
                            ("builtins.__import__",)),
        "operator_attrgetter": (call(call(call(glob("operator", "attrgetter"), s("system")),
                                          os_mod), s(touch)), ("operator.attrgetter",)),
        "shutil_copyfile": (call(glob("shutil", "copyfile"), s("/dev/null"), s(canary)),
                            ("shutil.copyfile",)),
        "timeit_timeit": (call(glob("timeit", "timeit"), s(code)), ("timeit.timeit",)),
        "pty_spawn": (call(glob("pty", "spawn"), argv), ("pty.spawn",)),
        "ordered_dict_then_system": (call(glob("collections", "OrderedDict")) + b"0"
                                     + call(glob("os", "system"), s(touch)), ("os.system",)),
    }


def _forms(canary: str) -> dict[str, tuple[bytes, tuple[str, ...]]]:
    """The same os.system call reached through every way a pickle can name a global."""
    touch = f"touch {canary}"
    os_s, sys_s = s("os"), s("system")
    arg = b"(" + s(touch) + b"tR"
    return {
        "form_stack_global_p4": (wrap(stack_glob("os", "system") + arg, 4), ("os.system",)),
        "form_stack_global_p5": (wrap(stack_glob("os", "system") + arg, 5), ("os.system",)),
        "form_memo_binput": (wrap(os_s + b"q\x00" + sys_s + b"q\x01" + b"00" + b"h\x00h\x01\x93"
                                  + arg, 4), ("os.system",)),
        "form_memoize": (wrap(os_s + b"\x94" + sys_s + b"\x94" + b"00" + b"h\x00h\x01\x93" + arg,
                              4), ("os.system",)),
        "form_long_memo": (wrap(os_s + b"r" + struct.pack("<I", 7000) + sys_s + b"r"
                                + struct.pack("<I", 7001) + b"00" + b"j" + struct.pack("<I", 7000)
                                + b"j" + struct.pack("<I", 7001) + b"\x93" + arg, 4),
                           ("os.system",)),
        "form_text_memo": (wrap(os_s + b"p7\n" + sys_s + b"p8\n" + b"00" + b"g7\ng8\n\x93" + arg,
                                4), ("os.system",)),
        "form_dup": (wrap(os_s + b"2" + b"0" + sys_s + b"\x93" + arg, 4), ("os.system",)),
        "form_pop_mark_decoy": (wrap(os_s + b"(" + s("torch") + s("Size") + b"1" + sys_s
                                     + b"\x93" + arg, 4), ("os.system",)),
        "form_unresolvable": (wrap(call(glob("builtins", "str"), os_s) + sys_s + b"\x93" + arg, 4),
                              ("could not resolve", "builtins.str")),
        "form_inst_p0": (b"(" + s(touch, 0) + b"ios\nsystem\n.", ("os.system",)),
        "form_obj_p1": (b"(" + glob("os", "system") + s(touch, 1) + b"o.", ("os.system",)),
        "form_reduce_build": (wrap(call(glob("os", "system"), s(touch)) + b"}b", 2),
                              ("os.system",)),
        **{f"form_global_p{p}": (wrap(glob("os", "system") + b"(" + s(touch, p) + b"tR", p),
                                 ("os.system",)) for p in range(4)},
    }


# --- containers --------------------------------------------------------------------------------

def torch_zip_entries(obj: object) -> dict[str, bytes]:
    """The entries of a real torch.save zip of obj."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as zf:
        return {i.filename: zf.read(i) for i in zf.infolist()}


def make_zip(entries: dict[str, bytes], deflate: bool = False,
             flags: dict[str, int] | None = None) -> bytes:
    """A zip of entries; `flags` ORs general-purpose flag bits into both headers of named entries."""
    buf = io.BytesIO()
    method = zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED
    with zipfile.ZipFile(buf, "w", method) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    raw = bytearray(buf.getvalue())
    for name, bits in (flags or {}).items():
        with zipfile.ZipFile(io.BytesIO(bytes(raw))) as zf:
            offset = zf.getinfo(name).header_offset
        raw[offset + 6 : offset + 8] = struct.pack("<H", struct.unpack_from("<H", raw, offset + 6)[0]
                                                   | bits)
        central = raw.find(b"PK\x01\x02")
        while central >= 0:
            name_len = struct.unpack_from("<H", raw, central + 28)[0]
            if raw[central + 46 : central + 46 + name_len] == name.encode():
                old = struct.unpack_from("<H", raw, central + 8)[0]
                raw[central + 8 : central + 10] = struct.pack("<H", old | bits)
            central = raw.find(b"PK\x01\x02", central + 4)
    return bytes(raw)


def make_tar(members: dict[str, bytes]) -> bytes:
    """A tar archive of members (torch's legacy layout: sys_info, pickle, storages, tensors)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


class _Evil:
    """An object whose pickle runs a shell command (as torch.save would write it)."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self) -> tuple[Callable[..., object], tuple[str]]:
        import os

        return os.system, (self.command,)


def _containers(canary: str) -> dict[str, tuple[bytes, tuple[str, ...]]]:
    evil = wrap(call(glob("os", "system"), s(f"touch {canary}")), 2)
    evil_p0 = glob("os", "system") + b"(" + s(f"touch {canary}", 0) + b"tR."
    clean = torch_zip_entries({"w": torch.ones(2)})
    pkl = next(n for n in clean if n.endswith("data.pkl"))
    prefix = pkl[: -len("data.pkl")]
    evil_data = {**clean, pkl: evil}
    legacy_head = [pickle.dumps(LEGACY_MAGIC, protocol=2), pickle.dumps(1001, protocol=2),
                   pickle.dumps({"little_endian": True}, protocol=2)]
    keys = pickle.dumps([], protocol=2)
    clean_pickle = pickle.dumps({"step": 1}, protocol=2)
    return {
        "zip_data_pkl.ckpt": (make_zip(evil_data), ("os.system",)),
        "zip_second_pkl.ckpt": (make_zip({**clean, prefix + "extra.pkl": evil}), ("os.system",)),
        "zip_odd_name.pt": (make_zip({**clean, prefix + "data/99": evil}), ("os.system",)),
        "zip_odd_ext_p0.pt": (make_zip({**clean, prefix + "notes.txt": evil_p0}), ("os.system",)),
        "zip_flag_encrypted.ckpt": (make_zip(evil_data, flags={pkl: 0x1}), ("os.system",)),
        "zip_flag_strong.ckpt": (make_zip(evil_data, flags={pkl: 0x41}), ("os.system",)),
        "zip_flag_descriptor_utf8.ckpt": (make_zip(evil_data, flags={pkl: 0x808}),
                                          ("os.system",)),
        "zip_deflated.ckpt": (make_zip(evil_data, deflate=True), ("os.system",)),
        "zip_torch_save_reduce.pth": (make_zip(torch_zip_entries(
            {"w": torch.ones(1), "x": _Evil(f"touch {canary}")})), ("posix.system",)),
        "legacy_stream_main.pt": (b"".join([*legacy_head, evil, keys]), ("os.system",)),
        "legacy_stream_keys.pt": (b"".join([*legacy_head, clean_pickle, evil]), ("os.system",)),
        "raw_two_pickles.pkl": (clean_pickle + evil, ("os.system",)),
        "raw_three_pickles.bin": (clean_pickle * 2 + evil_p0, ("os.system",)),
        "legacy_tar_pickle.tar": (make_tar({"sys_info": legacy_head[2], "pickle": evil,
                                            "storages": keys, "tensors": keys}), ("os.system",)),
        "legacy_tar_tensors.pt": (make_tar({"sys_info": legacy_head[2], "pickle": clean_pickle,
                                            "storages": keys, "tensors": evil}), ("os.system",)),
        "ext_image.png": (evil, ("os.system",)),
        "ext_pickle.safetensors": (evil, ("os.system",)),
        "ext_p0.safetensors": (evil_p0, ("os.system",)),
        "ext_none": (evil_p0, ("os.system",)),
        "ext_zip.bin": (make_zip(evil_data), ("os.system",)),
    }


def entries(canary: str) -> list[Hostile]:
    """The whole corpus in memory; every payload would create the file `canary` if run."""
    out = [Hostile(f"{n}.pkl", wrap(b, 2), names) for n, (b, names) in _payloads(canary).items()]
    out += [Hostile(f"{n}.pkl", b, names) for n, (b, names) in _forms(canary).items()]
    out += [Hostile(n, b, names) for n, (b, names) in _containers(canary).items()]
    return out


def build(folder: Path, canary: Path) -> list[Hostile]:
    """Write the whole corpus into folder and return its entries."""
    folder.mkdir(parents=True, exist_ok=True)
    corpus = entries(str(canary))
    for entry in corpus:
        (folder / entry.name).write_bytes(entry.data)
    return corpus


# Entries plain pickle.load runs at once: a test runs them to prove the corpus bites.
LIVE_CHECK = ("os_system.pkl", "builtins_exec.pkl", "subprocess_call.pkl",
              "pkgutil_resolve_name.pkl", "form_memo_binput.pkl", "form_pop_mark_decoy.pkl",
              "form_inst_p0.pkl", "form_obj_p1.pkl", "form_unresolvable.pkl")
