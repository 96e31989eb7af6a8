"""Per-block alpha specs: a number per block, or LABEL=X pairs with prefixes and aliases."""

from __future__ import annotations

import pytest

from labkit.errors import LabkitError
from labkit.files.opener import open_model
from labkit.surgery.blockweights import model_blocks, parse_blocks

SD1 = ["BASE", *(f"IN{i:02d}" for i in range(12)), "MID", *(f"OUT{i:02d}" for i in range(12))]


def test_sd1_has_26_blocks_sdxl_20_and_the_two_level_demos_14():
    from labkit import zoo
    from labkit.families.tables import key_table

    assert model_blocks(key_table("sd15")) == SD1
    xl = model_blocks(key_table("sdxl_base"))
    assert len(xl) == 20 and xl[:2] == ["BASE", "IN00"] and xl[-1] == "OUT08" and "MID" in xl
    demo = model_blocks(open_model(zoo.path("demo_sd1_single")).table)
    assert demo == ["BASE", *SD1[1:7], "MID", *SD1[14:20]]


def test_a_list_gives_each_block_its_number_in_order():
    alphas = parse_blocks(",".join(str(i / 100) for i in range(26)), SD1, 0.5)
    assert alphas["BASE"] == 0 and alphas["MID"] == 0.13 and alphas["OUT11"] == 0.25
    assert alphas[""] == 0.5  # keys in no block (the VAE) take the base alpha


def test_pairs_name_blocks_by_label_prefix_and_alias():
    alphas = parse_blocks("base=0, IN0*=0.2, M00=1", SD1, 0.5)
    assert alphas["BASE"] == 0 and alphas["IN05"] == 0.2 and alphas["IN10"] == 0.5
    assert alphas["MID"] == 1 and alphas["OUT03"] == 0.5


@pytest.mark.parametrize(("spec", "match"), [
    ("0.1,0.2", "give 2 numbers"),
    ("OUT20=1", "names no block"),
    ("BASE=x", "not a number"),
    ("BASE=0,0.3", "mixes a bare number"),
])
def test_bad_specs_say_what_is_wrong(spec, match):
    with pytest.raises(LabkitError, match=match):
        parse_blocks(spec, SD1, 0.5)
