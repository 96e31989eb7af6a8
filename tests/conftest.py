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


@pytest.fixture(scope="session")
def lab_url(tmp_path_factory) -> str:
    """One JupyterLab server for all browser tests, over a copy of notebooks/."""
    import shutil

    from tests.fixtures.browser import jupyterlab

    root = tmp_path_factory.mktemp("lab")
    for nb in (REPO / "notebooks").glob("*.ipynb"):
        shutil.copy(nb, root / nb.name)
    with jupyterlab(root) as url:
        yield url


@pytest.fixture(scope="session")
def chromium():
    """Debian's headless Chromium driven by Playwright (it cannot download its own browser here)."""
    from playwright.sync_api import sync_playwright

    from tests.fixtures.browser import CHROMIUM, CHROMIUM_ARGS

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()
