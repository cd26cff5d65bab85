"""Datasets over the caches: item contract, determinism, frames, fold/split selection and the leak check."""

import json
import pickle
import shutil

import h5py
import numpy as np
import pytest
import torch

from data_support import CACHE_ARGS

from pipeline.data import loader
from pipeline.data.cache import build_cache, decode_jpeg, merge_shards, open_cache, read_strings
from pipeline.data.datasets import (CLIP_MEAN, CLIP_STD, AudioCacheDataset, ImageCacheDataset, LeakError,
                                    check_no_leak, class_names, clip_normalise, fold_split, recording_id,
                                    split_indices, video_indices)

AUG = {"time_scale": 1.5, "flip": {"mode": "time", "p": 0.5}, "noise": {"p": 0.25, "snr_min": 10, "snr_max": 120},
       "crop_heuristic": True}


def test_eval_item_is_the_cached_clip_in_int16_scale(caches):
    ds = AudioCacheDataset(caches["esc50"], clip_samples=4000, train=False)
    item = ds[3]
    assert set(item) == {"audio", "label", "labels", "text", "index"}
    assert item["audio"].shape == (1, 4000) and item["audio"].dtype == torch.float32
    with open_cache(caches["esc50"]) as h5:
        raw = h5["waveform"][3, :, :4000]  # the valid half of a 0.5 s clip
        assert torch.equal(item["audio"], torch.from_numpy(raw.astype(np.float32)))
        assert item["label"] == h5["label"][3] and item["index"] == 3
    assert item["labels"].dtype == torch.float32 and item["labels"].sum() == 1
    assert item["labels"][item["label"]] == 1 and item["text"] == ds.class_names[item["label"]]
    assert 1000 < item["audio"].abs().max() <= 32768


def test_peak_amplitude(caches):
    ds = AudioCacheDataset(caches["us8k"], clip_samples=2400, train=False, amplitude="peak")
    for i in range(5):
        x = ds[i]["audio"]  # rescaled before padding; the edge-mean padding stays inside the range
        assert x.shape == (2, 2400) and x.min() == -32768 and x.max() == pytest.approx(32767)
    with pytest.raises(ValueError, match="amplitude"):
        AudioCacheDataset(caches["us8k"], clip_samples=2400, train=False, amplitude="rms")


def test_train_augmentation_is_seeded_per_epoch(caches):
    a = AudioCacheDataset(caches["esc50"], clip_samples=8000, train=True, augment=AUG, seed=1)
    b = AudioCacheDataset(caches["esc50"], clip_samples=8000, train=True, augment=AUG, seed=1)
    assert all(torch.equal(a[i]["audio"], b[i]["audio"]) for i in range(6))
    first = [a[i]["audio"] for i in range(6)]
    a.set_epoch(1)
    assert not all(torch.equal(a[i]["audio"], x) for i, x in enumerate(first))
    assert all(a[i]["audio"].shape == (1, 8000) for i in range(6))


def test_multilabel_items_with_frames(caches):
    idx = split_indices(caches["audioset"], "eval")
    ds = AudioCacheDataset(caches["audioset"], idx, clip_samples=4000, train=False, with_frames=True,
                           image_size=24)
    with open_cache(caches["audioset"]) as h5:
        has_video = h5["has_video"][()]
        frames = h5["frames"][()]
    for i, k in enumerate(idx):
        item = ds[i]
        assert item["label"] == -1 and item["index"] == k
        names = [ds.class_names[j] for j in np.flatnonzero(item["labels"].numpy())]
        assert item["text"] == ", ".join(names) and 1 <= len(names) <= 4
        assert item["image"].shape == (3, 24, 24) and item["has_video"] == bool(has_video[k])
        if has_video[k]:
            middle = torch.from_numpy(decode_jpeg(frames[k, 1])).permute(2, 0, 1).float() / 255
            expected = (middle - torch.tensor(CLIP_MEAN).view(3, 1, 1)) / torch.tensor(CLIP_STD).view(3, 1, 1)
            assert torch.allclose(item["image"], expected, atol=1e-6)
        else:
            assert not item["image"].any()
    resized = AudioCacheDataset(caches["audioset"], idx[:2], clip_samples=4000, train=True, with_frames=True,
                                image_size=40)
    assert resized[0]["image"].shape == (3, 40, 40)
    with pytest.raises(ValueError, match="no frames"):
        AudioCacheDataset(caches["esc50"], clip_samples=100, train=False, with_frames=True)


