"""Decode a dataset once into one HDF5 file (layout: docs/DESIGN.md), and open it safely later.

build_cache(dataset, root, out, ...) reads the official metadata (metadata.py), decodes every clip
(audio_io.load_audio: resampled, channel-converted), cuts or zero-pads it to clip_samples and stores int16;
AudioSet also stores frames_per_clip video frames per clip, ImageNet-like sets store images. The file is
written under a temporary name and renamed, and its `complete` attribute is set last: a half-built cache is
never mistaken for a finished one. open_cache() refuses incomplete files, other format versions and files
whose attributes differ from what the caller expects (a stale cache built at another sample rate, say).

Datasets (N clips): waveform (N, C, L) int16, length (N,) int32, label (N,) int64 (-1 multi-label),
labels (N, K) uint8, fold (N,) int16, split (N,) str (AudioSet), source (N,) str; AudioSet adds frames
(N, F) JPEG bytes (each S x S, centre-cropped) and has_video (N,) bool; ImageNet-like caches hold image
(N, S, S, 3) uint8 instead of audio.

Scale: the full AudioSet is ~1.8 TB of 44.1 kHz int16 audio (~2.1 TB with frames), so its cache is built in shards (build_cache
with shard=(i, n): a contiguous slice of the clips, one independent, resumable job each) and merge_shards()
writes a small index file whose waveform and frames are HDF5 virtual datasets over the shards. Readers open
the index like any cache; open_cache() checks that every shard is present, complete and the one the index
was built from (a missing source of a virtual dataset would otherwise read as silent zeros).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import uuid
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from PIL import Image, ImageOps
from tqdm import tqdm

from pipeline.io import atomic_path

from . import metadata as md
from .audio_io import AudioDecodeError, ImageDecodeError, load_audio, load_image

FORMAT_VERSION = 2  # 2: frames as JPEG bytes, sharded caches, source fingerprints
AUDIO_DATASETS = ("esc50", "us8k", "audioset")
FRAME_GLOB = "*.jpg"
FRAME_JPEG_QUALITY = 90  # ~7x smaller than raw uint8 frames at 224 px; decoding one costs ~1 ms in a worker
COMPRESSIONS = (None, "lzf", "gzip")
_STR = h5py.string_dtype("utf-8")
_BYTES = h5py.vlen_dtype(np.uint8)
_VIRTUAL = ("waveform", "frames", "image")  # the big per-clip arrays: virtual over the shards, never copied
logger = logging.getLogger(__name__)


class CacheError(ValueError):
    """A cache file is missing, incomplete, of another format or built with other settings."""


def build_cache(dataset: str, root: str | os.PathLike, out: str | os.PathLike, *, sample_rate: int | None = None,
                clip_seconds: float | None = None, channels: int | None = None, frames_per_clip: int | None = None,
                image_size: int | None = None, on_error: str = "raise", progress: bool = True,
                shard: tuple[int, int] | None = None, compression: str | None = None,
                train_segments: tuple[str, ...] | None = None) -> dict:
    """Build the cache of `dataset` from `root` into `out`; return cache_info(out).

    on_error='raise' stops at the first unreadable file; 'skip' leaves it out and records it in the `skipped`
    attribute (and in the returned info). shard=(i, n) caches only the i-th of n contiguous slices of the
    clips (merge the n files with merge_shards). compression: None, 'lzf' (fast) or 'gzip' for the waveforms.
    train_segments: AudioSet's train segment lists (metadata.read).
    An existing complete cache built with the same parameters from the same source is kept as it is.
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    if compression not in COMPRESSIONS:
        raise ValueError(f"compression must be one of {COMPRESSIONS}, got {compression!r}")
    if shard is not None and not (0 <= shard[0] < shard[1]):
        raise ValueError(f"shard {shard[0]}/{shard[1]}: expected 0 <= index < count")
    audio = dataset in AUDIO_DATASETS
    if audio and not (sample_rate and clip_seconds and channels in (1, 2)):
        raise ValueError(f"{dataset}: sample_rate, clip_seconds and channels (1 or 2) are required for audio caches")
    if dataset == "audioset" and not (frames_per_clip and image_size):
        raise ValueError("audioset: frames_per_clip and image_size are required (the cache stores video frames)")
    if dataset == "imagenet" and not image_size:
        raise ValueError("imagenet: image_size is required")
    meta = md.read(dataset, root, train_segments)
    fingerprint = source_fingerprint(meta)
    params = {"dataset": dataset, "root": str(root), "sample_rate": sample_rate, "clip_seconds": clip_seconds,
              "channels": channels, "frames_per_clip": frames_per_clip, "image_size": image_size,
              "on_error": on_error, "compression": compression}
    if train_segments:
        params["train_segments"] = list(train_segments)
    if shard is not None:
        params["shard"] = f"{shard[0]}/{shard[1]}"
        meta = _slice(meta, *shard)
    if _up_to_date(out, params, fingerprint):
        logger.info("%s: up to date (same parameters, same source); not rebuilt", out)
        return cache_info(out)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # clips are resampled one at a time: a thread pool only adds contention
    try:
        with atomic_path(out, suffix=".h5") as tmp, h5py.File(tmp, "w") as h5:
            h5.attrs.update({"complete": False, "dataset": dataset, "format_version": FORMAT_VERSION,
                             "class_names": json.dumps(meta.class_names), "multilabel": meta.multilabel,
                             "build_params": json.dumps(params, sort_keys=True), "source_fingerprint": fingerprint,
                             "build_id": uuid.uuid4().hex})
            write = _write_audio if audio else _write_images
            kept, skipped = write(h5, meta, params, progress)
            # A shard may lose every clip (vanished AudioSet videos); a whole dataset with nothing readable is
            # a wrong root or a broken decoder.
            if not kept and shard is None:
                raise CacheError(f"{root}: none of the {len(meta.items)} {dataset} items could be read; "
                                 f"first error: {skipped[0]['error'] if skipped else 'none'}")
            _write_index(h5, meta, kept)
            h5.attrs["skipped"] = json.dumps(skipped)
            h5.attrs["complete"] = True  # last: everything above is in place
    finally:
        torch.set_num_threads(threads)
    return cache_info(out)


