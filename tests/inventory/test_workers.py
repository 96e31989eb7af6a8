import pytest

from labkit.inventory import catalog
from labkit.inventory.workers import Item, _chunks

SAME = ["path", "format", "kind", "base", "n_tensors", "error"]


def test_chunks_keep_the_order_and_cover_every_item():
    items = [Item(str(n), False, n) for n in range(37)]
    chunks = _chunks(items, 2)
    assert [i for c in chunks for i in c] == items
    assert len(chunks) == 13  # 37 items over 2 jobs x 8 chunks: 3 a chunk


def test_processes_give_the_table_one_process_gives(folder, monkeypatch):
    import labkit.inventory.workers as workers

    pools = []
    real = workers.process_pool
    monkeypatch.setattr(workers, "process_pool", lambda jobs: pools.append(jobs) or real(jobs))
    monkeypatch.setattr(workers, "PROCESS_MIN_ITEMS", 2)
    alone = catalog(folder, progress=False, jobs=1, cache=False)
    spread = catalog(folder, progress=False, jobs=2, cache=False)
    assert pools == [2]
    assert spread[SAME].astype(object).fillna("-").equals(alone[SAME].astype(object).fillna("-"))


def test_the_bar_counts_files_and_bytes(folder, capsys):
    catalog(folder, progress=True, jobs=1, cache=False)
    from tqdm import tqdm

    err = capsys.readouterr().err
    total = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    assert "8/8 files" in err  # every candidate read, models or not (a folder is one)
    assert f"{tqdm.format_sizeof(total)}/{tqdm.format_sizeof(total)}" in err  # and their bytes


def test_a_few_files_are_read_in_this_process(folder, monkeypatch):
    import labkit.inventory.workers as workers

    monkeypatch.setattr(workers, "process_pool", lambda jobs: pytest.fail("a pool for 8 files"))
    assert len(catalog(folder, progress=False, jobs=4, cache=False)) == 6


@pytest.mark.parametrize("jobs", [0, -1])
def test_no_jobs_means_one_process(folder, jobs):
    assert len(catalog(folder, progress=False, jobs=jobs, cache=False)) == 6
