"""Surgery tests run on one torch thread (tiny tensors on a shared 2-core machine) and hash into
a private cache."""

from __future__ import annotations

import pytest

from tests.fixtures.lora_samples import single_thread

one_thread = pytest.fixture(scope="module", autouse=True)(single_thread)


@pytest.fixture(autouse=True)
def private_cache(monkeypatch, tmp_path_factory):
    monkeypatch.setenv("LABKIT_CACHE", str(tmp_path_factory.mktemp("cache")))
