"""Evaluation jobs: zero-shot and fine-tuned accuracy, AudioSet mAP, ImageNet zero-shot, querying.

Embeddings are computed once per dataset and model (no gradients, eval mode); the metric definitions are in
metrics.py and docs/METRICS.md. Each job writes one metric file in the format of docs/DESIGN.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from pipeline.data import loader
from pipeline.data.cache import open_cache
from pipeline.data.datasets import (AudioCacheDataset, ImageCacheDataset, audio_dataset, class_names, collate,
                                    split_indices, video_indices)
from pipeline.evaluation.metrics import mean_average_precision, precision_recall_curve, retrieval_metrics
from pipeline.io import write_json

PAPER_DATASET_KEYS = ("imagenet", "audioset", "us8k", "esc50")


def _batches(dataset: Dataset, batch_size: int, device: torch.device):
    """Every item in order, in batches on `device` ready for the model (cache datasets finished there)."""
    return loader.model_batches(dataset, range(len(dataset)), batch_size, device, collate=collate)


@torch.no_grad()
def class_text_features(model, names: list[str], template: str, device: torch.device) -> torch.Tensor:
    """(K, D) L2-normalised text embeddings of the class names, formatted with the prompt template."""
    model.eval()
    tokens = model.tokenize([template.format(n) for n in names]).to(device)
    return F.normalize(model.encode_text(tokens), dim=-1)


@torch.no_grad()
def embed(model, dataset: Dataset, batch_size: int, device: torch.device, modality: str = "audio") -> dict[str, Any]:
    """Embeddings of every item: {"features": (N, D) normalised, "label": (N,), "labels": (N, K)}."""
    model.eval()
    feats, labels, multi = [], [], []
    encode = model.encode_audio if modality == "audio" else model.encode_image
    for batch in _batches(dataset, batch_size, device):
        feats.append(F.normalize(encode(batch[modality]).float(), dim=-1).cpu())
        labels.append(batch["label"].cpu())
        if "labels" in batch:
            multi.append(batch["labels"].cpu())
    out = {"features": torch.cat(feats), "label": torch.cat(labels)}
    if multi:
        out["labels"] = torch.cat(multi)
    return out


@torch.no_grad()
def zero_shot_predictions(model, dataset: Dataset, names: list[str], template: str, batch_size: int,
                          device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(predicted class, true class) of every clip: the nearest class-name text embedding."""
    text = class_text_features(model, names, template, device).cpu()
    audio = embed(model, dataset, batch_size, device)
    return (audio["features"] @ text.T).argmax(dim=1), audio["label"]


def zero_shot_accuracy(model, dataset: Dataset, names: list[str], template: str, batch_size: int,
                       device: torch.device) -> float:
    pred, label = zero_shot_predictions(model, dataset, names, template, batch_size, device)
    return float((pred == label).float().mean())


