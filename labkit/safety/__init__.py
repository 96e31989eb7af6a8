"""Safety: grade every pickle in a file by an allowlist without running it, then load it safely.

`scan(path)` gives a `Verdict`; `safe_load(path)` is the only way the lab unpickles a file.
"""

from __future__ import annotations

from labkit.safety.rules import GlobalRef
from labkit.safety.verdicts import Verdict, safe_load, scan

__all__ = ["GlobalRef", "Verdict", "safe_load", "scan"]