def _write_audio(h5: h5py.File, meta: md.Metadata, params: dict, progress: bool) -> tuple[list[int], list[dict]]:
    sample_rate, channels, on_error = params["sample_rate"], params["channels"], params["on_error"]
    frames_per_clip, image_size = params["frames_per_clip"], params["image_size"]
    n, clip = len(meta.items), int(round(params["clip_seconds"] * sample_rate))
    h5.attrs.update({"sample_rate": sample_rate, "clip_samples": clip, "channels": channels})
    # one chunk per clip: a training step reads single clips in random order
    wave = h5.create_dataset("waveform", (n, channels, clip), np.int16, maxshape=(None, channels, clip),
                             chunks=(1, channels, clip), compression=params["compression"])
    length = np.zeros(n, np.int32)
    with_frames = meta.dataset == "audioset"
    if with_frames:
        h5.attrs.update({"frames_per_clip": frames_per_clip, "image_size": image_size, "frame_format": "jpeg"})
        frames = h5.create_dataset("frames", (n, frames_per_clip), _BYTES, maxshape=(None, frames_per_clip),
                                   chunks=(1, frames_per_clip))
        has_video = np.zeros(n, bool)
    kept, skipped = [], []
    rows = meta.items.itertuples(index=False)
    for i, row in enumerate(tqdm(rows, total=n, desc=f"cache {meta.dataset}", disable=not progress)):
        try:
            x = load_audio(row.path, sample_rate, channels)  # (C, L') float32 in [-1, 1]
            video = _read_frames(Path(row.frames_dir), frames_per_clip, image_size) if with_frames else None
        except (AudioDecodeError, ImageDecodeError) as err:
            if on_error == "raise":
                raise
            skipped.append({"source": row.source, "error": str(err)})
            continue
        k = len(kept)
        valid = min(x.shape[1], clip)
        out = np.zeros((channels, clip), np.int16)  # cut long clips, zero-pad short ones
        out[:, :valid] = to_int16(x[:, :valid])
        wave[k], length[k] = out, valid
        if with_frames:
            has_video[k] = video is not None
            for j, jpeg in enumerate(video or []):
                frames[k, j] = jpeg
        kept.append(i)
    wave.resize(len(kept), axis=0)
    h5.create_dataset("length", data=length[:len(kept)])
    if with_frames:
        frames.resize(len(kept), axis=0)
        h5.create_dataset("has_video", data=has_video[:len(kept)])
    return kept, skipped


