"""quiet_libraries: diffusers' and transformers' bars and warnings off inside, restored after."""

from __future__ import annotations

import pytest
from diffusers.utils import logging as diffusers_logging
from transformers.utils import logging as transformers_logging

from labkit.quiet import quiet_libraries

LIBRARIES = (diffusers_logging, transformers_logging)


def test_bars_and_warnings_are_off_inside_and_restored_after():
    before = [(lib.is_progress_bar_enabled(), lib.get_verbosity()) for lib in LIBRARIES]
    with quiet_libraries():
        for lib in LIBRARIES:
            assert not lib.is_progress_bar_enabled()
            assert lib.get_verbosity() == lib.ERROR
    assert [(lib.is_progress_bar_enabled(), lib.get_verbosity()) for lib in LIBRARIES] == before


def test_settings_are_restored_when_the_block_fails():
    transformers_logging.set_verbosity_info()
    try:
        with pytest.raises(RuntimeError), quiet_libraries():
            raise RuntimeError("boom")
        assert transformers_logging.get_verbosity() == transformers_logging.INFO
    finally:
        transformers_logging.set_verbosity_warning()
