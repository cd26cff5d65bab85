"""HDF5 cache: round trip against the source files, refusal of stale/partial caches, skipped files."""

import json
import shutil

import h5py
import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from PIL import Image

from data_support import CACHE_ARGS, SMALL
from pipeline.data import metadata as md
from pipeline.data.audio_io import AudioDecodeError, ImageDecodeError, load_audio, load_image
from pipeline.data.cache import (
    CacheError, build_cache, cache_info, decode_jpeg, fit_image, merge_shards, open_cache, read_strings,
)


def test_esc50_round_trip(synthetic, caches):
    info = cache_info(caches["esc50"])
    per = SMALL["esc50"]["clips_per_class_per_fold"]
    assert info["dataset"] == "esc50" and info["n_clips"] == 50 * per
    assert (info["sample_rate"], info["clip_samples"], info["channels"]) == (8000, 8000, 1)
    assert info["folds"] == {f: 10 * per for f in range(1, 6)}
    assert info["classes"]["crying baby"] == 5 * per and info["skipped"] == []
    meta = md.read_esc50(synthetic["esc50"]).items.set_index("filename")
    with open_cache(caches["esc50"], expect={"sample_rate": 8000, "clip_samples": 8000}) as h5:
        assert h5["waveform"].dtype == np.int16 and h5["waveform"].shape == (50 * per, 1, 8000)
        sources = read_strings(h5, "source")
        assert list(h5["label"][()]) == [meta.loc[s, "label"] for s in sources]
        assert list(h5["fold"][()]) == [meta.loc[s, "fold"] for s in sources]
        assert (h5["labels"][()].argmax(1) == h5["label"][()]).all()
        # 0.5 s clips in a 1.0 s cache: half valid, then zeros
        assert (h5["length"][()] == 4000).all()
        assert not h5["waveform"][:, :, 4000:].any()
        expected = load_audio(synthetic["esc50"] / "audio" / sources[0], 8000, 1)
        np.testing.assert_allclose(h5["waveform"][0, :, :4000] / 32768.0, expected, atol=1 / 32768)
        assert json.loads(h5.attrs["build_params"])["sample_rate"] == 8000


def test_long_clips_are_cut(synthetic, tmp_path):
    info = build_cache("esc50", synthetic["esc50"], tmp_path / "c.h5", sample_rate=8000, clip_seconds=0.2,
                       channels=1, progress=False)
    with open_cache(tmp_path / "c.h5") as h5:
        assert info["clip_samples"] == 1600 and (h5["length"][()] == 1600).all()


def test_us8k_mixed_rates_and_channels(synthetic, caches):
    meta = pd.read_csv(synthetic["us8k"] / "metadata" / "UrbanSound8K.csv").set_index("slice_file_name")
    with open_cache(caches["us8k"]) as h5:
        assert h5["waveform"].shape == (100, 2, 2400)
        for k, source in enumerate(read_strings(h5, "source")):
            row = meta.loc[source]
            info = sf.info(synthetic["us8k"] / "audio" / f"fold{row['fold']}" / source)
            resampled = int(np.ceil(info.frames * 8000 / info.samplerate))
            assert h5["length"][k] == min(resampled, 2400)
            assert h5["fold"][k] == row["fold"] and h5["label"][k] == row["classID"]
            left, right = h5["waveform"][k]
            assert np.array_equal(left, right) == (info.channels == 1)  # mono duplicated, stereo kept


def test_audioset_frames_and_splits(synthetic, caches):
    info = cache_info(caches["audioset"])
    assert info["multilabel"] and info["splits"] == {"eval": 12, "train": 30} and info["folds"] == {0: 42}
    assert info["classes"]["Dog"] >= info["classes"]["Bark"]
    with open_cache(caches["audioset"]) as h5:
        assert h5["frames"].shape == (42, 3) and h5.attrs["frame_format"] == "jpeg"
        assert (h5["label"][()] == -1).all()
        for k, source in enumerate(read_strings(h5, "source")):
            has = (synthetic["audioset"] / "frames" / source.removesuffix(".wav")).is_dir()
            assert h5["has_video"][k] == has
            stored = [h5["frames"][k, j] for j in range(3)]
            assert all(len(b) > 0 for b in stored) == has and all(len(b) == 0 for b in stored) == (not has)
            if has:
                first = sorted((synthetic["audioset"] / "frames" / source.removesuffix(".wav")).glob("*.jpg"))[0]
                want = fit_image(load_image(first), 24).astype(int)
                assert decode_jpeg(stored[0]).shape == (24, 24, 3)
                assert np.abs(decode_jpeg(stored[0]).astype(int) - want).mean() < 6  # JPEG q90 round trip
        assert 0 < h5["has_video"][()].sum() < 42
        assert info["with_video"] == int(h5["has_video"][()].sum())


