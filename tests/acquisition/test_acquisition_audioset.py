"""fetch_audioset() against tiny clips served from 127.0.0.1 through yt-dlp's generic extractor.

The served media: four 3 s MP4s (a 440 Hz tone and a video whose brightness encodes the frame number, so the
frame times can be checked) and one audio-only MP4. The segment lists hold, besides good segments, one whose
video is not on the server, one audio-only, one whose window runs past the end of its media, and an id that
starts with '-' (it must be fetched, never taken for an option).
"""

import csv
import shutil
import subprocess
import time
import wave

import numpy as np
import pytest
from audioset_media import FETCHED, FPS, FRAMES, RATE, SEGMENTS, make_media, stem, write_lists
from local_server import FileServer
from PIL import Image

from pipeline.acquisition import audioset
from pipeline.acquisition.audioset import fetch_audioset
from pipeline.data.cache import build_cache
from pipeline.data.metadata import read_audioset
from pipeline.io import read_json

def fetch(root, server, **kw):
    return fetch_audioset(root, url_template=f"http://127.0.0.1:{server.port}/{{ytid}}.mp4", workers=2,
                          rate_limit_per_s=None, frames_per_clip=FRAMES, retries=0, socket_timeout=5, **kw)


@pytest.fixture(scope="module")
def fetched(tmp_path_factory):
    """A first fetch into a fresh root; yields (root, server, coverage). The server stays up for re-runs."""
    served = tmp_path_factory.mktemp("served")
    make_media(served)
    root = tmp_path_factory.mktemp("audioset")
    write_lists(root)
    # a stale record of a segment that will now succeed: the merge must drop it
    (root / "missing.csv").write_text("split,ytid,start_seconds,end_seconds,reason\n"
                                      "train,vidAAAAAAAA,0.500,2.500,download failed: earlier outage\n")
    server = FileServer(served)
    coverage = fetch(root, server)
    yield root, server, coverage
    server.close()


@pytest.fixture(scope="module")
def ramp_luma(fetched):
    """Mean luminance of every frame of a served video, decoded by ffmpeg as the JPEGs were."""
    served = fetched[1].root / "vidAAAAAAAA.mp4"
    raw = subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-i", f"file:{served}", "-f", "rawvideo",
                          "-pix_fmt", "gray", "-"], check=True, capture_output=True).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, 24 * 32).mean(axis=1)


def read_missing(root):
    with open(root / "missing.csv", newline="") as f:
        return {(r["split"], r["ytid"]): r for r in csv.DictReader(f)}


def test_wav_files_cover_exactly_the_window(fetched):
    root = fetched[0]
    for _, ytid, start, end, *_ in FETCHED:
        with wave.open(str(root / "audio" / f"{stem(ytid, start)}.wav")) as w:
            assert (w.getsampwidth(), w.getnchannels(), w.getframerate()) == (2, 1, RATE)  # native rate kept
            assert w.getnframes() == round((end - start) * RATE)
            x = np.frombuffer(w.readframes(w.getnframes()), "<i2")
        assert np.abs(x).max() > 1000  # the tone, not silence
    assert sorted(p.name for p in (root / "audio").iterdir()) == sorted(f"{stem(y, s)}.wav" for _, y, s, *_ in FETCHED)


def test_frames_are_equally_spaced_inside_the_window(fetched, ramp_luma):
    root = fetched[0]
    for _, ytid, start, end, *_, kind in FETCHED:
        folder = root / "frames" / stem(ytid, start)
        if kind == "audio":
            assert not folder.exists()
            continue
        files = sorted(folder.iterdir())
        assert [f.name for f in files] == [f"{k:03d}.jpg" for k in range(FRAMES)]
        step = (end - start) / FRAMES
        for k, f in enumerate(files):
            # the frame on screen at the centre of the k-th part of the window (no centre falls on a frame edge)
            frame_no = int((start + (k + 0.5) * step) * FPS)
            lum = np.asarray(Image.open(f).convert("L"), float).mean()
            assert abs(lum - ramp_luma[frame_no]) <= 4, (f.name, lum, frame_no)  # neighbours are ~9 apart
    assert not (root / "frames" / stem("shortClip01", 1.0)).exists()


