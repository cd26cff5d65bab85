"""Shared fixtures: small synthetic datasets and their caches, built once per test session."""

from pathlib import Path

import pytest
from data_support import CACHE_ARGS, SMALL

from pipeline.data.cache import build_cache
from pipeline.data.synthetic import generate


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