def test_imagenet_images(caches):
    info = cache_info(caches["imagenet"])
    assert info["n_clips"] == 24 and info["image_size"] == 32 and info["sample_rate"] is None
    with open_cache(caches["imagenet"]) as h5:
        images = h5["image"][()]
        assert images.shape == (24, 32, 32, 3)
        gray = [(im[..., 0] == im[..., 1]).all() for im in images]
        assert any(gray) and not all(gray)


def test_cache_is_deterministic(synthetic, caches, tmp_path):
    build_cache("us8k", synthetic["us8k"], tmp_path / "again.h5", progress=False, **CACHE_ARGS["us8k"])
    with open_cache(caches["us8k"]) as a, open_cache(tmp_path / "again.h5") as b:
        for name in ("waveform", "length", "label", "labels", "fold"):
            assert np.array_equal(a[name][()], b[name][()])


@pytest.mark.reliability
def test_stale_or_partial_cache_refused(caches, tmp_path):
    bad = tmp_path / "bad.h5"
    with pytest.raises(CacheError, match=r"attribute 'sample_rate' is 8000, expected 44100"):
        open_cache(caches["esc50"], expect={"sample_rate": 44100, "clip_samples": 8000})
    with pytest.raises(CacheError, match=r"attribute 'frames_per_clip' is missing"):
        open_cache(caches["esc50"], expect={"frames_per_clip": 3})
    for key, value, message in [("complete", False, "'complete' is missing or false"),
                                ("format_version", 0, "'format_version' is 0")]:
        shutil.copy(caches["esc50"], bad)
        with h5py.File(bad, "r+") as h5:
            h5.attrs[key] = value
        with pytest.raises(CacheError, match=message) as err:
            open_cache(bad)
        assert "bad.h5" in str(err.value)
    shutil.copy(caches["esc50"], bad)
    with h5py.File(bad, "r+") as h5:
        del h5.attrs["complete"]
    with pytest.raises(CacheError, match="'complete'"):
        cache_info(bad)
    bad.write_bytes(b"not hdf5")
    with pytest.raises(CacheError, match="not a readable HDF5"):
        open_cache(bad)
    with pytest.raises(CacheError, match="not found"):
        open_cache(tmp_path / "nothing.h5")


def _broken_copy(synthetic, tmp_path):
    root = tmp_path / "esc"
    shutil.copytree(synthetic["esc50"], root)
    names = sorted(p.name for p in (root / "audio").iterdir())
    (root / "audio" / names[0]).write_bytes(b"RIFF\x00\x00garbage")
    sf.write(root / "audio" / names[1], np.zeros((0, 1), np.float32), 44100)
    return root, names[:2]


def test_corrupt_audio_raises_or_is_skipped(synthetic, tmp_path):
    root, broken = _broken_copy(synthetic, tmp_path)
    out = tmp_path / "out" / "esc.h5"
    with pytest.raises(AudioDecodeError, match=broken[0]):
        build_cache("esc50", root, out, progress=False, **CACHE_ARGS["esc50"])
    assert not out.exists() and list(out.parent.iterdir()) == []  # the temporary file is gone too
    info = build_cache("esc50", root, out, on_error="skip", progress=False, **CACHE_ARGS["esc50"])
    assert [s["source"] for s in info["skipped"]] == broken
    assert "empty" in info["skipped"][1]["error"]
    assert info["n_clips"] == 50 * SMALL["esc50"]["clips_per_class_per_fold"] - 2
    with open_cache(out) as h5:
        assert not set(broken) & set(read_strings(h5, "source"))
        assert len(h5["length"]) == len(h5["waveform"]) == len(h5["labels"]) == info["n_clips"]


def test_corrupt_frame_raises_or_skips_the_clip(synthetic, tmp_path):
    root = tmp_path / "as"
    shutil.copytree(synthetic["audioset"], root)
    first = sorted((root / "frames").iterdir())[0]
    (first / "01.jpg").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="01.jpg"):
        build_cache("audioset", root, tmp_path / "a.h5", progress=False, **CACHE_ARGS["audioset"])
    info = build_cache("audioset", root, tmp_path / "a.h5", on_error="skip", progress=False, **CACHE_ARGS["audioset"])
    assert [s["source"] for s in info["skipped"]] == [first.name + ".wav"]


def test_bad_arguments(synthetic, tmp_path):
    with pytest.raises(ValueError, match="channels"):
        build_cache("esc50", synthetic["esc50"], tmp_path / "x.h5", sample_rate=8000, clip_seconds=1.0)
    with pytest.raises(ValueError, match="on_error"):
        build_cache("esc50", synthetic["esc50"], tmp_path / "x.h5", on_error="ignore", **CACHE_ARGS["esc50"])
    with pytest.raises(ValueError, match="frames_per_clip"):
        build_cache("audioset", synthetic["audioset"], tmp_path / "x.h5", sample_rate=8000, clip_seconds=1.0,
                    channels=1)


