"""Pipeline checkpoints: a model's weights together with the factory name and arguments that rebuild it.

A stage's output file is `{"model_name", "model_kwargs", "state_dict", "meta"}`: plain tensors, strings and
numbers, so it loads with `weights_only=True` and rebuilds the exact network without guessing its size.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from pipeline.io import save_torch
from pipeline.models.checkpoints import load_state_dict_strict
from pipeline.models.factory import create_model


def save_model(path: str | Path, model: torch.nn.Module, name: str, kwargs: dict[str, Any], meta: dict[str, Any]) -> None:
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    save_torch(path, {"model_name": name, "model_kwargs": dict(kwargs), "state_dict": state, "meta": dict(meta)})


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild the model stored at `path`; returns (model, meta). Strict: every key must match."""
    try:
        blob = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: checkpoint not found") from None
    missing = {"model_name", "model_kwargs", "state_dict"} - set(blob) if isinstance(blob, dict) else {"model_name"}
    if missing:
        raise ValueError(f"{path}: not a pipeline checkpoint (missing {', '.join(sorted(missing))})")
    model = create_model(blob["model_name"], **blob["model_kwargs"])
    load_state_dict_strict(model, blob["state_dict"])
    meta = dict(blob.get("meta", {}))
    meta.update(model_name=blob["model_name"], model_kwargs=blob["model_kwargs"])
    return model, meta
