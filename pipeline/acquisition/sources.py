"""Put each dataset and each pretrained weights file where params.yaml says, from its official source.

acquire_archive_dataset('esc50' | 'us8k', root, url, checksum, clips):
    A root that already holds a complete copy is used as it is: nothing is downloaded. Otherwise the official
    archive is downloaded beside it (resumable, checksum-verified), extracted safely, the dataset folder inside it
    (the one holding the metadata file) is checked - metadata parses, every listed audio file is there, the
    clip count is the published one - and only then renamed to `root`. What was downloaded is recorded in
    root/SOURCE.json (URL, sha256, size, time): GitHub builds branch archives on the fly, so ESC-50 has no
    published checksum and the recorded one is what a rerun can be compared with.
acquire_audioset(root, csv_url, ...): the official segment lists and class_labels_indices.csv, then every
    segment's audio and frames through fetch_audioset (resumable; failures listed in missing.csv).
acquire_weights(name, out, base_url): a pretrained file by its published name (RN50.pt, CLIP.pt,
    AudioCLIP-*.pt, ESRNXFBSP.pt, torchvision's resnext50_32x4d-*.pth), verified by weights.read_weights
    against its published sha256 before it is put in place.
ImageNet is never downloaded (its licence asks users to obtain it): check_dataset validates the user's copy.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
import urllib.parse
from pathlib import Path

from pipeline.data import metadata as md
from pipeline.io import sha256sum, write_json

from .archives import safe_extract
from .audioset import fetch_audioset
from .download import download

logger = logging.getLogger(__name__)

METADATA_FILE = {"esc50": "meta/esc50.csv", "us8k": "metadata/UrbanSound8K.csv"}
AUDIOSET_LABELS = "class_labels_indices.csv"
# Where the released weights live (AUDIOCLIP_FACTS.md section 9); OpenAI's URL embeds the file's sha256.
WEIGHT_URLS = {
    **{name: f"https://github.com/AndreyGuzhov/AudioCLIP/releases/download/v0.1/{name}"
       for name in ("AudioCLIP-Full-Training.pt", "AudioCLIP-Partial-Training.pt", "CLIP.pt", "ESRNXFBSP.pt")},
    "ESResNeXtFBSP_AudioSet.pt":
        "https://github.com/AndreyGuzhov/ESResNeXt-fbsp/releases/download/v0.1/ESResNeXtFBSP_AudioSet.pt",
    "RN50.pt": "https://openaipublic.azureedge.net/clip/models/"
               "afeb0e10f9e5a86da6080e35cf09123aca3b358a0c3e3b6c78a7b63bc04b6762/RN50.pt",
}


class DatasetError(ValueError):
    """A dataset folder is not a complete copy; the message names the folder and what is wrong."""


def check_dataset(dataset: str, root: str | os.PathLike, clips: int | None = None) -> md.Metadata:
    """The metadata of a complete copy at `root`; DatasetError naming what is missing otherwise."""
    root = Path(root)
    try:
        meta = md.read(dataset, root)
    except md.MetadataError as err:
        raise DatasetError(f"{root}: not a complete {dataset} copy ({err})") from None
    absent = [p for p in meta.items["path"] if not os.path.isfile(p)]
    if absent:
        raise DatasetError(f"{root}: {len(absent)} of the {len(meta.items)} files listed in its metadata are "
                           f"missing, e.g. {absent[:3]}")
    if clips is not None and len(meta.items) != clips:
        raise DatasetError(f"{root}: {len(meta.items)} {dataset} items, the published dataset has {clips}")
    return meta


def acquire_archive_dataset(dataset: str, root: str | os.PathLike, url: str, checksum: str | None = None,
                            clips: int | None = None, retries: int = 5, timeout: float = 60.0) -> Path:
    if dataset not in METADATA_FILE:
        raise ValueError(f"{dataset}: not downloadable as an archive; expected one of {sorted(METADATA_FILE)}")
    root = Path(root)
    if root.exists():
        check_dataset(dataset, root, clips)  # a user's copy: used as it is, or a clear error; never deleted
        logger.info("%s: complete %s copy present; nothing downloaded", root, dataset)
        return root
    staging = root.parent / f".{root.name}.download"  # survives a killed run: the download resumes from it
    archive = staging / (Path(urllib.parse.urlsplit(url).path).name or f"{dataset}.archive")
    download(url, archive, checksum=checksum, retries=retries, timeout=timeout, progress=True)
    extracted = safe_extract(archive, staging / "extracted")
    inner = _dataset_folder(extracted, METADATA_FILE[dataset], archive)
    meta = check_dataset(dataset, inner, clips)
    write_json(inner / "SOURCE.json", {"dataset": dataset, "url": url, "checksum": checksum,
                                       "sha256": sha256sum(archive), "bytes": archive.stat().st_size,
                                       "clips": len(meta.items), "downloaded_utc": _now()})
    os.replace(inner, root)
    shutil.rmtree(staging, ignore_errors=True)
    logger.info("%s: %d %s clips from %s", root, len(meta.items), dataset, url)
    return root


def _dataset_folder(extracted: Path, metadata_file: str, archive: Path) -> Path:
    """The folder inside an extracted archive that holds `metadata_file` (archives wrap it in a top folder)."""
    for candidate in (extracted, *sorted(p for p in extracted.iterdir() if p.is_dir())):
        if (candidate / metadata_file).is_file():
            return candidate
    raise DatasetError(f"{archive}: no {metadata_file} at its top or one folder down; not the expected archive")


def acquire_audioset(root: str | os.PathLike, csv_url: str, train_segments: tuple[str, ...], *,
                     video_url: str, workers: int, rate_limit_per_s: float | None, frames_per_clip: int,
                     limit: int | None = None, retries: int = 5, timeout: float = 60.0) -> dict:
    """Segment lists from `csv_url`/<name> (kept when present), then fetch_audioset; returns the coverage."""
    root = Path(root)
    files = md.segment_files(tuple(train_segments))
    for name in (AUDIOSET_LABELS, *files["train"], *files["eval"]):
        # No checksums are published for the lists; the metadata parser validates every row instead.
        download(f"{csv_url.rstrip('/')}/{name}", root / name, retries=retries, timeout=timeout)
    return fetch_audioset(root, url_template=video_url, workers=workers, rate_limit_per_s=rate_limit_per_s,
                          frames_per_clip=frames_per_clip, limit=limit, train_segments=tuple(train_segments),
                          progress=True)


def weight_url(name: str, base_url: str | None = None) -> str:
    """Where a published weights file is downloaded from; `base_url` (a mirror folder) replaces every source."""
    if base_url:
        return f"{base_url.rstrip('/')}/{name}"
    if name in WEIGHT_URLS:
        return WEIGHT_URLS[name]
    import torchvision.models as tvm  # torchvision knows its own weights' URLs

    for weights in tvm.ResNeXt50_32X4D_Weights:
        if weights.url.rsplit("/", 1)[-1] == name:
            return weights.url
    raise ValueError(f"{name}: not a published weights file this pipeline knows "
                     f"({', '.join(sorted(WEIGHT_URLS))} or torchvision's resnext50_32x4d-*.pth)")


def acquire_weights(name: str, out: str | os.PathLike, base_url: str | None = None, retries: int = 5,
                    timeout: float = 60.0) -> Path:
    """Download a published weights file to `out`, verified against its published sha256 before it lands there.

    A file already at `out` is verified, not downloaded again."""
    from pipeline.models.weights import PUBLISHED, read_weights

    out = Path(out)
    if out.name != name:
        raise ValueError(f"{out}: weights keep their published file name ({name}), which is how they are verified")
    checksum = PUBLISHED[name][0] if name in PUBLISHED else None
    url = weight_url(name, base_url)
    staged = out.parent / f".{name}.download" / name
    if not out.is_file():
        download(url, staged, checksum=checksum, retries=retries, timeout=timeout, progress=True)
        read_weights(staged)  # the sha256 (or torch.hub prefix) check and a readable, known layout
        os.replace(staged, out)
        shutil.rmtree(staged.parent, ignore_errors=True)
    else:
        read_weights(out)
    return out


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
