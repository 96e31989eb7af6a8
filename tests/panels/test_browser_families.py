"""The families panel in a real browser: notebook 07 run in JupyterLab, a model picked, a bad
path typed, driven by Playwright."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.fixtures.browser import open_panel
from tests.panels.browser_checks import check_panel

NOTEBOOK = "07_model_families.ipynb"


@pytest.mark.browser
def test_families_panel_compares_what_is_picked(lab_url, chromium, output_dir):
    page, panel = open_panel(chromium, lab_url, NOTEBOOK, "Not answered yet", "Compare two models")
    panel.scroll_into_view_if_needed()
    verdict = panel.locator(".labkit-families-verdict")
    expect(verdict).to_have_text("A demo_sd1 LoRA does not fit demo_sdxl: context 32 vs 80, "
                                 "lora_te_ vs lora_te1_/lora_te2_.", timeout=60_000)

    panel.locator(".widget-dropdown", has_text="Model B").locator("select").select_option(
        label="SDXL (key table)")
    expect(verdict).to_contain_text("does not fit sdxl: context 32 vs 2048", timeout=60_000)
    table = panel.locator(".labkit-families-table")
    expect(table).to_contain_text("CLIP 768 + OpenCLIP 1280")
    expect(table).to_contain_text("conditioner.embedders.1.model.")
    page.wait_for_function("el => el.naturalWidth > 300",
                           arg=panel.locator("img.labkit-families-figure").element_handle(),
                           timeout=30_000)
    verdict.evaluate("e => e.scrollIntoView({block: 'start'})")
    page.screenshot(path=str(output_dir / "browser_families.png"))
    check_panel(panel, output_dir / "browser_families_panel.png")

    path_a = panel.locator(".widget-text", has_text="Path").first.locator("input")
    path_a.fill("/no/such/model.safetensors")
    path_a.press("Enter")
    error = panel.locator(".labkit-error")
    expect(error).to_contain_text("model.safetensors: no such file or folder", timeout=60_000)
    expect(verdict).to_have_text("")
    expect(panel.locator("img.labkit-families-figure")).to_be_hidden()
    assert page.locator(".jp-OutputArea-output[data-mime-type*='error']").count() == 0
    page.screenshot(path=str(output_dir / "browser_families_error.png"))
    page.close()
