"""Fixtures of the reporting tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from fake_metrics import fabricate


@pytest.fixture
def metrics_root(tmp_path: Path) -> Path:
    """A complete metrics tree of profile 'embedded' at tmp/work/embedded/metrics."""
    return fabricate(tmp_path / "work" / "embedded" / "metrics")
