"""The model cards: sections kept or replaced when one build rewrites a card another build wrote."""

from __future__ import annotations

from labkit.zoo import data_dir
from labkit.zoo.card import FINETUNE_HEADING, QUICKSTART_HEADING, section, with_section

CARD = "# Title\n\n## A\ntext a\n\n## Quick\nq\n"


def test_section_runs_to_the_next_heading_or_the_end():
    assert section(CARD, "## A") == "## A\ntext a\n\n"
    assert section(CARD, "## Quick") == "## Quick\nq\n"
    assert section(CARD, "## Missing") == ""


def test_with_section_replaces_a_section_it_has():
    out = with_section(CARD, "## A\nnew\n\n", "## A", "## Quick")
    assert out == "# Title\n\n## A\nnew\n\n## Quick\nq\n"


def test_with_section_inserts_before_the_anchor_or_appends():
    out = with_section(CARD, "## F\nf\n", "## F", "## Quick")
    assert out == "# Title\n\n## A\ntext a\n\n## F\nf\n\n## Quick\nq\n"
    assert with_section("# T\n", "## F\nf\n", "## F", "## Quick") == "# T\n\n## F\nf\n"


def test_the_shipped_card_has_the_fine_tune_before_the_quickstart():
    card = (data_dir() / "README.md").read_text(encoding="utf-8")
    assert 0 < card.index(FINETUNE_HEADING) < card.index(QUICKSTART_HEADING)
