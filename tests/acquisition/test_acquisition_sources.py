"""Datasets and weights from their sources: the real download, extraction and checks against 127.0.0.1."""

import hashlib
import json
import shutil
import tarfile
import zipfile

import pytest
import torch
from audioset_media import SEGMENTS, make_media, write_lists

from pipeline.acquisition import sources
from pipeline.acquisition.download import ChecksumError
from pipeline.acquisition.sources import DatasetError, acquire_archive_dataset, check_dataset
from pipeline.data import synthetic
from pipeline.io import sha256sum
from pipeline.models.weights import WeightsError


@pytest.fixture(scope="module")
def esc50_copy(tmp_path_factory):
    """A small ESC-50 in the official layout (5 folds x 10 classes x 1 clip)."""
    return synthetic.generate("esc50", tmp_path_factory.mktemp("src") / "ESC-50-master",
                              {"clips_per_class_per_fold": 1, "seconds": 0.2, "sample_rate": 8000})


@pytest.fixture(scope="module")
def us8k_copy(tmp_path_factory):
    return synthetic.generate("us8k", tmp_path_factory.mktemp("src") / "UrbanSound8K",
                              {"clips_per_class_per_fold": 1, "max_seconds": 0.2})


def _zip(folder, out):
    with zipfile.ZipFile(out, "w") as z:
        for path in sorted(folder.rglob("*")):
            z.write(path, f"{folder.name}/{path.relative_to(folder)}")
    return out


def _tar(folder, out):
    with tarfile.open(out, "w:gz") as t:
        t.add(folder, arcname=folder.name)
    return out


def test_esc50_archive_is_downloaded_checked_and_put_in_place(server, esc50_copy, tmp_path):
    archive = _zip(esc50_copy, server.root / "master.zip")
    root = tmp_path / "data" / "esc50"
    acquire_archive_dataset("esc50", root, server.url("master.zip"), checksum=None, clips=50)
    meta = check_dataset("esc50", root, 50)
    assert len(meta.items) == 50 and (root / "audio").is_dir()
    record = json.loads((root / "SOURCE.json").read_text())
    assert record["sha256"] == sha256sum(archive) and record["clips"] == 50 and record["checksum"] is None
    assert not any(p.name.startswith(".esc50") for p in root.parent.iterdir())  # staging removed
    seen = len(server.requests)
    acquire_archive_dataset("esc50", root, server.url("master.zip"), clips=50)  # a complete copy: no request
    assert len(server.requests) == seen


def test_us8k_md5_and_an_interrupted_download_that_resumes(server, us8k_copy, tmp_path):
    archive = _tar(us8k_copy, server.root / "UrbanSound8K.tar.gz")
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    server.fault("UrbanSound8K.tar.gz", "drop", times=1)
    root = tmp_path / "us8k"
    acquire_archive_dataset("us8k", root, server.url("UrbanSound8K.tar.gz"), checksum=f"md5:{md5}", clips=100,
                            retries=2, timeout=5)
    assert len(check_dataset("us8k", root, 100).items) == 100
    assert any("Range" in r.headers for r in server.requests)  # the second request resumed the first


def test_wrong_checksum_or_count_leaves_no_dataset(server, us8k_copy, esc50_copy, tmp_path):
    _tar(us8k_copy, server.root / "u.tar.gz")
    with pytest.raises(ChecksumError, match="md5 mismatch"):
        acquire_archive_dataset("us8k", tmp_path / "us8k", server.url("u.tar.gz"), checksum="md5:" + "0" * 32)
    assert not (tmp_path / "us8k").exists()
    _zip(esc50_copy, server.root / "e.zip")
    with pytest.raises(DatasetError, match="50 esc50 items, the published dataset has 2000"):
        acquire_archive_dataset("esc50", tmp_path / "esc50", server.url("e.zip"), clips=2000)
    assert not (tmp_path / "esc50").exists()
    _zip(us8k_copy, server.root / "wrong.zip")  # a US8K archive where ESC-50 is expected
    with pytest.raises(DatasetError, match="no meta/esc50.csv"):
        acquire_archive_dataset("esc50", tmp_path / "esc50", server.url("wrong.zip"))


def test_an_incomplete_user_copy_is_named_and_kept(server, esc50_copy, tmp_path):
    root = tmp_path / "esc50"
    shutil.copytree(esc50_copy, root)
    victim = sorted((root / "audio").iterdir())[3]
    victim.unlink()
    with pytest.raises(DatasetError, match=rf"1 of the 50 files listed in its metadata are missing, e.g. \['.*{victim.name}'\]"):
        acquire_archive_dataset("esc50", root, server.url("never.zip"))
    assert root.is_dir() and len(list((root / "audio").iterdir())) == 49 and server.requests == []


