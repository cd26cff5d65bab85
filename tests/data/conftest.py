"""Shared fixtures: small synthetic datasets and their caches, built once per test session."""

from pathlib import Path

import pytest

from pipeline.data.cache import build_cache
from pipeline.data.synthetic import generate

# real sample files live outside the repo; tests that need them skip when the folder is absent
REALDATA = Path(__file__).resolve().parents[2].parent / "shared" / "realdata"

SMALL = {
    "esc50": {"clips_per_class_per_fold": 1, "seconds": 0.5},
    "us8k": {"clips_per_class_per_fold": 1, "max_seconds": 0.3},
    "audioset": {"train_clips": 30, "eval_clips": 12, "seconds": 0.5, "frames_per_clip": 3, "frame_size": 32},
    "imagenet": {"images_per_class": 4, "size": 40},
}
CACHE_ARGS = {
    "esc50": {"sample_rate": 8000, "clip_seconds": 1.0, "channels": 1},
    "us8k": {"sample_rate": 8000, "clip_seconds": 0.3, "channels": 2},
    "audioset": {"sample_rate": 8000, "clip_seconds": 0.5, "channels": 1, "frames_per_clip": 3, "image_size": 24},
    "imagenet": {"image_size": 32},
}


@pytest.fixture(scope="session")
def synthetic(tmp_path_factory) -> dict[str, Path]:
    """dataset -> root of a small synthetic copy (seed 0)."""
    base = tmp_path_factory.mktemp("synthetic")
    return {name: generate(name, base / name, cfg, seed=0) for name, cfg in SMALL.items()}


@pytest.fixture(scope="session")
def caches(synthetic, tmp_path_factory) -> dict[str, Path]:
    """dataset -> HDF5 cache of the small synthetic copy (8 kHz)."""
    base = tmp_path_factory.mktemp("caches")
    out = {}
    for name, kwargs in CACHE_ARGS.items():
        out[name] = base / f"{name}.h5"
        build_cache(name, synthetic[name], out[name], progress=False, **kwargs)
    return out


@pytest.fixture
def realdata() -> Path:
    if not REALDATA.is_dir():
        pytest.skip(f"real sample data not present at {REALDATA}")
    return REALDATA
