"""The embeddings panel in a real browser: run notebook 05, type a prompt, see its tokens."""

from __future__ import annotations

import re

import pytest

from tests.fixtures.browser import open_notebook_and_run
from tests.panels.browser_checks import check_panel


@pytest.mark.browser
def test_embeddings_panel_shows_tokens_as_you_type(lab_url, chromium, output_dir):
    page = open_notebook_and_run(chromium, lab_url, "05_embeddings.ipynb")
    box = page.locator(".widget-text", has=page.locator("label", has_text=re.compile(r"^Prompt$")))
    field = box.locator("input")
    field.wait_for(state="visible", timeout=600_000)
    field.click()
    field.press_sequentially("a photo of a cat", delay=30)
    tokens = page.locator(".labkit-tokens")
    page.wait_for_function(
        "() => [...document.querySelectorAll('.labkit-tokens')]"
        ".some(e => e.innerText.includes('2368'))", timeout=120_000)
    text = tokens.first.inner_text()
    for expected in ("49406", "photo</w>", "cat</w>", "49407", "padding position"):
        assert expected in text
    tokens.first.scroll_into_view_if_needed()
    page.screenshot(path=str(output_dir / "browser_embeddings.png"))
    check_panel(page.locator(".widget-vbox", has=page.locator("h3", has_text="Embeddings")).last,
                output_dir / "browser_embeddings_panel.png")
    page.close()
