"""Restore a finished pipeline from DVC without rerunning it: `python -m pipeline restore`.

DVC stores content, not timestamps: files it checks out get fresh modification times in no particular order,
so Snakemake would see outputs older than their inputs and plan to recompute everything (days, for the paper
profile). After `dvc pull`, `snakemake --touch` walks the DAG in order and touches each output after its
inputs: the restored results count as up to date again. Parameter and code changes are still caught: those
are DVC's job (`dvc status`) before the pull and Snakemake's after it.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path


def _tool(name: str) -> str:
    # the tools of this environment (the venv's bin), not whatever else is on PATH
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else (shutil.which(name) or name)


def restore(repo: str | Path = ".", remote: str | None = None, profile: str | None = None, cores: int = 1) -> None:
    repo = Path(repo)
    pull = [_tool("dvc"), "pull", *(["--remote", remote] if remote else [])]
    subprocess.run(pull, cwd=repo, check=True)
    touch = [sys.executable, "-m", "snakemake", "--cores", str(cores), "--touch",
             *(["--config", f"profile={profile}"] if profile else [])]
    subprocess.run(touch, cwd=repo, check=True)
