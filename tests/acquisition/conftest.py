"""Shared fixtures: a fault-injecting HTTP server on 127.0.0.1 serving a temporary folder."""

import pytest
from local_server import FileServer


@pytest.fixture
def server(tmp_path):
    """A FileServer over tmp_path/'served', stopped after the test."""
    root = tmp_path / "served"
    root.mkdir()
    srv = FileServer(root, stall_seconds=1.5)
    yield srv
    srv.close()
