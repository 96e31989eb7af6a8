"""The generate panel in a real browser: run notebook 03, click Generate, see an image appear."""

from __future__ import annotations

import pytest

from tests.fixtures.browser import open_notebook_and_run
from tests.panels.browser_checks import check_panel

NATURAL_WIDTH = "() => document.querySelector('img.labkit-generated').naturalWidth"


@pytest.mark.browser
def test_generate_panel_draws_an_image(lab_url, chromium, output_dir):
    page = open_notebook_and_run(chromium, lab_url, "03_generate.ipynb")
    button = page.locator("button.jupyter-button", has_text="Generate")
    button.wait_for(state="visible", timeout=300_000)
    assert page.evaluate(NATURAL_WIDTH) == 0
    assert page.locator("img.labkit-generated").is_hidden()  # no broken icon before a click
    button.scroll_into_view_if_needed()
    button.click()
    page.wait_for_function(
        "() => /image\\(s\\)/.test(document.querySelector('.labkit-generate-status')"
        "?.textContent ?? '')", timeout=180_000)
    assert "seed 0" in page.locator(".labkit-generate-status").inner_text()
    assert page.locator(".labkit-error").count() == 0
    page.wait_for_function(f"() => ({NATURAL_WIDTH})() >= 64", timeout=30_000)
    assert page.locator("img.labkit-denoising-strip").get_attribute("src")
    page.locator(".widget-vbox", has=page.locator("h3", has_text="Generate")).last.evaluate(
        "panel => panel.scrollIntoView()")
    page.screenshot(path=str(output_dir / "browser_generate.png"))
    check_panel(page.locator(".widget-vbox", has=page.locator("h3", has_text="Generate")).last,
                output_dir / "browser_generate_panel.png")
    page.close()
