"""Fixtures of the benchmarks' tests."""
from __future__ import annotations

import pytest

from tests.client.bench.peer import stand_in_peer as _stand_in_peer


@pytest.fixture
def stand_in_peer(fp32_model_dir, tmp_path):
    """A built llama.cpp peer whose server is ours (peer.py)."""
    return _stand_in_peer(tmp_path / "peers", fp32_model_dir)
