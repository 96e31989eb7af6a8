import distributed  # the dask extra (in dev): pip install 'labkit[dask]'
import pytest

from labkit.errors import LabkitError
from labkit.inventory import catalog

SAME = ["path", "kind", "base"]


@pytest.fixture(scope="module")
def scheduler():
    """A Dask cluster on 127.0.0.1 (threads in this process), its scheduler's address."""
    with distributed.LocalCluster(host="127.0.0.1", protocol="tcp://", n_workers=2, threads_per_worker=1,
                                  processes=False, dashboard_address=None) as cluster:
        yield cluster.scheduler_address


def test_the_dask_table_is_the_local_one(folder, scheduler):
    local = catalog(folder, progress=False, jobs=1, cache=False)
    remote = catalog(folder, progress=False, cache=False, dask=scheduler)
    assert scheduler.startswith("tcp://127.0.0.1:")
    assert len(remote) == 6
    assert remote[SAME].astype(object).fillna("-").equals(local[SAME].astype(object).fillna("-"))


def test_a_dask_run_fills_the_cache_the_next_local_run_uses(folder, scheduler, monkeypatch):
    import labkit.inventory.workers as workers

    catalog(folder, progress=False, dask=scheduler)
    monkeypatch.setattr(workers, "read_chunk", lambda *_: pytest.fail("read again"))
    assert len(catalog(folder, progress=False, jobs=1)) == 6


def test_no_scheduler_is_a_clear_error(folder, monkeypatch):
    monkeypatch.setattr("labkit.inventory.workers.DASK_TIMEOUT_S", 1)
    with pytest.raises(LabkitError, match="no Dask scheduler answered at tcp://127.0.0.1:9"):
        catalog(folder, progress=False, cache=False, dask="tcp://127.0.0.1:9")
