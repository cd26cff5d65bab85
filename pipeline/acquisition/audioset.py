"""Fetch the AudioSet segments listed in the official CSVs: one WAV and a folder of video frames per segment.

AudioSet is distributed as lists of (YouTube id, start, end, labels); the media must be fetched one video at a
time. For every segment of root/{balanced_train,eval}_segments.csv (read by pipeline.data.metadata, which also
validates every id) that is not done yet, fetch_audioset:

1. downloads the video with yt-dlp's Python API into a private temporary folder under root/.fetch-tmp
   (whole file, at most 360p: cutting locally is exact, cutting while downloading is not);
2. cuts [start, end] of the first audio stream to a 16-bit PCM WAV with ffmpeg and checks it is as long as the
   window;
3. grabs `frames_per_clip` equally spaced frames inside the window as JPEG;
4. publishes frames/<stem>/ first and audio/<stem>.wav last, each by a rename (stem = <YTID>_<start in ms>).

The WAV is the "done" mark: a re-run skips every segment whose WAV exists, so the fetch resumes where it stopped.
Segments that cannot be had (video gone, no audio, media shorter than the window) are listed in
root/missing.csv with the reason, and the run goes on; a segment with audio but no video keeps its WAV and is
listed as 'no video' (the cache marks has_video from the frames folder). missing.csv is merged across runs and
written atomically. root/coverage.json counts, per split, what is on disk.

Downloads run in a thread pool with a shared minimum interval between download starts (video sites throttle
bursts). yt-dlp gets only the Python API and ffmpeg only argument lists with 'file:' paths, never a shell, so
an id starting with '-' can never become an option. yt-dlp's generic extractor handles plain media URLs,
which is how the tests serve clips from 127.0.0.1.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import re
import shutil
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import ffmpeg
import soundfile as sf
import yt_dlp
from tqdm import tqdm

from pipeline.data import metadata as md
from pipeline.io import fsync_dir, write_json, write_text

log = logging.getLogger(__name__)

YOUTUBE_URL = "https://www.youtube.com/watch?v={ytid}"
# low resolution is plenty: the cache resizes frames to the image head's input (224 px at most)
FORMAT = "bv*[height<=360]+ba/b[height<=360]/bv*+ba/b/ba"
MISSING_COLUMNS = ["split", "ytid", "start_seconds", "end_seconds", "reason"]
NO_VIDEO = "no video"
SHORT_TOLERANCE_S = 0.1  # official windows may end a hair after the media does; the cache zero-pads that
FRAME_GLOB = "*.jpg"  # what pipeline.data.cache reads (cache.FRAME_GLOB; not imported: it pulls in torch)
SAVE_EVERY = 25  # rewrite missing.csv every this many finished segments, so a killed run keeps its record


@dataclass(frozen=True)
class Segment:
    split: str
    ytid: str
    start: float
    end: float

    @property
    def stem(self) -> str:
        return f"{self.ytid}_{int(round(self.start * 1000))}"  # the name metadata.read_audioset expects

    @property
    def key(self) -> tuple[str, str, int]:
        return self.split, self.ytid, int(round(self.start * 1000))


class _Unavailable(Exception):
    """This segment cannot be fetched; str() is the reason written to missing.csv."""


def fetch_audioset(root: str | os.PathLike, *, splits: tuple[str, ...] = ("train", "eval"),
                   url_template: str = YOUTUBE_URL, workers: int = 4, rate_limit_per_s: float | None = 1.0,
                   frames_per_clip: int = 10, sample_rate: int | None = None, retries: int = 2,
                   limit: int | None = None, socket_timeout: float = 30.0, progress: bool = False,
                   train_segments: tuple[str, ...] | None = None) -> dict:
    """Fetch every missing segment of `splits` under `root`; write and return the coverage per split.

    train_segments: the segment lists of the train split (default: balanced_train_segments.csv; the paper
    adds unbalanced_train_segments.csv).
    url_template: formatted with ytid= (tests serve http://127.0.0.1:PORT/{ytid}.mp4).
    rate_limit_per_s: download starts per second over all workers (None: no limit).
    sample_rate: WAV rate in Hz, None keeps the media's own rate.
    retries: yt-dlp's retries for requests, fragments and extraction.
    limit: fetch at most the first `limit` segments of each split (in file order); coverage counts those only.
    """
    root = Path(root)
    files = md.segment_files(train_segments)
    unknown = [s for s in splits if s not in files]
    if unknown:
        raise ValueError(f"unknown AudioSet split(s) {unknown}; expected {sorted(files)}")
    if "{ytid}" not in url_template:
        raise ValueError(f"url_template {url_template!r} has no {{ytid}} field")
    if workers < 1 or frames_per_clip < 1:
        raise ValueError(f"workers and frames_per_clip must be >= 1, got {workers} and {frames_per_clip}")

    segments = _read_segments(root, {split: files[split] for split in splits}, limit)
    todo = [s for segs in segments.values() for s in segs if not _wav_path(root, s).is_file()]
    missing_csv = root / "missing.csv"
    missing = _read_missing(missing_csv)
    work = root / ".fetch-tmp"
    shutil.rmtree(work, ignore_errors=True)  # downloads of a killed run: one fetch per root at a time
    for folder in (root / "audio", root / "frames", work):
        folder.mkdir(parents=True, exist_ok=True)

    fetch = _Fetcher(root, url_template, frames_per_clip, sample_rate, _RateLimiter(rate_limit_per_s),
                     _ytdl_options(retries, socket_timeout))
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="audioset")
    try:
        futures = [pool.submit(fetch, seg) for seg in todo]
        done = as_completed(futures)
        for n, future in enumerate(tqdm(done, total=len(futures), desc="audioset", disable=not progress), 1):
            seg, reason = future.result()
            if reason is None:
                missing.pop(seg.key, None)  # fetched now: no longer missing
            else:
                missing[seg.key] = (seg, reason)
            if n % SAVE_EVERY == 0:
                _write_missing(missing_csv, missing)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # Ctrl-C: let running segments finish, start no more
        _write_missing(missing_csv, missing)
        shutil.rmtree(work, ignore_errors=True)

    coverage = _coverage(root, segments)
    write_json(root / "coverage.json", coverage)
    log.info("audioset: tried %d segment(s) this run; coverage %s", len(todo), coverage)
    return coverage


# -----------------------------------------------------------------------------
# one segment

class _Fetcher:
    """Callable run in the worker threads: Segment -> (Segment, reason or None). Never raises for a segment
    that simply cannot be had; anything else (disk full, a bug) propagates and stops the run."""

    def __init__(self, root: Path, url_template: str, frames_per_clip: int, sample_rate: int | None,
                 limiter: "_RateLimiter", ytdl_options: dict):
        self.root, self.url_template, self.frames = root, url_template, frames_per_clip
        self.sample_rate, self.limiter, self.ytdl_options = sample_rate, limiter, ytdl_options

    def __call__(self, seg: Segment) -> tuple[Segment, str | None]:
        with tempfile.TemporaryDirectory(dir=self.root / ".fetch-tmp", prefix="segment.") as tmp:
            try:
                return seg, self._fetch(seg, Path(tmp))
            except _Unavailable as err:
                return seg, str(err)

    def _fetch(self, seg: Segment, tmp: Path) -> str | None:
        self.limiter.wait()
        media = _download(self.url_template.format(ytid=seg.ytid), tmp / "download", self.ytdl_options)
        audio, video = _streams(media)
        if audio is None:
            raise _Unavailable("no audio")
        wav = tmp / "clip.wav"
        _cut_audio(media, audio, seg, wav, self.sample_rate)

        reason = None
        frames = tmp / "frames"
        if video is None:
            reason = NO_VIDEO
        else:
            try:
                _grab_frames(media, video, seg, frames, self.frames)
            except _Unavailable as err:
                reason = f"{NO_VIDEO}: {err}"  # the audio is still good: keep it, list the segment

        # publish: frames first, the WAV last (its existence marks the segment as done)
        final_frames = self.root / "frames" / seg.stem
        if final_frames.exists():
            shutil.rmtree(final_frames)  # left by a run that stopped before its WAV
        if reason is None:
            _fsync_files(frames.iterdir())
            os.replace(frames, final_frames)
            fsync_dir(final_frames.parent)
        _fsync_files([wav])
        os.replace(wav, _wav_path(self.root, seg))
        fsync_dir(self.root / "audio")
        return reason


def _wav_path(root: Path, seg: Segment) -> Path:
    return root / "audio" / f"{seg.stem}.wav"


def _download(url: str, folder: Path, options: dict) -> Path:
    """Download `url` into `folder` with yt-dlp; the media file, or _Unavailable with yt-dlp's reason."""
    folder.mkdir()
    params = {**options, "paths": {"home": str(folder), "temp": str(folder)}, "outtmpl": {"default": "media.%(ext)s"}}
    try:
        with yt_dlp.YoutubeDL(params) as ydl:
            info = ydl.extract_info(url, download=True)  # the URL is data here, never parsed as an option
    except yt_dlp.utils.DownloadError as err:
        raise _Unavailable(f"download failed: {_one_line(str(err))}") from None
    paths = [Path(d["filepath"]) for d in (info or {}).get("requested_downloads") or [] if d.get("filepath")]
    paths = [p for p in paths if p.is_file()] or sorted(
        p for p in folder.iterdir() if p.is_file() and not p.name.endswith((".part", ".ytdl")))
    if not paths:
        raise _Unavailable("download failed: yt-dlp reported success but wrote no file")
    return paths[0]


def _streams(media: Path) -> tuple[int | None, int | None]:
    """Index of the first audio stream and of the first real video stream (cover art is not video)."""
    try:
        probe = ffmpeg.probe(_src(media))
    except ffmpeg.Error as err:
        raise _Unavailable(f"unreadable media: {_stderr(err)}") from None
    audio = video = None
    for s in probe.get("streams", []):
        if s.get("codec_type") == "audio" and audio is None:
            audio = int(s["index"])
        elif (s.get("codec_type") == "video" and video is None
              and not s.get("disposition", {}).get("attached_pic")):
            video = int(s["index"])
    return audio, video


def _cut_audio(media: Path, stream: int, seg: Segment, out: Path, sample_rate: int | None) -> None:
    """[start, end] of the audio stream -> 16-bit PCM WAV at the native (or requested) rate, length-checked."""
    window = seg.end - seg.start
    rate = {"ar": sample_rate} if sample_rate else {}
    # -ss/-t before -i: fast seek, then ffmpeg decodes and trims to the exact sample
    _run(ffmpeg.input(_src(media), ss=f"{seg.start:.3f}", t=f"{window:.3f}")[str(stream)]
         .output(_src(out), format="wav", acodec="pcm_s16le", map_metadata="-1", **rate))
    try:
        # soundfile, not the wave module: ffmpeg writes WAVE_FORMAT_EXTENSIBLE for more than 2 channels
        info = sf.info(str(out))
        seconds = info.frames / info.samplerate
    except (sf.LibsndfileError, RuntimeError) as err:
        raise _Unavailable(f"audio cut failed: {err}") from None
    if seconds < window - SHORT_TOLERANCE_S:
        raise _Unavailable(f"shorter than its window: {seconds:.2f} s of audio in [{seg.start}, {seg.end}]")


def _grab_frames(media: Path, stream: int, seg: Segment, folder: Path, count: int) -> None:
    """`count` frames at the centres of `count` equal parts of the window -> folder/000.jpg, 001.jpg, ..."""
    folder.mkdir()
    window = seg.end - seg.start
    step = window / count
    # After the input seek the window starts at t = 0. Shifting every frame half a step earlier puts the fps
    # filter's output slots (k * step) on the part centres, and round=up fills each slot with the last frame
    # that started at or before it: the frame on screen at that moment. (fps's own start_time option rounds
    # the slots to whole steps, and the default rounding picks a frame up to half a step late.)
    _run(ffmpeg.input(_src(media), ss=f"{seg.start:.3f}", t=f"{window:.3f}")[str(stream)]
         .filter("setpts", f"PTS-{step / 2:.6f}/TB")
         .filter("fps", fps=f"{count}/{window:.6f}", round="up")
         .output(_src(folder / "%03d.jpg"), vframes=count, start_number=0, **{"q:v": 2}))
    if not any(folder.glob(FRAME_GLOB)):
        raise _Unavailable("no video frame inside the window")


def _run(stream: ffmpeg.nodes.OutputStream) -> None:
    try:
        (stream.global_args("-nostdin", "-hide_banner", "-loglevel", "error")
         .overwrite_output()
         .run(capture_stdout=True, capture_stderr=True))
    except ffmpeg.Error as err:
        raise _Unavailable(f"ffmpeg failed: {_stderr(err)}") from None


def _src(path: Path) -> str:
    # "file:" + absolute path: a name starting with '-' is never an option, one with ':' never a protocol
    return "file:" + str(path.resolve())


def _stderr(err: ffmpeg.Error) -> str:
    lines = (err.stderr or b"").decode("utf-8", "replace").strip().splitlines()
    return lines[-1] if lines else "no message"


def _one_line(text: str, limit: int = 300) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", text)  # colour codes
    text = " ".join(text.removeprefix("ERROR:").split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _fsync_files(paths: Iterable[Path]) -> None:
    for path in paths:
        with open(path, "rb") as f:
            os.fsync(f.fileno())


# -----------------------------------------------------------------------------
# yt-dlp settings and the shared rate limit

class _YtdlLog:
    """yt-dlp's messages go to logging at debug level: every failure ends up in missing.csv anyway."""

    def debug(self, msg: str) -> None:
        log.debug("yt-dlp: %s", msg)

    info = warning = error = debug


def _ytdl_options(retries: int, socket_timeout: float) -> dict:
    return {
        "format": FORMAT,
        "quiet": True, "no_warnings": True, "noprogress": True, "logger": _YtdlLog(),
        "noplaylist": True,
        # network behaviour made explicit rather than left to yt-dlp's defaults
        "socket_timeout": socket_timeout,
        "retries": retries, "fragment_retries": retries, "extractor_retries": retries,
        "retry_sleep_functions": {"http": lambda n: min(2.0 ** n, 30.0), "fragment": lambda n: min(2.0 ** n, 30.0)},
        "cachedir": False,  # no writes outside root
        "overwrites": True,
    }


class _RateLimiter:
    """At most `rate` calls of wait() return per second over all threads: each caller takes the next free
    slot, 1/rate seconds after the previous one (no bursts)."""

    def __init__(self, rate: float | None):
        if rate is not None and rate <= 0:
            raise ValueError(f"rate_limit_per_s must be > 0 or None, got {rate}")
        self.interval = 1.0 / rate if rate else 0.0
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self) -> None:
        if not self.interval:
            return
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next)
            self._next = slot + self.interval
        time.sleep(slot - now)  # outside the lock: the others can book their slots meanwhile


