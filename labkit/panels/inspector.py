"""The inspector panel: open any model file and see what it is, its metadata, tensors, hashes, safety."""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import TYPE_CHECKING

import ipywidgets as widgets
import pandas as pd

from labkit.errors import UnsafeFileError
from labkit.panels.common import demo_names, run_into, table_html

if TYPE_CHECKING:
    from labkit.files.opener import ModelFile
    from labkit.safety.verdicts import Verdict

TABS = ("Summary", "Metadata", "Tensors", "Hashes", "Safety")
# format -> why it cannot run code (pickles get a scan instead)
NO_CODE = {
    "safetensors": "A safetensors file holds only a JSON header and raw numbers: opening it cannot "
                   "run code.",
    "gguf": "A GGUF file holds only a header and raw numbers: opening it cannot run code.",
    "diffusers": "A diffusers folder: its weights were opened the safe way (safetensors read "
                 "directly, any .bin scanned before loading).",
}
SAFE_PICKLE = ("This {suffix} only contains tensors and torch's own helpers: safe to load with "
               "weights_only.")
HASH_LABELS = {"sha256": "SHA256", "autov1": "AutoV1", "autov2": "AutoV2", "autov3": "AutoV3",
               "crc32": "CRC32", "blake3": "BLAKE3"}
MISSING_HASH = {"autov1": "- (none for files under 2 MiB)"}


def _kv_html(pairs: list[tuple[str, str]]) -> str:
    rows = "".join(f"<tr><th style='text-align:left;padding-right:1em'>{html.escape(k)}</th>"
                   f"<td style='font-family:monospace'>{v}</td></tr>" for k, v in pairs)
    return f"<table class='labkit-summary'>{rows}</table>"


def summary_html(model: ModelFile) -> str:
    """The summary as HTML: format, kind, base with its source and evidence, sizes, dtypes."""
    from labkit.inventory import size_bytes, summary

    facts = summary(model)
    path = Path(model.path)
    size = size_bytes(path)
    variant = f" ({', '.join(facts['variant'])})" if facts["variant"] else ""
    evidence = "".join(f"<li>{html.escape(e)}</li>" for e in facts["evidence"])
    dtypes = ", ".join(f"{k} × {v}" for k, v in facts["dtypes"].items())
    pairs = [
        ("file", html.escape(path.name)),
        ("format", facts["format"]),
        ("kind", facts["kind"]),
        ("base", f"<b>{facts['base']}</b>{variant} <i>(told by {facts['base_source']})</i>"),
        ("size", f"{size / 1024 ** 2:,.2f} MB ({size:,} bytes)"),
        ("tensors", f"{facts['n_tensors']:,}"),
        ("parameters", f"{facts['n_params']:,}"),
        ("dtypes", html.escape(dtypes) or "-"),
    ]
    return _kv_html(pairs) + (f"<div><b>Evidence</b><ul>{evidence}</ul></div>" if evidence else "")


def metadata_html(raw: dict[str, str]) -> str:
    """The metadata table and, for kohya LoRAs, the tag frequency table."""
    from labkit.files.metadata import metadata_table, tag_frequency

    if not raw:
        return "<i>This file carries no metadata.</i>"
    parts = [f"<h4>Metadata ({len(raw)} keys)</h4>", table_html(metadata_table(raw))]
    tags = tag_frequency(raw)
    if not tags.empty:
        parts += [f"<h4>Tag frequency ({len(tags)} tags)</h4>", table_html(tags, max_rows=50)]
    return "".join(parts)


def filter_tensors(tensors: pd.DataFrame, pattern: str) -> pd.DataFrame:
    """The rows whose name matches `pattern`: a regex, or a plain substring when not a valid one."""
    if not pattern:
        return tensors
    try:
        regex = re.compile(pattern, re.IGNORECASE)
    except re.error:
        regex = re.compile(re.escape(pattern), re.IGNORECASE)
    return tensors[tensors["name"].map(lambda name: regex.search(name) is not None)]


def verdict_words(verdict: Verdict) -> str:
    """A pickle's verdict in plain words: safe to load, or which globals it names and what they do."""
    if verdict.safe:
        return SAFE_PICKLE.format(suffix=Path(verdict.path).suffix or "file")
    named = [f"{g.module}.{g.name}, which {g.why.split(': ', 1)[-1]}" for g in verdict.refused]
    reasons = [f"it names {n}" for n in named] + list(verdict.problems)
    return "Refused: " + "; ".join(reasons or ["no pickle could be read in it"]) + "."


def verdict_html(verdict: Verdict) -> str:
    """The verdict's plain words, green when safe, red when refused."""
    color = "#057a55" if verdict.safe else "#c81e1e"
    words = html.escape(verdict_words(verdict), quote=False)
    return f"<b class='labkit-verdict' style='color:{color}'>{words}</b>"


