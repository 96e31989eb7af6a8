"""The catalog of a folder: one row per model file or diffusers folder, read from headers only,
cached by file stamp, spread over the cores or a Dask cluster; written as Parquet or CSV.

finding (which paths are models), facts (one row), cache (SQLite by stamp), workers (where the
reads run), table (the DataFrame and its files).
"""

from labkit.inventory.facts import HASH_KEYS, UNSAFE_PREFIX, read_facts, summary
from labkit.inventory.finding import content_format, find_models, listed_format, size_bytes
from labkit.inventory.table import COLUMNS, catalog, write_table

__all__ = ["COLUMNS", "HASH_KEYS", "UNSAFE_PREFIX", "catalog", "content_format", "find_models",
           "listed_format", "read_facts", "size_bytes", "summary", "write_table"]