def test_audioset_lists_then_clips(server, tmp_path):
    write_lists(server.root)
    make_media(server.root)
    root = tmp_path / "audioset"
    coverage = sources.acquire_audioset(root, server.url(""), ("balanced_train_segments.csv",),
                                        video_url=f"http://127.0.0.1:{server.port}/{{ytid}}.mp4", workers=2,
                                        rate_limit_per_s=None, frames_per_clip=2)
    assert (root / "class_labels_indices.csv").read_bytes() == (server.root / "class_labels_indices.csv").read_bytes()
    assert coverage["train"]["segments"] == sum(s[0] == "train" for s in SEGMENTS)
    assert coverage["train"]["fetched"] == 2 and (root / "coverage.json").is_file()


def test_weights_urls_and_verification(server, tmp_path):
    assert sources.weight_url("RN50.pt").endswith("/afeb0e10f9e5a86da6080e35cf09123aca3b358a0c3e3b6c78a7b63bc04b6762/RN50.pt")
    assert sources.weight_url("resnext50_32x4d-7cdf4587.pth").endswith("/resnext50_32x4d-7cdf4587.pth")
    assert sources.weight_url("CLIP.pt", "http://mirror/w/") == "http://mirror/w/CLIP.pt"
    with pytest.raises(ValueError, match="not a published weights file"):
        sources.weight_url("mine.pt")
    # A file served under a published name but with other bytes never lands in the weights folder.
    torch.save({"fc.weight": torch.zeros(1)}, server.root / "CLIP.pt")
    with pytest.raises(ChecksumError, match="sha256 mismatch"):
        sources.acquire_weights("CLIP.pt", tmp_path / "w" / "CLIP.pt", base_url=server.url(""), retries=0)
    assert not (tmp_path / "w" / "CLIP.pt").exists()
    with pytest.raises(ValueError, match="keep their published file name"):
        sources.acquire_weights("CLIP.pt", tmp_path / "w" / "clip.pt")
    # torchvision names carry a sha256 prefix: a corrupt copy fails the check and is not put in place.
    torch.save({"conv1.weight": torch.zeros(1)}, server.root / "resnext50_32x4d-7cdf4587.pth")
    with pytest.raises(WeightsError, match="does not start with 7cdf4587"):
        sources.acquire_weights("resnext50_32x4d-7cdf4587.pth", tmp_path / "w" / "resnext50_32x4d-7cdf4587.pth",
                                base_url=server.url(""), retries=0)
    assert not (tmp_path / "w" / "resnext50_32x4d-7cdf4587.pth").exists()


def test_a_real_video_becomes_an_audioset_clip(server, realdata, tmp_path):
    """bigbuckbunny.mp4 (6-channel AAC at 48 kHz, H.264) served as one AudioSet segment: yt-dlp, ffmpeg, the
    cache builder and the loader all see the real codecs."""
    import soundfile as sf

    from pipeline.acquisition.audioset import fetch_audioset
    from pipeline.data.cache import build_cache

    for ytid in ("realVideo01", "realVideo02"):
        shutil.copy(realdata / "video" / "bigbuckbunny.mp4", server.root / f"{ytid}.mp4")
    root = tmp_path / "audioset"
    root.mkdir()
    (root / "class_labels_indices.csv").write_text('index,mid,display_name\n0,/m/0jbk,"Animal"\n')
    header = "# a\n# b\n# YTID, start_seconds, end_seconds, positive_labels\n"
    (root / "balanced_train_segments.csv").write_text(header + 'realVideo01, 1.000, 3.000, "/m/0jbk"\n')
    (root / "eval_segments.csv").write_text(header)
    with pytest.raises(Exception, match="no segments"):  # an empty eval list is a broken download, not a split
        fetch_audioset(root, url_template=f"http://127.0.0.1:{server.port}/{{ytid}}.mp4", rate_limit_per_s=None)
    (root / "eval_segments.csv").write_text(header + 'realVideo02, 3.000, 5.000, "/m/0jbk"\n')
    coverage = fetch_audioset(root, url_template=f"http://127.0.0.1:{server.port}/{{ytid}}.mp4", workers=1,
                              rate_limit_per_s=None, frames_per_clip=3)
    assert coverage["train"]["fetched"] == coverage["eval"]["fetched"] == 1
    audio, rate = sf.read(root / "audio" / "realVideo01_1000.wav")
    assert rate == 48000 and abs(len(audio) - 2 * 48000) <= 1
    assert len(list((root / "frames" / "realVideo01_1000").glob("*.jpg"))) == 3
    info = build_cache("audioset", root, tmp_path / "as.h5", sample_rate=44100, clip_seconds=2.0, channels=1,
                       frames_per_clip=3, image_size=32, progress=False)
    assert info["n_clips"] == 2 and info["with_video"] == 2 and info["clip_samples"] == 88200
