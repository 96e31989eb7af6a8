"""The demo world's captions: trailing words drawn from the vocabulary, none of the world's own."""

from __future__ import annotations

import numpy as np

from labkit.zoo.recipe.dataset import (
    BACKGROUNDS,
    COLOURS,
    HELD_OUT_WORDS,
    SHAPES,
    STYLES,
    TRAILING_WORD_SHARE,
    mixed_samples,
    trailing_words,
)


def test_trailing_words_are_many_and_none_is_the_worlds_own_or_held_out():
    words = set(trailing_words())
    assert len(words) > 10_000
    own = {*COLOURS, *BACKGROUNDS, *SHAPES, *(w for w in STYLES.values() if w), *HELD_OUT_WORDS}
    assert not words & own


def test_a_share_of_plain_captions_end_in_many_different_words_and_styled_ones_keep_their_trigger():
    samples = mixed_samples(np.random.default_rng(0), 4000, {"plain": 0.8, "checker": 0.2})
    plain = [s for s in samples if s.style == "plain"]
    words = [s.caption().rsplit(", ", 1)[1] for s in plain if ", " in s.caption()]
    assert abs(len(words) / len(plain) - TRAILING_WORD_SHARE) < 0.03
    assert len(set(words)) > 0.9 * len(words)
    assert all(s.caption().endswith(", checkered") for s in samples if s.style == "checker")


def test_the_trailing_word_does_not_change_the_drawn_images():
    a = mixed_samples(np.random.default_rng(3), 50, {"plain": 1.0})
    b = mixed_samples(np.random.default_rng(3), 50, {"plain": 1.0})
    assert [s.render().tobytes() for s in a] == [s.render().tobytes() for s in b]
    assert any(s.plain_word for s in a) and any(s.plain_word is None for s in a)


def test_trailing_words_take_one_two_and_more_tokens_as_checkered_does():
    from labkit.zoo import data_dir
    from labkit.zoo.recipe.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(data_dir() / "tokenizer")
    samples = mixed_samples(np.random.default_rng(1), 400, {"plain": 1.0})
    lengths = {len(tokenizer.tokenize(s.plain_word)) for s in samples if s.plain_word}
    assert {1, 2, 3} <= lengths, lengths
    assert len(tokenizer.tokenize(STYLES["checker"])) == 2  # why one-token words were not enough
