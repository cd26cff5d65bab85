"""Fixtures every test folder may use."""

from pathlib import Path

import pytest

# The real sample recordings, photos and videos live beside the repository (never inside it: licences).
REALDATA = Path(__file__).resolve().parents[1].parent / "shared" / "realdata"


@pytest.fixture
def realdata() -> Path:
    if not REALDATA.is_dir():
        pytest.skip(f"real sample data not present at {REALDATA}")
    return REALDATA
