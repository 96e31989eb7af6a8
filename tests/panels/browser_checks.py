"""Checks every panel's browser test makes on what it shows: images at their own size (never
stretched, never a broken icon), tables that scroll in their box with headers over their columns;
and the panel alone saved as a PNG to look at."""

from __future__ import annotations

from pathlib import Path

# Every shown image widget: its natural and its drawn width (a hidden one has no offsetParent).
IMAGES = """panel => [...panel.querySelectorAll('img.widget-image')]
    .filter(e => e.offsetParent !== null)
    .map(e => ({cls: e.className, natural: e.naturalWidth, drawn: e.clientWidth}))"""
# Every labkit table: how its box scrolls, and each header's alignment against its column's.
TABLES = """panel => [...panel.querySelectorAll('table.labkit-table')]
    .filter(t => t.offsetParent !== null)
    .map(t => {
        const th = t.querySelector('thead th'), td = t.querySelector('tbody td');
        const box = t.parentElement.getBoundingClientRect();
        const widget = t.closest('.widget-html').getBoundingClientRect();
        return {overflow: getComputedStyle(t.parentElement).overflowX,
                spills: box.right > widget.right + 1,
                th: th && getComputedStyle(th).textAlign, td: td && getComputedStyle(td).textAlign,
                shift: th && td ? Math.abs(th.getBoundingClientRect().left
                                           - td.getBoundingClientRect().left) : 0};
    })"""


def check_panel(panel, path: Path) -> None:
    """Assert the panel's shown images and tables render cleanly, then save it as `path`."""
    panel.page.wait_for_function(
        "panel => [...panel.querySelectorAll('img.widget-image')]"
        ".every(e => e.offsetParent === null || e.complete)", arg=panel.element_handle(),
        timeout=30_000)
    for image in panel.evaluate(IMAGES):
        assert image["natural"] > 0, f"a broken image is shown: {image}"
        assert image["drawn"] <= image["natural"] + 1, f"an image is stretched: {image}"
    for table in panel.evaluate(TABLES):
        assert table["overflow"] == "auto", f"a table clips instead of scrolling: {table}"
        assert not table["spills"], f"a table spills out of its widget: {table}"
        assert table["th"] == table["td"] and table["shift"] < 2, f"misaligned headers: {table}"
    page, box = panel.page, panel.bounding_box()
    size = page.viewport_size
    page.set_viewport_size({"width": size["width"], "height": max(size["height"],
                                                                   round(box["height"]) + 300)})
    try:  # a viewport the panel fits in: no toolbar drawn over its top
        panel.scroll_into_view_if_needed()
        panel.screenshot(path=str(path))
    finally:
        page.set_viewport_size(size)
