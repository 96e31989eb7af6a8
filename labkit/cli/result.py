"""What one subcommand gives for one path: its record and its exit code (DESIGN.md's contract)."""

from __future__ import annotations

from typing import Any, NamedTuple

OK, UNSAFE, BAD_INPUT = 0, 1, 2


class Outcome(NamedTuple):
    """One record to print and the exit code it earns."""

    record: dict[str, Any]
    code: int