def test_loader_threads_give_the_items_and_reuse_their_buffers(caches):
    ds = AudioCacheDataset(caches["audioset"], clip_samples=4000, train=True, augment=AUG, with_frames=True)
    positions = list(range(len(ds)))[::-1]  # any order
    got = [(b["index"].tolist(), ds.finish(b), b["audio"].data_ptr())
           for b in loader.batches(ds, positions, 8, threads=2, prefetch=2)]
    assert [len(i) for i, _, _ in got] == [8] * (len(ds) // 8) + ([len(ds) % 8] if len(ds) % 8 else [])
    assert len({ptr for _, _, ptr in got}) == 4  # a ring of prefetch + 2 buffers, not one per batch
    batch = got[0][1]
    assert batch["audio"].shape == (8, 1, 4000) and batch["labels"].shape == (8, 14)
    assert batch["image"].shape == (8, 3, 24, 24) and batch["has_video"].dtype == torch.bool
    assert batch["label"].dtype == torch.int64 and isinstance(batch["text"], list) and len(batch["text"]) == 8
    for index, finished, _ in got:  # threads, batching and order change nothing: each clip as read alone
        for j, k in enumerate(index):
            ref = ds[k]
            assert torch.equal(finished["audio"][j], ref["audio"]) and torch.equal(finished["image"][j], ref["image"])
            assert finished["text"][j] == ref["text"]
    clone = pickle.loads(pickle.dumps(ds))  # an opened handle never travels to another process
    assert clone.file._h5 is None and torch.equal(clone[0]["audio"], ds[0]["audio"])


def test_a_preloaded_cache_gives_the_same_batches(caches):
    kwargs = dict(clip_samples=8000, train=True, augment=AUG, seed=3)
    on_disk = AudioCacheDataset(caches["esc50"], **kwargs)
    in_memory = AudioCacheDataset(caches["esc50"], preload=True, **kwargs)
    assert in_memory.preloaded.shape == (len(on_disk), *on_disk.waveform_shape)
    for a, b in zip(loader.batches(on_disk, range(len(on_disk)), 8, threads=2),
                    loader.batches(in_memory, range(len(on_disk)), 8, threads=2)):
        assert torch.equal(on_disk.finish(a)["audio"], in_memory.finish(b)["audio"])


def test_a_reader_error_reaches_the_consumer(caches):
    class Broken(AudioCacheDataset):
        def read_item(self, i, buffers, slot):
            if i == 5:
                raise OSError(f"{self.file.path}: clip 5 unreadable")
            super().read_item(i, buffers, slot)

    ds = Broken(caches["esc50"], clip_samples=4000, train=False)
    with pytest.raises(OSError, match="clip 5 unreadable"):
        list(loader.batches(ds, range(len(ds)), 4, threads=2))


def test_image_dataset(caches):
    ds = ImageCacheDataset(caches["imagenet"], image_size=32)
    item = ds[5]
    assert item["image"].shape == (3, 32, 32) and item["text"] == ds.class_names[item["label"]]
    assert ImageCacheDataset(caches["imagenet"], image_size=48)[0]["image"].shape == (3, 48, 48)


def test_image_dataset_over_audioset_frames_takes_the_middle_frame(caches):
    with h5py.File(caches["audioset"], "r") as h5:
        has_video = h5["has_video"][()]
        video = [int(i) for i in np.flatnonzero(has_video)[:3]]
        no_video = int(np.flatnonzero(~has_video)[0])
        frames = [decode_jpeg(f) for f in h5["frames"][video[0]]]
    size = frames[0].shape[0]
    ds = ImageCacheDataset(caches["audioset"], image_size=size, indices=video)
    item = ds[0]
    assert item["index"] == video[0] and item["labels"].sum() >= 1
    assert torch.allclose(item["image"], clip_normalise(frames[len(frames) // 2], size))
    assert not torch.allclose(item["image"], clip_normalise(frames[0], size))
    with pytest.raises(ValueError, match="no video"):
        ImageCacheDataset(caches["audioset"], image_size=32, indices=[no_video])


def test_fold_split(caches):
    train, test = fold_split(caches["us8k"], 3)
    with open_cache(caches["us8k"]) as h5:
        fold = h5["fold"][()]
    assert (fold[test] == 3).all() and (fold[train] != 3).all() and len(train) + len(test) == len(fold)
    with pytest.raises(ValueError, match="fold 11 not in the cache"):
        fold_split(caches["us8k"], 11)


def test_leak_check_catches_injected_overlap(caches, tmp_path):
    train, test = fold_split(caches["esc50"], 1)
    with pytest.raises(LeakError, match="by index"):
        check_no_leak(caches["esc50"], np.append(train, test[0]), test)
    leaky = tmp_path / "leaky.h5"
    shutil.copy(caches["esc50"], leaky)
    with h5py.File(leaky, "r+") as h5:
        sources = read_strings(h5, "source")
        h5["source"][train[0]] = sources[test[0]]  # the same file listed in a training fold
    with pytest.raises(LeakError, match="by source file"):
        fold_split(leaky, 1)
    shutil.copy(caches["esc50"], leaky)
    with h5py.File(leaky, "r+") as h5:
        fold_, src, take, target = sources[test[0]].removesuffix(".wav").split("-")
        # another take of the test clip's recording, filed under a training fold
        h5["source"][train[0]] = f"{int(fold_) % 5 + 1}-{src}-Z-{target}.wav"
    with pytest.raises(LeakError, match="by source recording"):
        fold_split(leaky, 1)


def test_split_indices_and_ytid_leak(caches, tmp_path):
    train, test = split_indices(caches["audioset"], "train"), split_indices(caches["audioset"], "eval")
    assert (len(train), len(test)) == (30, 12) and not set(train) & set(test)
    leaky = tmp_path / "leaky.h5"
    shutil.copy(caches["audioset"], leaky)
    with h5py.File(leaky, "r+") as h5:
        sources = read_strings(h5, "source")
        ytid = sources[test[0]][:11]
        h5["source"][train[0]] = f"{ytid}_999000.wav"  # another segment of an eval video
    with pytest.raises(LeakError, match="by source recording"):
        split_indices(leaky, "train")
    with pytest.raises(ValueError, match="no splits"):
        split_indices(caches["esc50"], "train")


def test_recording_ids():
    assert recording_id("esc50", "1-100032-A-0.wav") == "100032"
    assert recording_id("us8k", "100032-3-0-12.wav") == "100032"
    assert recording_id("audioset", "-abc_DEF-12_30000.wav") == "-abc_DEF-12"
    assert recording_id("esc50", "odd name.wav") == "odd name.wav"


def test_class_names_and_video_indices(caches):
    with h5py.File(caches["audioset"], "r") as h5:
        has_video = h5["has_video"][()]
        names = json.loads(h5.attrs["class_names"])
    assert class_names(caches["audioset"]) == names
    everything = range(len(has_video))
    assert video_indices(caches["audioset"], everything) == [i for i in everything if has_video[i]]
    assert len(video_indices(caches["audioset"], everything)) < len(has_video)  # some clips have no video


def test_loader_streams_a_sharded_cache(synthetic, caches, tmp_path):
    args = CACHE_ARGS["audioset"]
    shards = [tmp_path / f"s{i}.h5" for i in range(3)]
    for i, path in enumerate(shards):
        build_cache("audioset", synthetic["audioset"], path, progress=False, shard=(i, 3), **args)
    merge_shards(shards, tmp_path / "index.h5")
    kwargs = dict(clip_samples=4000, train=False, with_frames=True, image_size=24)
    whole = AudioCacheDataset(caches["audioset"], **kwargs)
    sharded = AudioCacheDataset(tmp_path / "index.h5", **kwargs)
    batches = [sharded.finish(b) for b in loader.batches(sharded, range(len(sharded)), 8, threads=2)]
    assert sum(len(b["index"]) for b in batches) == len(whole) == 42
    for batch in batches:
        for j, k in enumerate(batch["index"].tolist()):
            ref = whole[k]
            assert torch.equal(batch["audio"][j], ref["audio"]) and torch.equal(batch["image"][j], ref["image"])
            assert batch["text"][j] == ref["text"]
