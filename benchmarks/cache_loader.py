"""Benchmark: HDF5 cache build and cached-loader throughput on real-sized audio, against decoding on every access.

    python benchmarks/cache_loader.py [--quick] [--min-seconds 5] [--workers 0,1,2] [--out benchmarks/cache.json]

Writes source sets in the official layouts into a temporary folder, then measures
  build       pipeline.data.cache.build_cache, clips/s (one process; the builder itself uses one thread):
              esc50_like    5 s 44.1 kHz mono int16 WAVs (synthetic.generate), cached at the native rate
              us8k_like     4 s WAVs at 48 / 22.05 kHz, mono and stereo, resampled to 44.1 kHz stereo
              audioset_like 10 s 48 kHz WAVs resampled to 44.1 kHz mono + 10 JPEG frames per clip
                            (synthetic.generate, 480 x 480 source frames: the pixel count of 640 x 360),
                            cached as 224 px JPEG frames; built with compression None, 'lzf' and 'gzip'
              real_esc50 / real_us8k  the real clips in /work/shared/realdata (when present), reported apart
  loader      clips/s of raw batches (int16 audio, augmentation plans, uint8 frames: what is handed to the training
              device) through pipeline.data.loader (batch 64, 16 with --quick; 0/1/2 reader threads, 0 = the
              calling thread; shuffled clips over many epochs; the first round of batches is warm-up) of
              cached_*      AudioCacheDataset via datasets.audio_dataset (paper profile, train mode)
              decode_*      the same clips decoded from the source on every access (audio_io.load_audio at 44.1 kHz,
                            and for frames the source JPEG + fit_image), same loader, buffers and plans
              and the ratio cached/decode per thread count; AudioSet-like with and without frames (_frames);
              the real sets with 1 thread only; cached_train_frames_worker_processes: the same cached clips handed
              over by torch DataLoader worker processes (what the threads avoid); CPU ms per clip next to clips/s
              (robust to a shared machine). The batched finish (augmentation, normalisation) runs on the training
              device and is timed apart, on one CPU core, in per_item_ms.
  per_item_ms where one clip's time goes (single calls), frame JPEG sizes (synthetic and real footage),
              workers needed for one H100's ~2,300 clips/s (an estimate), and the AudioSet disk footprint.
Writes one JSON record; nothing here asserts a speed (benchmarks measure, tests check). --quick: ~1 minute.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import h5py
import numpy as np
import soundfile as sf
import torch
from torch.utils.data import DataLoader, Dataset

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.config import load_config  # noqa: E402
from pipeline.data import metadata as md  # noqa: E402
from pipeline.data import synthetic  # noqa: E402
from pipeline.data.audio_io import load_audio, load_image  # noqa: E402
from pipeline.data.cache import (FRAME_GLOB, build_cache, decode_jpeg, encode_jpeg, fit_image,  # noqa: E402
                                 read_strings)
from pipeline.data import loader  # noqa: E402
from pipeline.data.datasets import audio_dataset, collate, fit_frame  # noqa: E402
from pipeline.data.transforms import draw_plan  # noqa: E402
from pipeline.data.sounds import render  # noqa: E402
from pipeline.io import write_json  # noqa: E402

REALDATA = Path("/work/shared/realdata")
SAMPLE_RATE = 44100          # the paper profile's cache rate
IMAGE_SIZE = 224             # audioclip-rn50 vision input
FRAMES_PER_CLIP = 10
SOURCE_FRAME_SIZE = 480      # synthetic frames are square: 480 x 480 has the pixels of a 640 x 360 (360p) frame
H100_CLIPS_PER_SECOND = 2300
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
BATCH = 64
AUDIOSET_SPLITS = {"balanced_train": 22160, "eval": 20371, "unbalanced_train": 2041789}  # official CSV counts
US8K_FORMATS = ((48000, 2), (48000, 1), (22050, 2), (22050, 1))  # (rate, channels), cycled over the clips
# dataset kind -> (dataset name for metadata / build_cache / params.yaml, cache channels)
KINDS = {"esc50_like": ("esc50", 1), "us8k_like": ("us8k", 2), "audioset_like": ("audioset", 1),
         "real_esc50": ("esc50", 1), "real_us8k": ("us8k", 2)}


# -----------------------------------------------------------------------------
# source sets in the official layouts

def make_esc50_like(root: Path, n: int) -> int:
    per = max(1, n // (synthetic.ESC50_FOLDS * len(synthetic.ESC50_CLASSES)))
    synthetic.generate("esc50", root, {"clips_per_class_per_fold": per, "seconds": 5.0, "sample_rate": 44100}, seed=0)
    return per * synthetic.ESC50_FOLDS * len(synthetic.ESC50_CLASSES)


def make_us8k_like(root: Path, n: int, seconds: float = 4.0, seed: int = 0) -> int:
    """metadata/UrbanSound8K.csv + audio/fold{k}/{fsID}-{classID}-0-0.wav, 16-bit PCM at 48 / 22.05 kHz."""
    classes = list(synthetic.US8K_CLASSES.items())
    fs_ids = np.random.default_rng(seed).choice(np.arange(1000, 200000), n, replace=False)
    lines = ["slice_file_name,fsID,start,end,salience,fold,classID,class"]
    for i in range(n):
        fold, (cls, class_id) = i % 10 + 1, classes[(i // 10) % len(classes)]
        rate, channels = US8K_FORMATS[i % len(US8K_FORMATS)]
        name = f"{fs_ids[i]}-{class_id}-0-0.wav"
        x = render(synthetic.US8K_SOUNDS.get(cls, cls), np.random.default_rng((seed, i)), rate,
                   int(round(seconds * rate)), channels)
        path = root / "audio" / f"fold{fold}" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, x.T, rate, subtype="PCM_16")
        lines.append(f"{name},{fs_ids[i]},0.0,{seconds},1,{fold},{class_id},{cls}")
    (root / "metadata").mkdir(parents=True, exist_ok=True)
    (root / "metadata" / "UrbanSound8K.csv").write_text("\n".join(lines) + "\n")
    return n


def make_audioset_like(root: Path, n: int) -> int:
    eval_clips = n // 4
    synthetic.generate("audioset", root, {"train_clips": n - eval_clips, "eval_clips": eval_clips, "seconds": 10.0,
                                          "sample_rate": 48000, "frames_per_clip": FRAMES_PER_CLIP,
                                          "frame_size": SOURCE_FRAME_SIZE}, seed=0)
    return n


def source_summary(dataset: str, root: Path) -> dict:
    meta = md.read(dataset, root)
    audio_bytes = sum(os.path.getsize(p) for p in meta.items["path"])
    formats: dict[str, int] = {}
    for p in meta.items["path"]:
        info = sf.info(p)
        key = f"{info.samplerate} Hz, {info.channels} ch, {info.subtype}, {info.duration:.1f} s"
        formats[key] = formats.get(key, 0) + 1
    out = {"clips": len(meta.items), "formats": formats, "audio_bytes_per_clip": round(audio_bytes / len(meta.items))}
    if dataset == "audioset":
        frames = [f for d in meta.items["frames_dir"] for f in Path(d).glob(FRAME_GLOB)]
        with_video = sum(Path(d).is_dir() for d in meta.items["frames_dir"])
        out.update({"clips_with_video": with_video, "source_frame_px": f"{SOURCE_FRAME_SIZE}x{SOURCE_FRAME_SIZE}",
                    "source_frame_bytes_mean": round(sum(f.stat().st_size for f in frames) / max(1, len(frames)))})
    return out


# -----------------------------------------------------------------------------
# build

def build_kwargs(dataset: str, channels: int, settings: dict) -> dict:
    kw = {"sample_rate": SAMPLE_RATE, "clip_seconds": settings["data"][dataset]["clip_seconds"], "channels": channels}
    if dataset == "audioset":
        kw.update({"frames_per_clip": FRAMES_PER_CLIP, "image_size": IMAGE_SIZE})
    return kw


def timed_build(dataset: str, root: Path, out: Path, kwargs: dict, compression: str | None = None) -> dict:
    if out.exists():
        out.unlink()
    t0 = time.perf_counter()
    info = build_cache(dataset, root, out, progress=False, compression=compression, **kwargs)
    seconds = time.perf_counter() - t0
    n = int(info.get("n_clips", 0)) or _n_clips(out)
    record = {"clips": n, "seconds": round(seconds, 2), "clips_per_second": round(n / seconds, 1),
              "file_bytes": out.stat().st_size, "file_bytes_per_clip": round(out.stat().st_size / n),
              "compression": compression}
    with h5py.File(out, "r") as h5:
        wave = h5["waveform"]
        record["waveform_shape"] = list(wave.shape)
        record["waveform_raw_bytes_per_clip"] = int(np.prod(wave.shape[1:])) * wave.dtype.itemsize
        record["waveform_stored_bytes_per_clip"] = round(wave.id.get_storage_size() / n)
        if "frames" in h5:
            has_video = h5["has_video"][()]
            sizes = [len(h5["frames"][i, j]) for i in np.flatnonzero(has_video) for j in range(h5["frames"].shape[1])]
            record["clips_with_video"] = int(has_video.sum())
            record["frame_jpeg_bytes_mean"] = round(statistics.mean(sizes))
            record["frame_bytes_per_clip_with_video"] = round(statistics.mean(sizes) * h5["frames"].shape[1])
    return record


def _n_clips(path: Path) -> int:
    with h5py.File(path, "r") as h5:
        return len(h5["label"])


# -----------------------------------------------------------------------------
# loaders

class DecodeEveryAccess:
    """What an uncached pipeline does per clip: decode (and resample) the source file and cut it to the clip
    length like the cache builder does; frames: decode the source JPEG and fit it to image_size. It speaks the
    cached dataset's batch protocol (pipeline.data.loader), so both run through the same loader, threads and
    buffers, draw the same plans and are finished by the same code: only the read differs."""

    def __init__(self, cached, meta: md.Metadata, channels: int):
        self.cached, self.channels = cached, channels
        self.paths = list(meta.items["path"])
        self.frames_dirs = list(meta.items["frames_dir"]) if "frames_dir" in meta.items else None

    def __len__(self) -> int:
        return len(self.cached)

    def batch_buffers(self, batch_size: int, pin_memory: bool = False) -> dict:
        return self.cached.batch_buffers(batch_size, pin_memory)

    def batch_labels(self, positions: list[int]) -> dict:
        return self.cached.batch_labels(positions)

    def finish(self, batch: dict) -> dict:
        return self.cached.finish(batch)

    def read_item(self, i: int, buffers: dict, slot: int) -> None:
        c = self.cached
        idx = int(c.indices[i])
        rng = np.random.default_rng((c.seed, c.epoch, idx))
        x = load_audio(self.paths[idx], SAMPLE_RATE, self.channels)  # (C, n) float32 in [-1, 1]
        n = min(x.shape[1], buffers["audio"].shape[2])
        audio = buffers["audio"][slot].numpy()
        audio[:, :n] = np.clip(np.round(x[:, :n] * 32768.0), -32768, 32767)  # the cache's int16 rounding
        audio[:, n:] = 0
        buffers["length"][slot] = n
        buffers["plan"][slot] = torch.from_numpy(draw_plan(c.augment, n, c.clip_samples, c.train, rng))
        if c.with_frames:
            folder = Path(self.frames_dirs[idx])
            files = sorted(folder.glob(FRAME_GLOB)) if folder.is_dir() else []
            if files:
                j = int(rng.integers(0, FRAMES_PER_CLIP)) if c.train else FRAMES_PER_CLIP // 2
                pick = np.linspace(0, len(files) - 1, FRAMES_PER_CLIP).round().astype(int)
                frame = fit_frame(fit_image(load_image(files[pick[j]]), IMAGE_SIZE), c.image_size)
                buffers["image"][slot].numpy()[:] = frame.transpose(2, 0, 1)
            else:
                buffers["image"][slot] = 0


class OneClipPerItem(Dataset):
    """The cached dataset as a map-style Dataset of raw items (int16 audio, plan, uint8 frame), for a torch
    DataLoader with worker processes: what handing clips from worker processes to the trainer costs."""

    def __init__(self, cached):
        self.cached = cached

    def __len__(self) -> int:
        return len(self.cached)

    def __getitem__(self, i: int) -> dict:
        buffers = self.cached.batch_buffers(1)
        self.cached.read_item(i, buffers, 0)
        return {k: v[0] for k, v in buffers.items()} | {"index": int(self.cached.indices[i])}


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (/proc/<pid>/stat utime, stime)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def _system_cpu() -> tuple[float, float]:
    """(busy, steal) CPU seconds of the whole machine so far, from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]  # user nice system idle iowait irq softirq steal
    return (v[0] + v[1] + v[2] + v[5] + v[6]) / CLOCK_TICKS, v[7] / CLOCK_TICKS