@torch.no_grad()
def standalone_predictions(model, dataset: Dataset, batch_size: int,
                           device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    model.eval()
    preds, labels = [], []
    for batch in _batches(dataset, batch_size, device):
        preds.append(model(batch["audio"]).argmax(dim=1).cpu())
        labels.append(batch["label"].cpu())
    return torch.cat(preds), torch.cat(labels)


def standalone_accuracy(model, dataset: Dataset, batch_size: int, device: torch.device) -> float:
    pred, label = standalone_predictions(model, dataset, batch_size, device)
    return float((pred == label).float().mean())


# --- jobs --------------------------------------------------------------------------------------------
def _record(cfg, kind: str, dataset: str, model: str, checkpoint: Path, n_items: int, metrics: dict,
            fold: int | None = None) -> dict[str, Any]:
    return {"profile": cfg.profile, "params_hash": cfg.params_hash, "kind": kind, "dataset": dataset,
            "model": model, "fold": fold, "n_items": n_items, "checkpoint": str(checkpoint), "metrics": metrics}


def _audio_set(cfg, cache: Path, dataset: str, indices) -> AudioCacheDataset:
    return audio_dataset(cfg.settings, cache, dataset, indices, train=False)


def zeroshot_job(cfg, dataset: str, model_kind: str, checkpoint: Path, cache: Path, out: Path,
                 device: torch.device) -> dict[str, Any]:
    """Zero-shot accuracy on every fold (nothing is trained on the target set, so each fold is a test set)."""
    from pipeline.training.model_io import load_model

    model, _ = load_model(checkpoint, map_location=device)
    model.to(device)
    names = class_names(cache)
    with open_cache(cache) as h5:
        folds = h5["fold"][:]
    everything = _audio_set(cfg, cache, dataset, list(range(len(folds))))
    text = class_text_features(model, names, cfg["model"]["prompt_template"], device).cpu()
    audio = embed(model, everything, cfg["evaluate"]["batch_size"], device)
    correct = ((audio["features"] @ text.T).argmax(dim=1) == audio["label"]).numpy()
    per_fold = {str(int(f)): float(correct[folds == f].mean()) for f in np.unique(folds)}
    record = _record(cfg, "zeroshot", dataset, model_kind, checkpoint, len(folds), {"folds": per_fold})
    write_json(out, record)
    return record


def audioset_job(cfg, model_kind: str, checkpoint: Path, cache: Path, out: Path, device: torch.device) -> dict:
    """AudioSet eval-split mAP. Standalone: sigmoid logits. AudioCLIP: cosine to each class name's text, for
    audio (all clips), image (clips with video, middle frame) and both (their mean, clips with video)."""
    from pipeline.training.model_io import load_model

    model, _ = load_model(checkpoint, map_location=device)
    model.to(device).eval()
    names = class_names(cache)
    eval_idx = split_indices(cache, "eval")
    bs = cfg["evaluate"]["batch_size"]
    metrics: dict[str, float] = {}
    if model_kind == "standalone":
        scores, targets = [], []
        with torch.no_grad():
            for batch in _batches(_audio_set(cfg, cache, "audioset", eval_idx), bs, device):
                scores.append(torch.sigmoid(model(batch["audio"])).cpu())
                targets.append(batch["labels"].cpu())
        metrics["map_audio"] = mean_average_precision(torch.cat(scores), torch.cat(targets))
    else:
        views = audioset_views(cfg, model, cache, eval_idx, device)
        text = class_text_features(model, names, cfg["model"]["prompt_template"], device).cpu()
        a_scores = views["audio"]["features"] @ text.T
        metrics["map_audio"] = mean_average_precision(a_scores, views["audio"]["labels"])
        v = views["video_mask"]
        i_scores = views["image"]["features"] @ text.T
        metrics["map_image"] = mean_average_precision(i_scores, views["image"]["labels"])
        metrics["map_both"] = mean_average_precision((a_scores[v] + i_scores) / 2, views["image"]["labels"])
    record = _record(cfg, "audioset", "audioset", model_kind, checkpoint, len(eval_idx), metrics)
    write_json(out, record)
    return record


def audioset_views(cfg, model, cache: Path, eval_idx: list[int], device) -> dict[str, Any]:
    """Audio embeddings of every eval clip and image embeddings (middle frame) of those with video."""
    from pipeline.models.factory import MODEL_CONFIGS

    bs = cfg["evaluate"]["batch_size"]
    audio = embed(model, _audio_set(cfg, cache, "audioset", eval_idx), bs, device)
    video_idx = video_indices(cache, eval_idx)
    image_size = MODEL_CONFIGS[cfg["model"]["audioclip"]]["vision_cfg"]["image_size"]
    image = embed(model, ImageCacheDataset(cache, image_size, video_idx), bs, device, modality="image")
    with_video = set(video_idx)
    return {"audio": audio, "image": image, "video_mask": torch.tensor([int(i) in with_video for i in eval_idx])}


def imagenet_job(cfg, model_kind: str, checkpoint: Path, cache: Path, out: Path, device: torch.device) -> dict:
    from pipeline.training.model_io import load_model

    model, _ = load_model(checkpoint, map_location=device)
    model.to(device)
    images = _imagenet_embeddings(cfg, model, cache, device)
    text = class_text_features(model, class_names(cache), cfg["model"]["prompt_template"], device).cpu()
    acc = float(((images["features"] @ text.T).argmax(dim=1) == images["label"]).float().mean())
    record = _record(cfg, "imagenet", "imagenet", model_kind, checkpoint, len(images["label"]), {"accuracy": acc})
    write_json(out, record)
    return record


def _imagenet_embeddings(cfg, model, cache: Path, device) -> dict[str, Any]:
    from pipeline.models.factory import MODEL_CONFIGS

    image_size = MODEL_CONFIGS[cfg["model"]["audioclip"]]["vision_cfg"]["image_size"]
    return embed(model, ImageCacheDataset(cache, image_size), cfg["evaluate"]["batch_size"], device, "image")


def _retrieval(similarity, relevance) -> dict[str, Any]:
    """P@1, R@1, mAP (the table) and the 11-point precision-recall curve (the report) of one query pair."""
    return {**retrieval_metrics(similarity, relevance), "pr_curve": precision_recall_curve(similarity, relevance)}


def querying_job(cfg, model_kind: str, checkpoint: Path, caches: dict[str, Path], out: Path,
                 device: torch.device) -> dict:
    """Every (dataset, query, result) pair of the paper's Table 4. Text queries are the class names; a result
    is relevant when it carries the query's class; audio<->image queries are relevant when they share a label."""
    from pipeline.training.model_io import load_model

    model, _ = load_model(checkpoint, map_location=device)
    model.to(device)
    template = cfg["model"]["prompt_template"]
    bs = cfg["evaluate"]["batch_size"]
    results: dict[str, dict[str, float]] = {}

    images = _imagenet_embeddings(cfg, model, caches["imagenet"], device)
    names = class_names(caches["imagenet"])
    text = class_text_features(model, names, template, device).cpu()
    relevance = images["label"][None, :] == torch.arange(len(names))[:, None]
    results["imagenet/text->image"] = _retrieval(text @ images["features"].T, relevance)

    eval_idx = split_indices(caches["audioset"], "eval")
    views = audioset_views(cfg, model, caches["audioset"], eval_idx, device)
    text = class_text_features(model, class_names(caches["audioset"]), template, device).cpu()
    a, i, v = views["audio"], views["image"], views["video_mask"]
    results["audioset/text->image"] = _retrieval(text @ i["features"].T, i["labels"].T.bool())
    results["audioset/text->audio"] = _retrieval(text @ a["features"].T, a["labels"].T.bool())
    shared = (a["labels"][v] @ i["labels"].T) > 0  # (clips with video) x (images): share a label
    results["audioset/audio->image"] = _retrieval(a["features"][v] @ i["features"].T, shared)
    results["audioset/image->audio"] = _retrieval(i["features"] @ a["features"][v].T, shared.T)

    for dataset in ("us8k", "esc50"):
        cache = caches[dataset]
        with open_cache(cache) as h5:
            n = len(h5["fold"])
        audio = embed(model, _audio_set(cfg, cache, dataset, list(range(n))), bs, device)
        names = class_names(cache)
        text = class_text_features(model, names, template, device).cpu()
        relevance = audio["label"][None, :] == torch.arange(len(names))[:, None]
        results[f"{dataset}/text->audio"] = _retrieval(text @ audio["features"].T, relevance)

    record = _record(cfg, "querying", "all", model_kind, checkpoint, len(eval_idx), results)
    write_json(out, record)
    return record
