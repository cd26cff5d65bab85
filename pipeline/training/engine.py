"""One training loop for every stage: SGD with Nesterov momentum, exponential LR decay per epoch,
atomic checkpoints after every epoch and every few minutes inside one, and resumption from the exact step.

The stage code (stages.py) decides *what* trains (parameter groups, loss, evaluation); this file only
decides *how*. Data order is a function of (seed, epoch) (EpochOrder), augmentations of (seed, epoch, clip)
(datasets.py), so a job restarted from a checkpoint taken after step k of epoch e skips the first k batches of
the same permutation and, in deterministic mode, ends with the same weights and metrics as an uninterrupted
run. A checkpoint holds the model, optimizer, scheduler, RNG states, the history and the partial epoch's
running sums. SIGTERM (SLURM preemption, `scancel`) saves a checkpoint at the next step boundary and stops.

Speed (the Speed settings): bf16 autocast, channels_last, torch.compile, and data parallel over the ranks of a
torchrun launch (distributed.py): each rank takes its slice of every global batch, `settings.batch_size` stays
the global batch and the learning rate does not change with the device count unless lr_scaling='linear' (the
released trainer's lr x number of GPUs). Only rank 0 writes checkpoints and evaluates.
"""

from __future__ import annotations

import logging
import random
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler
from tqdm import tqdm

from pipeline.data import loader
from pipeline.io import save_torch
from pipeline.training import distributed

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "last.pt"


PRECISIONS = ("fp32", "bf16")
LR_SCALINGS = ("none", "linear")


