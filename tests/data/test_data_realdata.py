"""Real ESC-50 and UrbanSound8K sample files through the cache builder (skipped when the folder is absent)."""

import numpy as np
import pandas as pd

from pipeline.data.cache import build_cache, open_cache, read_strings
from pipeline.data.datasets import AudioCacheDataset, fold_split


def test_real_esc50_cache(realdata, tmp_path):
    csv = pd.read_csv(realdata / "esc50" / "meta" / "esc50.csv").set_index("filename")
    info = build_cache("esc50", realdata / "esc50", tmp_path / "esc50.h5", sample_rate=44100, clip_seconds=5.0,
                       channels=1, progress=False)
    assert info["n_clips"] == 21 and info["skipped"] == []
    assert (info["sample_rate"], info["clip_samples"], info["channels"]) == (44100, 220500, 1)
    assert info["folds"] == {f: int((csv["fold"] == f).sum()) for f in range(1, 6)} == {1: 5, 2: 4, 3: 6, 4: 3, 5: 3}
    assert info["classes"]["crying baby"] == 10 and info["classes"]["dog"] == 1 and len(info["classes"]) == 10
    with open_cache(tmp_path / "esc50.h5") as h5:
        assert (h5["length"][()] == 220500).all()  # 5 s files at their native 44.1 kHz: nothing cut or padded
        names = info["classes"]
        for k, source in enumerate(read_strings(h5, "source")):
            assert list(names)[h5["label"][k]] == csv.loc[source, "category"].replace("_", " ")
            assert h5["fold"][k] == csv.loc[source, "fold"]
        assert np.abs(h5["waveform"][0]).max() > 1000
    train, test = fold_split(tmp_path / "esc50.h5", 2)
    assert len(test) == 4 and len(train) == 17


def test_real_us8k_cache(realdata, tmp_path):
    csv = pd.read_csv(realdata / "urbansound8k" / "metadata" / "UrbanSound8K.csv").set_index("slice_file_name")
    out = tmp_path / "us8k.h5"
    info = build_cache("us8k", realdata / "urbansound8k", out, sample_rate=8000, clip_seconds=4.0, channels=2,
                       progress=False)
    assert info["n_clips"] == 100 and info["folds"] == {1: 50, 10: 50}
    assert (info["sample_rate"], info["clip_samples"], info["channels"]) == (8000, 32000, 2)
    assert set(info["classes"].values()) == {10} and "dog bark" in info["classes"]
    with open_cache(out) as h5:
        assert (h5["length"][()] == 32000).all()  # 4.0 s at 22.05 kHz resampled to 8 kHz
        left, right = h5["waveform"][:, 0], h5["waveform"][:, 1]
        assert np.array_equal(left, right)  # mono files duplicated to stereo
        for k, source in enumerate(read_strings(h5, "source")):
            assert h5["label"][k] == csv.loc[source, "classID"] and h5["fold"][k] == csv.loc[source, "fold"]
    train, test = fold_split(out, 10)
    assert len(train) == len(test) == 50
    item = AudioCacheDataset(out, test, clip_samples=32000, train=False, amplitude="peak")[0]
    assert item["audio"].shape == (2, 32000) and item["audio"].min() == -32768
