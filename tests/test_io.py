"""Atomic writes: a failed write leaves the previous file and no temporary behind."""

import json
import os

import pytest

from pipeline.io import atomic_path, read_json, write_json

pytestmark = pytest.mark.reliability  # README: What is guaranteed


def test_write_json_round_trip(tmp_path):
    path = tmp_path / "deep" / "m.json"
    write_json(path, {"b": 1, "a": [1.5]})
    assert read_json(path) == {"a": [1.5], "b": 1}


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "m.json"
    write_json(path, {"ok": True})
    with pytest.raises(RuntimeError):
        with atomic_path(path) as tmp:
            tmp.write_text('{"half": ')
            raise RuntimeError("killed while writing")
    assert json.loads(path.read_text()) == {"ok": True}
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]


def test_unserialisable_values_fail_before_anything_is_replaced(tmp_path):
    path = tmp_path / "m.json"
    write_json(path, {"ok": True})
    with pytest.raises(TypeError):
        write_json(path, {"bad": object()})
    assert read_json(path) == {"ok": True}


def test_invalid_json_is_reported_with_its_path(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match="broken.json: not valid JSON"):
        read_json(path)


def test_atomic_files_get_the_usual_permissions(tmp_path):
    import stat

    mask = os.umask(0o022)
    try:
        from pipeline import io as pio

        old = pio._FILE_MODE
        pio._FILE_MODE = pio._default_file_mode()
        pio.write_text(tmp_path / "a.txt", "x")
        assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o644  # not mkstemp's 0600
    finally:
        pio._FILE_MODE = old
        os.umask(mask)
