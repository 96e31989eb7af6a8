"""The catalog panel in a real browser: notebook 02 run in JupyterLab, the demo folder
catalogued, filtered by kind, and a missing folder refused in the red box."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from labkit.zoo import manifest
from tests.fixtures.browser import open_panel
from tests.panels.browser_checks import check_panel

NOTEBOOK = "02_what_is_this_file.ipynb"


@pytest.mark.browser
def test_catalog_panel_catalogues_and_filters(lab_url, chromium, output_dir):
    page, panel = open_panel(chromium, lab_url, NOTEBOOK, "Not answered yet", "Catalog a folder")
    expect(panel.locator("img.labkit-catalog-figure")).to_be_hidden()  # no broken icon
    panel.scroll_into_view_if_needed()
    panel.locator("button.jupyter-button", has_text="Catalog").click()
    expect(panel.locator(".labkit-catalog-status")).to_contain_text("model files and folders",
                                                                    timeout=120_000)
    table = panel.locator(".labkit-catalog-table")
    expect(table).to_contain_text("lycoris/twotone_lokr.safetensors")
    panel.locator(".widget-select-multiple", has_text="Kinds").locator("select").select_option(
        ["lora", "checkpoint"])
    shown = sum(e["kind"] in ("lora", "checkpoint") for e in manifest())
    expect(table).to_contain_text(f"{shown} of {len(manifest())} rows", timeout=60_000)
    expect(table).not_to_contain_text("embeddings/")
    page.wait_for_function("el => el.naturalWidth > 300",
                           arg=panel.locator("img.labkit-catalog-figure").element_handle(),
                           timeout=30_000)
    page.screenshot(path=str(output_dir / "browser_catalog.png"))
    check_panel(panel, output_dir / "browser_catalog_panel.png")

    folder = panel.locator(".widget-text", has_text="Folder").locator("input")
    folder.fill("/no/such/folder")
    panel.locator("button.jupyter-button", has_text="Catalog").click()
    expect(panel.locator(".labkit-error")).to_contain_text("this folder is missing", timeout=60_000)
    expect(panel.locator("img.labkit-catalog-figure")).to_be_hidden()
    assert page.locator(".jp-OutputArea-output[data-mime-type*='error']").count() == 0
    page.screenshot(path=str(output_dir / "browser_catalog_error.png"))
    page.close()