def hashes_html(hashes: dict[str, str | None]) -> str:
    """The six hashes as Civitai shows them."""
    return _kv_html([(label, hashes.get(key) or MISSING_HASH.get(key, "-"))
                     for key, label in HASH_LABELS.items()])


class Inspector:
    """The inspector's widgets and their wiring; `.widget` is what a notebook shows."""

    def __init__(self, path: str | None = None):
        self.model: ModelFile | None = None
        self.path = widgets.Text(value=path or "", placeholder="path to a model file or folder",
                                 description="Path", layout=widgets.Layout(width="60%"))
        names = demo_names()
        self.demo = widgets.Dropdown(options=[("demo files…", "")] + [(n, n) for n in names],
                                     value="", layout=widgets.Layout(
                                         width="220px", display="" if names else "none"))
        self.open = widgets.Button(description="Open", icon="folder-open", button_style="primary")
        self.error = widgets.HTML()
        self.out = widgets.Output()
        self.summary = widgets.HTML("<i>Type a path (or pick a demo file) and click Open.</i>")
        self.metadata = widgets.HTML()
        self.filter = widgets.Text(placeholder="filter names (substring or regex)",
                                   description="Filter", continuous_update=False)
        self.count = widgets.HTML()
        self.tensors = widgets.HTML()
        self.hash_button = widgets.Button(description="Compute hashes", icon="hashtag",
                                          disabled=True)
        self.hash_out = widgets.Output()
        self.hashes = widgets.HTML()
        self.safety = widgets.HTML()
        self.tabs = widgets.Tab(children=[
            self.summary, self.metadata,
            widgets.VBox([self.filter, self.count, self.tensors]),
            widgets.VBox([self.hash_button, self.hash_out, self.hashes]), self.safety])
        for i, title in enumerate(TABS):
            self.tabs.set_title(i, title)
        self.widget = widgets.VBox([
            widgets.HTML("<h3>Model file inspector</h3>"),
            widgets.HBox([self.path, self.demo, self.open]), self.error, self.tabs, self.out])
        self.open.on_click(lambda _: self.show())
        self.demo.observe(self._pick_demo, names="value")
        self.filter.observe(lambda _: self._show_tensors(), names="value")
        self.hash_button.on_click(lambda _: self.compute_hashes())
        if path:
            self.show()

    def _pick_demo(self, change: dict) -> None:
        if change["new"]:
            from labkit import zoo
            self.path.value = str(zoo.path(change["new"]))
            self.show()

    def _clear(self) -> None:
        self.model = None
        for part in (self.summary, self.metadata, self.count, self.tensors, self.hashes,
                     self.safety):
            part.value = ""
        self.hash_out.clear_output()
        self.hash_button.disabled = True

    def _open(self, path: str) -> ModelFile:
        from labkit.files.opener import open_model

        try:
            return open_model(path)
        except UnsafeFileError as e:
            if e.verdict is not None:
                self.safety.value = verdict_html(e.verdict)
                self.tabs.selected_index = TABS.index("Safety")
            raise

    def show(self) -> None:
        """Open the path in the box and fill every tab; an error goes to the red box."""
        self._clear()
        path = self.path.value.strip()
        self.model = run_into(self.out, self.error, lambda: self._open(path))
        if self.model is None:
            return
        self.summary.value = summary_html(self.model)
        self.metadata.value = metadata_html(self.model.metadata)
        self._show_tensors()
        self.safety.value = run_into(self.out, self.error, self._safety_html) or ""
        self.hash_button.disabled = Path(self.model.path).is_dir()
        self.tabs.selected_index = 0

    def _safety_html(self) -> str:
        from labkit.safety.verdicts import scan

        if self.model.format == "pickle":
            return verdict_html(scan(self.model.path))
        return html.escape(NO_CODE.get(self.model.format, ""))

    def _show_tensors(self) -> None:
        if self.model is None:
            return
        tensors = self.model.tensors
        shown = filter_tensors(tensors, self.filter.value.strip())
        self.count.value = f"<i>{len(shown):,} of {len(tensors):,} tensors</i>"
        self.tensors.value = f"<div class='labkit-tensors'>{table_html(shown)}</div>"

    def compute_hashes(self) -> None:
        """Compute the six hashes of the open file with a progress bar, then show them."""
        from labkit.hashes import file_hashes

        if self.model is None:
            return
        self.hash_out.clear_output()
        hashes = run_into(self.hash_out, self.error,
                          lambda: file_hashes(self.model.path, progress=True))
        if hashes is not None:
            self.hashes.value = hashes_html(hashes)


def inspector_panel(path: str | None = None) -> widgets.Widget:
    """A path box (and demo files), the summary, metadata, filterable tensors, hashes and safety."""
    return Inspector(path).widget

