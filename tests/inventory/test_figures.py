"""The catalog at a glance: filters by kind and base, the shown columns, counts by base and kind
and their figure."""

from __future__ import annotations

import pandas as pd
import pytest

from labkit.inventory import figures as F


@pytest.fixture
def frame() -> pd.DataFrame:
    return pd.DataFrame({
        "path": ["a.safetensors", "b.safetensors", "c.safetensors", "d.safetensors", "bad.pt"],
        "format": ["safetensors"] * 4 + ["pickle"],
        "kind": ["lora", "lora", "checkpoint", "lora", None],
        "base": ["sd1", "sdxl", "sd1", "sd1", None],
        "n_tensors": [10, 20, 30, 40, None], "n_params": [1, 2, 3, 4, None],
        "size": [1_500_000, 2, 3, 4, 5], "base_model": ["", "", "", "", ""],
        "trigger_words": [["striped", "red"], None, [], None, None],
        "error": [None, None, None, None, "unsafe: os.system"]})


def test_choices_are_most_common_first_unread_last(frame):
    assert F.choices(frame, "kind") == ["lora", "checkpoint", F.UNREAD]
    assert F.choices(frame, "base") == ["sd1", "sdxl", F.UNREAD]


def test_filters_by_kind_and_base_and_empty_means_any(frame):
    assert len(F.filtered(frame)) == 5
    assert list(F.filtered(frame, ["lora"])["path"]) == ["a.safetensors", "b.safetensors",
                                                          "d.safetensors"]
    assert list(F.filtered(frame, ["lora"], ["sd1"])["path"]) == ["a.safetensors", "d.safetensors"]
    assert list(F.filtered(frame, [F.UNREAD])["path"]) == ["bad.pt"]
    assert F.filtered(frame, ["vae"]).empty


def test_shown_table_has_sizes_in_mb_and_joined_words(frame):
    shown = F.shown_table(frame)
    assert list(shown.columns) == F.SHOWN
    assert shown["size_mb"][0] == 1.5 and shown["trigger_words"][0] == "striped, red"
    assert shown["trigger_words"][1] == "" and shown["error"][4] == "unsafe: os.system"


def test_counts_and_their_figure(frame):
    table = F.counts(frame)
    assert table.loc["sd1", "lora"] == 2 and table.loc["sdxl", "checkpoint"] == 0
    assert table.loc[F.UNREAD, F.UNREAD] == 1 and table.to_numpy().sum() == 5
    ax = F.counts_figure(frame).axes[0]
    assert ax.get_title() == "5 files by base and kind"
    assert [t.get_text() for t in ax.get_yticklabels()][-1] == "sd1"  # the most files on top
    assert sorted(t.get_text() for t in ax.get_legend().get_texts()) == sorted(table.columns)
    widths = [p.get_width() for p in ax.patches]
    assert sum(widths) == 5


def test_a_kind_keeps_its_colour_in_a_filtered_figure(frame):
    kinds = F.choices(frame, "kind")
    whole = F.counts_figure(frame, kinds=kinds).axes[0].get_legend()
    part = F.counts_figure(F.filtered(frame, ["checkpoint"]), kinds=kinds).axes[0].get_legend()
    colour = {t.get_text(): h.get_facecolor() for t, h in zip(whole.get_texts(),
                                                              whole.legend_handles, strict=True)}
    (text,), (handle,) = part.get_texts(), part.legend_handles
    assert text.get_text() == "checkpoint" and handle.get_facecolor() == colour["checkpoint"]
    assert colour["checkpoint"] != colour["lora"]
