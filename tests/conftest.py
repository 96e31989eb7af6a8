"""Shared test set-up: where test outputs (screenshots, figures) go."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
OUTPUT_DIR = Path(os.environ.get("LABKIT_TEST_OUTPUT", REPO / "test-output"))


@pytest.fixture(scope="session")
def output_dir() -> Path:
    """A folder for screenshots and figures that a person should look at after the run."""
    OUTPUT_DIR.mkdir(parents=True, exist_ok=True)
    return OUTPUT_DIR


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """In CI, a skipped test or an empty run is a failure, never a pass."""
    if os.environ.get("CI") != "true":
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = len(reporter.stats.get("skipped", [])) if reporter else 0
    if skipped or exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        if reporter:
            reporter.write_line(f"CI: {skipped} skipped test(s) or no tests ran: failing the run",
                                red=True)
