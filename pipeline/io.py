"""Atomic file output: nothing half-written is ever mistaken for a result.

Every writer goes to a temporary name in the destination folder, fsyncs it, then renames it over the target
(rename is atomic on POSIX within one file system). A crash leaves either the old file or the new one, never a
truncated mix; the temporary file is removed on error.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator


def _default_file_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


_FILE_MODE = _default_file_mode()  # what open() would give a new file under this process's umask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it is fsynced and renamed onto `path`.

    `suffix` keeps an extension for writers that care about it (h5py does not, pandas does not).
    """
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f".tmp{suffix}", dir=target.parent)
    except OSError as err:
        # mkstemp's own message names a random temporary name; say which result could not be written, and where.
        # OSError(errno, ...) keeps the subclass (PermissionError, ...) for callers that catch it.
        raise OSError(err.errno, f"cannot write {target}: {err.strerror} (no new file can be made in "
                                 f"{target.parent}; an existing {target.name} is kept as it is)") from err
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, _FILE_MODE)  # mkstemp makes 0600 files; results on a shared cluster must be readable as usual
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
        fsync_dir(target.parent)
    except BaseException:
        with contextlib.suppress(OSError):  # a folder turned read-only meanwhile: the first error is the one to see
            tmp.unlink(missing_ok=True)
        raise


def fsync_dir(directory: Path) -> None:
    # The rename itself lives in the directory entry: sync it so it survives a power cut.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def file_digest(path: str | os.PathLike, algorithm: str = "sha256", chunk: int = 1 << 22) -> str:
    """Hex digest of a file read in chunks (archives and checkpoints are larger than memory)."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256sum(path: str | os.PathLike) -> str:
    return file_digest(path, "sha256")


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err


def _json_default(obj: Any) -> Any:
    # numpy and torch scalars appear in metrics; write them as plain numbers.
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot write {type(obj).__name__} as JSON")


def save_torch(path: str | os.PathLike, obj: Any) -> None:
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
