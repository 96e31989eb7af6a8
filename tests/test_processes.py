import os

from labkit.processes import cores, process_pool


def test_cores_counts_what_this_process_may_use():
    assert 1 <= cores() <= (os.cpu_count() or 1)


def test_a_pool_runs_work_in_other_processes():
    with process_pool(2) as pool:
        pids = set(pool.map(_pid, range(8)))
    assert pids and os.getpid() not in pids


def _pid(_: int) -> int:
    return os.getpid()
