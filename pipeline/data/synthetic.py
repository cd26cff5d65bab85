"""Small synthetic datasets in the OFFICIAL on-disk layouts, for runs without internet or GPU.

generate(dataset, root, cfg, seed) writes one of
  esc50     meta/esc50.csv + audio/{fold}-{src_file}-{take}-{target}.wav        (5 folds, 44.1 kHz mono 16-bit)
  us8k      metadata/UrbanSound8K.csv + audio/fold{k}/{fsID}-{classID}-{occ}-{slice}.wav
            (10 folds; mixed sample rates, mono/stereo, 8/16/24-bit PCM and float, variable lengths)
  audioset  class_labels_indices.csv, balanced_train_segments.csv, eval_segments.csv,
            audio/{YTID}_{start_ms}.wav, frames/{YTID}_{start_ms}/{i:02d}.jpg          (multi-label, ~10% no video)
  imagenet  LOC_synset_mapping.txt + val/{wnid}/{wnid}_{i}.JPEG
so that the real-data code path (metadata parsers, cache builder) is exactly the one exercised. Class names are
the real ones; the sounds come from sounds.SOUND_RECIPES and the pictures from visuals.VISUAL_RECIPES, shared
across datasets (see the *_SOUNDS tables). Everything is a pure function of `seed`: the same seed gives the same
bytes. The dataset is built in a sibling temporary folder, metadata last, then renamed onto `root`.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import string
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import soundfile as sf
from tqdm import tqdm

from pipeline.io import write_text

from .sounds import render
from .visuals import VISUAL_RECIPES, video_frames

DATASETS = ("esc50", "us8k", "audioset", "imagenet")

DEFAULTS: dict[str, dict[str, Any]] = {
    "esc50": {"clips_per_class_per_fold": 4, "seconds": 1.0, "sample_rate": 44100},
    "us8k": {"clips_per_class_per_fold": 2, "max_seconds": 0.8},
    "audioset": {"train_clips": 420, "eval_clips": 140, "seconds": 1.0, "frames_per_clip": 3, "frame_size": 64,
                 "sample_rate": 44100},
    "imagenet": {"images_per_class": 10, "size": 80},
}

# ESC-50: category -> (real target id, sound recipe). esc10 is the real ESC-10 membership.
ESC50_CLASSES = {
    "dog": 0, "rain": 10, "crying_baby": 20, "clock_tick": 38, "helicopter": 40,
    "chainsaw": 41, "siren": 42, "engine": 44, "train": 45, "church_bells": 46,
}
ESC10 = {"dog", "rain", "crying_baby", "clock_tick", "helicopter", "chainsaw"}
ESC50_FOLDS = 5

# UrbanSound8K: class -> real classID; every class name is also a sound recipe (dog_bark = "dog",
# engine_idling has its own steadier engine recipe).
US8K_CLASSES = {
    "air_conditioner": 0, "car_horn": 1, "children_playing": 2, "dog_bark": 3, "drilling": 4,
    "engine_idling": 5, "gun_shot": 6, "jackhammer": 7, "siren": 8, "street_music": 9,
}
US8K_SOUNDS = {"dog_bark": "dog"}  # other classes use the recipe of the same name
US8K_FOLDS = 10
US8K_RATES = (8000, 11025, 16000, 22050, 44100, 48000)
US8K_SUBTYPES = ("PCM_16", "PCM_16", "PCM_16", "PCM_24", "FLOAT", "PCM_U8")  # 16-bit most common, as in the real set

# AudioSet: the real (mid, display_name) pairs, copied from the official class_labels_indices.csv.
AUDIOSET_CLASSES = [
    ("/m/0bt9lr", "Dog"), ("/m/05tny_", "Bark"), ("/m/06mb1", "Rain"), ("/m/09ct_", "Helicopter"),
    ("/m/01j4z9", "Chainsaw"), ("/m/03kmc9", "Siren"), ("/m/02mk9", "Engine"), ("/m/07pb8fc", "Idling"),
    ("/m/07jdr", "Train"), ("/m/03p19w", "Jackhammer"), ("/t/dd00013", "Children playing"), ("/m/01d380", "Drill"),
    ("/m/025wky1", "Air conditioning"), ("/m/03w41f", "Church bell"),
]
# sound recipe -> the AudioSet labels it carries; a child label brings its ontology parent (Bark -> Dog,
# Idling -> Engine).
AUDIOSET_SOUNDS = {
    "dog": ("Dog", "Bark"), "rain": ("Rain",), "helicopter": ("Helicopter",), "chainsaw": ("Chainsaw",),
    "siren": ("Siren",), "engine": ("Engine",), "engine_idling": ("Engine", "Idling"), "train": ("Train",),
    "jackhammer": ("Jackhammer",), "children_playing": ("Children playing",), "drilling": ("Drill",),
    "air_conditioner": ("Air conditioning",), "church_bells": ("Church bell",),
}
NO_VIDEO_FRACTION = 0.1
YTID_ALPHABET = string.ascii_letters + string.digits + "_-"

# ImageNet-like: made-up wnids. Real WordNet noun offsets are below n16000000; n9xxxxxxx never exists, so these
# cannot be mistaken for real synsets while still matching the n\d{8} format.
IMAGENET_CLASSES = [
    ("n90000001", "dog, domestic dog", "dog"), ("n90000002", "train, railway train", "train"),
    ("n90000003", "chainsaw, chain saw", "chainsaw"), ("n90000004", "helicopter, chopper", "helicopter"),
    ("n90000005", "siren", "siren"), ("n90000006", "church bell", "church_bells"),
]
GRAYSCALE_FRACTION = 0.2

# one integer per dataset, mixed into every seed so that the four sets never share random streams
_STREAM = {"esc50": 1, "us8k": 2, "audioset": 3, "imagenet": 4}


def generate(dataset: str, root: str | os.PathLike, cfg: dict | None = None, seed: int = 0,
             progress: bool = False) -> Path:
    """Write the synthetic `dataset` into `root` (replacing it) and return `root`."""
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {DATASETS}")
    unknown = set(cfg or {}) - set(DEFAULTS[dataset])
    if unknown:
        raise ValueError(f"synthetic {dataset}: unknown settings {sorted(unknown)}; known: {sorted(DEFAULTS[dataset])}")
    cfg = {**DEFAULTS[dataset], **(cfg or {})}
    writer = {"esc50": _esc50, "us8k": _us8k, "audioset": _audioset, "imagenet": _imagenet}[dataset]
    root = Path(root)
    with _atomic_dir(root) as tmp:
        writer(tmp, cfg, seed, progress)
    return root


def _rng(seed: int, dataset: str, *path: int) -> np.random.Generator:
    """Independent stream per (seed, dataset, item): an item's content never depends on the others."""
    return np.random.default_rng(np.random.SeedSequence([seed, _STREAM[dataset], *path]))


