"""The LoRA panel in a real browser: run notebook 04, make a strength grid, see it appear."""

from __future__ import annotations

import pytest

from tests.fixtures.browser import open_notebook_and_run
from tests.panels.browser_checks import check_panel

GRID_WIDTH = ("() => Math.max(0, ...[...document.querySelectorAll('img.labkit-lora-grid')]"
              ".map(e => e.naturalWidth))")
STATUS = ("() => [...document.querySelectorAll('.labkit-lora-status')]"
          ".map(e => e.textContent).join(' ')")


@pytest.mark.browser
def test_lora_panel_makes_a_strength_grid(lab_url, chromium, output_dir):
    page = open_notebook_and_run(chromium, lab_url, "04_lora.ipynb")
    button = page.locator("button.jupyter-button", has_text="Make grid")
    button.wait_for(state="visible", timeout=600_000)
    assert page.evaluate(GRID_WIDTH) == 0
    assert page.locator("img.labkit-lora-grid").is_hidden()  # no broken icon before a click
    panel = page.locator(".widget-vbox", has=page.locator("h3", has_text="LoRA lab")).last
    panel.locator("button.jupyter-button", has_text="Show anatomy").click()
    page.wait_for_function("() => document.querySelectorAll('img.labkit-lora-figure').length == 4"
                           " && [...document.querySelectorAll('img.labkit-lora-figure')]"
                           ".every(e => e.naturalWidth > 0)", timeout=120_000)
    prompts = page.locator(".widget-textarea textarea").last
    prompts.fill("a red circle on a white background, striped\n"
                 "a blue square on a black background, striped")
    button.scroll_into_view_if_needed()
    button.click()
    page.wait_for_function(f"() => /10 images/.test(({STATUS})())", timeout=300_000)
    assert page.locator(".labkit-error").count() == 0
    page.wait_for_function(f"() => ({GRID_WIDTH})() >= 5 * 128", timeout=30_000)
    page.locator("img.labkit-lora-grid").last.evaluate("grid => grid.scrollIntoView({block: 'end'})")
    page.screenshot(path=str(output_dir / "browser_lora.png"))
    check_panel(panel, output_dir / "browser_lora_panel.png")
    page.close()