def to_int16(x: np.ndarray) -> np.ndarray:
    """[-1, 1] float -> int16 with the released loaders' x * 32768 scale (full scale clipped to 32767)."""
    return np.clip(np.round(x * 32768.0), -32768, 32767).astype(np.int16)


def fit_image(img: Image.Image, size: int) -> np.ndarray:
    """PIL RGB -> uint8 (size, size, 3): resize the shorter side to `size`, crop the centre."""
    return np.asarray(ImageOps.fit(img, (size, size), Image.Resampling.BICUBIC), dtype=np.uint8)


def encode_jpeg(pixels: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3) -> JPEG bytes as a uint8 vector (what the `frames` dataset holds per frame)."""
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=FRAME_JPEG_QUALITY, subsampling=0)  # 4:4:4 colour
    return np.frombuffer(buf.getvalue(), np.uint8)


def decode_jpeg(data: np.ndarray) -> np.ndarray:
    """A stored frame (uint8 vector of JPEG bytes) -> uint8 (H, W, 3)."""
    with Image.open(io.BytesIO(data.tobytes())) as img:
        return np.array(img.convert("RGB"), dtype=np.uint8)  # a writable copy


def _read_frames(folder: Path, count: int, size: int) -> list[np.ndarray] | None:
    """`count` JPEG-encoded size x size frames from the clip's frame folder, or None when it has no video.

    More frames than `count`: evenly spaced ones; fewer: evenly spaced repeats.
    """
    files = sorted(folder.glob(FRAME_GLOB)) if folder.is_dir() else []
    if not files:
        return None
    pick = np.linspace(0, len(files) - 1, count).round().astype(int)
    return [encode_jpeg(fit_image(load_image(files[j]), size)) for j in pick]


def _write_images(h5: h5py.File, meta: md.Metadata, params: dict, progress: bool) -> tuple[list[int], list[dict]]:
    size, on_error, n = params["image_size"], params["on_error"], len(meta.items)
    h5.attrs["image_size"] = size
    images = h5.create_dataset("image", (n, size, size, 3), np.uint8, maxshape=(None, size, size, 3),
                               chunks=(1, size, size, 3))
    kept, skipped = [], []
    rows = meta.items.itertuples(index=False)
    for i, row in enumerate(tqdm(rows, total=n, desc=f"cache {meta.dataset}", disable=not progress)):
        try:
            img = fit_image(load_image(row.path), size)
        except ImageDecodeError as err:
            if on_error == "raise":
                raise
            skipped.append({"source": row.source, "error": str(err)})
            continue
        images[len(kept)] = img
        kept.append(i)
    images.resize(len(kept), axis=0)
    return kept, skipped


def _write_index(h5: h5py.File, meta: md.Metadata, kept: list[int]) -> None:
    """Per-clip labels, folds, splits and names of the clips that made it into the cache."""
    items = meta.items.iloc[kept]
    k = len(meta.class_names)
    multi_hot = np.zeros((len(items), k), np.uint8)
    for r, labels in enumerate(items["labels"]):
        multi_hot[r, list(labels)] = 1
    h5.create_dataset("label", data=items["label"].to_numpy(np.int64))
    h5.create_dataset("labels", data=multi_hot)
    h5.create_dataset("fold", data=items["fold"].to_numpy(np.int16))
    h5.create_dataset("source", data=items["source"].tolist(), dtype=_STR)
    if meta.dataset == "audioset":
        h5.create_dataset("split", data=items["split"].tolist(), dtype=_STR)


def source_fingerprint(meta: md.Metadata) -> str:
    """sha256 over what the cache is built from: every item's name, labels, fold and split, and its file's
    size. Cheap enough for 2 M files (one stat each); a changed metadata row or a re-downloaded file of
    another size changes it. (Content hashes of 2 TB would take hours.)"""
    digest = hashlib.sha256(json.dumps([meta.dataset, meta.class_names]).encode())
    cols = ["source", "labels", "fold", "split", "path"]
    for source, labels, fold, split, path in meta.items[cols].itertuples(index=False):
        try:
            size = os.stat(path).st_size
        except OSError:
            size = -1
        digest.update(f"{source}|{list(labels)}|{fold}|{split}|{size}\n".encode())
    return digest.hexdigest()


def _slice(meta: md.Metadata, index: int, count: int) -> md.Metadata:
    """The index-th of `count` contiguous slices of the items (merged back in order by merge_shards)."""
    n = len(meta.items)
    lo, hi = index * n // count, (index + 1) * n // count
    return md.Metadata(meta.dataset, meta.root, meta.class_names, meta.items.iloc[lo:hi].reset_index(drop=True),
                       meta.multilabel)


def _up_to_date(out: str | os.PathLike, params: dict, fingerprint: str) -> bool:
    try:
        with open_cache(out) as h5:
            return read_attr(h5, "build_params") == params and read_attr(h5, "source_fingerprint") == fingerprint
    except CacheError:
        return False


def merge_shards(shards: list[str | os.PathLike], out: str | os.PathLike) -> dict:
    """One index file over the shards of a cache (build_cache with shard=(i, n)), in shard order.

    The per-clip tables (labels, folds, names, ...) are copied; waveform and frames become virtual datasets
    that read from the shard files, addressed relative to the index (so the folder can move). Every shard
    must be present exactly once, complete, and built with the same parameters from the same source."""
    out = Path(out)
    found = {}
    for path in map(Path, shards):
        with open_cache(path) as h5:
            params = read_attr(h5, "build_params")
            if "shard" not in params:
                raise CacheError(f"{path}: not a shard (build_params has no 'shard')")
            index, count = map(int, params.pop("shard").split("/"))
            if index in found:
                raise CacheError(f"{path}: shard {index}/{count} given twice (also {found[index]['path']})")
            found[index] = {"path": path, "count": count, "params": params, "n": len(h5["label"]),
                            "fingerprint": read_attr(h5, "source_fingerprint"), "build_id": read_attr(h5, "build_id")}
    first = found[min(found)]
    for index, shard in found.items():
        for key in ("count", "params", "fingerprint"):
            if shard[key] != first[key]:
                raise CacheError(f"{shard['path']}: its {key} differs from {first['path']}'s; rebuild the stale shard")
    missing = sorted(set(range(first["count"])) - set(found))
    if missing:
        raise CacheError(f"{out}: shard(s) {missing} of {first['count']} missing; build them first")
    ordered = [found[i] for i in range(first["count"])]
    total = sum(s["n"] for s in ordered)
    with atomic_path(out, suffix=".h5") as tmp, h5py.File(tmp, "w") as h5:
        with h5py.File(ordered[0]["path"], "r") as src:
            h5.attrs.update({k: v for k, v in src.attrs.items() if k not in ("build_id", "skipped", "complete")})
            names = {name: (src[name].shape[1:], src[name].dtype) for name in src}
        h5.attrs.update({"complete": False, "build_params": json.dumps({**first["params"], "shards": first["count"]},
                                                                        sort_keys=True)})
        skipped = []
        for name, (tail, dtype) in names.items():
            if name in _VIRTUAL:
                layout = h5py.VirtualLayout(shape=(total, *tail), dtype=dtype)
                row = 0
                for s in ordered:
                    if s["n"]:
                        rel = os.path.relpath(s["path"], out.parent)
                        layout[row:row + s["n"]] = h5py.VirtualSource(rel, name, shape=(s["n"], *tail), dtype=dtype)
                    row += s["n"]
                h5.create_virtual_dataset(name, layout)
            else:
                parts = []
                for s in ordered:
                    with h5py.File(s["path"], "r") as src:
                        parts.append(src[name].asstr()[()] if h5py.check_string_dtype(dtype) else src[name][()])
                data = np.concatenate(parts) if parts else np.zeros((0, *tail), dtype)
                h5.create_dataset(name, data=data.tolist() if h5py.check_string_dtype(dtype) else data,
                                  dtype=_STR if h5py.check_string_dtype(dtype) else dtype)
        for s in ordered:
            with h5py.File(s["path"], "r") as src:
                skipped += json.loads(src.attrs["skipped"])
        h5.attrs["skipped"] = json.dumps(skipped)
        h5.attrs["shards"] = json.dumps([{"file": os.path.relpath(s["path"], out.parent), "build_id": s["build_id"],
                                          "n_clips": s["n"]} for s in ordered])
        h5.attrs["complete"] = True
    return cache_info(out)


# -----------------------------------------------------------------------------
# reading

def open_cache(path: str | os.PathLike, expect: dict[str, Any] | None = None) -> h5py.File:
    """Open a finished cache read-only; CacheError naming the file and the key if it is unusable.

    `expect` maps attribute names to the values this run needs, e.g. {"sample_rate": 8000, "clip_samples": 8000}.
    """
    path = Path(path)
    if not path.is_file():
        raise CacheError(f"{path}: cache file not found; build it first")
    try:
        h5 = h5py.File(path, "r")
    except OSError as err:
        raise CacheError(f"{path}: not a readable HDF5 cache ({err}); rebuild it") from None
    try:
        if not bool(h5.attrs.get("complete", False)):
            raise CacheError(f"{path}: attribute 'complete' is missing or false: the build did not finish; rebuild it")
        version = h5.attrs.get("format_version")
        if version != FORMAT_VERSION:
            raise CacheError(f"{path}: attribute 'format_version' is {version}, expected {FORMAT_VERSION}; rebuild it")
        for key, want in (expect or {}).items():
            if key not in h5.attrs:
                raise CacheError(f"{path}: attribute '{key}' is missing, expected {want!r}; rebuild the cache")
            have = read_attr(h5, key)
            if not _same(have, want):
                raise CacheError(f"{path}: attribute '{key}' is {have!r}, expected {want!r}; "
                                 f"the cache is stale, rebuild it")
        if "shards" in h5.attrs:
            _check_shards(path, json.loads(h5.attrs["shards"]))
    except BaseException:
        h5.close()
        raise
    return h5


def _check_shards(index: Path, shards: list[dict]) -> None:
    """Every shard an index reads from is there, complete, and the very file the index was built over."""
    for entry in shards:
        shard = index.parent / entry["file"]
        try:
            with h5py.File(shard, "r") as h5:
                ok = bool(h5.attrs.get("complete", False)) and h5.attrs.get("build_id") == entry["build_id"]
        except OSError:
            raise CacheError(f"{index}: its shard {shard} is missing or unreadable; rebuild that shard") from None
        if not ok:
            raise CacheError(f"{index}: its shard {shard} is incomplete or was rebuilt after the index; "
                             f"rebuild the index (merge the shards again)")


def read_attr(h5: h5py.File, key: str) -> Any:
    v = h5.attrs[key]
    if key in ("class_names", "build_params", "skipped", "shards"):
        return json.loads(v)
    return v.item() if isinstance(v, np.generic) else v


def _same(have: Any, want: Any) -> bool:
    if isinstance(want, float) or isinstance(have, float):
        return bool(np.isclose(float(have), float(want)))
    return have == want


def read_strings(h5: h5py.File, name: str) -> list[str]:
    return list(h5[name].asstr()[()])


def cache_info(path: str | os.PathLike) -> dict:
    """Summary of a finished cache: counts per fold and per class, rates, skipped files."""
    with open_cache(path) as h5:
        names = read_attr(h5, "class_names")
        labels = h5["labels"][()]
        folds = h5["fold"][()]
        info = {
            "dataset": read_attr(h5, "dataset"),
            "n_clips": int(len(labels)),
            "sample_rate": read_attr(h5, "sample_rate") if "sample_rate" in h5.attrs else None,
            "clip_samples": read_attr(h5, "clip_samples") if "clip_samples" in h5.attrs else None,
            "channels": read_attr(h5, "channels") if "channels" in h5.attrs else None,
            "image_size": read_attr(h5, "image_size") if "image_size" in h5.attrs else None,
            "multilabel": bool(read_attr(h5, "multilabel")),
            "folds": {int(f): int((folds == f).sum()) for f in np.unique(folds)},
            "classes": {name: int(n) for name, n in zip(names, labels.sum(0))},
            "skipped": read_attr(h5, "skipped"),
        }
        if "split" in h5:
            splits = np.array(read_strings(h5, "split"))
            info["splits"] = {s: int((splits == s).sum()) for s in sorted(set(splits))}
        if "has_video" in h5:
            info["with_video"] = int(h5["has_video"][()].sum())
        if "shards" in h5.attrs:
            info["shards"] = len(read_attr(h5, "shards"))
        info["source_fingerprint"] = read_attr(h5, "source_fingerprint")
    return info
