"""safe_extract(): hostile members are refused before anything is written; good archives extract once."""

import io
import stat
import tarfile
import zipfile

import pytest

from pipeline.acquisition import archives
from pipeline.acquisition.archives import MARKER, UnsafeArchiveError, safe_extract
from pipeline.io import sha256sum

pytestmark = pytest.mark.reliability  # README: What is guaranteed

GOOD = {"data/a.txt": b"alpha", "data/sub/b.txt": b"beta", "top.csv": b"x,y\n1,2\n"}


def make_tar(path, members, mode="w"):
    """members: (name, kind, payload) with kind file/dir/symlink/hardlink/fifo; payload = bytes or link target."""
    with tarfile.open(path, mode) as tar:
        for name, kind, payload in members:
            info = tarfile.TarInfo(name)  # addfile keeps the name verbatim ('/abs', '../x'), unlike add()
            if kind == "file":
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
                continue
            info.type = {"dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE,
                         "fifo": tarfile.FIFOTYPE}[kind]
            if kind in ("symlink", "hardlink"):
                info.linkname = payload
            tar.addfile(info)
    return path


def make_zip(path, members):
    with zipfile.ZipFile(path, "w") as zf:
        for name, kind, payload in members:
            info = zipfile.ZipInfo(name)
            if kind == "symlink":  # how Info-ZIP stores a link: S_IFLNK in the high bits, the target as data
                info.create_system = 3
                info.external_attr = (stat.S_IFLNK | 0o777) << 16
            elif kind == "fifo":
                info.create_system = 3
                info.external_attr = (stat.S_IFIFO | 0o644) << 16
            zf.writestr(info, payload if isinstance(payload, bytes) else payload.encode())
    return path


def good_members():
    return [(name, "file", data) for name, data in GOOD.items()]


HOSTILE = {
    "dotdot": ("../escaped.txt", "file", b"pwned"),
    "nested-dotdot": ("data/../../escaped.txt", "file", b"pwned"),
    "absolute": ("/tmp/acquisition-test-absolute.txt", "file", b"pwned"),
    "symlink-outside": ("link", "symlink", "../../outside"),
    "hardlink": ("hard", "hardlink", "/etc/passwd"),
    "fifo": ("pipe", "fifo", b""),
    "backslash-dotdot": ("..\\escaped.txt", "file", b"pwned"),
}
TAR_MODES = {"tar": "w", "tar.gz": "w:gz", "tar.bz2": "w:bz2", "tar.xz": "w:xz"}


def build(kind, path, members):
    return make_zip(path, members) if kind == "zip" else make_tar(path, members, TAR_MODES[kind])


@pytest.mark.parametrize(("fmt", "case"), [(fmt, case) for fmt in ("tar", "tar.gz", "zip") for case in sorted(HOSTILE)
                                           if not (fmt == "zip" and case == "hardlink")])  # zip has no hard links
def test_hostile_member_is_refused_before_writing(tmp_path, fmt, case):
    work = tmp_path / "work"
    work.mkdir()
    # a good member first: it must not be written either
    archive = build(fmt, tmp_path / f"evil.{fmt}", [*good_members(), HOSTILE[case]])
    dest = work / "out"
    with pytest.raises(UnsafeArchiveError) as err:
        safe_extract(archive, dest)
    assert str(archive) in str(err.value) and repr(HOSTILE[case][0]) in str(err.value)
    assert list(work.iterdir()) == []  # no dest, no temporary sibling
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path.parent / "escaped.txt").exists()


def test_nothing_is_written_outside_through_a_symlink(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    archive = make_tar(tmp_path / "evil.tar", [("link", "symlink", str(outside)),
                                               ("link/planted.txt", "file", b"pwned")])
    with pytest.raises(UnsafeArchiveError, match="symbolic link"):
        safe_extract(archive, tmp_path / "out")
    assert list(outside.iterdir()) == [] and not (tmp_path / "out").exists()


@pytest.mark.parametrize("fmt", ["tar", "tar.gz", "tar.bz2", "tar.xz", "zip"])
def test_good_archive_extracts_once(tmp_path, fmt):
    archive = build(fmt, tmp_path / f"good.{fmt}", good_members())
    dest = tmp_path / "out"
    assert safe_extract(archive, dest) == dest
    for name, data in GOOD.items():
        assert (dest / name).read_bytes() == data
    assert (dest / MARKER).read_text().strip() == sha256sum(archive)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary left

    before = set(dest.rglob("*"))
    (dest / "data" / "a.txt").write_bytes(b"edited")  # a no-op really does not touch the tree
    safe_extract(archive, dest)
    assert (dest / "data" / "a.txt").read_bytes() == b"edited"
    assert set(dest.rglob("*")) == before


def test_new_archive_version_replaces_old_extraction(tmp_path):
    dest = tmp_path / "out"
    safe_extract(make_zip(tmp_path / "v1.zip", good_members()), dest)
    v2 = make_zip(tmp_path / "v2.zip", [("only.txt", "file", b"v2")])
    safe_extract(v2, dest)
    assert sorted(p.name for p in dest.iterdir()) == sorted(["only.txt", MARKER])
    assert (dest / MARKER).read_text().strip() == sha256sum(v2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "v1.zip", "v2.zip"]


def test_interrupted_extraction_leaves_no_destination(tmp_path, monkeypatch):
    archive = make_tar(tmp_path / "good.tar", good_members())

    def crash(_):
        raise KeyboardInterrupt  # as if killed after the members, before the rename

    monkeypatch.setattr(archives, "_fsync_tree", crash)
    with pytest.raises(KeyboardInterrupt):
        safe_extract(archive, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good.tar"]
    monkeypatch.undo()
    safe_extract(archive, tmp_path / "out")
    assert (tmp_path / "out" / "top.csv").read_bytes() == GOOD["top.csv"]


def test_foreign_destination_is_not_overwritten(tmp_path):
    archive = make_zip(tmp_path / "good.zip", good_members())
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mine.txt").write_text("user data")
    with pytest.raises(FileExistsError, match="not extracted by safe_extract"):
        safe_extract(archive, tmp_path / "out")
    assert (tmp_path / "out" / "mine.txt").read_text() == "user data"


def test_not_an_archive(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match="neither a zip nor a tar"):
        safe_extract(tmp_path / "notes.txt", tmp_path / "out")
    assert not (tmp_path / "out").exists()