def time_loader(dataset, workers: int, batch: int, min_seconds: float, processes: bool = False) -> dict:
    """Clips/s of raw batches (int16 audio, plans, uint8 frames: what reaches the device) over shuffled clips
    from many epochs. workers: pipeline.data.loader threads (0: the calling thread), or with processes=True a
    torch DataLoader with that many worker processes over OneClipPerItem. The first round of batches is
    warm-up (thread/worker start, file opening); timing runs from its arrival until min_seconds have passed.
    Also the CPU time this process (its threads included) and worker processes spent meanwhile (robust to
    other load on the machine, unlike clips/s)."""
    order = torch.randint(0, len(dataset), (batch * 4000,), generator=torch.Generator().manual_seed(0)).tolist()
    if processes:
        source = DataLoader(OneClipPerItem(dataset), batch_size=batch, sampler=order, num_workers=workers,
                            collate_fn=collate)
    else:
        source = loader.batches(dataset, order, batch, threads=workers)
    warmup = max(1, workers)
    t_start = time.perf_counter()
    clips = batches = 0
    t0 = first = None
    it = iter(source)
    pids = [p.pid for p in getattr(it, "_workers", [])]
    try:
        for k, b in enumerate(it):
            now = time.perf_counter()
            if first is None:
                first = now - t_start
            if k + 1 == warmup:
                cpu0 = time.process_time(), sum(map(_cpu_seconds, pids)), _system_cpu()
                t0 = now
                continue
            if t0 is None:
                continue
            clips += len(b["index"])
            batches += 1
            if now - t0 >= min_seconds:
                break
        seconds = time.perf_counter() - t0
        main_cpu, worker_cpu = time.process_time() - cpu0[0], sum(map(_cpu_seconds, pids)) - cpu0[1]
        busy, steal = (a - b for a, b in zip(_system_cpu(), cpu0[2]))
    finally:
        if hasattr(it, "close"):
            it.close()
        del it
    rate = clips / seconds
    return {"clips_per_second": round(rate, 1), "per_worker": round(rate / workers, 1) if workers else None,
            "workers_are": "processes" if processes else "threads",
            "timed_clips": clips, "timed_batches": batches, "timed_seconds": round(seconds, 2),
            "first_batch_seconds": round(first, 2), "batch": batch,
            "cpu_ms_per_clip": {"this_process": round(main_cpu / clips * 1000, 2),
                                "worker_processes": round(worker_cpu / clips * 1000, 2) if pids else None,
                                "total": round((main_cpu + worker_cpu) / clips * 1000, 2)},
            "clips_per_cpu_second": round(clips / max(main_cpu + worker_cpu, 1e-9), 1),
            # cores' worth of CPU that other processes (not this loader) used meanwhile, and VM steal: where
            # these are not ~0 the machine was shared and clips/s are lower than on an idle machine
            "other_processes_cores": round(max(0.0, busy - main_cpu - worker_cpu) / seconds, 2),
            "steal_cores": round(steal / seconds, 2)}


