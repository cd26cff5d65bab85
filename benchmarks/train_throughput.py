"""Benchmark: training throughput of the full-size models, through the real stage code, on this machine.

    python benchmarks/train_throughput.py [--clips 16] [--batch 4] [--device cpu|cuda] [--out benchmarks/train.json]

Runs one short epoch of stage 1 (ESResNeXt-fbsp, 10 s AudioSet clips), stage 3 (AudioCLIP RN50: audio, frames
and text) and ESC-50 fine-tuning (AudioCLIP, 5 s clips) at full size on 44.1 kHz synthetic data, with the
paper profile's settings (bf16/channels_last only on CUDA), and records per stage the clips/s of the training
steps and the share of the epoch spent waiting on the data loader. From the stage throughputs it estimates the
device-hours of the paper profile (30 epochs of stages 1-3 over the AudioSet train clips, 50 fine-tuning epochs
per fold); the estimate is labelled as one. It also counts the training FLOPs per clip of each stage (forward and
backward of one batch, torch.utils.flop_counter: convolutions and matrix products) and from them estimates the
GPU-hours on an H100 at an assumed share of its dense bf16 peak: where no GPU was measured, that is the
estimate to go by, labelled with its assumption. Nothing here asserts a speed.
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


H100_BF16_DENSE_FLOPS = 989e12  # NVIDIA's datasheet figure for the SXM part, without sparsity
ASSUMED_MFU = 0.4  # share of that peak a convolutional network's training step reaches: an assumption, stated


def training_flops_per_clip(cfg, batch: int = 2) -> dict[str, float]:
    """FLOPs of one training step per clip, at full size, for stage 1 (ESResNeXt, 10 s), stage 3 (AudioCLIP, 10 s
    audio + a 224 px frame + its text, all heads training) and ESC-50 fine-tuning (AudioCLIP, 5 s audio against
    its class text; text and image heads frozen), counted on the CPU with the stages' own losses."""
    from torch.utils.flop_counter import FlopCounterMode

    from pipeline.models.loss import audioclip_loss, standalone_loss

    def count(step) -> float:
        with FlopCounterMode(display=False) as counter:
            step()
        return counter.get_total_flops() / batch

    torch.manual_seed(0)
    audio10 = torch.randn(batch, 1, 441_000) * 3000

    def stage1():
        esr = stages.create_model(cfg["model"]["esresnext"], num_classes=527)
        labels = torch.zeros(batch, 527)
        labels[:, 0] = 1
        (standalone_loss(esr(audio10), labels) + esr.loss_ttf()).backward()

    out = {"stage1": count(stage1)}
    clip = stages.create_model(cfg["model"]["audioclip"])
    texts = ["dog barking", "rain"][:batch] * (batch // 2 or 1)

    def stage3():
        o = clip(audio=audio10, image=torch.randn(batch, 3, 224, 224), text=clip.tokenize(texts))
        audioclip_loss(clip, o).backward()

    out["stage3"] = count(stage3)
    stages.freeze(clip, ("audio.", "logit_scale_ai", "logit_scale_at"))
    audio5 = audio10[..., :220_500]

    def finetune():
        audioclip_loss(clip, clip(audio=audio5, text=clip.tokenize(texts))).backward()

    out["finetune_esc50"] = count(finetune)
    return out


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
    flops = training_flops_per_clip(cfg)
    h100 = H100_BF16_DENSE_FLOPS * ASSUMED_MFU
    h100_clips_per_second = {k: h100 / v for k, v in flops.items()}
    h100_hours = {name: AUDIOSET_TRAIN_CLIPS * stage_epochs / h100_clips_per_second[key] / 3600
                  for name, key in (("stage1", "stage1"), ("stage2_as_stage3", "stage3"), ("stage3", "stage3"))}
    h100_hours["finetune_all_folds"] = finetune_clips / h100_clips_per_second["finetune_esc50"] / 3600
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
        "training_flops_per_clip": {k: round(v / 1e9, 1) for k, v in flops.items()},
        "training_flops_unit": "GFLOP per clip and training step (forward + backward), convolutions and matrix "
                               "products (torch.utils.flop_counter), full-size models, batch 2",
        "estimate_h100_from_flops": {
            "assumption": f"{ASSUMED_MFU:.0%} of the H100's {H100_BF16_DENSE_FLOPS / 1e12:.0f} TFLOP/s dense bf16 "
                          "peak (not measured: no GPU was available to this benchmark run)",
            "clips_per_second": {k: round(v, 1) for k, v in h100_clips_per_second.items()},
            "gpu_hours_paper_profile": {**{k: round(v, 1) for k, v in h100_hours.items()},
                                        "total": round(sum(h100_hours.values()), 1)},
        },
    }
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
