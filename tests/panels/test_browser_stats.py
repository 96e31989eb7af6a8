"""The stats panel in a real browser: notebook 06 run in JupyterLab, driven by Playwright."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.fixtures.browser import open_panel
from tests.panels.browser_checks import check_panel

NOTEBOOK = "06_tensor_statistics.ipynb"


def number(text: str) -> list[int]:
    return [int(n) for n in re.findall(r"\d+", text.replace(",", ""))]


@pytest.mark.browser
def test_stats_panel_filters_sorts_draws_and_compares(lab_url, chromium, output_dir):
    page, panel = open_panel(chromium, lab_url, NOTEBOOK, "Not answered yet", "Tensor statistics")
    panel.scroll_into_view_if_needed()

    count = panel.locator("i", has_text=re.compile(r"\d+ of \d+ tensors"))
    count.wait_for(state="visible", timeout=60_000)
    shown, total = number(count.inner_text())[:2]
    assert shown == total > 100
    before = count.inner_text()
    filter_box = panel.locator("input[placeholder^='filter names']")
    filter_box.fill("attn2")
    filter_box.press("Enter")
    # the count is re-rendered as a new element, so wait on the locator, not on an element handle
    expect(count).not_to_have_text(before, timeout=60_000)
    assert 0 < number(count.inner_text())[0] < total
    rows = panel.locator(".labkit-stats-rows")
    assert "attn2" in rows.inner_text()

    # The rows, caption and image are re-rendered as new elements: wait on locators or on a
    # fresh query, never on an element handle taken before the change (it goes stale). Each
    # change re-sorts the rows and resets the tensor dropdown, so wait for each one to land.
    top_row = rows.locator("tbody tr").first
    first_row = top_row.inner_text()
    panel.locator(".widget-dropdown", has_text="Sort by").locator("select").select_option("abs_max")
    expect(top_row).not_to_have_text(first_row, timeout=30_000)
    ascending_row = top_row.inner_text()
    panel.locator(".widget-toggle-button", has_text="descending").click()
    expect(top_row).not_to_have_text(ascending_row, timeout=30_000)

    image = panel.locator(".labkit-stats-histogram")
    caption = panel.locator(".labkit-stats-histogram-of")
    tensor_select = panel.locator(".widget-dropdown", has_text="Tensor").locator("select")
    top_name = top_row.locator("td").first.inner_text().strip()
    expect(tensor_select.locator("option").first).to_have_attribute("value", top_name,
                                                                    timeout=30_000)
    # the re-sort's own histogram (of the top row) lands last: once it has, the kernel has sent
    # every update of the dropdown, and a pick is not overwritten by a late reset
    expect(caption).to_have_text(re.compile(re.escape(top_name) + r"\s*$"), timeout=60_000)
    second = tensor_select.locator("option").nth(1).get_attribute("value")
    tensor_select.select_option(second)
    expect(caption).to_have_text(re.compile(re.escape(second) + r"\s*$"), timeout=60_000)
    page.wait_for_function("() => [...document.querySelectorAll('.labkit-stats-histogram')]"
                           ".some(el => el.naturalWidth > 100)", timeout=30_000)
    assert image.count() >= 1

    panel.locator(".lm-TabBar-tab", has_text="Compare").click()
    counts = panel.locator(".labkit-stats-compare-count")
    counts.wait_for(state="visible", timeout=30_000)
    assert re.search(r"(equal|close): \d+", counts.inner_text())
    assert "different" not in counts.inner_text()
    panel.locator(".labkit-stats-compare-rows").scroll_into_view_if_needed()
    panel.locator(".lm-TabBar-tab", has_text="Tensors").click()
    panel.scroll_into_view_if_needed()
    page.screenshot(path=str(output_dir / "browser_stats.png"))
    check_panel(panel, output_dir / "browser_stats_panel.png")
    page.close()
