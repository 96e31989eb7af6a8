"""The lab's exceptions: one base class, each message says which file, what is wrong, what to do."""

from __future__ import annotations

from pathlib import Path


class LabkitError(Exception):
    """Base of every error the lab raises at its edge (file access, parsing, loading)."""

    def __init__(self, message: str, path: str | Path | None = None, hint: str | None = None):
        self.path = None if path is None else str(path)
        self.hint = hint
        parts = [f"{self.path}: {message}" if self.path else message]
        if hint:
            parts.append(hint)
        super().__init__(" ".join(parts))

    def __reduce__(self) -> tuple:
        # Rebuilt from its message and attributes: a worker process's error reaches the caller
        # as the same class with the same path and hint.
        return _rebuilt, (type(self), self.args, self.__dict__)


class NotAModelError(LabkitError):
    """The path is missing, unreadable, or is not a model file the lab knows."""


class CorruptFileError(LabkitError):
    """The file claims a known format but its contents break that format's rules."""


class UnsafeFileError(LabkitError):
    """A pickle inside the file names globals outside the lab's allowlist."""

    def __init__(self, message: str, path: str | Path | None = None, hint: str | None = None,
                 verdict: object = None):
        super().__init__(message, path, hint)
        self.verdict = verdict


class IncompatibleModelError(LabkitError):
    """A file was given to an operation or model it does not fit (wrong kind or family)."""


def _rebuilt(cls: type[LabkitError], args: tuple, attributes: dict) -> LabkitError:
    error = Exception.__new__(cls)
    error.args = args
    error.__dict__.update(attributes)
    return error
