"""Rows of an uncompressed HDF5 dataset read with os.preadv, outside the GIL.

Why: h5py holds the GIL (and its own global lock) for the whole of a read, so loader threads reading waveforms
take turns: a 10 s clip at 44.1 kHz is ~0.2 ms of copy during which no other thread runs Python, which caps a
process at a few thousand clips/s however many threads it has (benchmarks/cache.json). A cache stores its
waveforms one clip per chunk; uncompressed, a chunk is a contiguous run of bytes in the file, so the byte offset
of every row, found once through HDF5, is all a read needs. Sharded caches (virtual datasets over shard files)
resolve each row to its shard file.

row_offsets(dataset) -> RowOffsets, or None where this does not hold (compression or another filter, chunks that
are not one row, a byte order other than the machine's, a chunk never written); the caller then reads through
HDF5 as before. The cache files are complete and read-only once built (cache.open_cache checks), so the offsets
stay valid for the life of the reader.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

_OPENING = threading.Lock()


@dataclass
class RowOffsets:
    """Where each row's bytes are: files[file_of_row[r]] at offset[r], row_bytes long."""
    files: list[str]
    file_of_row: np.ndarray  # (N,) int32
    offset: np.ndarray  # (N,) int64
    row_bytes: int
    _fds: dict = field(default_factory=dict, repr=False)  # file index -> descriptor, opened in process _pid
    _pid: int | None = field(default=None, repr=False)

    def read(self, row: int, out: np.ndarray) -> None:
        """Row `row` into `out` (C-contiguous, row_bytes long). Thread-safe: preadv has no shared file position."""
        fd = self._fd(int(self.file_of_row[row]))
        got = os.preadv(fd, [memoryview(out).cast("B")], int(self.offset[row]))
        if got != self.row_bytes:
            raise OSError(f"{self.files[self.file_of_row[row]]}: row {row} is cut short ({got} of {self.row_bytes} "
                          "bytes); the cache file changed after it was opened")

    def _fd(self, k: int) -> int:
        if self._pid != os.getpid():  # descriptors are per process: a forked worker opens its own
            self._fds, self._pid = {}, os.getpid()
        fd = self._fds.get(k)
        if fd is None:
            with _OPENING:  # two loader threads must not both open (and one leak) the same file
                fd = self._fds.get(k)
                if fd is None:
                    fd = self._fds[k] = os.open(self.files[k], os.O_RDONLY)
        return fd

    def close(self) -> None:
        if self._pid == os.getpid():
            for fd in self._fds.values():
                os.close(fd)
        self._fds = {}

    def __getstate__(self) -> dict:  # never pickle descriptors
        return {**self.__dict__, "_fds": {}, "_pid": None}


def row_offsets(dataset: h5py.Dataset) -> RowOffsets | None:
    """Byte offsets of every row of `dataset` (a plain or virtual dataset of an open file), or None when rows are
    not plain contiguous bytes in some file."""
    if not dataset.dtype.isnative or dataset.dtype.hasobject or dataset.dtype.kind not in "iuf":
        return None
    row_bytes = int(np.prod(dataset.shape[1:], dtype=np.int64)) * dataset.dtype.itemsize
    if dataset.is_virtual:
        return _virtual_offsets(dataset, row_bytes)
    offsets = _plain_offsets(dataset, row_bytes)
    if offsets is None:
        return None
    return RowOffsets([os.path.abspath(dataset.file.filename)], np.zeros(len(offsets), np.int32), offsets, row_bytes)


def _plain_offsets(dataset: h5py.Dataset, row_bytes: int) -> np.ndarray | None:
    n = dataset.shape[0]
    if dataset.chunks is None:  # contiguous layout: rows one after the other
        base = dataset.id.get_offset()
        return None if base is None else base + np.arange(n, dtype=np.int64) * row_bytes
    if tuple(dataset.chunks) != (1, *dataset.shape[1:]) or dataset.id.get_create_plist().get_nfilters():
        return None
    offsets = np.full(n, -1, np.int64)
    ok = True

    def visit(info) -> None:
        nonlocal ok
        row = info.chunk_offset[0]
        if info.filter_mask or info.size != row_bytes or not 0 <= row < n:
            ok = False
        else:
            offsets[row] = info.byte_offset

    if hasattr(dataset.id, "chunk_iter"):
        dataset.id.chunk_iter(visit)
    else:  # older HDF5: one lookup per chunk
        for k in range(dataset.id.get_num_chunks()):
            visit(dataset.id.get_chunk_info(k))
    return offsets if ok and (offsets >= 0).all() else None


def _virtual_offsets(dataset: h5py.Dataset, row_bytes: int) -> RowOffsets | None:
    n = dataset.shape[0]
    files: list[str] = []
    file_of_row = np.full(n, -1, np.int32)
    offset = np.full(n, -1, np.int64)
    here = Path(os.path.abspath(dataset.file.filename)).parent
    for source in dataset.virtual_sources():
        if source.file_name == ".":  # a source in the same file
            path = Path(os.path.abspath(dataset.file.filename))
        else:  # merge_shards writes paths relative to the index file
            path = Path(source.file_name) if os.path.isabs(source.file_name) else here / source.file_name
        with h5py.File(path, "r") as f:
            shard = _plain_offsets(f[source.dset_name], row_bytes)
            if shard is None:
                return None
            rows = (_row_bounds(source.vspace, dataset.shape), _row_bounds(source.src_space, f[source.dset_name].shape))
        if None in rows or rows[0][1] - rows[0][0] != rows[1][1] - rows[1][0]:
            return None
        (v0, v1), (s0, s1) = rows
        files.append(str(path))
        file_of_row[v0:v1 + 1] = len(files) - 1
        offset[v0:v1 + 1] = shard[s0:s1 + 1]
    if (offset < 0).any():
        return None
    return RowOffsets(files, file_of_row, offset, row_bytes)


def _row_bounds(space: h5py.h5s.SpaceID, shape: tuple[int, ...]) -> tuple[int, int] | None:
    """First and last row of a selection of whole rows (a dense block) of a dataspace of `shape`; None for any
    other selection. A whole-dataspace selection (the source side of merge_shards' mapping, stored without its
    extent) covers every row."""
    if space.get_select_type() == h5py.h5s.SEL_ALL:
        return 0, shape[0] - 1
    (first, *lo), (last, *hi) = space.get_select_bounds()
    whole_rows = all(a == 0 for a in lo) and list(hi) == [d - 1 for d in shape[1:]]
    dense = space.get_select_npoints() == (last - first + 1) * int(np.prod(shape[1:], dtype=np.int64))
    return (first, last) if whole_rows and dense else None
