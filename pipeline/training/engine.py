"""One training loop for every stage: SGD with Nesterov momentum, exponential LR decay per epoch,
an atomic checkpoint after every epoch, and resumption from it.

The stage code (stages.py) decides *what* trains (parameter groups, loss, evaluation); this file only
decides *how*. Data order is a function of (seed, epoch), so a job restarted from its last checkpoint sees
the same batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from pipeline.io import save_torch

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "last.pt"


@dataclass(frozen=True)
class OptimSettings:
    optimizer: str  # sgd (the paper: Nesterov momentum) | adam (the released ESResNeXt protocols)
    epochs: int
    batch_size: int
    lr: float
    gamma: float
    momentum: float
    nesterov: bool
    weight_decay: float

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "OptimSettings":
        return cls(**{k: d[k] for k in cls.__dataclass_fields__})


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("params: device is 'cuda' but no CUDA device is visible")
    return torch.device(name)


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        # Same inputs, same numbers: needed for resume-equals-uninterrupted and for DVC/Snakemake parity.
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def build_optimizer(param_groups: list[dict], s: OptimSettings) -> torch.optim.Optimizer:
    """SGD-Nesterov as published, or Adam; each group may override weight_decay (FBSP and logit scales use 0)."""
    groups = []
    for g in param_groups:
        params = [p for p in g["params"] if p.requires_grad]
        if params:
            groups.append({**g, "params": params, "weight_decay": g.get("weight_decay", s.weight_decay)})
    if not groups:
        raise ValueError("nothing to train: every parameter group is empty or frozen")
    if s.optimizer == "adam":
        return torch.optim.Adam(groups, lr=s.lr, weight_decay=s.weight_decay)
    return torch.optim.SGD(groups, lr=s.lr, momentum=s.momentum, nesterov=s.nesterov, weight_decay=s.weight_decay)


class Trainer:
    """Runs `settings.epochs` epochs of `loss_fn(model, batch)`; `eval_fn(model)` after each epoch."""

    def __init__(
        self,
        *,
        model: torch.nn.Module,
        loss_fn: Callable[[torch.nn.Module, dict], torch.Tensor],
        param_groups: list[dict],
        settings: OptimSettings,
        train_dataset: Dataset,
        collate: Callable,
        run_dir: str | Path,
        device: torch.device,
        seed: int,
        num_workers: int = 0,
        eval_fn: Callable[[torch.nn.Module], dict[str, float]] | None = None,
        frozen_modules: list[torch.nn.Module] = (),
        fingerprint: str = "",
        desc: str = "train",
    ) -> None:
        self.model = model.to(device)
        self.loss_fn = loss_fn
        self.settings = settings
        self.dataset = train_dataset
        self.collate = collate
        self.run_dir = Path(run_dir)
        self.device = device
        self.seed = seed
        self.num_workers = num_workers
        self.eval_fn = eval_fn
        self.frozen_modules = list(frozen_modules)
        # What this run is (settings, inputs): a saved state from a different run is never resumed.
        self.fingerprint = fingerprint
        self.desc = desc
        self.optimizer = build_optimizer(param_groups, settings)
        self.scheduler = torch.optim.lr_scheduler.ExponentialLR(self.optimizer, gamma=settings.gamma)
        self.history: list[dict[str, Any]] = []
        self.start_epoch = 0

    # -- checkpointing -------------------------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir / CHECKPOINT_NAME

    def _save(self, epoch: int) -> None:
        save_torch(
            self.checkpoint_path,
            {
                "epoch": epoch,
                "fingerprint": self.fingerprint,
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "history": self.history,
                "torch_rng": torch.get_rng_state(),
                "python_rng": random.getstate(),
            },
        )

    def _resume(self) -> None:
        if not self.checkpoint_path.exists():
            return
        state = torch.load(self.checkpoint_path, map_location=self.device, weights_only=True)
        if state.get("fingerprint") != self.fingerprint:
            log.warning("%s: %s belongs to another configuration or input; starting afresh",
                        self.desc, self.checkpoint_path)
            return
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.history = list(state["history"])
        torch.set_rng_state(state["torch_rng"].cpu())
        random.setstate(_as_tuple(state["python_rng"]))
        self.start_epoch = int(state["epoch"]) + 1
        log.info("resumed %s from %s after epoch %d", self.desc, self.checkpoint_path, state["epoch"])

    # -- the loop ------------------------------------------------------------------------------------
    def _loader(self, epoch: int) -> DataLoader:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)  # per-epoch augmentation randomness, independent of workers
        n = len(self.dataset)
        return DataLoader(
            self.dataset,
            batch_size=self.settings.batch_size,
            shuffle=True,
            generator=g,
            # The released trainer drops the last partial batch; a set smaller than one batch keeps it.
            drop_last=n >= self.settings.batch_size,
            num_workers=self.num_workers,
            collate_fn=self.collate,
            persistent_workers=False,
            pin_memory=self.device.type == "cuda",
        )

    def fit(self) -> list[dict[str, Any]]:
        self._resume()
        for epoch in range(self.start_epoch, self.settings.epochs):
            self.history.append(self._train_epoch(epoch))
            self.scheduler.step()
            self._save(epoch)
        return self.history

    def _train_epoch(self, epoch: int) -> dict[str, Any]:
        self.model.train()
        for module in self.frozen_modules:  # frozen heads keep their BatchNorm statistics
            module.eval()
        lr = self.optimizer.param_groups[0]["lr"]
        total, n_clips, n_steps = 0.0, 0, 0
        t0 = time.perf_counter()
        bar = tqdm(self._loader(epoch), desc=f"{self.desc} epoch {epoch + 1}/{self.settings.epochs}",
                   leave=False, mininterval=2.0)
        for batch in bar:
            batch = _to_device(batch, self.device)
            loss = self.loss_fn(self.model, batch)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"{self.desc}: loss is {loss.item()} at epoch {epoch + 1}, step {n_steps}")
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            total += loss.item()
            n_steps += 1
            n_clips += len(batch["index"])
            bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
        seconds = time.perf_counter() - t0
        record: dict[str, Any] = {
            "epoch": epoch + 1,
            "lr": lr,
            "loss": total / max(n_steps, 1),
            "train_seconds": seconds,
            "clips_per_second": n_clips / seconds if seconds > 0 else 0.0,
        }
        if self.eval_fn is not None:
            record.update(self.eval_fn(self.model))
        log.info("%s %s", self.desc, " ".join(f"{k}={_fmt(v)}" for k, v in record.items()))
        return record


def _to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def _as_tuple(x: Any) -> Any:
    # random.setstate wants nested tuples; torch.load may hand back lists.
    return tuple(_as_tuple(i) for i in x) if isinstance(x, (list, tuple)) else x


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)
