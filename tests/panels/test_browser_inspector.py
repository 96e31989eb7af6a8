"""The inspector panel in a real browser: notebook 02 run in JupyterLab, driven by Playwright."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.fixtures.browser import open_panel
from tests.panels.browser_checks import check_panel

NOTEBOOK = "02_what_is_this_file.ipynb"


@pytest.mark.browser
def test_inspector_filters_tensors_and_computes_hashes(lab_url, chromium, output_dir):
    page, panel = open_panel(chromium, lab_url, NOTEBOOK, "Not answered yet", "Model file inspector",
                             timeout=180_000)
    panel.locator(".labkit-summary").wait_for(state="visible", timeout=60_000)
    assert "lora" in panel.locator(".labkit-summary").inner_text()

    panel.locator(".lm-TabBar-tab", has_text="Tensors").click()
    count = panel.locator("i", has_text=re.compile(r"\d+ of \d+ tensors"))
    # textContent, not innerText: right after the tab switch the count may not be laid out yet,
    # and its innerText is then empty (a CI run failed so)
    expect(count).to_be_visible(timeout=60_000)
    before = count.text_content()
    shown, total = map(int, re.findall(r"\d+", before.replace(",", ""))[:2])
    assert shown == total
    panel.locator("input[placeholder^='filter names']").fill("attn2")
    panel.locator("input[placeholder^='filter names']").press("Enter")
    # the count is re-rendered as a new element, so wait on the locator, not on an element handle
    expect(count).not_to_have_text(before, timeout=60_000)
    after = count.text_content()
    assert 0 < int(after.split()[0].replace(",", "")) < total
    assert "attn2" in panel.locator(".labkit-tensors").inner_text()

    panel.locator(".lm-TabBar-tab", has_text="Hashes").click()
    panel.locator("button.jupyter-button", has_text="Compute hashes").click()
    sha = panel.locator(".labkit-summary th", has_text="SHA256")
    sha.wait_for(state="visible", timeout=60_000)
    assert re.search(r"\b[0-9A-F]{64}\b", panel.locator(".labkit-summary").last.inner_text())
    panel.scroll_into_view_if_needed()
    page.screenshot(path=str(output_dir / "browser_inspector.png"))
    panel.locator(".lm-TabBar-tab", has_text="Tensors").click()
    check_panel(panel, output_dir / "browser_inspector_panel.png")
    page.close()
