"""The context line every benchmark ends with: the load it ran under (figures measured with more
runnable processes than CPUs say more about those processes than about the lab)."""

from __future__ import annotations

import os


def load_line() -> str:
    """'  load average 0.52 0.61 0.80 (1, 5, 15 min), 2 CPUs', indented as context."""
    averages = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"  load average {averages} (1, 5, 15 min), {os.cpu_count()} CPUs"
