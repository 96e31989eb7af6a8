"""Which globals a pickle may name: the lab's allowlist, a table of known-dangerous ones, and grading."""

from __future__ import annotations

from typing import NamedTuple

_REBUILD = "torch tensor rebuild helper"
_STORAGE = "torch storage type"
_DTYPE = "torch dtype"

_STORAGE_TYPES = (
    "Float", "Double", "Half", "BFloat16", "Long", "Int", "Short", "Char", "Byte", "Bool",
    "ComplexFloat", "ComplexDouble", "QInt8", "QUInt8", "QInt32", "QUInt4x2", "QUInt2x4",
)
_DTYPES = (
    "float16", "float32", "float64", "bfloat16", "complex32", "complex64", "complex128",
    "uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "int64", "bool",
    "float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz", "float8_e8m0fnu",
    "qint8", "quint8", "qint32", "quint4x2", "quint2x4",
)
_REBUILDERS = (
    "torch._utils._rebuild_tensor", "torch._utils._rebuild_tensor_v2",
    "torch._utils._rebuild_tensor_v3", "torch._utils._rebuild_parameter",
    "torch._utils._rebuild_parameter_with_state", "torch._utils._rebuild_qtensor",
    "torch._utils._rebuild_sparse_tensor", "torch._utils._rebuild_meta_tensor_no_storage",
    "torch._utils._rebuild_device_tensor_from_cpu_tensor",
    "torch._utils._rebuild_device_tensor_from_numpy", "torch._tensor._rebuild_from_type_v2",
)

# Names a real Stable Diffusion checkpoint uses; each maps to what it is. The loader (safety.py)
# maps the Lightning and numpy names to inert objects without importing Lightning.
LIGHTNING_CHECKPOINT_NAMES = (
    "pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint",
    "lightning.pytorch.callbacks.model_checkpoint.ModelCheckpoint",
)
NUMPY_SCALAR_NAMES = ("numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar")
# rinongal's ldm EmbeddingManager (and early A1111) saves string_to_param as this container;
# the loader lets torch's weights_only unpickler build it (verdicts._stand_ins).
PARAMETER_DICT_NAME = "torch.nn.modules.container.ParameterDict"

ALLOWED: dict[str, str] = {
    **dict.fromkeys(_REBUILDERS, _REBUILD),
    **{f"torch.{t}Storage": _STORAGE for t in _STORAGE_TYPES},
    "torch.storage.UntypedStorage": _STORAGE,
    "torch.storage.TypedStorage": _STORAGE,
    **{f"torch.{d}": _DTYPE for d in _DTYPES},
    "torch.Size": "torch shape",
    "torch.device": "torch device name",
    "torch.Tensor": "torch tensor class",
    "torch.nn.parameter.Parameter": "torch parameter",
    PARAMETER_DICT_NAME: "torch ParameterDict (a dict of parameters: original textual inversion files)",
    "torch.serialization._get_layout": "torch tensor layout",
    "collections.OrderedDict": "ordered dict (state dicts)",
    "_codecs.encode": "bytes under pickle protocol 2",
    "builtins.set": "Python set",
    "builtins.bytearray": "Python bytearray",
    "builtins.complex": "Python complex number",
    **dict.fromkeys(LIGHTNING_CHECKPOINT_NAMES, "Lightning callback name (inert stand-in)"),
    **dict.fromkeys(NUMPY_SCALAR_NAMES, "numpy scalar"),
    "numpy.dtype": "numpy dtype of a scalar",
}

