"""Files: open any model file or diffusers folder by its content, list its tensors, read its metadata.

`open_model(path)` is the way in; everything else in the lab takes the `ModelFile` it returns.
"""

from __future__ import annotations

from labkit.files.metadata import decode_metadata, metadata_table, modelspec, tag_frequency
from labkit.files.model_file import ModelFile
from labkit.files.opener import open_model

__all__ = ["ModelFile", "decode_metadata", "metadata_table", "modelspec", "open_model",
           "tag_frequency"]
