"""Extract a downloaded zip or tar archive without trusting its member names, and never half-way.

An archive from the internet can name members '../../.bashrc' or '/etc/passwd', or carry a symlink that points
outside and a file written "through" it. safe_extract checks every member before writing anything: absolute
paths, '..' components, symbolic and hard links, devices and fifos are refused with UnsafeArchiveError naming
the archive and the member. Datasets need none of these, so refusing them all is simpler to trust than working
out which links stay inside. tarfile's own `filter='data'` runs as well, as a second line of defence; zip
archives get the same checks because zipfile has no such filter.

Members go into a temporary sibling directory that is renamed onto `dest` only when everything is written,
with a `.extracted` marker holding the archive's sha256 written last inside it: an interrupted extraction is
never mistaken for a finished one, and extracting the same archive again is a no-op.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import tarfile
import tempfile
import zipfile
from pathlib import Path

from pipeline.io import fsync_dir, sha256sum


MARKER = ".extracted"
ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # local file header; end of central directory (empty zip)
_DRIVE = re.compile(r"^[A-Za-z]:")


class UnsafeArchiveError(ValueError):
    """An archive member could write outside the destination; the message names the archive and the member."""


def safe_extract(archive: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Extract a zip or tar(.gz/.bz2/.xz) `archive` into the directory `dest` and return `dest`."""
    archive, dest = Path(archive), Path(dest)
    digest = sha256sum(archive)
    marker = dest / MARKER
    if marker.is_file():
        if marker.read_text(encoding="utf-8").strip() == digest:
            return dest  # this very archive is already extracted
    elif dest.exists():
        # not ours (no marker): someone's files, not something to replace
        raise FileExistsError(f"{dest} exists and was not extracted by safe_extract (no {MARKER}); move it away")

    is_zip = _is_zip(archive)
    dest.parent.mkdir(parents=True, exist_ok=True)
    for stale in dest.parent.glob(f".{dest.name}.*.extracting"):
        shutil.rmtree(stale, ignore_errors=True)  # left by an interrupted run
    with (zipfile.ZipFile(archive) if is_zip else _open_tar(archive)) as handle:
        # every member is checked before the first byte is written
        members = _check_zip(archive, handle) if is_zip else _check_tar(archive, handle)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".extracting", dir=dest.parent))
        try:
            if is_zip:
                handle.extractall(tmp, members)
            elif hasattr(tarfile, "data_filter"):
                handle.extractall(tmp, members, filter="data")
            else:
                handle.extractall(tmp, members)
            (tmp / MARKER).write_text(digest + "\n", encoding="utf-8")  # last: the extraction is complete
            _fsync_tree(tmp)
            _replace_dir(tmp, dest)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return dest


def _is_zip(archive: Path) -> bool:
    # by content, not by name: downloads are often saved without a meaningful suffix
    with open(archive, "rb") as f:
        return f.read(4) in ZIP_MAGIC


def _open_tar(archive: Path) -> tarfile.TarFile:
    try:
        return tarfile.open(archive, "r:*")  # plain, gz, bz2 or xz, detected from the bytes
    except tarfile.ReadError as err:
        raise ValueError(f"{archive}: neither a zip nor a tar archive ({err})") from None


def _check_name(archive: Path, name: str) -> None:
    def unsafe(why: str) -> UnsafeArchiveError:
        return UnsafeArchiveError(f"{archive}: member {name!r} {why}; nothing was extracted")

    if not name or "\x00" in name:
        raise unsafe("has an empty or NUL-containing name")
    # backslashes count as separators too: a Windows-made archive may use them, and Windows would
    if name.startswith(("/", "\\")) or _DRIVE.match(name):
        raise unsafe("has an absolute path")
    if ".." in re.split(r"[/\\]", name):
        raise unsafe("has a '..' component (could escape the destination)")


def _check_tar(archive: Path, tar: tarfile.TarFile) -> list[tarfile.TarInfo]:
    members = tar.getmembers()
    for m in members:
        _check_name(archive, m.name)
        if m.issym() or m.islnk():
            kind = "symbolic" if m.issym() else "hard"
            raise UnsafeArchiveError(f"{archive}: member {m.name!r} is a {kind} link to {m.linkname!r}; links are "
                                     f"refused; nothing was extracted")
        if not (m.isreg() or m.isdir()):
            raise UnsafeArchiveError(f"{archive}: member {m.name!r} is a device, fifo or other special file; "
                                     f"nothing was extracted")
    return members


def _check_zip(archive: Path, zf: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
    members = zf.infolist()
    for info in members:
        _check_name(archive, info.filename)
        # Unix tools keep st_mode in the high 16 bits; zipfile would write a symlink's target as a plain file,
        # but a link in a dataset archive is still not what we expect, so refuse it as tar links are refused.
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            raise UnsafeArchiveError(f"{archive}: member {info.filename!r} is a symbolic link; links are refused; "
                                     f"nothing was extracted")
        if stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):
            raise UnsafeArchiveError(f"{archive}: member {info.filename!r} is a device, fifo or other special "
                                     f"file; nothing was extracted")
    return members


def _fsync_tree(root: Path) -> None:
    # the rename below publishes the tree: its contents must be on disk before the marker can be trusted
    for folder, _, files in os.walk(root):
        for name in files:
            with open(os.path.join(folder, name), "rb") as f:
                os.fsync(f.fileno())
        fsync_dir(Path(folder))


def _replace_dir(tmp: Path, dest: Path) -> None:
    """Rename `tmp` onto `dest`; an older extraction at `dest` (another archive version) is moved away first,
    because a directory cannot be renamed over a non-empty one."""
    if dest.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".old", dir=dest.parent))
        os.replace(dest, old / dest.name)
        os.replace(tmp, dest)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, dest)
    fsync_dir(dest.parent)