_RUNS_COMMANDS = "runs system commands and changes files"
_RUNS_CODE = "runs arbitrary Python code"
DANGEROUS_MODULES: dict[str, str] = {
    "os": _RUNS_COMMANDS, "posix": _RUNS_COMMANDS, "nt": _RUNS_COMMANDS,
    "subprocess": "starts programs", "pty": "starts a shell", "commands": "starts programs",
    "runpy": _RUNS_CODE, "code": _RUNS_CODE, "codeop": _RUNS_CODE, "pdb": _RUNS_CODE,
    "bdb": _RUNS_CODE, "timeit": _RUNS_CODE, "profile": _RUNS_CODE, "cProfile": _RUNS_CODE,
    "trace": _RUNS_CODE, "types": "builds functions from code objects",
    "marshal": "loads code objects", "pickle": "unpickles more, unchecked data",
    "_pickle": "unpickles more, unchecked data", "dill": "unpickles more, unchecked data",
    "shelve": "unpickles more, unchecked data", "importlib": "imports any module",
    "pkgutil": "imports any module", "zipimport": "imports any module",
    "pip": "installs packages (runs their code)", "ensurepip": "installs packages",
    "setuptools": "runs build code", "webbrowser": "opens web pages and programs",
    "shutil": "copies and deletes files", "tempfile": "creates files", "glob": "reads folders",
    "socket": "opens network connections", "ssl": "opens network connections",
    "http": "opens network connections", "urllib": "opens network connections",
    "requests": "opens network connections", "ftplib": "opens network connections",
    "smtplib": "sends mail", "asyncio": "starts programs and network connections",
    "multiprocessing": "starts processes", "threading": "starts threads",
    "ctypes": "calls native code", "_ctypes": "calls native code", "sys": "changes the interpreter",
    "signal": "changes the interpreter", "operator": "reaches any attribute (attrgetter gadget)",
    "_operator": "reaches any attribute (attrgetter gadget)",
    "functools": "builds callables from other callables", "platform": "starts programs",
}
DANGEROUS_NAMES: dict[str, str] = {
    "builtins.exec": _RUNS_CODE, "builtins.eval": _RUNS_CODE, "builtins.compile": _RUNS_CODE,
    "builtins.execfile": _RUNS_CODE, "builtins.breakpoint": _RUNS_CODE,
    "builtins.__import__": "imports any module", "builtins.getattr": "reaches any attribute",
    "builtins.setattr": "changes any attribute", "builtins.delattr": "changes any attribute",
    "builtins.open": "opens files", "builtins.input": "reads the terminal",
    "builtins.globals": "reaches the interpreter's globals", "builtins.locals": "reaches locals",
    "builtins.vars": "reaches any namespace", "builtins.apply": "calls anything",
    "torch.load": "unpickles more, unchecked data", "torch.serialization.load":
    "unpickles more, unchecked data", "torch.hub.load": "downloads and runs code",
    "torch.jit.load": "loads TorchScript code", "numpy.load": "unpickles more, unchecked data",
    "numpy.lib.npyio.load": "unpickles more, unchecked data",
}


class GlobalRef(NamedTuple):
    """One global a pickle names, whether the lab allows it, and why."""

    module: str
    name: str
    allowed: bool
    why: str


def python2_name(module: str, name: str) -> tuple[str, str]:
    """The module and name pickle really imports for a Python 2 name (``__builtin__`` -> builtins)."""
    from _compat_pickle import IMPORT_MAPPING, NAME_MAPPING

    if (module, name) in NAME_MAPPING:
        return NAME_MAPPING[(module, name)]
    return IMPORT_MAPPING.get(module, module), name


def grade(module: str, name: str) -> GlobalRef:
    """Grade one global: allowed by the allowlist, dangerous by the table, else unknown."""
    module, name = python2_name(module, name)
    full = f"{module}.{name}"
    if full in ALLOWED:
        return GlobalRef(module, name, True, f"allowed: {ALLOWED[full]}")
    if full in DANGEROUS_NAMES:
        return GlobalRef(module, name, False, f"dangerous: {DANGEROUS_NAMES[full]}")
    parts = module.split(".")
    for i in range(len(parts), 0, -1):
        prefix = ".".join(parts[:i])
        if prefix in DANGEROUS_MODULES:
            return GlobalRef(module, name, False, f"dangerous: {DANGEROUS_MODULES[prefix]}")
    return GlobalRef(module, name, False, "unknown: not on the lab's allowlist")