# -----------------------------------------------------------------------------
# segment lists, missing.csv, coverage.json

def _read_segments(root: Path, splits: dict[str, tuple[str, ...]], limit: int | None) -> dict[str, list[Segment]]:
    labels = md.read_audioset_labels(root / "class_labels_indices.csv")
    mids = {m: i for i, m in zip(labels["index"], labels["mid"])}
    out = {}
    for split, names in splits.items():
        df = md.read_audioset_split(root, names, mids)
        if limit is not None:
            df = df.head(limit)
        out[split] = [Segment(split, y, float(s), float(e))
                      for y, s, e in zip(df["ytid"], df["start_seconds"], df["end_seconds"])]
    return out


def _read_missing(path: Path) -> dict[tuple[str, str, int], tuple[Segment, str]]:
    if not path.is_file():
        return {}
    out = {}
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            seg = Segment(row["split"], row["ytid"], float(row["start_seconds"]), float(row["end_seconds"]))
            out[seg.key] = (seg, row["reason"])
    return out


def _write_missing(path: Path, missing: dict[tuple[str, str, int], tuple[Segment, str]]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(MISSING_COLUMNS)
    for key in sorted(missing):
        seg, reason = missing[key]
        writer.writerow([seg.split, seg.ytid, f"{seg.start:.3f}", f"{seg.end:.3f}", reason])
    write_text(path, buf.getvalue())


def _coverage(root: Path, segments: dict[str, list[Segment]]) -> dict:
    out = {}
    for split, segs in segments.items():
        fetched = [s for s in segs if _wav_path(root, s).is_file()]
        with_video = sum(1 for s in fetched if any((root / "frames" / s.stem).glob(FRAME_GLOB)))
        n = len(segs)
        out[split] = {"segments": n, "fetched": len(fetched), "missing": n - len(fetched),
                      "with_video": with_video, "coverage": round(len(fetched) / n, 4) if n else 0.0}
    return out
