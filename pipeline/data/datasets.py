"""torch Datasets over the HDF5 caches, fold/split selection with a leak check, and the collate function.

AudioCacheDataset batch (after finish()): audio float32 (B, C, clip_samples) in int16 scale, label (B,) (-1
multi-label), labels float32 (B, K) multi-hot, text list[str] (label names joined with ", "), index (B,) rows in
the cache; with frames also image float32 (B, 3, S, S) CLIP-normalised and has_video (B,) bool. It is read by
pipeline.data.loader (threads filling reusable buffers) and finished on the training device.

The HDF5 file is opened lazily, once per process (h5py handles must not cross processes; within a process h5py
serialises access, so loader threads share one handle). Augmentation randomness comes from
numpy Generator((seed, epoch, index)): reproducible regardless of threads, batch or order; call set_epoch(e) for
fresh draws each epoch.
"""

from __future__ import annotations

import os
import re

import h5py
import numpy as np
import torch
from PIL import Image

from .cache import decode_jpeg, open_cache, read_attr, read_strings
from .direct_read import row_offsets
from .transforms import PLAN_FIELDS, Augment, apply_plans, draw_plan

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
AMPLITUDES = ("int16", "peak")


class LeakError(ValueError):
    """Training material overlaps the evaluation material."""


class _LazyH5:
    """Holds the cache path; opens the file on first access in each process."""

    def __init__(self, path: str | os.PathLike):
        self.path = str(path)
        self._h5: h5py.File | None = None
        self._pid: int | None = None
        self._datasets: dict[str, h5py.Dataset] = {}

    @property
    def h5(self) -> h5py.File:
        if self._h5 is None or self._pid != os.getpid():
            self._h5, self._pid, self._datasets = h5py.File(self.path, "r"), os.getpid(), {}
        return self._h5

    def dataset(self, name: str) -> h5py.Dataset:
        """An open dataset, kept per process: re-opening one per item costs more than reading a clip, and for
        a sharded cache it would re-resolve the virtual mapping every time."""
        h5 = self.h5
        if name not in self._datasets:
            self._datasets[name] = h5[name]
        return self._datasets[name]

    def __getstate__(self) -> dict:
        return {"path": self.path, "_h5": None, "_pid": None, "_datasets": {}}  # never pickle open handles

    def close(self) -> None:
        if self._h5 is not None and self._pid == os.getpid():
            self._h5.close()
        self._h5, self._datasets = None, {}


def _read_row(dataset: h5py.Dataset, row: int, out: np.ndarray) -> None:
    """dataset[row] into `out` (shape (1, *row shape), C-contiguous) through HDF5's own read: no temporary array
    and none of read_direct's selection parsing (~100 us a clip less)."""
    space = dataset.id.get_space()
    space.select_hyperslab((row,) + (0,) * (out.ndim - 1), out.shape)
    dataset.id.read(h5py.h5s.create_simple(out.shape), space, out)


def fit_frame(frame: np.ndarray, size: int) -> np.ndarray:
    """uint8 (H, W, 3) -> uint8 (size, size, 3): bicubic resize when the cached frame has another size."""
    if frame.shape[0] != size or frame.shape[1] != size:
        frame = np.asarray(Image.fromarray(frame).resize((size, size), Image.Resampling.BICUBIC))
    return frame


