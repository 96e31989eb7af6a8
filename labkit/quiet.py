"""Quiet diffusers and transformers for a while: their progress bars and warnings clutter a
notebook cell or a command's output when the lab loads or saves a few components itself."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def quiet_libraries() -> Iterator[None]:
    """Progress bars off and only errors logged by diffusers and transformers inside the block;
    both restored afterwards."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    saved = [(lib, lib.is_progress_bar_enabled(), lib.get_verbosity())
             for lib in (diffusers_logging, transformers_logging)]
    for lib, _, _ in saved:
        lib.disable_progress_bar()
        lib.set_verbosity_error()
    try:
        yield
    finally:
        for lib, bars, verbosity in saved:
            if bars:
                lib.enable_progress_bar()
            lib.set_verbosity(verbosity)