@contextlib.contextmanager
def _atomic_dir(root: Path) -> Iterator[Path]:
    """Yield an empty sibling folder; on success it replaces `root` (a crash leaves the old `root` or none)."""
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", suffix=".tmp", dir=root.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o755)  # mkdtemp makes it private
        if root.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{root.name}.", suffix=".old", dir=root.parent))
            os.replace(root, old / "x")
            os.replace(tmp, root)
            shutil.rmtree(old)
        else:
            os.replace(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _write_wav(path: Path, x: np.ndarray, sample_rate: int, subtype: str = "PCM_16") -> None:
    """x float32 (C, L) -> WAV. libsndfile stamps float WAVs with the wall clock (PEAK chunk): zero it so the
    same seed gives the same bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    sf.write(buf, x.T, sample_rate, subtype=subtype, format="WAV")
    data = bytearray(buf.getvalue())
    at = data.find(b"PEAK")
    if at >= 0:
        data[at + 12:at + 16] = b"\0\0\0\0"  # 'PEAK', chunk size, version, then the 4-byte timestamp
    path.write_bytes(bytes(data))


def _unique_ints(rng: np.random.Generator, count: int, lo: int, hi: int) -> list[int]:
    return [int(v) for v in rng.choice(np.arange(lo, hi), size=count, replace=False)]


# -----------------------------------------------------------------------------
# ESC-50

def _esc50(out: Path, cfg: dict, seed: int, progress: bool) -> None:
    sr, per = int(cfg["sample_rate"]), int(cfg["clips_per_class_per_fold"])
    n = int(round(cfg["seconds"] * sr))
    layout = _rng(seed, "esc50")
    src_ids = iter(_unique_ints(layout, ESC50_FOLDS * len(ESC50_CLASSES) * per, 1000, 300000))
    rows = []
    for fold in range(1, ESC50_FOLDS + 1):
        for category, target in ESC50_CLASSES.items():
            k = 0
            while k < per:
                # like the real set, a source recording sometimes gives two takes (A, B) in the same fold
                takes = "AB" if (per - k >= 2 and layout.random() < 0.25) else "A"
                src = next(src_ids)
                for take in takes:
                    rows.append((f"{fold}-{src}-{take}-{target}.wav", fold, target, category,
                                 category in ESC10, src, take))
                    k += 1
    rows.sort()  # the real esc50.csv is sorted by file name
    for i, row in enumerate(tqdm(rows, desc="synthetic esc50", disable=not progress)):
        x = render(row[3], _rng(seed, "esc50", i), sr, n)
        _write_wav(out / "audio" / row[0], x, sr)
    lines = ["filename,fold,target,category,esc10,src_file,take"]
    lines += [f"{f},{fold},{t},{c},{e},{s},{tk}" for f, fold, t, c, e, s, tk in rows]
    write_text(out / "meta" / "esc50.csv", "\n".join(lines) + "\n")


# -----------------------------------------------------------------------------
# UrbanSound8K

def _us8k(out: Path, cfg: dict, seed: int, progress: bool) -> None:
    per, max_s = int(cfg["clips_per_class_per_fold"]), float(cfg["max_seconds"])
    layout = _rng(seed, "us8k")
    fs_ids = iter(_unique_ints(layout, US8K_FOLDS * len(US8K_CLASSES) * per, 1000, 200000))
    slices = []  # one dict per file, keys = the CSV columns + the file format
    for fold in range(1, US8K_FOLDS + 1):
        for cls, class_id in US8K_CLASSES.items():
            k = 0
            while k < per:
                # one freesound recording -> 1-2 consecutive slices, all in one fold and one file format
                fs_id, count = next(fs_ids), min(per - k, int(layout.integers(1, 3)))
                fmt = {"rate": int(layout.choice(US8K_RATES)), "channels": int(layout.choice([1, 2])),
                       "subtype": str(layout.choice(US8K_SUBTYPES))}
                occ, t0, salience = int(layout.integers(0, 3)), float(layout.uniform(0, 60)), int(layout.integers(1, 3))
                for s in range(count):
                    seconds = max_s if layout.random() < 0.4 else float(layout.uniform(0.35, 1.0)) * max_s
                    start = round(t0 + s * max_s, 6)
                    slices.append({"slice_file_name": f"{fs_id}-{class_id}-{occ}-{s}.wav", "fsID": fs_id,
                                   "start": start, "end": round(start + seconds, 6), "salience": salience,
                                   "fold": fold, "classID": class_id, "class": cls, **fmt})
                    k += 1
    slices.sort(key=lambda r: r["slice_file_name"])  # the real csv is sorted by file name
    for i, r in enumerate(tqdm(slices, desc="synthetic us8k", disable=not progress)):
        n = max(1, int(round((r["end"] - r["start"]) * r["rate"])))
        x = render(US8K_SOUNDS.get(r["class"], r["class"]), _rng(seed, "us8k", i), r["rate"], n, r["channels"])
        _write_wav(out / "audio" / f"fold{r['fold']}" / r["slice_file_name"], x, r["rate"], r["subtype"])
    columns = ["slice_file_name", "fsID", "start", "end", "salience", "fold", "classID", "class"]
    lines = [",".join(columns)] + [",".join(str(r[c]) for c in columns) for r in slices]
    write_text(out / "metadata" / "UrbanSound8K.csv", "\n".join(lines) + "\n")


# -----------------------------------------------------------------------------
# AudioSet

def _ytids(rng: np.random.Generator, count: int) -> list[str]:
    """Unique 11-character YouTube ids; about one in eight starts with '-' (option-injection bait)."""
    out: list[str] = []
    seen: set[str] = set()
    while len(out) < count:
        chars = rng.choice(list(YTID_ALPHABET), 11)
        if rng.random() < 0.125:
            chars[0] = "-"
        ytid = "".join(chars)
        if ytid not in seen:
            seen.add(ytid)
            out.append(ytid)
    return out


def _audioset(out: Path, cfg: dict, seed: int, progress: bool) -> None:
    sr, seconds = int(cfg["sample_rate"]), float(cfg["seconds"])
    n = int(round(seconds * sr))
    mid = {name: m for m, name in AUDIOSET_CLASSES}
    order = {name: k for k, (_, name) in enumerate(AUDIOSET_CLASSES)}
    sounds = sorted(AUDIOSET_SOUNDS)
    layout = _rng(seed, "audioset")
    counts = {"train": int(cfg["train_clips"]), "eval": int(cfg["eval_clips"])}
    ytids = iter(_ytids(layout, sum(counts.values())))
    clips = {}  # split -> [(ytid, start_seconds, sources)]
    for split, count in counts.items():
        # primaries cycle through a shuffled list of the sounds so that every class is (nearly) balanced
        primaries = [sounds[i % len(sounds)] for i in range(count)]
        layout.shuffle(primaries)
        clips[split] = []
        for first in primaries:
            sources = [first]
            if layout.random() < 0.5:
                sources.append(str(layout.choice([s for s in sounds if s != first])))
            start = float(layout.integers(0, 300)) + (0.5 if layout.random() < 0.2 else 0.0)
            clips[split].append((next(ytids), start, sources))
    i = 0
    for split in counts:
        for ytid, start, sources in tqdm(clips[split], desc=f"synthetic audioset {split}", disable=not progress):
            rng = _rng(seed, "audioset", i)
            i += 1
            stem = f"{ytid}_{int(round(start * 1000))}"
            _write_wav(out / "audio" / f"{stem}.wav", render(sources, rng, sr, n), sr)
            if rng.random() >= NO_VIDEO_FRACTION:
                frames = video_frames(sources, rng, int(cfg["frame_size"]), int(cfg["frames_per_clip"]))
                (out / "frames" / stem).mkdir(parents=True)
                for j, frame in enumerate(frames):
                    frame.save(out / "frames" / stem / f"{j:02d}.jpg", quality=90)
    rows = "".join(f'{k},{m},"{name}"\n' for k, (m, name) in enumerate(AUDIOSET_CLASSES))
    write_text(out / "class_labels_indices.csv", "index,mid,display_name\n" + rows)
    # segment lists last (they are what a reader looks for first)
    for split, fname in (("eval", "eval_segments.csv"), ("train", "balanced_train_segments.csv")):
        labels_of = [sorted({lab for s in src for lab in AUDIOSET_SOUNDS[s]}, key=order.get)
                     for _, _, src in clips[split]]
        header = [f"# Segments csv created by pipeline.data.synthetic (SYNTHETIC data, seed {seed})",
                  f"# num_ytids={len(clips[split])}, num_segs={len(clips[split])}, "
                  f"num_unique_labels={len({lab for ls in labels_of for lab in ls})}, "
                  f"num_positive_labels={sum(map(len, labels_of))}",
                  "# YTID, start_seconds, end_seconds, positive_labels"]
        body = [f'{ytid}, {start:.3f}, {start + seconds:.3f}, "{",".join(mid[lab] for lab in labs)}"'
                for (ytid, start, _), labs in zip(clips[split], labels_of)]
        write_text(out / fname, "\n".join(header + body) + "\n")


# -----------------------------------------------------------------------------
# ImageNet-like

def _imagenet(out: Path, cfg: dict, seed: int, progress: bool) -> None:
    size, per = int(cfg["size"]), int(cfg["images_per_class"])
    for c, (wnid, _, visual) in enumerate(tqdm(IMAGENET_CLASSES, desc="synthetic imagenet", disable=not progress)):
        folder = out / "val" / wnid
        folder.mkdir(parents=True)
        for i in range(per):
            rng = _rng(seed, "imagenet", c, i)
            # varied aspect ratios exercise the resize + centre crop of the cache builder
            img = VISUAL_RECIPES[visual](rng, (size, int(round(size * rng.uniform(0.75, 1.3)))))
            if rng.random() < GRAYSCALE_FRACTION:
                img = img.convert("L")
            img.save(folder / f"{wnid}_{i}.JPEG", format="JPEG", quality=90)
    write_text(out / "LOC_synset_mapping.txt", "".join(f"{w} {names}\n" for w, names, _ in IMAGENET_CLASSES))