def _shards(synthetic, folder, count, **extra):
    args = {**CACHE_ARGS["audioset"], **extra}
    return [build_cache("audioset", synthetic["audioset"], folder / f"shard-{i}-of-{count}.h5", progress=False,
                        shard=(i, count), **args) and folder / f"shard-{i}-of-{count}.h5" for i in range(count)]


def test_sharded_cache_reads_like_the_whole_one(synthetic, caches, tmp_path):
    folder = tmp_path / "audioset"
    shards = _shards(synthetic, folder, 3)
    info = merge_shards(shards[::-1], tmp_path / "audioset.h5")  # any order: the index follows the shard numbers
    whole = cache_info(caches["audioset"])
    assert info["shards"] == 3 and info["n_clips"] == whole["n_clips"] == 42
    assert {k: info[k] for k in ("classes", "splits", "with_video")} == {k: whole[k] for k in ("classes", "splits", "with_video")}
    # The folder moves as a whole (DVC pull elsewhere): shards are addressed relative to the index.
    moved = tmp_path / "moved"
    moved.mkdir()
    shutil.move(folder, moved / "audioset")
    shutil.move(tmp_path / "audioset.h5", moved / "audioset.h5")
    with open_cache(moved / "audioset.h5") as a, open_cache(caches["audioset"]) as b:
        for name in ("waveform", "length", "label", "labels", "has_video"):
            assert np.array_equal(a[name][()], b[name][()]), name
        assert read_strings(a, "source") == read_strings(b, "source") and read_strings(a, "split") == read_strings(b, "split")
        for k in range(42):
            assert all(np.array_equal(x, y) for x, y in zip(a["frames"][k], b["frames"][k])), k


@pytest.mark.reliability
def test_index_refuses_missing_or_rebuilt_shards(synthetic, tmp_path):
    shards = _shards(synthetic, tmp_path / "s", 2)
    with pytest.raises(CacheError, match=r"shard\(s\) \[1\] of 2 missing"):
        merge_shards(shards[:1], tmp_path / "index.h5")
    with pytest.raises(CacheError, match="given twice"):
        merge_shards([shards[0], shards[0], shards[1]], tmp_path / "index.h5")
    with pytest.raises(CacheError, match="not a shard"):
        merge_shards([shards[0], shards[1], build_cache_whole(synthetic, tmp_path)], tmp_path / "index.h5")
    other = build_cache("audioset", synthetic["audioset"], tmp_path / "s" / "other.h5", progress=False, shard=(1, 2),
                        **{**CACHE_ARGS["audioset"], "clip_seconds": 0.25}) and tmp_path / "s" / "other.h5"
    with pytest.raises(CacheError, match="other.h5: its params differs"):
        merge_shards([shards[0], other], tmp_path / "index.h5")
    assert not (tmp_path / "index.h5").exists()
    merge_shards(shards, tmp_path / "index.h5")
    shards[1].unlink()
    with pytest.raises(CacheError, match="shard .*shard-1-of-2.h5 is missing"):
        open_cache(tmp_path / "index.h5")
    _shards(synthetic, tmp_path / "s", 2)  # shard 1 rebuilt: a new file the index was not built over
    with pytest.raises(CacheError, match="rebuilt after the index"):
        cache_info(tmp_path / "index.h5")


def build_cache_whole(synthetic, tmp_path):
    out = tmp_path / "whole.h5"
    build_cache("audioset", synthetic["audioset"], out, progress=False, **CACHE_ARGS["audioset"])
    return out


def test_up_to_date_cache_is_kept_and_a_change_rebuilds(synthetic, tmp_path):
    out = tmp_path / "esc.h5"
    build_cache("esc50", synthetic["esc50"], out, progress=False, **CACHE_ARGS["esc50"])
    with h5py.File(out, "r") as h5:
        first = h5.attrs["build_id"]
    build_cache("esc50", synthetic["esc50"], out, progress=False, **CACHE_ARGS["esc50"])
    with h5py.File(out, "r") as h5:
        assert h5.attrs["build_id"] == first  # same parameters, same source: kept
    build_cache("esc50", synthetic["esc50"], out, progress=False, compression="lzf", **CACHE_ARGS["esc50"])
    with h5py.File(out, "r") as h5:
        assert h5.attrs["build_id"] != first and h5["waveform"].compression == "lzf"
        lzf = h5["waveform"][()]
    root = tmp_path / "esc"
    shutil.copytree(synthetic["esc50"], root)
    build_cache("esc50", root, tmp_path / "copy.h5", progress=False, compression="lzf", **CACHE_ARGS["esc50"])
    before = cache_info(tmp_path / "copy.h5")["source_fingerprint"]
    victim = sorted((root / "audio").iterdir())[0]
    sf.write(victim, np.full(100, 0.25, np.float32), 8000)  # same name, other content and size (all zeros: refused)
    info = build_cache("esc50", root, tmp_path / "copy.h5", progress=False, compression="lzf", **CACHE_ARGS["esc50"])
    assert info["source_fingerprint"] != before
    with open_cache(tmp_path / "copy.h5") as h5:
        assert not np.array_equal(h5["waveform"][()], lzf)


