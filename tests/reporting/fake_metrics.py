"""Fabricated per-job metric files (docs/DESIGN.md layout) with known values, for the reporting tests.

A plain module (not conftest.py) so tests can import its constants under a name no other folder uses.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.io import write_json

FOLDS = {"us8k": [1, 2, 3], "esc50": [1, 2]}  # small fold counts keep hand-computed means readable

# finetune accuracy of fold k = base + 0.01 * k; every source has its own base so a swapped source shows up
FINETUNE_BASE = {
    ("us8k", "standalone"): 0.80, ("us8k", "partial"): 0.85, ("us8k", "full"): 0.87,
    ("esc50", "standalone"): 0.90, ("esc50", "partial"): 0.92, ("esc50", "full"): 0.94,
}
ZEROSHOT_BASE = {("us8k", "partial"): 0.60, ("us8k", "full"): 0.65, ("esc50", "partial"): 0.70, ("esc50", "full"): 0.66}
AUDIOSET = {
    "standalone": {"map_audio": 0.3},
    "partial": {"map_image": 0.081, "map_audio": 0.251, "map_both": 0.2511},
    "full": {"map_image": 0.142, "map_audio": 0.2836, "map_both": 0.3238},
}
IMAGENET = {"partial": 0.4051, "full": 0.2179}
QUERY_KEYS = [
    "imagenet/text->image", "audioset/text->image", "audioset/text->audio", "audioset/audio->image",
    "audioset/image->audio", "us8k/text->audio", "esc50/text->audio",
]


def query_scores(model: str, i: int) -> dict:
    off = 0.0 if model == "partial" else 0.5
    return {metric: round(step * (i + 1) + off, 4) for metric, step in (("p1", 0.01), ("r1", 0.02), ("map", 0.03))}


def write_metrics(root: Path, rel: str, metrics: dict, profile: str, **extra) -> Path:
    path = root / rel
    write_json(path, {
        "profile": profile, "kind": rel.split("/")[0], "dataset": extra.get("dataset"), "model": extra.get("model"),
        "fold": extra.get("fold"), "n_items": 10, "checkpoint": "ckpt.pt", "params_hash": "0123456789ab",
        "metrics": metrics,
    })
    return path


def fabricate(root: Path, profile: str = "embedded") -> Path:
    """Write every metric file the four tables need under root; returns root."""
    for (ds, mode), base in FINETUNE_BASE.items():
        for k in FOLDS[ds]:
            write_metrics(root, f"finetune/{ds}/{mode}/fold{k}.json", {"accuracy": round(base + 0.01 * k, 4),
                                                                       "accuracy_best_epoch": round(base + 0.02 + 0.01 * k, 4)},
                          profile, dataset=ds, model=mode, fold=k)
    for (ds, model), base in ZEROSHOT_BASE.items():
        folds = {str(k): round(base + 0.01 * k, 4) for k in FOLDS[ds]}
        write_metrics(root, f"zeroshot/{ds}/{model}.json", {"folds": folds}, profile, dataset=ds, model=model)
    for model, metrics in AUDIOSET.items():
        write_metrics(root, f"audioset/{model}.json", metrics, profile, dataset="audioset", model=model)
    for model, acc in IMAGENET.items():
        write_metrics(root, f"imagenet/{model}.json", {"accuracy": acc}, profile, dataset="imagenet", model=model)
    for model in ("partial", "full"):
        scores = {key: query_scores(model, i) for i, key in enumerate(QUERY_KEYS)}
        write_metrics(root, f"querying/{model}.json", scores, profile, model=model)
    return root


