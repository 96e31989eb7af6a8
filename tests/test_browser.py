"""The panels in a real browser: JupyterLab in headless Chromium, driven by Playwright."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

from tests.browser import CHROMIUM, CHROMIUM_ARGS, jupyterlab, run_all_cells

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
TOKEN = "labkit-test"


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    root = tmp_path_factory.mktemp("lab")
    for nb in NOTEBOOKS.glob("*.ipynb"):
        shutil.copy(nb, root / nb.name)
    with jupyterlab(root, TOKEN) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.mark.browser
def test_welcome_panel_renders_and_answers_a_click(lab, browser, output_dir):
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.goto(f"{lab}/lab/tree/00_welcome.ipynb?token={TOKEN}")
    run_all_cells(page)
    button = page.locator("button.jupyter-button", has_text="Check my set-up")
    button.wait_for(state="visible", timeout=120_000)
    assert page.locator(".labkit-table").count() == 0
    button.click()
    table = page.locator(".labkit-table")
    table.wait_for(state="visible", timeout=30_000)
    assert "diffusers" in table.inner_text()
    table.scroll_into_view_if_needed()
    page.screenshot(path=str(output_dir / "browser_welcome.png"), full_page=False)
    page.close()
