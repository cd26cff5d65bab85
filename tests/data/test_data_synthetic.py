"""Synthetic datasets: official layouts, determinism, and sounds that are distinct but not trivial."""

import csv
import re

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from PIL import Image

from data_support import REALDATA, SMALL
from pipeline.data import synthetic as syn
from pipeline.data.sounds import BAND_TOP, SOUND_RECIPES, render
from pipeline.data.visuals import VISUAL_RECIPES


def _real_header(rel: str, fallback: list[str]) -> list[str]:
    """Column names of the real metadata file when present (else the documented ones)."""
    path = REALDATA / rel
    return pd.read_csv(path, nrows=0).columns.tolist() if path.is_file() else fallback


def test_esc50_layout(synthetic):
    root = synthetic["esc50"]
    df = pd.read_csv(root / "meta" / "esc50.csv")
    assert df.columns.tolist() == _real_header("esc50/meta/esc50.csv", ["filename", "fold", "target", "category",
                                                                          "esc10", "src_file", "take"])
    per = SMALL["esc50"]["clips_per_class_per_fold"]
    assert len(df) == 5 * 10 * per
    assert dict(zip(df["category"], df["target"])) == syn.ESC50_CLASSES
    assert sorted(df["fold"].unique()) == [1, 2, 3, 4, 5]
    assert df["filename"].tolist() == sorted(df["filename"])
    for row in df.itertuples():
        assert row.filename == f"{row.fold}-{row.src_file}-{row.take}-{row.target}.wav"
        assert row.esc10 == (row.category in syn.ESC10)
        info = sf.info(root / "audio" / row.filename)
        assert (info.samplerate, info.channels, info.subtype) == (44100, 1, "PCM_16")
        assert info.frames == int(44100 * SMALL["esc50"]["seconds"])


def test_us8k_layout(synthetic):
    root = synthetic["us8k"]
    df = pd.read_csv(root / "metadata" / "UrbanSound8K.csv")
    assert df.columns.tolist() == _real_header("urbansound8k/metadata/UrbanSound8K.csv",
                                               ["slice_file_name", "fsID", "start", "end", "salience", "fold",
                                                "classID", "class"])
    assert dict(zip(df["class"], df["classID"])) == syn.US8K_CLASSES
    assert sorted(df["fold"].unique()) == list(range(1, 11))
    assert df.groupby("fsID")["fold"].nunique().max() == 1  # a recording never straddles folds
    rates, channels, subtypes = set(), set(), set()
    for row in df.itertuples():
        assert re.fullmatch(rf"{row.fsID}-{row.classID}-\d+-\d+\.wav", row.slice_file_name)
        info = sf.info(root / "audio" / f"fold{row.fold}" / row.slice_file_name)
        rates.add(info.samplerate), channels.add(info.channels), subtypes.add(info.subtype)
        assert info.frames == pytest.approx((row.end - row.start) * info.samplerate, abs=1)
        assert info.frames <= SMALL["us8k"]["max_seconds"] * info.samplerate + 1
    assert len(rates) >= 4 and channels == {1, 2} and {"PCM_16", "PCM_24", "FLOAT"} <= subtypes


def test_audioset_layout(synthetic):
    root = synthetic["audioset"]
    labels = pd.read_csv(root / "class_labels_indices.csv")
    assert labels.columns.tolist() == ["index", "mid", "display_name"]
    assert labels["index"].tolist() == list(range(14))
    real = REALDATA / "audioset" / "class_labels_indices.csv"
    if real.is_file():  # the hard-coded mids must be the real ones
        official = dict(zip(*pd.read_csv(real)[["display_name", "mid"]].T.values))
        assert all(official[n] == m for m, n in zip(labels["mid"], labels["display_name"]))
    parent = {"/m/05tny_": "/m/0bt9lr", "/m/07pb8fc": "/m/02mk9"}  # Bark -> Dog, Idling -> Engine
    ytids, no_video = [], 0
    for fname, count in (("balanced_train_segments.csv", 30), ("eval_segments.csv", 12)):
        lines = (root / fname).read_text().splitlines()
        assert [line.startswith("#") for line in lines[:4]] == [True, True, True, False]
        rows = list(csv.reader(lines[3:], skipinitialspace=True))
        assert len(rows) == count
        for ytid, start, end, positive in rows:
            assert re.fullmatch(r"[A-Za-z0-9_-]{11}", ytid)
            assert float(end) - float(start) == pytest.approx(SMALL["audioset"]["seconds"])
            mids = positive.split(",")
            assert 1 <= len(mids) <= 4 and set(mids) <= set(labels["mid"])
            assert all(parent[m] in mids for m in mids if m in parent)
            stem = f"{ytid}_{int(round(float(start) * 1000))}"
            assert sf.info(root / "audio" / f"{stem}.wav").samplerate == 44100
            frames = sorted((root / "frames" / stem).glob("*.jpg"))
            no_video += not frames
            if frames:
                assert [f.name for f in frames] == ["00.jpg", "01.jpg", "02.jpg"]
                with Image.open(frames[0]) as img:
                    assert img.size == (32, 32)
            ytids.append(ytid)
    assert len(set(ytids)) == len(ytids)
    assert any(y.startswith("-") for y in ytids)
    assert 0 < no_video < len(ytids) / 3


