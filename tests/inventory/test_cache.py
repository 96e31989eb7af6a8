import builtins
import io
import os
import sqlite3

import pytest

from labkit.inventory import catalog
from labkit.inventory.cache import CACHE_FILE


@pytest.fixture
def opens(monkeypatch, folder):
    """The files under `folder` opened (by open/io.open: how sniff and the readers open files)."""
    seen: list[str] = []
    real = builtins.open

    def counting(file, *args, **kwargs):
        if isinstance(file, str | os.PathLike) and str(file).startswith(str(folder)):
            seen.append(os.path.relpath(file, folder))
        return real(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", counting)
    monkeypatch.setattr(io, "open", counting)
    return seen


def test_the_counter_sees_a_cold_run_open_every_file(folder, opens):
    catalog(folder, progress=False, jobs=1)
    assert {"lora.safetensors", "notes.txt", "sub/evil.pt", "images.zip"} <= set(opens)


def test_an_unchanged_folder_is_never_read_again(folder, opens, private_cache):
    first = catalog(folder, progress=False, jobs=1)
    assert (private_cache / CACHE_FILE).is_file()  # under XDG_CACHE_HOME, not in the folder
    assert not list(folder.glob("*.sqlite"))
    opens.clear()
    second = catalog(folder, progress=False, jobs=1)
    assert opens == []
    assert second.equals(first)


def test_touching_a_file_rereads_only_it(folder, opens):
    catalog(folder, progress=False, jobs=1)
    opens.clear()
    lora = folder / "lora.safetensors"
    st = lora.stat()
    os.utime(lora, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    frame = catalog(folder, progress=False, jobs=1).set_index("path")
    assert set(opens) == {"lora.safetensors"}
    assert frame.loc["lora.safetensors", "mtime"].value == st.st_mtime_ns + 1_000_000


def test_a_file_replaced_by_another_of_the_same_stamp_but_inode_is_reread(folder, opens):
    catalog(folder, progress=False, jobs=1)
    opens.clear()
    lora = folder / "lora.safetensors"
    st = lora.stat()
    copy = folder / "copy.tmp"
    copy.write_bytes(lora.read_bytes())
    os.replace(copy, lora)  # same size, new inode; mtime set back as rsync -t would
    os.utime(lora, ns=(st.st_atime_ns, st.st_mtime_ns))
    opens.clear()
    catalog(folder, progress=False, jobs=1)
    assert set(opens) == {"lora.safetensors"}


def test_no_cache_reads_everything_and_writes_nothing(folder, opens, private_cache):
    catalog(folder, progress=False, jobs=1, cache=False)
    assert not (private_cache / CACHE_FILE).exists()
    catalog(folder, progress=False, jobs=1)
    opens.clear()
    catalog(folder, progress=False, jobs=1, cache=False)
    assert "lora.safetensors" in opens


def test_a_cached_run_without_hashes_does_not_serve_one_with_them(folder, opens):
    catalog(folder, progress=False, jobs=1)
    opens.clear()
    frame = catalog(folder, hashes=True, progress=False, jobs=1).set_index("path")
    assert "lora.safetensors" in opens and frame.loc["lora.safetensors", "sha256"]
    opens.clear()
    catalog(folder, hashes=True, progress=False, jobs=1)
    assert opens == []


def test_a_damaged_cache_is_no_error(folder, private_cache):
    private_cache.mkdir(parents=True)
    (private_cache / CACHE_FILE).write_bytes(b"this is not sqlite" * 100)
    frame = catalog(folder, progress=False, jobs=1)
    assert "lora.safetensors" in set(frame["path"])
    with pytest.raises(sqlite3.DatabaseError):
        sqlite3.connect(private_cache / CACHE_FILE).execute("SELECT * FROM rows").fetchall()


def test_rows_read_by_other_reader_code_are_stale(folder, opens, monkeypatch):
    import labkit.inventory.cache as cache

    catalog(folder, progress=False, jobs=1)
    monkeypatch.setattr(cache, "readers_stamp", lambda: "identify rules edited")
    opens.clear()
    catalog(folder, progress=False, jobs=1)
    assert "lora.safetensors" in opens
    opens.clear()
    catalog(folder, progress=False, jobs=1)
    assert opens == []


def test_the_readers_stamp_names_code_that_exists():
    from pathlib import Path

    import labkit
    from labkit.inventory.cache import READER_CODE, readers_stamp

    root = Path(labkit.__file__).parent
    assert [name for name in READER_CODE if not (root / name).exists()] == []
    assert len(readers_stamp()) == 16