def test_missing_csv_and_coverage(fetched):
    root, _, coverage = fetched
    missing = read_missing(root)
    assert sorted(missing) == [("eval", "audioOnly01"), ("eval", "shortClip01"), ("train", "goneGONE123")]
    assert missing[("eval", "audioOnly01")]["reason"] == "no video"
    assert missing[("train", "goneGONE123")]["reason"].startswith("download failed")
    assert "404" in missing[("train", "goneGONE123")]["reason"]
    assert missing[("eval", "shortClip01")]["reason"].startswith("shorter than its window")
    assert missing[("eval", "shortClip01")]["start_seconds"] == "1.000"
    expected = {"train": {"segments": 3, "fetched": 2, "missing": 1, "with_video": 2, "coverage": 0.6667},
                "eval": {"segments": 3, "fetched": 2, "missing": 1, "with_video": 1, "coverage": 0.6667}}
    assert coverage == expected
    assert read_json(root / "coverage.json") == expected
    assert not (root / ".fetch-tmp").exists()


def test_rerun_skips_finished_clips_and_refetches_deleted_ones(fetched):
    root, server, coverage = fetched
    server.requests.clear()
    assert fetch(root, server) == coverage
    asked = {r.name for r in server.requests}
    assert asked == {"goneGONE123.mp4", "shortClip01.mp4"}  # only the failures are tried again
    assert len(read_missing(root)) == 3  # merged, not appended

    wav = root / "audio" / f"{stem('vidAAAAAAAA', 0.5)}.wav"
    wav.unlink()
    shutil.rmtree(root / "frames" / stem("vidAAAAAAAA", 0.5))
    server.requests.clear()
    assert fetch(root, server) == coverage
    assert "vidAAAAAAAA.mp4" in {r.name for r in server.requests}
    with wave.open(str(wav)) as w:
        assert w.getnframes() == 2 * RATE
    assert len(list((root / "frames" / stem("vidAAAAAAAA", 0.5)).glob("*.jpg"))) == FRAMES


def test_limit_and_sample_rate(fetched, tmp_path):
    _, server, _ = fetched
    root = tmp_path / "audioset"
    write_lists(root)
    coverage = fetch(root, server, splits=("eval",), limit=1, sample_rate=8000)
    assert coverage == {"eval": {"segments": 1, "fetched": 1, "missing": 0, "with_video": 0, "coverage": 1.0}}
    with wave.open(str(root / "audio" / f"{stem('audioOnly01', 0.5)}.wav")) as w:
        assert (w.getframerate(), w.getnframes()) == (8000, 2 * 8000)


def test_cache_builds_from_what_was_fetched(fetched, tmp_path):
    root = fetched[0]
    meta = read_audioset(root)
    assert len(meta.items) == len(SEGMENTS)
    info = build_cache("audioset", root, tmp_path / "audioset.h5", sample_rate=8000, clip_seconds=1.0, channels=1,
                       frames_per_clip=3, image_size=32, on_error="skip", progress=False)
    assert info["n_clips"] == len(FETCHED)
    assert info["splits"] == {"eval": 2, "train": 2}
    assert info["with_video"] == 3
    assert sorted(s["source"] for s in info["skipped"]) == sorted(
        [f"{stem('goneGONE123', 1.0)}.wav", f"{stem('shortClip01', 1.0)}.wav"])


def test_rate_limiter_spaces_starts():
    limiter = audioset._RateLimiter(20.0)
    t0 = time.monotonic()
    for _ in range(5):
        limiter.wait()
    assert time.monotonic() - t0 >= 4 / 20.0 - 0.01  # 5 starts need 4 intervals