@pytest.mark.reliability
def test_truncated_silent_and_nan_clips_never_reach_the_cache(synthetic, tmp_path):
    """Each is refused by name (ESC-50, US8K: the build stops) or skipped and listed (AudioSet's --on-error skip):
    never stored as the zeros the builder would pad a short clip with, nor as NaN."""
    root = tmp_path / "esc"
    shutil.copytree(synthetic["esc50"], root)
    names = sorted(p.name for p in (root / "audio").iterdir())[:3]
    cut, silent, nan = (root / "audio" / n for n in names)
    cut.write_bytes(cut.read_bytes()[:2000])
    sf.write(silent, np.zeros((4000, 1), np.float32), 8000)
    wave, sr = sf.read(nan, dtype="float32")
    wave[100] = np.nan
    sf.write(nan, wave, sr, subtype="FLOAT")
    order = md.read_esc50(root).items["filename"].tolist()
    first, *_ = broken = sorted(names, key=order.index)  # in the order the builder meets them
    out = tmp_path / "esc.h5"
    with pytest.raises(AudioDecodeError, match=first):
        build_cache("esc50", root, out, progress=False, **CACHE_ARGS["esc50"])
    info = build_cache("esc50", root, out, on_error="skip", progress=False, **CACHE_ARGS["esc50"])
    assert [s["source"] for s in info["skipped"]] == broken
    reasons = {s["source"]: s["error"] for s in info["skipped"]}
    assert reasons[cut.name] == f"{cut}: truncated: the header declares 44100 bytes of audio, the file holds 1956"
    assert reasons[silent.name].endswith("silent (every sample is zero)")
    assert reasons[nan.name].endswith("NaN or infinite samples")
    with open_cache(out) as h5:
        assert not set(names) & set(read_strings(h5, "source"))
        assert (np.abs(h5["waveform"][()]).max(axis=(1, 2)) > 0).all()  # no all-zero clip stored


@pytest.mark.reliability
def test_odd_images_are_cached_upright_rgb_and_a_truncated_one_is_named_or_skipped(synthetic, tmp_path):
    root = tmp_path / "im"
    shutil.copytree(synthetic["imagenet"], root)
    gray, rgba, rotated, cmyk, cut = sorted((root / "val").rglob("*.JPEG"))[:5]
    Image.new("L", (40, 40), 90).save(gray, format="JPEG")
    Image.new("RGBA", (40, 40), (255, 0, 0, 0)).save(rgba, format="PNG")  # fully transparent: over white
    landscape = Image.new("RGB", (60, 30), (255, 0, 0))
    landscape.paste((0, 0, 255), (30, 0, 60, 30))  # left half red, right half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # a phone held upright: rotate 90 degrees clockwise to display; the left half is the top
    landscape.save(rotated, format="JPEG", exif=exif.tobytes())
    Image.new("CMYK", (40, 40), (0, 255, 255, 0)).save(cmyk, format="JPEG")  # red
    cut.write_bytes(cut.read_bytes()[:300])
    out = tmp_path / "im.h5"
    with pytest.raises(ImageDecodeError, match=cut.name):
        build_cache("imagenet", root, out, progress=False, **CACHE_ARGS["imagenet"])
    info = build_cache("imagenet", root, out, on_error="skip", progress=False, **CACHE_ARGS["imagenet"])
    assert [s["source"] for s in info["skipped"]] == [cut.name] and "cannot decode" in info["skipped"][0]["error"]
    with open_cache(out) as h5:
        images = dict(zip(read_strings(h5, "source"), h5["image"][()].astype(int)))
    g = images[gray.name]
    assert (g[..., 0] == g[..., 1]).all() and (g[..., 1] == g[..., 2]).all() and abs(g.mean() - 90) < 3
    assert images[rgba.name].min() >= 250
    r = images[rotated.name]
    top, bottom = r[:8].mean(axis=(0, 1)), r[-8:].mean(axis=(0, 1))
    assert top[0] > 200 and top[2] < 60 and bottom[2] > 200 and bottom[0] < 60  # turned upright, then cropped
    c = images[cmyk.name].mean(axis=(0, 1))
    assert c[0] > 200 and c[1] < 60 and c[2] < 60
