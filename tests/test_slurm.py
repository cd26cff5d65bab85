"""The workflow's SLURM profile on a real single-node SLURM (tests/slurm_cluster.py: munge, slurmctld, slurmd on
127.0.0.1, state under a temporary directory, stopped by PID; .ci/run installs Debian's packages).

- Without accounting (no slurmdbd, so sacct cannot answer), through `snakemake --workflow-profile
  workflow/profiles/slurm` (job status from squeue, the profile's setting): the whole embedded-default DAG from a
  fresh copy of the checkout with no outputs; every results/table*.csv equals the local run's byte for byte.
- With accounting (slurmdbd on its own MariaDB): part of the DAG with the plugin's default status query, sacct.

`sacct` and `squeue` are wrapped (first on PATH) to record who asked what, so each test shows which status query
the executor really used. Skipped, with the reason, only where the SLURM (or accounting) binaries are absent, or
where the daemons cannot run (not root) or would overwrite a real installation's /etc/slurm.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import slurm_cluster
from smoke_support import copy_checkout, env

pytestmark = pytest.mark.slow

W = Path("work/embedded")
# The test node. The workflow profile's requests stay as written (training: 16 cores, 125 GB; a cross-validation:
# 8 cores, 31 GB; evaluation: 8 cores, 16-32 GB), so the node advertises far more than this machine has
# (SlurmdParameters=config_overrides). Every job runs one single-threaded model process (SAME_THREADS), so the
# declared size only sets how many run at once: 64 "CPUs" and 512 GB admit a training stage beside six
# cross-validations, i.e. up to seven processes on 2 real cores and a few GB of real memory. More than 2 because
# each SLURM job also spends seconds starting two Snakemake processes and waiting for the next status query, which
# the other jobs fill; memory is then no limit (SLURM schedules in submission order: a job queued behind others
# for memory would hold back the training stage, the critical path).
NODE_CPUS = 64
NODE_MEMORY_MB = 524288
# The same thread counts as the local run (`--cores 2`: training stages take cores // 2 = 1, the rest 1): the
# tables must be byte-identical, and torch's CPU kernels may sum in another order with another thread count.
SAME_THREADS = ["--set-threads", "pretrain_clip=1", "train_stage1=1", "train_stage2=1", "train_stage3=1",
                "finetune_esc50=1", "finetune_us8k=1"]
# The plugin's first status query waits 40 s after a submission and backs off from there: minutes of idle node
# per DAG level in a test where jobs take seconds. 2 s keeps squeue's MinJobAge check (3 x this < 300 s) valid.
FAST_STATUS = ["--slurm-init-seconds-before-status-checks", "2"]


def _skip_unless_available(accounting: bool = False) -> None:
    reason = slurm_cluster.available(accounting=accounting)
    if reason:
        pytest.skip(reason)


def _recording_wrappers(bin_dir: Path) -> dict[str, Path]:
    """`sacct` and `squeue` scripts that log their arguments, then run the real command."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    calls = {}
    for tool in ("sacct", "squeue"):
        real = shutil.which(tool)
        calls[tool] = bin_dir / f"{tool}.calls"
        calls[tool].touch()
        script = bin_dir / tool
        script.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> "{calls[tool]}"\nexec "{real}" "$@"\n')
        script.chmod(0o755)
    return calls


def _snakemake_on_slurm(repo: Path, bin_dir: Path, *args: str, timeout: float) -> str:
    """`snakemake --workflow-profile workflow/profiles/slurm ...` with the recording wrappers first on PATH;
    returns its log (stdout and stderr), failing with its tail if it fails."""
    e = env()
    e["PATH"] = f"{bin_dir}{os.pathsep}{e['PATH']}"
    cmd = [sys.executable, "-m", "snakemake", "--cores", "2", "--workflow-profile", "workflow/profiles/slurm",
           *FAST_STATUS, *SAME_THREADS, *args]
    proc = subprocess.run(cmd, cwd=repo, env=e, capture_output=True, text=True, timeout=timeout)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{' '.join(cmd)} failed ({proc.returncode}):\n{log[-8000:]}"
    return log


def _tables(repo: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((repo / "results").glob("table*.csv"))}