def loader_sweep(make, workers: list[int], batch: int, min_seconds: float, label: str,
                 processes: bool = False) -> dict:
    out = {}
    for w in workers:
        ds = make()
        out[str(w)] = time_loader(ds, w, batch, min_seconds, processes)
        r = out[str(w)]
        print(f"  {label:<40} {'processes' if processes else 'threads'}={w}: {r['clips_per_second']:8.1f} clips/s, "
              f"{r['cpu_ms_per_clip']['total']:6.2f} CPU ms/clip (other processes {r['other_processes_cores']} cores)",
              flush=True)
    if "1" in out and "2" in out:
        out["scaling_2_over_1"] = round(out["2"]["clips_per_second"] / out["1"]["clips_per_second"], 2)
    return out


def ratios(cached: dict, decode: dict) -> dict:
    """cached/decode per thread count, by clips/s and by CPU time per clip (the latter robust to other load on a
    shared machine, which shifts clips/s between the two runs)."""
    both = [w for w in cached if w in decode and isinstance(cached[w], dict)]
    return {"clips_per_second": {w: round(cached[w]["clips_per_second"] / decode[w]["clips_per_second"], 1)
                                 for w in both},
            "cpu_ms_per_clip": {w: round(decode[w]["cpu_ms_per_clip"]["total"] / cached[w]["cpu_ms_per_clip"]["total"],
                                         1) for w in both}}


