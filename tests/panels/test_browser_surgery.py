"""The surgery panel in a real browser: notebook 08 run in JupyterLab, a merge run from the
panel, its report, figure and pictures shown; a merge across families refused in the red box."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.fixtures.browser import open_notebook_and_run
from tests.panels.browser_checks import check_panel

NOTEBOOK = "08_model_surgery.ipynb"


@pytest.mark.browser
def test_surgery_panel_merges_and_shows_the_result(lab_url, chromium, output_dir):
    page = open_notebook_and_run(chromium, lab_url, NOTEBOOK)
    panel = page.locator(".widget-vbox.labkit-surgery")
    panel.wait_for(state="visible", timeout=600_000)  # the last cell: the kernel is free then
    expect(panel.locator("img.labkit-surgery-images")).to_be_hidden()  # no broken icon
    expect(panel.locator("img.labkit-surgery-figure")).to_be_hidden()
    panel.scroll_into_view_if_needed()
    panel.locator(".widget-hslider", has_text="Alpha").locator(".widget-readout").fill("0.5")
    panel.locator("button.jupyter-button", has_text="Run").click()
    status = panel.locator(".labkit-surgery-status")
    expect(status).to_contain_text("Pictures", timeout=300_000)
    assert panel.locator(".labkit-error").count() == 0
    expect(panel.locator(".labkit-surgery-report")).to_contain_text("merged")
    for name, least in (("figure", 300), ("images", 3 * 128)):
        page.wait_for_function(f"el => el.naturalWidth >= {least}",
                               arg=panel.locator(f"img.labkit-surgery-{name}").element_handle(),
                               timeout=30_000)
    page.screenshot(path=str(output_dir / "browser_surgery.png"))
    check_panel(panel, output_dir / "browser_surgery_panel.png")

    panel.locator(".widget-dropdown", has_text="Model B").locator("select").select_option(
        label="demo_sdxl_single")
    panel.locator("button.jupyter-button", has_text="Run").click()
    expect(panel.locator(".labkit-error")).to_contain_text("demo_sdxl", timeout=120_000)
    expect(panel.locator("img.labkit-surgery-images")).to_be_hidden()
    assert page.locator(".jp-OutputArea-output[data-mime-type*='error']").count() == 0
    page.close()
