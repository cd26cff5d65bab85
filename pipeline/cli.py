"""Command line: `python -m pipeline <command>`. Snakemake rules, DVC and users call the same commands.

Every command reads params.yaml (`--params`) and a profile (`--profile`, default: the file's `profile`).
Heavy imports happen inside the command functions so `--help` and light commands start fast.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from pipeline.acquisition.download import DownloadError
from pipeline.config import DEFAULT_PARAMS, ConfigError, load_config

DATASETS = ("esc50", "us8k", "audioset", "imagenet")
FINETUNE_DATASETS = ("esc50", "us8k")
FINETUNE_MODES = ("standalone", "partial", "full")
CHECKPOINT_HELP = ("weights: released AudioCLIP-*.pt / ESRNXFBSP.pt / CLIP.pt, OpenAI RN50.pt, torchvision ResNeXt "
                   "or a pipeline checkpoint (default: the profile's fully trained model)")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--params", type=Path, default=DEFAULT_PARAMS, help="params.yaml (default: the repo's)")
    p.add_argument("--profile", default=None, help="profile in params.yaml (default: its `profile` key)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (Snakemake passes {threads})")
    p.add_argument("-v", "--verbose", action="store_true")


def _shard(text: str) -> tuple[int, int]:
    index, sep, count = text.partition("/")
    if not (sep and index.isdigit() and count.isdigit() and int(index) < int(count)):
        raise argparse.ArgumentTypeError(f"{text!r}: expected I/N with 0 <= I < N, e.g. 3/64")
    return int(index), int(count)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipeline", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("generate-data", help="write a synthetic dataset in its official layout")
    p.add_argument("--dataset", choices=DATASETS, required=True)
    p.add_argument("--out", type=Path, required=True)
    _common(p)

    p = sub.add_parser("acquire", help="download a dataset in its official layout (params data.download)")
    p.add_argument("--dataset", choices=("esc50", "us8k", "audioset"), required=True)
    p.add_argument("--root", type=Path, required=True, help="the dataset folder (data.<dataset>.root)")
    _common(p)

    p = sub.add_parser("fetch-weights", help="download a published weights file, sha256-verified")
    p.add_argument("name", help="RN50.pt, CLIP.pt, AudioCLIP-Full-Training.pt, ..., resnext50_32x4d-7cdf4587.pth")
    p.add_argument("--out", type=Path, required=True, help="where it goes (its file name must be NAME)")
    _common(p)

    p = sub.add_parser("cache", help="decode a dataset once into an HDF5 cache")
    p.add_argument("--dataset", choices=DATASETS, required=True)
    p.add_argument("--root", type=Path, required=True, help="the dataset in its official layout")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--on-error", choices=("raise", "skip"), default="raise",
                   help="unreadable source files: fail (default) or skip and list them in the cache")
    p.add_argument("--shard", type=_shard, help="I/N: cache only the I-th of N slices (merge with cache-merge)")
    _common(p)

    p = sub.add_parser("cache-merge", help="one index file over the shards of a cache")
    p.add_argument("shards", type=Path, nargs="+")
    p.add_argument("--out", type=Path, required=True)

    p = sub.add_parser("cache-info", help="describe an HDF5 cache")
    p.add_argument("path", type=Path)
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("train", help="AudioSet training stage")
    p.add_argument("--stage", choices=("clip", "stage1", "stage2", "stage3"), required=True,
                   help="clip = the embedded profile's CLIP-head pre-training (model.clip_init: synthetic)")
    p.add_argument("--cache", type=Path, help="AudioSet HDF5 cache (every stage but clip)")
    p.add_argument("--init", type=Path, help="checkpoint of the previous stage (stages 2 and 3); stage 1: the "
                                             "ImageNet ResNeXt weights (model.audio_init: imagenet)")
    p.add_argument("--clip-init", type=Path, help="stage 2: the CLIP heads' weights (model.clip_init: openai: "
                                                  "RN50.pt or CLIP.pt; synthetic: the clip stage's checkpoint)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--run-dir", type=Path, required=True, help="resumable state of this job")
    _common(p)

    p = sub.add_parser("import-weights", help="a weights file as the pipeline checkpoint of a stage (train.released)")
    p.add_argument("weights", type=Path, help="e.g. AudioCLIP-Full-Training.pt, ESRNXFBSP.pt")
    p.add_argument("--stage", choices=FINETUNE_MODES, required=True, help="the stage it stands in for")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--name", help="model factory name (default: the profile's model for that stage)")
    _common(p)

    p = sub.add_parser("finetune", help="cross-validation: per fold, train on the other folds and evaluate on it")
    p.add_argument("--dataset", choices=FINETUNE_DATASETS, required=True)
    p.add_argument("--mode", choices=FINETUNE_MODES, required=True)
    p.add_argument("--folds", type=int, nargs="+", help="the folds to hold out, in turn (default: every fold)")
    p.add_argument("--init", type=Path, required=True)
    p.add_argument("--cache", type=Path, required=True)
    p.add_argument("--out-dir", type=Path, required=True, help="a metric JSON per fold: OUT_DIR/fold<k>.json")
    p.add_argument("--run-dir", type=Path, required=True, help="checkpoints per fold: RUN_DIR/fold<k>/")
    _common(p)

    p = sub.add_parser("evaluate", help="zero-shot, AudioSet mAP, ImageNet and querying evaluation")
    p.add_argument("kind", choices=("zeroshot", "audioset", "imagenet", "querying"))
    p.add_argument("--model", choices=FINETUNE_MODES, required=True, help="which trained model this is")
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--dataset", choices=FINETUNE_DATASETS, help="zeroshot: the target dataset")
    p.add_argument("--cache", type=Path, action="append", default=[],
                   help="cache file(s); querying takes one per dataset as NAME=PATH")
    p.add_argument("--out", type=Path, required=True)
    _common(p)

    p = sub.add_parser("classify", help="zero-shot probabilities of audio files over the given labels")
    p.add_argument("files", type=Path, nargs="+", help="audio in any format ffmpeg decodes, any rate and channels")
    p.add_argument("--labels", required=True, help='comma-separated class names, e.g. "dog,rain,church bells"')
    p.add_argument("--checkpoint", type=Path, help=CHECKPOINT_HELP)
    p.add_argument("--template", help="text for each label, e.g. 'the sound of {}' (default: params "
                                      "model.prompt_template, the bare label as published)")
    p.add_argument("--json", action="store_true", help='print [{"file", "probabilities": {label: p}}, ...]')
    _common(p)

    p = sub.add_parser("embed", help="L2-normalised embeddings of audio files, images or texts, as .npy")
    p.add_argument("inputs", nargs="+", help="files (audio, image) or strings (text)")
    p.add_argument("--modality", choices=("audio", "image", "text"), required=True)
    p.add_argument("--checkpoint", type=Path, help=CHECKPOINT_HELP)
    p.add_argument("--out", type=Path, required=True, help="float32 (N, D) .npy, rows in input order")
    _common(p)

    p = sub.add_parser("tables", help="build results/table*.csv beside the paper's values, log to MLflow")
    p.add_argument("--table", choices=("table1", "table2", "table3", "table4"), action="append")
    p.add_argument("--out-dir", type=Path, default=Path("results"))
    p.add_argument("--no-mlflow", action="store_true", help="skip MLflow logging")
    _common(p)

    p = sub.add_parser("report", help="results/report.html: tables, per-fold accuracy, curves, confusion, PR curves")
    p.add_argument("--results-dir", type=Path, default=Path("results"))
    p.add_argument("--out", type=Path, default=Path("results/report.html"))
    _common(p)

    p = sub.add_parser("track-jobs", help="log every job's per-epoch history and metrics to MLflow, one run per job "
                                          "nested under the pipeline invocation's run")
    p.add_argument("files", type=Path, nargs="+", help="metric JSONs and stage checkpoints")
    p.add_argument("--invocation", required=True, help="id of this pipeline invocation (Snakemake sets it)")
    p.add_argument("--out", type=Path, required=True, help="JSON: job -> MLflow run id")
    _common(p)

    p = sub.add_parser("metrics-json", help="flatten table CSVs into one metrics file (for DVC)")
    p.add_argument("tables", type=Path, nargs="+", help="results/tableN.csv files")
    p.add_argument("--out", type=Path, required=True)

    p = sub.add_parser("restore", help="dvc pull, then mark the restored outputs up to date for Snakemake")
    p.add_argument("--remote", help="DVC remote (default: the configured one)")
    p.add_argument("--profile", help="profile whose DAG is touched (default: params.yaml's)")

    p = sub.add_parser("dvc-yaml", help="write dvc.yaml from the Snakemake phases (or --check it)")
    p.add_argument("--out", type=Path, default=Path("dvc.yaml"))
    p.add_argument("--check", action="store_true", help="exit 1 if the file differs from what would be written")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if getattr(args, "verbose", False) else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        return COMMANDS[args.command](args) or 0
    except (ConfigError, ValueError, OSError, DownloadError) as err:
        # Bad input is reported in one line naming the file/key; tracebacks are for bugs (use -v).
        if getattr(args, "verbose", False):
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2


def _cfg(args):
    cfg = load_config(args.params, args.profile)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    return cfg


def cmd_generate_data(args) -> None:
    from pipeline.data import synthetic

    cfg = _cfg(args)
    synthetic.generate(args.dataset, args.out, cfg["data"]["synthetic"][args.dataset], seed=cfg["seed"])


def cmd_acquire(args) -> None:
    from pipeline.acquisition import sources

    cfg = _cfg(args)
    spec = cfg["data"]["download"][args.dataset]
    if args.dataset == "audioset":
        coverage = sources.acquire_audioset(
            args.root, spec["csv_url"], tuple(cfg["data"]["audioset"]["train_segments"]), video_url=spec["video_url"],
            workers=spec["workers"], rate_limit_per_s=spec["rate_limit_per_s"],
            frames_per_clip=cfg["data"]["audioset"]["frames_per_clip"], limit=spec["limit"])
        print(json.dumps(coverage, indent=2))
    else:
        sources.acquire_archive_dataset(args.dataset, args.root, spec["url"], spec["checksum"], spec["clips"])


def cmd_fetch_weights(args) -> None:
    from pipeline.acquisition import sources

    cfg = _cfg(args)
    sources.acquire_weights(args.name, args.out, cfg["model"]["weights_url"])


def cmd_cache(args) -> None:
    from pipeline.data.cache import build_cache
    from pipeline.models.factory import MODEL_CONFIGS

    cfg = _cfg(args)
    data = cfg["data"]
    image_size = MODEL_CONFIGS[cfg["model"]["audioclip"]]["vision_cfg"]["image_size"]
    if args.dataset == "imagenet":
        kwargs: dict = {"image_size": image_size}
    elif args.dataset == "audioset":
        kwargs = {"sample_rate": data["sample_rate"], "clip_seconds": data["audioset"]["clip_seconds"], "channels": 1,
                  "frames_per_clip": data["audioset"]["frames_per_clip"], "image_size": image_size,
                  "train_segments": tuple(data["audioset"]["train_segments"])}
    else:
        kwargs = {"sample_rate": data["sample_rate"], "clip_seconds": data[args.dataset]["clip_seconds"],
                  "channels": data[args.dataset]["channels"]}
    build_cache(args.dataset, args.root, args.out, on_error=args.on_error, shard=args.shard,
                compression=data["cache_compression"], **kwargs)


def cmd_cache_merge(args) -> None:
    from pipeline.data.cache import merge_shards

    merge_shards(args.shards, args.out)


def cmd_cache_info(args) -> None:
    from pipeline.data.cache import cache_info

    info = cache_info(args.path)
    if args.json:
        print(json.dumps(info, indent=2, sort_keys=True))
    else:
        for key, value in info.items():
            print(f"{key}: {value}")


def cmd_train(args) -> None:
    from pipeline.training import stages

    cfg = _cfg(args)
    if args.stage != "clip" and args.cache is None:
        raise ValueError(f"train --stage {args.stage} needs --cache (the AudioSet HDF5 cache)")
    if args.stage == "clip":
        stages.pretrain_clip(cfg, args.out, args.run_dir, args.threads)
    elif args.stage == "stage1":
        stages.train_stage1(cfg, args.cache, args.out, args.run_dir, args.threads, args.init)
    elif args.init is None:
        raise ValueError(f"train --stage {args.stage} needs --init (the previous stage's checkpoint)")
    elif args.stage == "stage2":
        stages.train_stage2(cfg, args.init, args.cache, args.out, args.run_dir, args.threads, args.clip_init)
    else:
        stages.train_stage3(cfg, args.init, args.cache, args.out, args.run_dir, args.threads)


def cmd_import_weights(args) -> None:
    from pipeline.models.weights import model_from_weights
    from pipeline.training.model_io import save_model

    cfg = _cfg(args)
    name = args.name or cfg["model"]["esresnext" if args.stage == "standalone" else "audioclip"]
    model, name, report = model_from_weights(args.weights, name=name)
    if report.replaced or report.kept_initialised:
        raise ValueError(f"{args.weights}: does not cover the whole {name} (replaced {report.replaced}, "
                         f"left as initialised {report.kept_initialised}); a stage must be a complete model")
    kwargs = {"num_classes": model.fc.out_features} if args.stage == "standalone" else {}
    save_model(args.out, model, name, kwargs, {"profile": cfg.profile, "params_hash": cfg.params_hash,
                                               "stage": f"released:{args.stage}", "weights": report.as_dict()})


def cmd_finetune(args) -> None:
    from pipeline.training import stages

    cfg = _cfg(args)
    n_folds = cfg["data"][args.dataset]["folds"]
    folds = args.folds or list(range(1, n_folds + 1))
    bad = [k for k in folds if not 1 <= k <= n_folds]
    if bad or len(set(folds)) != len(folds):
        raise ValueError(f"--folds {' '.join(map(str, folds))}: {args.dataset} has folds 1..{n_folds}, each "
                         f"given at most once" + (f" (not {', '.join(map(str, bad))})" if bad else ""))
    stages.cross_validate(cfg, args.dataset, args.mode, folds, args.init, args.cache, args.out_dir, args.run_dir,
                          args.threads)


def cmd_evaluate(args) -> None:
    from pipeline.evaluation import evaluate
    from pipeline.training.engine import resolve_device

    cfg = _cfg(args)
    device = resolve_device(cfg["device"])
    if args.kind == "querying":
        caches = dict(_named_cache(c) for c in args.cache)
        missing = set(evaluate.PAPER_DATASET_KEYS) - set(caches)
        if missing:
            raise ValueError(f"evaluate querying: --cache NAME=PATH missing for {', '.join(sorted(missing))}")
        evaluate.querying_job(cfg, args.model, args.checkpoint, caches, args.out, device)
        return
    if len(args.cache) != 1:
        raise ValueError(f"evaluate {args.kind}: give exactly one --cache")
    cache = args.cache[0]
    if args.kind == "zeroshot":
        if not args.dataset:
            raise ValueError("evaluate zeroshot needs --dataset")
        evaluate.zeroshot_job(cfg, args.dataset, args.model, args.checkpoint, cache, args.out, device)
    elif args.kind == "audioset":
        evaluate.audioset_job(cfg, args.model, args.checkpoint, cache, args.out, device)
    else:
        evaluate.imagenet_job(cfg, args.model, args.checkpoint, cache, args.out, device)


def _inference_model(args, cfg):
    from pipeline import inference, layout
    from pipeline.training.engine import resolve_device

    checkpoint = args.checkpoint or Path(layout.checkpoint(cfg, "full"))
    if not checkpoint.is_file():
        raise FileNotFoundError(f"{checkpoint}: no such checkpoint" + ("" if args.checkpoint else
                                " (no --checkpoint given and the profile's model is not trained yet: run "
                                "`snakemake --cores all` or pass --checkpoint AudioCLIP-Full-Training.pt)"))
    return inference.load_inference_model(checkpoint, resolve_device(cfg["device"]))


def cmd_classify(args) -> None:
    from pipeline import inference

    cfg = _cfg(args)
    labels = inference.parse_labels(args.labels)
    model, sample_rate = _inference_model(args, cfg)
    template = args.template or cfg["model"]["prompt_template"]
    probs = inference.classify(model, args.files, labels, sample_rate, template)  # (N, K)
    if args.json:
        rows = [{"file": str(f), "probabilities": {label: float(p) for label, p in zip(labels, row)}}
                for f, row in zip(args.files, probs)]
        print(json.dumps(rows, indent=2))
        return
    for f, row in zip(args.files, probs):
        ranked = sorted(zip(labels, row), key=lambda lp: -lp[1])[:3]
        print(f"{f}\t" + "  ".join(f"{label} {p:.3f}" for label, p in ranked))


def cmd_embed(args) -> None:
    import io

    import numpy as np

    from pipeline import inference
    from pipeline.io import write_bytes

    cfg = _cfg(args)
    if args.out.suffix != ".npy":
        raise ValueError(f"--out {args.out}: expected a .npy file")
    model, sample_rate = _inference_model(args, cfg)
    vectors = inference.embed(model, args.inputs, args.modality, sample_rate)  # (N, D) float32
    buf = io.BytesIO()
    np.save(buf, vectors)
    write_bytes(args.out, buf.getvalue())
    print(f"{args.out}: {vectors.shape[0]} x {vectors.shape[1]} {args.modality} embeddings", file=sys.stderr)


def _named_cache(text: Path) -> tuple[str, Path]:
    name, sep, path = str(text).partition("=")
    if not sep:
        raise ValueError(f"--cache {text}: querying expects NAME=PATH")
    return name, Path(path)


def cmd_tables(args) -> None:
    from pipeline.reporting import tables, tracking

    cfg = _cfg(args)
    wanted = args.table or ["table1", "table2", "table3", "table4"]
    built = tables.build_tables(cfg.workdir / "metrics", cfg.profile, only=wanted)
    tables.write_tables(built, args.out_dir)
    if not args.no_mlflow:
        commit = tracking.git_commit()
        for name, df in built.items():
            tracking.log_table_cells(name, df, profile=cfg.profile, params_hash=cfg.params_hash, git_commit=commit)


def cmd_report(args) -> None:
    from pipeline import layout
    from pipeline.reporting.report import write_report

    cfg = _cfg(args)
    made = layout.phase_targets(cfg)["train"]
    checkpoints = {stage: Path(layout.checkpoint(cfg, stage)) for stage in ("clip", "standalone", "partial", "full")
                   if layout.checkpoint(cfg, stage) in made}
    write_report(args.results_dir, Path(cfg.workdir) / "metrics", checkpoints, args.out, cfg.profile)


def cmd_track_jobs(args) -> None:
    from pipeline.io import write_json
    from pipeline.reporting import tracking

    cfg = _cfg(args)
    runs = tracking.log_jobs(args.files, invocation=args.invocation, profile=cfg.profile, params_hash=cfg.params_hash,
                             git_commit=tracking.git_commit())
    write_json(args.out, {"invocation": args.invocation, "runs": runs})


def cmd_metrics_json(args) -> None:
    import pandas as pd

    from pipeline.io import write_json
    from pipeline.reporting import tables

    frames = {}
    for path in args.tables:
        if not path.exists():
            raise FileNotFoundError(f"{path}: table not found")
        frames[path.stem] = pd.read_csv(path)
    write_json(args.out, tables.metrics_summary(frames))


def cmd_restore(args) -> None:
    from pipeline.restore import restore

    restore(remote=args.remote, profile=args.profile)


def cmd_dvc_yaml(args) -> int:
    from pipeline import dvc_stages

    text = dvc_stages.render()
    if args.check:
        current = args.out.read_text(encoding="utf-8") if args.out.exists() else ""
        if current != text:
            print(f"{args.out} is out of date with the Snakemake phases: run `python -m pipeline dvc-yaml`",
                  file=sys.stderr)
            return 1
        return 0
    from pipeline.io import write_text

    write_text(args.out, text)
    return 0


COMMANDS = {
    "generate-data": cmd_generate_data,
    "cache": cmd_cache,
    "acquire": cmd_acquire,
    "fetch-weights": cmd_fetch_weights,
    "cache-merge": cmd_cache_merge,
    "cache-info": cmd_cache_info,
    "train": cmd_train,
    "import-weights": cmd_import_weights,
    "finetune": cmd_finetune,
    "evaluate": cmd_evaluate,
    "classify": cmd_classify,
    "embed": cmd_embed,
    "tables": cmd_tables,
    "report": cmd_report,
    "track-jobs": cmd_track_jobs,
    "metrics-json": cmd_metrics_json,
    "restore": cmd_restore,
    "dvc-yaml": cmd_dvc_yaml,
}
