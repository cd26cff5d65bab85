"""Benchmark: training throughput of the full-size models, through the real stage code, on this machine.

    python benchmarks/train_throughput.py [--clips 16] [--batch 4] [--device cpu|cuda] [--out benchmarks/train.json]

Runs one short epoch of stage 1 (ESResNeXt-fbsp, 10 s AudioSet clips), stage 3 (AudioCLIP RN50: audio, frames
and text) and ESC-50 fine-tuning (AudioCLIP, 5 s clips) at full size on 44.1 kHz synthetic data, with the
paper profile's settings (bf16/channels_last only on CUDA), and records per stage the clips/s of the training
steps and the share of the epoch spent waiting on the data loader. From the stage throughputs it estimates the
device-hours of the paper profile (30 epochs of stages 1-3 over the AudioSet train clips, 50 fine-tuning epochs
per fold); the estimate is labelled as one. Nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.config import DEFAULT_PARAMS, resolve  # noqa: E402
from pipeline.data import synthetic  # noqa: E402
from pipeline.data.cache import build_cache  # noqa: E402
from pipeline.training import stages  # noqa: E402
from pipeline.training.model_io import load_model, save_model  # noqa: E402

AUDIOSET_TRAIN_CLIPS = 22_160 + 2_041_789  # balanced + unbalanced lists (official CSV counts; fewer are fetchable)
ESC50_CLIPS, US8K_CLIPS = 2_000, 8_732


def _cfg(device: str, batch: int, workers: int):
    raw = copy.deepcopy(yaml.safe_load(DEFAULT_PARAMS.read_text()))
    paper = raw["paper"]
    paper["device"] = device
    paper["model"].update(clip_init="none", audio_init="none")
    paper["train"]["num_workers"] = workers
    if device == "cpu":  # bf16 autocast and NHWC pay off on tensor cores, not on CPU
        paper["train"]["speed"].update(precision="fp32", channels_last=False)
    for stage in ("stage1", "stage2", "stage3"):
        paper["train"][stage].update(epochs=1, batch_size=batch)
    paper["train"]["finetune"]["esc50"].update(epochs=1, batch_size=batch)
    return resolve(raw, profile="paper")


def _epoch(history: list[dict]) -> dict:
    h = history[-1]
    return {"clips_per_second": h["clips_per_second"], "data_wait_share": h["data_wait_share"],
            "train_seconds": h["train_seconds"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=16, help="training clips per stage")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "train.json")
    args = parser.parse_args()
    cfg = _cfg(args.device, args.batch, args.workers)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        audioset = synthetic.generate("audioset", tmp / "audioset", {
            "train_clips": args.clips, "eval_clips": 4, "seconds": 10.0, "frames_per_clip": 3, "frame_size": 224})
        build_cache("audioset", audioset, tmp / "audioset.h5", sample_rate=44100, clip_seconds=10.0, channels=1,
                    frames_per_clip=3, image_size=224, progress=False)
        esc50 = synthetic.generate("esc50", tmp / "esc50", {"clips_per_class_per_fold": max(1, args.clips // 40),
                                                            "seconds": 5.0})
        build_cache("esc50", esc50, tmp / "esc50.h5", sample_rate=44100, clip_seconds=5.0, channels=1, progress=False)

        stages.train_stage1(cfg, tmp / "audioset.h5", tmp / "stage1.pt", tmp / "run1")
        results["stage1"] = _epoch(load_model(tmp / "stage1.pt")[1]["history"])
        # stage 3 trains all three heads from a stage-2 model; its throughput does not depend on the weights
        model = stages.create_model(cfg["model"]["audioclip"])
        save_model(tmp / "stage2.pt", model, cfg["model"]["audioclip"], {}, {"stage": "stage2"})
        stages.train_stage3(cfg, tmp / "stage2.pt", tmp / "audioset.h5", tmp / "stage3.pt", tmp / "run3")
        results["stage3"] = _epoch(load_model(tmp / "stage3.pt")[1]["history"])
        t0 = time.perf_counter()
        record = stages.finetune(cfg, "esc50", 1, "full", tmp / "stage2.pt", tmp / "esc50.h5", tmp / "ft.json",
                                 tmp / "runft")
        results["finetune_esc50"] = {**_epoch(record["history"]), "job_seconds": time.perf_counter() - t0}

    stage_epochs = 30
    hours = {name: AUDIOSET_TRAIN_CLIPS * stage_epochs / results[key]["clips_per_second"] / 3600
             for name, key in (("stage1", "stage1"), ("stage2_as_stage3", "stage3"), ("stage3", "stage3"))}
    finetune_clips = 50 * (ESC50_CLIPS * 4 / 5 * 5 * 3 + US8K_CLIPS * 9 / 10 * 10 * 3)  # epochs x train clips x folds x modes
    hours["finetune_all_folds"] = finetune_clips / results["finetune_esc50"]["clips_per_second"] / 3600
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    record = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "git_commit": commit,
        "machine": {"platform": platform.platform(), "cpu_count": torch.get_num_threads(), "torch": torch.__version__,
                    "device": args.device if args.device == "cpu" else torch.cuda.get_device_name()},
        "settings": {"clips": args.clips, "batch": args.batch, "workers": args.workers,
                     "speed": cfg["train"]["speed"], "clip_seconds": {"audioset": 10.0, "esc50": 5.0}},
        "throughput": results,
        "estimate_device_hours_paper_profile": {
            **{k: round(v, 1) for k, v in hours.items()},
            "total": round(sum(hours.values()), 1),
            "note": "an estimate: measured clips/s x paper epochs x clip counts (stage 2 costs at most stage 3); "
                    "evaluation not included",
        },
    }
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