def _status_queries(calls: Path) -> list[str]:
    """The executor's status queries among the recorded calls: both name the run (`--name <run uuid>`)."""
    return [line for line in calls.read_text().splitlines() if "--name" in line]


def test_the_whole_dag_through_the_slurm_profile_gives_the_local_tables(smoke, tmp_path):
    """Every job of the embedded-default pipeline, from a fresh copy of the checkout with no outputs, submitted
    by sbatch to a cluster without accounting (job status from squeue): the tables equal the local run's byte
    for byte."""
    _skip_unless_available()
    repo = copy_checkout(tmp_path / "repo")
    assert not list((repo / "results").glob("*.csv")) and not (repo / W).exists()  # from nothing
    calls = _recording_wrappers(tmp_path / "bin")
    t0 = time.perf_counter()
    cluster = slurm_cluster.start(tmp_path / "slurm", cpus=NODE_CPUS, memory_mb=NODE_MEMORY_MB)
    try:
        log = _snakemake_on_slurm(repo, tmp_path / "bin", timeout=40 * 60)
    finally:
        cluster.stop()
    seconds = time.perf_counter() - t0
    print(f"whole DAG through SLURM: {seconds:.0f} s (local run: {smoke['seconds']:.0f} s)")
    # every job of the local run went through sbatch (but the `all` target), a cross-validation (all its folds)
    # to a submission, and the seven bookkeeping jobs at the end (tables, metrics.json, track_jobs, report) in one
    assert "steps (100%) done" in log, log[-3000:]
    submitted = log.count("has been submitted with SLURM jobid")
    assert submitted == smoke["jobs"] - 1 - 7 + 1 and log.count("Group job reporting") == 1, log[-3000:]
    assert log.count("rule finetune_esc50:") == 3 and log.count("rule finetune_us8k:") == 3, log[-3000:]
    # status came from squeue alone: sacct has no accounting to ask here (the plugin still runs it once to guess
    # an account, which fails quickly and is ignored)
    assert _status_queries(calls["squeue"]) and not _status_queries(calls["sacct"]), calls["sacct"].read_text()
    tables = _tables(repo)
    assert sorted(tables) == sorted(smoke["tables"]) == [f"table{n}.csv" for n in range(1, 5)]
    for name, content in smoke["tables"].items():
        assert tables[name] == content, name
    assert len(list((repo / W / "metrics/finetune").rglob("fold*.json"))) == 45


def test_job_status_through_sacct_with_slurm_accounting(smoke, tmp_path):
    """slurmdbd and MariaDB under the temporary directory: zero-shot ESC-50 (full) and everything downstream of
    it (two tables, the flat metrics, the job index, the report: one submission) rerun through SLURM with
    `--slurm-status-command sacct`, the plugin's default; sacct's records show both jobs COMPLETED."""
    _skip_unless_available(accounting=True)
    repo = tmp_path / "repo"
    shutil.copytree(smoke["repo"], repo, symlinks=True)
    (repo / W / "metrics/zeroshot/esc50/full.json").unlink()
    calls = _recording_wrappers(tmp_path / "bin")
    t0 = time.perf_counter()
    cluster = slurm_cluster.start(tmp_path / "slurm", cpus=NODE_CPUS, memory_mb=NODE_MEMORY_MB, accounting=True)
    print(f"cluster with accounting up in {time.perf_counter() - t0:.1f} s")
    try:
        log = _snakemake_on_slurm(repo, tmp_path / "bin", "--slurm-status-command", "sacct", timeout=15 * 60)
        records = cluster.run("sacct", "-X", "-n", "-P", "--clusters", "all", "--starttime", "now-1days",
                              "--format=JobIDRaw,JobName,State")
    finally:
        cluster.stop()
    submitted = log.count("has been submitted with SLURM jobid")
    assert submitted == 2 and "rule zeroshot:" in log and "Group job reporting" in log, log[-3000:]
    assert _status_queries(calls["sacct"]) and not _status_queries(calls["squeue"]), calls["squeue"].read_text()
    states = [line.split("|") for line in records.splitlines() if line.strip()]
    assert len(states) == submitted and {s for *_, s in states} == {"COMPLETED"}, records
    tables = _tables(repo)
    for name, content in smoke["tables"].items():
        assert tables[name] == content, name