@dataclass(frozen=True)
class Speed:
    precision: str = "fp32"  # bf16: autocast the forward pass (weights and optimizer stay fp32)
    channels_last: bool = False  # NHWC memory format for the convolutions (faster on tensor cores)
    compile: bool = False  # torch.compile the model
    lr_scaling: str = "none"  # linear: lr x world size (the released trainer's rule)

    def __post_init__(self):
        if self.precision not in PRECISIONS or self.lr_scaling not in LR_SCALINGS:
            raise ValueError(f"precision must be one of {PRECISIONS} and lr_scaling one of {LR_SCALINGS}, "
                             f"got {self.precision!r} and {self.lr_scaling!r}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Speed":
        return cls(**{k: d[k] for k in cls.__dataclass_fields__})


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


def seed_everything(seed: int, deterministic: bool, compiled: bool = False) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        # Same inputs, same numbers: needed for resume-equals-uninterrupted and for DVC/Snakemake parity.
        if compiled:
            torch.use_deterministic_algorithms(True, warn_only=True)
        else:
            # the same switch without the public wrapper, which imports torch._inductor (1.3 s of every job's
            # start-up here) only to set inductor's own flag, which matters only under torch.compile
            torch._C._set_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def build_optimizer(param_groups: list[dict], s: OptimSettings, lr_scale: float = 1.0) -> torch.optim.Optimizer:
    """SGD-Nesterov as published, or Adam; each group may override weight_decay (FBSP and logit scales use 0)."""
    groups = []
    for g in param_groups:
        params = [p for p in g["params"] if p.requires_grad]
        if params:
            groups.append({**g, "params": params, "weight_decay": g.get("weight_decay", s.weight_decay)})
    if not groups:
        raise ValueError("nothing to train: every parameter group is empty or frozen")
    lr = s.lr * lr_scale
    if s.optimizer == "adam":
        return torch.optim.Adam(groups, lr=lr, weight_decay=s.weight_decay)
    return torch.optim.SGD(groups, lr=lr, momentum=s.momentum, nesterov=s.nesterov, weight_decay=s.weight_decay)


class Preempted(SystemExit):
    """SIGTERM arrived: the state was saved at a step boundary; rerunning the job resumes from it."""

    def __init__(self, desc: str, epoch: int, step: int):
        super().__init__(f"{desc}: stopped by SIGTERM after step {step} of epoch {epoch + 1}; state saved, "
                         f"rerun to resume")


class EpochOrder(Sampler[int]):
    """The clips of one epoch in a permutation fixed by (seed, epoch), from batch `start_batch` on.

    With drop_last the permutation is cut to whole batches first (the released trainer drops the last partial
    batch), so skipping k batches on resume skips exactly what k steps consumed."""

    def __init__(self, n: int, batch_size: int, seed: int, epoch: int, start_batch: int = 0, drop_last: bool = True,
                 rank: int = 0, world_size: int = 1):
        if batch_size % world_size:
            raise ValueError(f"batch size {batch_size} does not split evenly over {world_size} ranks")
        if world_size > 1 and n < batch_size:  # a rank with no clips would leave the others waiting forever
            raise ValueError(f"{n} clips are fewer than one global batch of {batch_size} over {world_size} ranks")
        self.n, self.batch_size, self.start = n, batch_size, start_batch * batch_size
        self.drop_last = drop_last and n >= batch_size  # a set smaller than one batch keeps its only batch
        self.generator_seed = seed * 1_000_003 + epoch
        self.rank, self.world_size = rank, world_size

    def _order(self) -> list[int]:
        g = torch.Generator().manual_seed(self.generator_seed)
        order = torch.randperm(self.n, generator=g).tolist()
        if self.drop_last:
            order = order[: self.n // self.batch_size * self.batch_size]
        order = order[self.start:]
        if self.world_size == 1:
            return order
        # rank r takes the r-th of world_size equal slices of every global batch
        local = self.batch_size // self.world_size
        return [i for b in range(0, len(order), self.batch_size)
                for i in order[b + self.rank * local: b + (self.rank + 1) * local]]

    def __iter__(self) -> Iterator[int]:
        return iter(self._order())

    def __len__(self) -> int:
        return len(self._order())


class Trainer:
    """Runs `settings.epochs` epochs of `loss_fn(model, batch)`; `eval_fn(model)` after each epoch.

    checkpoint_seconds / checkpoint_every_steps: also save inside an epoch after that much time / that many
    steps (None: only at epoch ends)."""

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
        checkpoint_seconds: float | None = None,
        checkpoint_every_steps: int | None = None,
        speed: Speed = Speed(),
        on_epoch: Callable[[list[dict[str, Any]]], None] | None = None,
    ) -> None:
        self.dist, device = distributed.init(device)
        self.speed = speed
        self.model = model.to(device)
        if speed.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        # what the loss function calls: DDP (gradient averaging over ranks) and/or compiled, else the model
        self.train_model: torch.nn.Module = self.model
        if self.dist.enabled:
            self.train_model = _DDP(self.model, device_ids=[device.index] if device.type == "cuda" else None)
        if speed.compile:
            self.train_model = torch.compile(self.train_model)
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
        lr_scale = self.dist.world_size if speed.lr_scaling == "linear" else 1
        self.optimizer = build_optimizer(param_groups, settings, lr_scale)
        self.scheduler = torch.optim.lr_scheduler.ExponentialLR(self.optimizer, gamma=settings.gamma)
        self.checkpoint_seconds = checkpoint_seconds
        self.checkpoint_every_steps = checkpoint_every_steps
        self.on_epoch = on_epoch  # called with the history after each saved epoch (live tracking), on rank 0
        self.history: list[dict[str, Any]] = []
        self.start_epoch = 0
        self.start_step = 0  # batches of start_epoch already trained (a mid-epoch checkpoint)
        self.partial: dict[str, float] = {}  # that epoch's running sums so far
        self._stop_requested = False

    # -- checkpointing -------------------------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir / CHECKPOINT_NAME

    def _save(self, epoch: int, step: int, sums: dict[str, float]) -> None:
        """State before batch `step` of `epoch` (step 0: the epoch has not started); written by rank 0."""
        if not self.dist.is_main:
            distributed.barrier()  # the others wait until the file is complete
            return
        save_torch(
            self.checkpoint_path,
            {
                "epoch": epoch,
                "step": step,
                "sums": dict(sums),
                "fingerprint": self.fingerprint,
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "history": self.history,
                "torch_rng": torch.get_rng_state(),
                "python_rng": random.getstate(),
                "numpy_rng": _numpy_state(),
            },
        )
        distributed.barrier()

    def _resume(self) -> None:
        if not self.checkpoint_path.exists():
            return
        state = torch.load(self.checkpoint_path, map_location=self.device, weights_only=True)
        if state.get("fingerprint") != self.fingerprint or "step" not in state:
            log.warning("%s: %s belongs to another configuration, input or format; starting afresh",
                        self.desc, self.checkpoint_path)
            return
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.history = list(state["history"])
        torch.set_rng_state(state["torch_rng"].cpu())
        random.setstate(_as_tuple(state["python_rng"]))
        _set_numpy_state(state["numpy_rng"])
        self.start_epoch, self.start_step = int(state["epoch"]), int(state["step"])
        self.partial = {k: float(v) for k, v in state["sums"].items()}
        log.info("resumed %s from %s at epoch %d, step %d", self.desc, self.checkpoint_path, self.start_epoch + 1,
                 self.start_step)

    # -- the loop ------------------------------------------------------------------------------------
    def _batches(self, epoch: int, start_batch: int) -> Iterator[dict]:
        """This rank's batches of the epoch from batch `start_batch` on, on the device and ready for the model.
        A cache dataset (read_item/finish) is read by pipeline.data.loader's threads and finished here; any other
        Dataset goes through a DataLoader with `num_workers` processes."""
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)  # per-epoch augmentation randomness, independent of workers
        order = EpochOrder(len(self.dataset), self.settings.batch_size, self.seed, epoch, start_batch,
                           rank=self.dist.rank, world_size=self.dist.world_size)
        # the DataLoader path gets its own generator: it otherwise draws its workers' base seed from the global
        # RNG, which would shift that stream by one draw on every resume
        return loader.model_batches(self.dataset, order, self.settings.batch_size // self.dist.world_size, self.device,
                                    workers=self.num_workers, collate=self.collate,
                                    generator=torch.Generator().manual_seed(order.generator_seed))

    def fit(self) -> list[dict[str, Any]]:
        self._resume()
        self._epoch_done()  # epochs a killed run saved but may not have reported
        previous = signal.signal(signal.SIGTERM, self._request_stop)
        try:
            for epoch in range(self.start_epoch, self.settings.epochs):
                start = self.start_step if epoch == self.start_epoch else 0
                sums = self.partial if epoch == self.start_epoch else {}
                self.history.append(self._train_epoch(epoch, start, sums))
                self.scheduler.step()
                self._save(epoch + 1, 0, {})
                self._epoch_done()
        finally:
            signal.signal(signal.SIGTERM, previous)
        return self.history

    def _epoch_done(self) -> None:
        if self.on_epoch is not None and self.history and self.dist.is_main:
            self.on_epoch(self.history)

    def _request_stop(self, signum, frame) -> None:
        self._stop_requested = True  # acted on at the next step boundary, where the state is consistent

    def _train_epoch(self, epoch: int, start_batch: int, sums: dict[str, float]) -> dict[str, Any]:
        self.model.train()
        for module in self.frozen_modules:  # frozen heads keep their BatchNorm statistics
            module.eval()
        lr = self.optimizer.param_groups[0]["lr"]
        sums = {"loss": 0.0, "steps": 0.0, "clips": 0.0, "seconds": 0.0, "data_seconds": 0.0, **sums}
        step = start_batch
        t0 = last_save = waited = time.perf_counter()
        bar = tqdm(self._batches(epoch, start_batch), desc=f"{self.desc} epoch {epoch + 1}/{self.settings.epochs}",
                   leave=False, mininterval=2.0)
        for batch in bar:
            # blocked on the loader (and, for cache datasets, the batched augmentation on the device): should be ~0
            sums["data_seconds"] += time.perf_counter() - waited
            if self.speed.channels_last and torch.is_tensor(batch.get("image")):
                batch["image"] = batch["image"].contiguous(memory_format=torch.channels_last)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.speed.precision == "bf16"):
                loss = self.loss_fn(self.train_model, batch)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"{self.desc}: loss is {loss.item()} at epoch {epoch + 1}, step {step}")
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            step += 1
            sums["loss"] += loss.item()
            sums["steps"] += 1
            sums["clips"] += len(batch["index"]) * self.dist.world_size
            bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
            now = time.perf_counter()
            due = (self.checkpoint_every_steps and step % self.checkpoint_every_steps == 0) or \
                (self.checkpoint_seconds is not None and now - last_save >= self.checkpoint_seconds)
            stop = self._stop_requested
            if self.dist.enabled:  # every rank stops at the same step, or the collectives would hang
                flag = torch.tensor([float(stop)], device=self.device)
                torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
                stop = bool(flag.item())
            if due or stop:
                self._save(epoch, step, {**sums, "seconds": sums["seconds"] + now - t0})
                last_save = now
                if stop:
                    raise Preempted(self.desc, epoch, step)
            waited = time.perf_counter()
        seconds = sums["seconds"] + time.perf_counter() - t0
        record: dict[str, Any] = {
            "epoch": epoch + 1,
            "lr": lr,
            "loss": sums["loss"] / max(sums["steps"], 1),
            "train_seconds": seconds,
            "clips_per_second": sums["clips"] / seconds if seconds > 0 else 0.0,
            "data_wait_share": sums["data_seconds"] / seconds if seconds > 0 else 0.0,  # of the epoch's time
        }
        if self.eval_fn is not None:
            record.update(distributed.broadcast(self.eval_fn(self.model) if self.dist.is_main else None))
        log.info("%s %s", self.desc, " ".join(f"{k}={_fmt(v)}" for k, v in record.items()))
        return record


class _DDP(torch.nn.parallel.DistributedDataParallel):
    """DDP that also answers the wrapped model's own methods (tokenize, loss_ttf, encode_*), so the stages'
    loss functions are the same with and without it."""

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.module, name)


def _numpy_state() -> dict[str, Any]:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos, "has_gauss": has_gauss,
            "cached": cached}


def _set_numpy_state(state: dict[str, Any]) -> None:
    np.random.set_state((state["name"], state["keys"].numpy().astype(np.uint32), int(state["pos"]),
                         int(state["has_gauss"]), float(state["cached"])))


def _as_tuple(x: Any) -> Any:
    # random.setstate wants nested tuples; torch.load may hand back lists.
    return tuple(_as_tuple(i) for i in x) if isinstance(x, (list, tuple)) else x


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)
