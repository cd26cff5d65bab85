"""Benchmark: the embedded pipeline from scratch, and the training throughput of every stage.

    python benchmarks/run_smoke.py [--cores 2] [--out benchmarks/smoke.json]

Runs `snakemake --cores N` (every table) in a throw-away copy of this checkout, then reads the per-epoch
throughput each training job recorded (clips/s, training steps only) and Snakemake's per-job benchmark files.
Writes one JSON record; nothing here asserts a speed (benchmarks measure, tests check).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

from smoke_support import copy_checkout, run  # noqa: E402

from pipeline.io import write_json  # noqa: E402


def _stage_throughput(checkpoint: Path) -> dict:
    blob = torch.load(checkpoint, map_location="cpu", weights_only=True)
    history = blob["meta"]["history"]
    return {"epochs": len(history), "clips_per_second": statistics.median(h["clips_per_second"] for h in history)}


def _job_seconds(bench_dir: Path) -> dict[str, float]:
    out = {}
    for tsv in sorted(bench_dir.rglob("*.tsv")):
        lines = tsv.read_text().splitlines()
        out[str(tsv.relative_to(bench_dir).with_suffix(""))] = float(lines[1].split("\t")[0])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cores", type=int, default=os.cpu_count())
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "smoke.json")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        repo = copy_checkout(Path(tmp))
        t0 = time.perf_counter()
        run([sys.executable, "-m", "snakemake", "--cores", str(args.cores)], repo, timeout=3600)
        wall = time.perf_counter() - t0
        work = repo / "work" / "embedded"
        finetune = [json.loads(p.read_text()) for p in (work / "metrics" / "finetune").rglob("*.json")]
        jobs = _job_seconds(repo / "logs" / "embedded" / "benchmarks")
        record = {
            "benchmark": "embedded pipeline, every table, from an empty work directory",
            "profile": "embedded",
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": {"cpus": os.cpu_count(), "cores_given": args.cores, "platform": platform.platform(),
                        "python": platform.python_version(), "torch": torch.__version__, "device": "cpu"},
            "wall_seconds": round(wall, 1),
            "training_clips_per_second": {
                "stage1": _stage_throughput(work / "checkpoints" / "stage1.pt"),
                "stage2": _stage_throughput(work / "checkpoints" / "stage2_partial.pt"),
                "stage3": _stage_throughput(work / "checkpoints" / "stage3_full.pt"),
                "finetune_median": statistics.median(h["clips_per_second"] for m in finetune for h in m["history"]),
            },
            "job_seconds": {"total_over_jobs": round(sum(jobs.values()), 1), "per_job": jobs},
        }
    write_json(args.out, record)
    print(json.dumps({k: record[k] for k in ("wall_seconds", "training_clips_per_second")}, indent=2))


if __name__ == "__main__":
    main()
