"""Fixtures every test folder may use."""

import re
import time
from pathlib import Path

import pytest

# The real sample recordings, photos and videos live beside the repository (never inside it: licences).
REALDATA = Path(__file__).resolve().parents[1].parent / "shared" / "realdata"


@pytest.fixture
def realdata() -> Path:
    if not REALDATA.is_dir():
        pytest.skip(f"real sample data not present at {REALDATA}")
    return REALDATA


@pytest.fixture(scope="session")
def smoke(tmp_path_factory):
    """The whole embedded pipeline, run once per session with `snakemake --cores 2` in a throw-away copy of the
    checkout (tests/test_pipeline_e2e.py, and tests/test_slurm.py's reference). `tables` keeps the bytes of
    results/table*.csv as this run made them (later tests rerun parts of the DAG in the same copy); `jobs` is the
    number of jobs the run had (Snakemake's steps, the `all` target included), `log` Snakemake's output."""
    from smoke_support import copy_checkout, snakemake

    repo = copy_checkout(tmp_path_factory.mktemp("smoke"))
    t0 = time.perf_counter()
    proc = snakemake(repo)  # every table
    seconds = time.perf_counter() - t0
    log = proc.stdout + proc.stderr
    steps = re.search(r"(\d+) of \1 steps \(100%\) done", log)
    assert steps, log[-3000:]
    tables = {p.name: p.read_bytes() for p in sorted((repo / "results").glob("table*.csv"))}
    return {"repo": repo, "seconds": seconds, "tables": tables, "jobs": int(steps[1]), "log": log}