def test_imagenet_layout(synthetic):
    root = synthetic["imagenet"]
    lines = (root / "LOC_synset_mapping.txt").read_text().splitlines()
    assert len(lines) == 6 and all(re.fullmatch(r"n\d{8} [^,]+(, [^,]+)*", line) for line in lines)
    modes = []
    for line in lines:
        wnid = line.split()[0]
        files = sorted((root / "val" / wnid).iterdir())
        assert [f.name for f in files] == [f"{wnid}_{i}.JPEG" for i in range(4)]
        for f in files:
            with Image.open(f) as img:
                assert img.format == "JPEG"
                modes.append(img.mode)
    assert "L" in modes and "RGB" in modes


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    cfg = {"clips_per_class_per_fold": 1, "max_seconds": 0.1}  # us8k: float WAVs (PEAK chunk) included
    a = syn.generate("us8k", tmp_path / "a", cfg, seed=3)
    b = syn.generate("us8k", tmp_path / "b", cfg, seed=3)
    c = syn.generate("us8k", tmp_path / "c", cfg, seed=4)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    assert (a / "metadata/UrbanSound8K.csv").read_bytes() != (c / "metadata/UrbanSound8K.csv").read_bytes()
    for name, cfg in (("audioset", {"train_clips": 3, "eval_clips": 2, "seconds": 0.1}),
                      ("imagenet", {"images_per_class": 1, "size": 16})):
        a = syn.generate(name, tmp_path / f"{name}1", cfg, seed=1)
        b = syn.generate(name, tmp_path / f"{name}2", cfg, seed=1)
        files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
        assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)


def test_generate_replaces_root_atomically(tmp_path):
    root = tmp_path / "esc"
    root.mkdir()
    (root / "stale.txt").write_text("old")
    syn.generate("esc50", root, {"clips_per_class_per_fold": 1, "seconds": 0.05})
    assert not (root / "stale.txt").exists() and (root / "meta" / "esc50.csv").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["esc"]  # no temporary folders left


def test_generate_rejects_unknown_settings(tmp_path):
    with pytest.raises(ValueError, match="clips_per_fold"):
        syn.generate("esc50", tmp_path / "x", {"clips_per_fold": 3})
    with pytest.raises(ValueError, match="unknown dataset"):
        syn.generate("esc-50", tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_every_class_has_a_sound_and_a_picture():
    names = set(syn.ESC50_CLASSES) | {syn.US8K_SOUNDS.get(c, c) for c in syn.US8K_CLASSES}
    names |= set(syn.AUDIOSET_SOUNDS) | {v for _, _, v in syn.IMAGENET_CLASSES}
    assert names <= set(SOUND_RECIPES) and set(SOUND_RECIPES) <= set(VISUAL_RECIPES)
    audioset_names = {n for _, n in syn.AUDIOSET_CLASSES}
    assert {lab for labs in syn.AUDIOSET_SOUNDS.values() for lab in labs} == audioset_names


@pytest.mark.parametrize("name", sorted(SOUND_RECIPES))
def test_recipe_is_band_limited_and_jittered(name):
    a = render(name, np.random.default_rng(0), 44100, 22050)
    b = render(name, np.random.default_rng(1), 44100, 22050)
    assert a.shape == (1, 22050) and a.dtype == np.float32 and np.isfinite(a).all()
    assert 0.2 < np.abs(a).max() <= 0.9
    power = np.abs(np.fft.rfft(a[0])) ** 2
    assert power[np.fft.rfftfreq(22050, 1 / 44100) > 3500].sum() < 1e-9 * power.sum()
    assert BAND_TOP < 3500
    assert not np.allclose(a, b)


def _features(x: np.ndarray) -> np.ndarray:
    """Mean and spread of log band energies (a crude spectrogram summary)."""
    frames = x[: len(x) // 256 * 256].reshape(-1, 256) * np.hanning(256)
    bands = np.log((np.abs(np.fft.rfft(frames, axis=1)) ** 2)[:, :128].reshape(len(frames), 32, 4).sum(2) + 1e-6)
    return np.concatenate([bands.mean(0), bands.std(0)])


def test_classes_are_learnable_but_not_identical():
    # nearest class centroid on crude spectral features, train on 6 clips per class, test on 4 others
    classes = sorted(syn.ESC50_CLASSES)
    rng = np.random.default_rng(0)
    feats = {c: np.stack([_features(render(c, rng, 8000, 8000)[0]) for _ in range(10)]) for c in classes}
    train = np.concatenate([feats[c][:6] for c in classes])
    mu, sd = train.mean(0), train.std(0) + 1e-6
    centroids = np.stack([((feats[c][:6] - mu) / sd).mean(0) for c in classes])
    correct = sum(int(np.argmin((((f - mu) / sd - centroids) ** 2).sum(1)) == k)
                  for k, c in enumerate(classes) for f in feats[c][6:])
    assert correct / (4 * len(classes)) > 0.6  # chance is 0.1
    assert all(np.std(feats[c], axis=0).mean() > 0.05 for c in classes)  # clips of a class vary


@pytest.mark.slow
def test_default_sizes_generate_and_cache(tmp_path):
    """The embedded profile's data step at full default size (about 15-30 s on 2 busy cores)."""
    from pipeline.data.cache import build_cache

    cache_args = {"esc50": {"sample_rate": 8000, "clip_seconds": 1.0, "channels": 1},
                  "us8k": {"sample_rate": 8000, "clip_seconds": 0.8, "channels": 2},
                  "audioset": {"sample_rate": 8000, "clip_seconds": 1.0, "channels": 1, "frames_per_clip": 3,
                               "image_size": 64},
                  "imagenet": {"image_size": 64}}
    expected = {"esc50": 200, "us8k": 200, "audioset": 560, "imagenet": 60}
    for name, kwargs in cache_args.items():
        root = syn.generate(name, tmp_path / name)
        info = build_cache(name, root, tmp_path / f"{name}.h5", progress=False, **kwargs)
        assert info["n_clips"] == expected[name] and info["skipped"] == []