# -----------------------------------------------------------------------------
# per-item costs (single process, no DataLoader)

def _ms(fn, repeats: int) -> float:
    """Median milliseconds per call (the median: this machine may be shared)."""
    fn()  # warm (file open, first-call setup)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return round(statistics.median(times) * 1000, 3)


def per_item_ms(cache: Path, meta: md.Metadata, settings: dict, dataset: str, channels: int, repeats: int) -> dict:
    """Where a clip's time goes, per call in this process: the cached read against the source decode, and the
    batched finish (augmentation + normalisation) that runs on the training device, timed here on one CPU core."""
    frames = dataset == "audioset"
    ds = audio_dataset(settings, cache, dataset, None, train=True, with_frames=frames)
    ev = audio_dataset(settings, cache, dataset, None, train=False)
    one, one_ev = ds.batch_buffers(1), ev.batch_buffers(1)
    n = len(ds)
    idx = iter(np.random.default_rng(0).integers(0, n, 10 ** 6).tolist())
    out = {
        "read_item_cached" + ("_with_frame" if frames else ""): _ms(lambda: ds.read_item(next(idx), one, 0), repeats),
        "read_item_cached_audio_only": _ms(lambda: ev.read_item(next(idx), one_ev, 0), repeats),
        "load_audio_source": _ms(lambda: load_audio(meta.items["path"][next(idx)], SAMPLE_RATE, channels), repeats),
    }
    for name, d in (("train", ds), ("eval", ev)):
        batch = next(loader.batches(d, range(min(n, BATCH)), BATCH))
        out[f"finish_{name}_cpu_per_clip"] = round(_ms(lambda: d.finish(batch), max(3, repeats // 10))
                                                   / len(batch["index"]), 3)
    if frames:
        video = np.flatnonzero(ds.has_video)
        vid = iter(np.random.default_rng(1).choice(video, 10 ** 6).tolist())
        jpeg = ds.file.dataset("frames")[int(video[0]), 0]
        out.update({
            "h5_read_frame_bytes": _ms(lambda: ds.file.dataset("frames")[next(vid), 5], repeats),
            "decode_jpeg_224": _ms(lambda: decode_jpeg(jpeg), repeats),
            "source_frame_load_and_fit": _ms(
                lambda: fit_image(load_image(sorted(Path(meta.items["frames_dir"][next(vid)]).glob(FRAME_GLOB))[5]),
                                  IMAGE_SIZE), repeats),
        })
    ds.close()
    ev.close()
    return out


# -----------------------------------------------------------------------------
# frames of real footage, footprint

def real_frame_bytes(tmp: Path) -> dict:
    """224 px JPEG bytes (the cache's encoding) of frames from real footage and photos in the realdata folder."""
    out = {}
    video = REALDATA / "video" / "bikes.mp4"
    if video.is_file() and shutil.which("ffmpeg"):
        folder = tmp / "bikes_frames"
        folder.mkdir()
        # as the acquisition does: FRAMES_PER_CLIP frames over a 10 s window, q:v 2
        subprocess.run(["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-i", f"file:{video}",
                        "-vf", f"fps={FRAMES_PER_CLIP}/10", "-frames:v", str(FRAMES_PER_CLIP), "-q:v", "2",
                        str(folder / "%03d.jpg")], check=True)
        files = sorted(folder.glob("*.jpg"))
        jpegs = [encode_jpeg(fit_image(load_image(f), IMAGE_SIZE)) for f in files]
        out["real_footage_bikes_mp4"] = {
            "source": "realdata/video/bikes.mp4 (640x272 street footage)", "frames": len(jpegs),
            "jpeg_bytes_mean": round(statistics.mean(map(len, jpegs))),
            "bytes_per_clip_10_frames": round(statistics.mean(map(len, jpegs)) * FRAMES_PER_CLIP),
            "decode_jpeg_ms": _ms(lambda: decode_jpeg(jpegs[0]), 50)}
    photos = sorted((REALDATA / "images").glob("*")) if (REALDATA / "images").is_dir() else []
    if photos:
        jpegs = [encode_jpeg(fit_image(load_image(p), IMAGE_SIZE)) for p in photos]
        out["real_photos"] = {"source": "realdata/images (scikit-image sample photos)", "images": len(jpegs),
                              "jpeg_bytes_mean": round(statistics.mean(map(len, jpegs))),
                              "decode_jpeg_ms": _ms(lambda: decode_jpeg(jpegs[0]), 50)}
    return out


def frame_build_ms(tmp: Path, synthetic_frame: Path | None) -> dict:
    """Per source frame, what the cache builder does (audio_io.load_image + fit_image + encode_jpeg, as in
    cache._read_frames) against a JPEG draft decode (PIL decodes at 1/2, 1/4 or 1/8 scale, still >= the target
    size) before the same fit + encode: the cost of the frames when building an AudioSet cache."""
    from PIL import Image
    sources = {}
    for name in ("bikes.mp4", "bigbuckbunny.mp4"):
        video = REALDATA / "video" / name
        if video.is_file() and shutil.which("ffmpeg"):
            out = tmp / f"{video.stem}_first.jpg"
            subprocess.run(["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-i", f"file:{video}",
                            "-frames:v", "1", "-q:v", "2", str(out)], check=True)
            sources[f"real_{video.stem}"] = out
    if synthetic_frame is not None:
        sources["synthetic_audioset_like"] = synthetic_frame

    def draft(path: Path) -> np.ndarray:
        with Image.open(path) as img:
            img.draft("RGB", (IMAGE_SIZE, IMAGE_SIZE))
            img = img.convert("RGB")
        return encode_jpeg(fit_image(img, IMAGE_SIZE))

    out = {}
    for key, path in sources.items():
        with Image.open(path) as img:
            size = img.size
        out[key] = {"source_px": f"{size[0]}x{size[1]}",
                    "load_fit_encode_ms": _ms(lambda: encode_jpeg(fit_image(load_image(path), IMAGE_SIZE)), 20),
                    "draft_fit_encode_ms": _ms(lambda: draft(path), 20)}
    return out


def footprint(frame_bytes: dict[str, int], hdf5_overhead: float | None) -> dict:
    audio = {str(sr): sr * 10 * 2 for sr in (44100, 22050)}  # 10 s mono int16: exact
    out = {"note": "estimate. audio: exact arithmetic, 10 s mono int16 per clip (clips shorter than 10 s are "
                   "zero-padded in the cache, so this is also what they take uncompressed); frames: "
                   f"{FRAMES_PER_CLIP} JPEG frames at {IMAGE_SIZE} px per clip, mean bytes measured here, "
                   "assuming every clip has video (an upper bound: clips without video store no frames). "
                   "Split sizes: the official AudioSet segment CSV counts (not what can still be downloaded). "
                   "1 TB = 1e12 bytes.",
           "split_clips_official_csv_counts": AUDIOSET_SPLITS,
           "audio_bytes_per_clip": audio, "frame_bytes_per_clip_measured": frame_bytes,
           "hdf5_overhead_bytes_per_clip_measured": hdf5_overhead, "totals": {}}
    splits = {**AUDIOSET_SPLITS, "all_three": sum(AUDIOSET_SPLITS.values())}
    for sr, a in audio.items():
        for frames_from, f in frame_bytes.items():
            per_clip = a + f
            out["totals"][f"{sr}Hz_frames_{frames_from}"] = {
                "bytes_per_clip": per_clip,
                **{split: {"bytes": n * per_clip, "TB": round(n * per_clip / 1e12, 3),
                           "audio_TB": round(n * a / 1e12, 3), "frames_TB": round(n * f / 1e12, 3)}
                   for split, n in splits.items()}}
    return out


# -----------------------------------------------------------------------------

def _git() -> dict:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True).stdout
    return {"commit": git("rev-parse", "HEAD").strip(),
            "uncommitted_paths": [line[2:].strip() for line in git("status", "--porcelain").splitlines() if line]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sets, batch 16, 1 s timings (~1 minute)")
    parser.add_argument("--min-seconds", type=float, default=None, help="timed seconds per loader measurement")
    parser.add_argument("--workers", default="0,1,2", help="loader thread counts, comma-separated")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "cache.json")
    args = parser.parse_args()
    batch = 16 if args.quick else BATCH
    counts = ({"esc50_like": 50, "us8k_like": 40, "audioset_like": 20} if args.quick else
              {"esc50_like": 200, "us8k_like": 200, "audioset_like": 100})
    min_s = args.min_seconds or (1.0 if args.quick else 5.0)
    workers = [int(w) for w in args.workers.split(",")]
    settings = load_config(REPO / "params.yaml", profile="paper").settings
    torch.set_num_threads(1)  # as in a DataLoader worker; two threads on a shared 2-core machine only add noise
    started = time.perf_counter()
    record: dict = {
        "benchmark": "HDF5 cache build and cached loader throughput vs decoding the source on every access",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "torch": torch.__version__, "h5py": h5py.__version__, "torch_threads_main": torch.get_num_threads(),
                    "device": "cpu", "load_1min_at_start": round(os.getloadavg()[0], 2)},
        "git": _git(),
        "command": "python benchmarks/cache_loader.py" + (" --quick" if args.quick else ""),
        "settings": {"quick": args.quick, "timed_seconds_min": min_s, "workers": workers, "batch": batch,
                     "cache_sample_rate": SAMPLE_RATE, "augment_paper": settings["augment"],
                     "per_item_ms": "median of repeated single calls in the main process",
                     "loader": "pipeline.data.loader.batches(batch, shuffled clips over many epochs, threads) of raw "
                               "batches; first round of batches (max(1, threads)) untimed; one torch thread; every file "
                               "is in the OS page cache (no disk reads are measured)"},
        "sources": {}, "build": {}, "loader": {}, "notes": []}
    with tempfile.TemporaryDirectory(prefix="cache_bench.") as tmp_str:
        tmp = Path(tmp_str)
        roots, makers = {}, {"esc50_like": make_esc50_like, "us8k_like": make_us8k_like,
                             "audioset_like": make_audioset_like}
        for kind, make in makers.items():
            t0 = time.perf_counter()
            roots[kind] = tmp / "src" / kind
            make(roots[kind], counts[kind])
            print(f"generated {kind} in {time.perf_counter() - t0:.1f} s", flush=True)
        for kind, sub in (("real_esc50", "esc50"), ("real_us8k", "urbansound8k")):
            if (REALDATA / sub).is_dir():
                roots[kind] = REALDATA / sub
            else:
                record["notes"].append(f"{REALDATA / sub} not present: {kind} not measured")
        for kind, root in roots.items():
            record["sources"][kind] = {"root": str(root) if kind.startswith("real") else "temporary",
                                       **source_summary(KINDS[kind][0], root)}

        caches = {}
        for kind, root in roots.items():
            dataset, channels = KINDS[kind]
            caches[kind] = tmp / "cache" / f"{kind}.h5"
            caches[kind].parent.mkdir(parents=True, exist_ok=True)
            record["build"][kind] = timed_build(dataset, root, caches[kind], build_kwargs(dataset, channels, settings))
            print(f"built {kind}: {record['build'][kind]['clips_per_second']} clips/s", flush=True)

        # loaders
        for kind, cache in caches.items():
            dataset, channels = KINDS[kind]
            meta = md.read(dataset, roots[kind])
            with h5py.File(cache, "r") as h5:
                assert read_strings(h5, "source") == list(meta.items["source"]), "cache rows != metadata rows"
            n = len(meta.items)
            # (the sampler runs over many epochs, so even the 21-clip set fills batches of 64)
            real = kind.startswith("real")

            def cached(train: bool, frames: bool):
                return lambda: audio_dataset(settings, cache, dataset, None, train=train, with_frames=frames)

            def decode(train: bool, frames: bool):
                return lambda: DecodeEveryAccess(cached(train, frames)(), meta, channels)

            res: dict = {"clips": n, "batch": batch}
            plan = [(False, [1], [1])] if real else [(False, workers, workers)]  # (frames, threads cached, decode)
            if dataset == "audioset":
                plan = [(True, workers, workers), (False, [1], [1])]
            for frames, ws_cached, ws_decode in plan:
                tag = "train" + ("_frames" if frames else "")
                for src, factory, ws in (("cached", cached, ws_cached), ("decode", decode, ws_decode)):
                    res[f"{src}_{tag}"] = loader_sweep(factory(True, frames), ws, batch, min_s, f"{kind} {src} {tag}")
                res[f"ratio_cached_over_decode_{tag}"] = ratios(res[f"cached_{tag}"], res[f"decode_{tag}"])
            if dataset == "audioset":  # the same clips handed over by worker processes instead
                res["cached_train_frames_worker_processes"] = loader_sweep(
                    cached(True, True), [w for w in workers if w > 0], batch, min_s, f"{kind} cached train_frames",
                    processes=True)
            record["loader"][kind] = res

        # compression (AudioSet-like); the None build is the one above, its loader is timed again here next to
        # the others (a shared machine's load drifts)
        kind, (dataset, channels) = "audioset_like", KINDS["audioset_like"]
        base = record["build"][kind]
        comp: dict = {}
        for c in (None, "lzf", "gzip"):
            if c is None:
                b, path = base, caches[kind]
            else:
                path = tmp / "cache" / f"{kind}_{c}.h5"
                b = timed_build(dataset, roots[kind], path, build_kwargs(dataset, channels, settings), compression=c)
            entry = {"build_clips_per_second": b["clips_per_second"], "file_bytes_per_clip": b["file_bytes_per_clip"],
                     "waveform_stored_bytes_per_clip": b["waveform_stored_bytes_per_clip"],
                     "file_size_ratio_vs_none": round(b["file_bytes"] / base["file_bytes"], 3),
                     "waveform_size_ratio_vs_none": round(b["waveform_stored_bytes_per_clip"]
                                                          / base["waveform_stored_bytes_per_clip"], 3)}
            for train, frames, w, label in ((True, True, 1, "loader_train_frames_1_thread"),
                                            (True, False, 0, "loader_train_calling_thread")):
                ds = audio_dataset(settings, path, dataset, None, train=train, with_frames=frames)
                timing = time_loader(ds, w, batch, min_s)  # threads
                entry[label] = {k: timing[k] for k in ("clips_per_second", "cpu_ms_per_clip", "other_processes_cores")}
                print(f"  {kind} compression={c} {label}: {timing['clips_per_second']:8.1f} clips/s, "
                      f"{timing['cpu_ms_per_clip']['total']:6.2f} CPU ms/clip", flush=True)
            comp[str(c).lower()] = entry
        record["compression_audioset_like"] = {
            "note": "compression applies to the waveform dataset only (frames are JPEG already); the synthetic "
                    "sounds are not real recordings, so the size ratios are indicative only; see "
                    "compression_real_audio for the real clips",
            **comp}
        real_comp = {}
        for kind in ("real_esc50", "real_us8k"):
            if kind in caches:
                dataset, channels = KINDS[kind]
                sizes = {"none": record["build"][kind]["waveform_stored_bytes_per_clip"]}
                for c in ("lzf", "gzip"):
                    path = tmp / "cache" / f"{kind}_{c}.h5"
                    kw = build_kwargs(dataset, channels, settings)
                    b = timed_build(dataset, roots[kind], path, kw, compression=c)
                    sizes[c] = b["waveform_stored_bytes_per_clip"]
                real_comp[kind] = {"waveform_stored_bytes_per_clip": sizes,
                                   "ratio_vs_none": {c: round(s / sizes["none"], 3) for c, s in sizes.items()}}
        record["compression_real_audio"] = real_comp

        # where an item's time goes
        record["per_item_ms"] = {}
        for kind in ("esc50_like", "us8k_like", "audioset_like"):
            dataset, channels = KINDS[kind]
            record["per_item_ms"][kind] = per_item_ms(caches[kind], md.read(dataset, roots[kind]), settings, dataset,
                                                      channels, 10 if args.quick else 30)

        # frames and footprint
        frames = real_frame_bytes(tmp)
        frames["synthetic_audioset_like_cache"] = {"jpeg_bytes_mean": base["frame_jpeg_bytes_mean"],
                                                   "bytes_per_clip_10_frames": base["frame_bytes_per_clip_with_video"]}
        record["frames_jpeg_224"] = frames
        some_frame = next(iter(sorted((roots["audioset_like"] / "frames").rglob(FRAME_GLOB))), None)
        record["frame_build_ms_per_source_frame"] = frame_build_ms(tmp, some_frame)
        frame_bytes = {"synthetic": base["frame_bytes_per_clip_with_video"]}
        if "real_footage_bikes_mp4" in frames:
            frame_bytes["real_footage"] = frames["real_footage_bikes_mp4"]["bytes_per_clip_10_frames"]
        payload = base["waveform_raw_bytes_per_clip"] + base["frame_bytes_per_clip_with_video"] * (
            base["clips_with_video"] / base["clips"])
        record["footprint_estimate"] = footprint(frame_bytes, round(base["file_bytes_per_clip"] - payload))

    # the target
    loader_as = record["loader"]["audioset_like"]
    need = {}
    for key in ("cached_train_frames", "cached_train", "decode_train_frames", "decode_train"):
        one = loader_as.get(key, {}).get("1")
        if one:
            need[key] = {"per_worker_clips_per_second": one["clips_per_second"],
                         "workers_needed": round(H100_CLIPS_PER_SECOND / one["clips_per_second"], 1),
                         "cpu_ms_per_clip": one["cpu_ms_per_clip"]["total"],
                         "cpu_cores_needed_from_cpu_time": round(H100_CLIPS_PER_SECOND
                                                                 * one["cpu_ms_per_clip"]["total"] / 1000, 1)}
    read = base["waveform_stored_bytes_per_clip"] + base["frame_jpeg_bytes_mean"]  # one frame read per item
    record["target_h100"] = {
        "clips_per_second": H100_CLIPS_PER_SECOND,
        "note": "estimate: workers_needed = 2,300 / (measured clips/s with 1 worker, AudioSet-like cache at 44.1 kHz, "
                f"batch {batch}); cpu_cores_needed_from_cpu_time = 2,300 x (CPU seconds per clip, main + worker). Both "
                "assume linear scaling over workers and one core per worker of this machine's speed",
        "cache_read_bytes_per_clip": read,
        "cache_read_gb_per_second_at_target": round(read * H100_CLIPS_PER_SECOND / 1e9, 2),
        **need}
    record["machine"]["load_1min_at_end"] = round(os.getloadavg()[0], 2)
    record["wall_seconds"] = round(time.perf_counter() - started, 1)
    write_json(args.out, record)
    summary = {k: {kk: (vv if kk.startswith("ratio") else
                        {w: r.get("clips_per_second") if isinstance(r, dict) else r for w, r in vv.items()})
                   for kk, vv in v.items() if kk.startswith(("cached", "decode", "ratio"))}
               for k, v in record["loader"].items()}
    print(json.dumps({"build_clips_per_second": {k: v["clips_per_second"] for k, v in record["build"].items()},
                      "loader_clips_per_second": summary, "target_h100": record["target_h100"],
                      "wall_seconds": record["wall_seconds"]}, indent=1))


if __name__ == "__main__":
    main()
