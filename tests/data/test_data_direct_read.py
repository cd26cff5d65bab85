"""pipeline.data.direct_read: cache rows read by byte offset give exactly what HDF5 reads, or are refused."""

import os
import pickle

import h5py
import numpy as np
import pytest

from data_support import CACHE_ARGS

from pipeline.data.cache import build_cache, merge_shards
from pipeline.data.datasets import AudioCacheDataset
from pipeline.data.direct_read import row_offsets


def _all_rows(offsets, shape, dtype) -> np.ndarray:
    out = np.empty((len(offsets.offset), *shape), dtype)
    for row in range(len(out)):
        offsets.read(row, out[row])
    return out


def test_rows_of_a_cache_read_like_hdf5(caches):
    with h5py.File(caches["us8k"], "r") as h5:  # stereo: a row is (2, samples)
        wave = h5["waveform"]
        offsets = row_offsets(wave)
        assert offsets is not None and len(offsets.files) == 1
        assert np.array_equal(_all_rows(offsets, wave.shape[1:], wave.dtype), wave[()])


def test_rows_of_a_sharded_cache_resolve_to_their_shard_files(synthetic, caches, tmp_path):
    shards = [tmp_path / "shards" / f"s{i}.h5" for i in range(3)]
    for i, path in enumerate(shards):
        build_cache("audioset", synthetic["audioset"], path, progress=False, shard=(i, 3), **CACHE_ARGS["audioset"])
    merge_shards(shards, tmp_path / "index.h5")
    with h5py.File(tmp_path / "index.h5", "r") as index, h5py.File(caches["audioset"], "r") as whole:
        offsets = row_offsets(index["waveform"])
        assert offsets is not None and sorted(offsets.files) == sorted(str(p) for p in shards)
        assert np.array_equal(_all_rows(offsets, whole["waveform"].shape[1:], np.int16), whole["waveform"][()])


@pytest.mark.parametrize("layout", ["contiguous", "chunked", "gzip", "shuffle", "rows_per_chunk", "unwritten",
                                    "big_endian"])
def test_only_plain_rows_are_read_directly(tmp_path, layout):
    data = np.arange(5 * 2 * 7, dtype=np.int16).reshape(5, 2, 7)
    kwargs = {"contiguous": {}, "chunked": {"chunks": (1, 2, 7)}, "gzip": {"chunks": (1, 2, 7), "compression": "gzip"},
              "shuffle": {"chunks": (1, 2, 7), "shuffle": True}, "rows_per_chunk": {"chunks": (2, 2, 7)},
              "unwritten": {"chunks": (1, 2, 7)}, "big_endian": {"chunks": (1, 2, 7), "dtype": ">i2"}}[layout]
    with h5py.File(tmp_path / "x.h5", "w") as h5:
        ds = h5.create_dataset("w", data.shape, **{"dtype": np.int16, **kwargs})
        ds[:4] = data[:4]
        if layout != "unwritten":
            ds[4] = data[4]
    with h5py.File(tmp_path / "x.h5", "r") as h5:
        offsets = row_offsets(h5["w"])
    if layout in ("contiguous", "chunked"):
        assert offsets is not None and np.array_equal(_all_rows(offsets, (2, 7), np.int16), data)
    else:
        assert offsets is None  # the dataset reads through HDF5 instead


def test_a_virtual_mapping_of_part_of_each_row_is_read_through_hdf5(tmp_path):
    data = np.arange(4 * 6, dtype=np.int16).reshape(4, 6)
    with h5py.File(tmp_path / "src.h5", "w") as h5:
        h5.create_dataset("w", data=data, chunks=(1, 6))
    layout = h5py.VirtualLayout(shape=(4, 3), dtype=np.int16)
    layout[:, :] = h5py.VirtualSource("src.h5", "w", shape=(4, 6))[:, 1:4]
    with h5py.File(tmp_path / "index.h5", "w") as h5:
        h5.create_virtual_dataset("w", layout)
    with h5py.File(tmp_path / "index.h5", "r") as h5:
        assert np.array_equal(h5["w"][()], data[:, 1:4]) and row_offsets(h5["w"]) is None


def test_offsets_survive_pickling_and_refuse_a_shrunk_file(caches, tmp_path):
    path = tmp_path / "esc50.h5"
    path.write_bytes(caches["esc50"].read_bytes())
    with h5py.File(path, "r") as h5:
        offsets, first = row_offsets(h5["waveform"]), h5["waveform"][0]
    copy = pickle.loads(pickle.dumps(offsets))  # what a worker process receives: no descriptors
    row = np.empty_like(first)
    copy.read(0, row)
    assert np.array_equal(row, first)
    copy.close()
    last = len(offsets.offset) - 1
    os.truncate(path, int(offsets.offset[last]) + 10)
    with pytest.raises(OSError, match=rf"esc50.h5: row {last} is cut short"):
        offsets.read(last, row)


def test_the_dataset_reads_directly_unless_preloaded(caches):
    plain = AudioCacheDataset(caches["esc50"], clip_samples=4000, train=False)
    preloaded = AudioCacheDataset(caches["esc50"], clip_samples=4000, train=False, preload=True)
    assert plain.direct is not None and preloaded.direct is None
    for i in range(len(plain)):
        assert np.array_equal(plain[i]["audio"], preloaded[i]["audio"]), i
