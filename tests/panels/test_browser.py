"""The panels in a real browser: JupyterLab in headless Chromium, driven by Playwright.

Each panel's browser test uses the session fixtures `lab_url` and `chromium` (tests/conftest.py)
and `open_notebook_and_run` (tests/browser.py), and saves a screenshot to look at.
"""

from __future__ import annotations

import pytest

from tests.fixtures.browser import open_notebook_and_run
from tests.panels.browser_checks import check_panel


@pytest.mark.browser
def test_welcome_panel_renders_and_answers_a_click(lab_url, chromium, output_dir):
    page = open_notebook_and_run(chromium, lab_url, "00_welcome.ipynb")
    button = page.locator("button.jupyter-button", has_text="Check my set-up")
    button.wait_for(state="visible", timeout=300_000)
    assert page.locator(".labkit-table").count() == 0
    button.click()
    table = page.locator(".labkit-table")
    table.wait_for(state="visible", timeout=30_000)
    assert "diffusers" in table.inner_text()
    table.scroll_into_view_if_needed()
    page.screenshot(path=str(output_dir / "browser_welcome.png"))
    check_panel(page.locator(".widget-vbox", has=page.locator("h3", has_text="set-up check")).last,
                output_dir / "browser_welcome_panel.png")
    page.close()