def normalise_images(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 (..., 3, S, S) -> float32, CLIP mean/std normalised, on the tensor's device."""
    mean = torch.tensor(CLIP_MEAN, device=pixels.device).view(3, 1, 1)
    std = torch.tensor(CLIP_STD, device=pixels.device).view(3, 1, 1)
    return (pixels.float().div_(255.0) - mean) / std


def clip_normalise(frame: np.ndarray, size: int) -> torch.Tensor:
    """uint8 (H, W, 3) -> float32 (3, size, size), CLIP mean/std normalised (bicubic resize if H != size)."""
    return normalise_images(torch.from_numpy(np.array(fit_frame(frame, size))).permute(2, 0, 1))


def peak_rescale(x: torch.Tensor, length: torch.Tensor) -> torch.Tensor:
    """Per-clip min-max rescale of the valid samples to [-32768, 32767] (released US8K loader): x (B, C, L) float,
    length (B,). A constant clip maps to zeros (the released formula would divide by zero)."""
    valid = (torch.arange(x.shape[-1], device=x.device) < length.to(x.device).view(-1, 1)).unsqueeze(1)  # (B, 1, L)
    lo = torch.where(valid, x, torch.inf).amin((1, 2), keepdim=True)
    hi = torch.where(valid, x, -torch.inf).amax((1, 2), keepdim=True)
    span = hi - lo
    scaled = (x - lo) / torch.where(span > 0, span, 1) * 65535.0 - 32768.0
    return torch.where(span > 0, scaled, torch.zeros_like(x))


class AudioCacheDataset(torch.utils.data.Dataset):
    """Clips of an audio cache, read in batches into reusable buffers (pipeline.data.loader) and finished on the
    training device: the loader moves int16 waveforms, uint8 frames and per-clip augmentation plans (a few
    scalars, transforms.draw_plan); finish() turns them into model input where the model runs."""

    def __init__(self, cache_path: str | os.PathLike, indices=None, *, clip_samples: int, train: bool,
                 augment: dict | None = None, amplitude: str = "int16", with_frames: bool = False,
                 image_size: int | None = None, seed: int = 0, expect: dict | None = None, preload: bool = False):
        if amplitude not in AMPLITUDES:
            raise ValueError(f"amplitude must be one of {AMPLITUDES}, got {amplitude!r}")
        with open_cache(cache_path, expect) as h5:
            if "waveform" not in h5:
                raise ValueError(f"{cache_path}: not an audio cache")
            if with_frames and "frames" not in h5:
                raise ValueError(f"{cache_path}: with_frames=True but the cache has no frames")
            # small per-clip tables live in memory; waveforms and frames are read per batch
            self.class_names: list[str] = read_attr(h5, "class_names")
            self.multilabel = bool(read_attr(h5, "multilabel"))
            self.length = h5["length"][()]
            self.label = h5["label"][()]
            self.labels = h5["labels"][()].astype(np.float32)
            self.has_video = h5["has_video"][()] if "has_video" in h5 else np.zeros(len(self.label), bool)
            self.waveform_shape = tuple(h5["waveform"].shape[1:])  # (C, stored samples)
            # preload: every waveform in memory (N, C, stored) int16, so a clip is a memcpy, not an HDF5 read
            self.preloaded = h5["waveform"][()] if preload else None
            # otherwise, where rows are plain bytes in the file, read them with os.preadv outside the GIL
            self.direct = None if preload else row_offsets(h5["waveform"])
            self.n_frames = h5["frames"].shape[1] if "frames" in h5 else 0
            self.frame_size = int(read_attr(h5, "image_size")) if "frames" in h5 else 0
        n = len(self.label)
        self.indices = np.arange(n) if indices is None else np.asarray(indices, dtype=np.int64).reshape(-1)
        if len(self.indices) and (self.indices.min() < 0 or self.indices.max() >= n):
            raise IndexError(f"{cache_path}: indices outside 0..{n - 1}")
        self.file = _LazyH5(cache_path)
        self.clip_samples, self.train, self.amplitude = clip_samples, train, amplitude
        self.augment = Augment.from_dict(augment)
        self.with_frames = with_frames
        self.image_size = image_size or self.frame_size
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        """Fresh augmentation draws for a new epoch (the same epoch always gives the same draws)."""
        self.epoch = epoch

    def close(self) -> None:
        self.file.close()
        if self.direct is not None:
            self.direct.close()

    def __len__(self) -> int:
        return len(self.indices)

    # -- the loader's side: raw bytes into buffers --------------------------------------------------------
    def batch_buffers(self, batch_size: int, pin_memory: bool = False) -> dict[str, torch.Tensor]:
        """Empty buffers for one batch: audio int16 (B, C, stored), length (B,), plan float64 (B, 5), and with
        frames image uint8 (B, 3, S, S). The loader reuses them, so pages are mapped once, not per batch."""
        def empty(shape, dtype):
            return torch.empty(shape, dtype=dtype, pin_memory=pin_memory)

        out = {"audio": empty((batch_size, *self.waveform_shape), torch.int16),
               "length": empty((batch_size,), torch.int64),
               "plan": empty((batch_size, len(PLAN_FIELDS)), torch.float64)}
        if self.with_frames:
            out["image"] = empty((batch_size, 3, self.image_size, self.image_size), torch.uint8)
        return out

    def read_item(self, i: int, buffers: dict[str, torch.Tensor], slot: int) -> None:
        """Item i into row `slot` of the buffers; thread-safe (h5py serialises file access; JPEG decoding runs
        outside the GIL). Randomness: numpy Generator((seed, epoch, clip)), independent of threads and order."""
        idx = int(self.indices[i])
        rng = np.random.default_rng((self.seed, self.epoch, idx))
        n = int(self.length[idx])
        if self.preloaded is not None:
            buffers["audio"].numpy()[slot] = self.preloaded[idx]
        elif self.direct is not None:
            self.direct.read(idx, buffers["audio"].numpy()[slot])
        else:
            _read_row(self.file.dataset("waveform"), idx, buffers["audio"].numpy()[slot:slot + 1])
        buffers["length"].numpy()[slot] = n
        buffers["plan"].numpy()[slot] = draw_plan(self.augment, n, self.clip_samples, self.train, rng)
        if self.with_frames:
            if self.has_video[idx]:
                j = int(rng.integers(0, self.n_frames)) if self.train else self.n_frames // 2
                frame = fit_frame(decode_jpeg(self.file.dataset("frames")[idx, j]), self.image_size)
                buffers["image"][slot].numpy()[:] = frame.transpose(2, 0, 1)  # (S, S, 3) -> (3, S, S)
            else:
                buffers["image"][slot] = 0  # masked by has_video

    def batch_labels(self, positions: list[int]) -> dict:
        """The small per-clip fields of a batch: label (B,) (-1 multi-label), labels (B, K) multi-hot, text
        (label names joined with ', '), index (B,) rows in the cache, has_video (B,) with frames."""
        idx = self.indices[positions]
        out = {"label": torch.from_numpy(self.label[idx].astype(np.int64)),
               "labels": torch.from_numpy(self.labels[idx]),
               "text": [", ".join(self.class_names[k] for k in np.flatnonzero(self.labels[i])) for i in idx],
               "index": torch.from_numpy(idx.astype(np.int64))}
        if self.with_frames:
            out["has_video"] = torch.from_numpy(self.has_video[idx].astype(bool))
        return out

    # -- the device's side ----------------------------------------------------------------------------------
    def finish(self, batch: dict) -> dict:
        """A loaded batch (on any device) -> model input: audio float32 (B, C, clip_samples) in int16 scale,
        augmented by its plans; image float32 (B, 3, S, S) CLIP-normalised. Other fields pass through."""
        out = dict(batch)
        x = batch["audio"].float()
        if self.amplitude == "peak":
            x = peak_rescale(x, batch["length"])
        out["audio"] = apply_plans(x, batch["length"], batch["plan"], self.clip_samples, self.augment)
        if "image" in batch:  # clips without video get a zero image (their has_video is False)
            video = batch["has_video"].to(batch["image"].device).view(-1, 1, 1, 1)
            out["image"] = torch.where(video, normalise_images(batch["image"]), 0.0)
        return out

    def __getitem__(self, i: int) -> dict:
        """One finished item (for inspection and tests; training and evaluation read whole batches)."""
        buffers = self.batch_buffers(1)
        self.read_item(i, buffers, 0)
        batch = self.finish({**buffers, **self.batch_labels([i])})
        item = {"audio": batch["audio"][0], "label": int(batch["label"][0]), "labels": batch["labels"][0],
                "text": batch["text"][0], "index": int(batch["index"][0])}
        if self.with_frames:
            item.update(image=batch["image"][0], has_video=bool(batch["has_video"][0]))
        return item


def audio_dataset(settings: dict, cache_path: str | os.PathLike, dataset: str, indices, *, train: bool,
                  with_frames: bool = False, image_size: int | None = None) -> AudioCacheDataset:
    """An AudioCacheDataset configured from a resolved params.yaml profile (`Config.settings`): clip length at
    the profile's sample rate, its augmentations, the dataset's amplitude convention and whether it preloads."""
    data = settings["data"]
    clip_samples = int(round(data[dataset]["clip_seconds"] * data["sample_rate"]))
    amplitude = data[dataset].get("amplitude", "int16")
    return AudioCacheDataset(cache_path, indices, clip_samples=clip_samples, train=train, augment=settings["augment"],
                             amplitude=amplitude, with_frames=with_frames, image_size=image_size,
                             seed=settings["seed"], preload=bool(data[dataset].get("preload", False)))


class ImageCacheDataset(torch.utils.data.Dataset):
    """Images of an ImageNet-like cache, or the middle video frame of an AudioSet cache's clips.

    Item: image float32 (3, S, S) CLIP-normalised, label int (-1 for multi-label sets), labels float32 (K,)
    multi-hot, text str (label names joined with ', '), index int (row in the cache)."""

    def __init__(self, cache_path: str | os.PathLike, image_size: int, indices=None):
        with open_cache(cache_path) as h5:
            if "image" in h5:
                self.key = "image"
            elif "frames" in h5:
                self.key = "frames"
                self.n_frames = int(h5["frames"].shape[1])
                if indices is not None and not h5["has_video"][()][np.asarray(indices, np.int64)].all():
                    raise ValueError(f"{cache_path}: some requested clips have no video frames")
            else:
                raise ValueError(f"{cache_path}: holds neither images nor video frames")
            self.class_names: list[str] = read_attr(h5, "class_names")
            self.label = h5["label"][()]
            self.labels = h5["labels"][()].astype(np.float32)
        self.indices = np.arange(len(self.label)) if indices is None else np.asarray(indices, np.int64)
        self.file = _LazyH5(cache_path)
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict:
        idx = int(self.indices[i])
        if self.key == "image":
            pixels = self.file.dataset("image")[idx]  # (S, S, 3) uint8
        else:
            pixels = decode_jpeg(self.file.dataset("frames")[idx, self.n_frames // 2])
        on = np.flatnonzero(self.labels[idx])
        return {"image": clip_normalise(pixels, self.image_size), "label": int(self.label[idx]),
                "labels": torch.from_numpy(self.labels[idx].copy()),
                "text": ", ".join(self.class_names[k] for k in on), "index": idx}


def collate(batch: list[dict]) -> dict:
    """Stack tensors, turn numbers and bools into tensors, keep strings as a list."""
    out = {}
    for key in batch[0]:
        values = [b[key] for b in batch]
        if isinstance(values[0], torch.Tensor):
            out[key] = torch.stack(values)
        elif isinstance(values[0], str):
            out[key] = values
        elif isinstance(values[0], (bool, np.bool_)):
            out[key] = torch.tensor(values, dtype=torch.bool)
        else:
            out[key] = torch.tensor(values)
    return out


# -----------------------------------------------------------------------------
# which clips train and which evaluate

_RECORDING = {
    # the original recording a clip was cut from: clips of one recording must never straddle train and test
    "esc50": re.compile(r"^\d+-(?P<rec>\d+)-[A-Za-z]+-\d+\.\w+$"),          # {fold}-{src_file}-{take}-{target}
    "us8k": re.compile(r"^(?P<rec>\d+)-\d+-\d+-\d+\.\w+$"),                 # {fsID}-{classID}-{occ}-{slice}
    "audioset": re.compile(r"^(?P<rec>[A-Za-z0-9_-]{11})_\d+\.\w+$"),     # {YTID}_{start_ms}
}


def recording_id(dataset: str, source: str) -> str:
    """Recording a clip comes from (ESC-50 src_file, US8K fsID, AudioSet YTID); the file name otherwise."""
    m = _RECORDING.get(dataset, re.compile("^$")).match(source)
    return m.group("rec") if m else source


def check_no_leak(cache_path: str | os.PathLike, train_idx, test_idx) -> None:
    """LeakError if a test clip is in the training set by index, by file name or by source recording."""
    train_idx, test_idx = np.asarray(train_idx, np.int64), np.asarray(test_idx, np.int64)
    with open_cache(cache_path) as h5:
        dataset = read_attr(h5, "dataset")
        source = np.array(read_strings(h5, "source"), dtype=object)
    checks = {
        "index": (set(train_idx.tolist()), set(test_idx.tolist())),
        "source file": (set(source[train_idx]), set(source[test_idx])),
        "source recording": ({recording_id(dataset, s) for s in source[train_idx]},
                             {recording_id(dataset, s) for s in source[test_idx]}),
    }
    for what, (train, test) in checks.items():
        both = sorted(map(str, train & test))
        if both:
            raise LeakError(f"{cache_path}: {len(both)} test clip(s) also in the training set by {what}: "
                            f"{both[:5]}")


def fold_split(cache_path: str | os.PathLike, test_fold: int) -> tuple[np.ndarray, np.ndarray]:
    """(train indices = every other fold, test indices = `test_fold`), after the leak check."""
    with open_cache(cache_path) as h5:
        fold = h5["fold"][()]
    folds = sorted(set(fold.tolist()) - {0})
    if test_fold not in folds:
        raise ValueError(f"{cache_path}: fold {test_fold} not in the cache (folds: {folds})")
    train_idx, test_idx = np.flatnonzero(fold != test_fold), np.flatnonzero(fold == test_fold)
    check_no_leak(cache_path, train_idx, test_idx)
    return train_idx, test_idx


def class_names(cache_path: str | os.PathLike) -> list[str]:
    """The cache's class names, in class-index order."""
    with open_cache(cache_path) as h5:
        return list(read_attr(h5, "class_names"))


def video_indices(cache_path: str | os.PathLike, indices) -> list[int]:
    """The clips among `indices` that have video frames (AudioSet caches)."""
    with open_cache(cache_path) as h5:
        has_video = h5["has_video"][()].astype(bool)
    return [int(i) for i in indices if has_video[i]]


def split_indices(cache_path: str | os.PathLike, split: str) -> np.ndarray:
    """Indices of AudioSet's 'train' (balanced_train) or 'eval' clips, after the leak check between them."""
    with open_cache(cache_path) as h5:
        if "split" not in h5:
            raise ValueError(f"{cache_path}: this cache has no splits (use fold_split)")
        splits = np.array(read_strings(h5, "split"))
    if split not in ("train", "eval"):
        raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
    check_no_leak(cache_path, np.flatnonzero(splits == "train"), np.flatnonzero(splits == "eval"))
    return np.flatnonzero(splits == split)
