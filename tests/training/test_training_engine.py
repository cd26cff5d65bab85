"""The training loop: resumes exactly where it stopped, never from another run's state, fails loudly on NaN."""

from __future__ import annotations

import os
import random
import signal

import numpy as np
import pytest
import torch

from pipeline.training.engine import EpochOrder, OptimSettings, Preempted, Trainer, build_optimizer, seed_everything

SETTINGS = OptimSettings(optimizer="sgd", epochs=3, batch_size=4, lr=0.1, gamma=0.9, momentum=0.9, nesterov=True,
                         weight_decay=5e-4)


class Toy(torch.utils.data.Dataset):
    def __init__(self):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(12, 3, generator=g)
        self.y = (self.x.sum(dim=1) > 0).long()

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i], "y": self.y[i], "index": i}


def _collate(batch):
    return {k: torch.stack([torch.as_tensor(b[k]) for b in batch]) for k in batch[0]}


def _trainer(run_dir, fingerprint="a", fail_at=None, settings=SETTINGS, every=None, sigterm_at=None):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    calls = {"n": 0}

    def loss_fn(m, batch):
        calls["n"] += 1
        if fail_at is not None and calls["n"] == fail_at:
            raise KeyboardInterrupt("killed")  # an interruption in the middle of an epoch
        if sigterm_at is not None and calls["n"] == sigterm_at:
            os.kill(os.getpid(), signal.SIGTERM)  # what SLURM sends before it preempts a job
        # a draw from every global RNG: a resumed run must continue their streams, not restart them
        noise = 1e-3 * (torch.rand(()) + float(np.random.rand()) + random.random())
        return torch.nn.functional.cross_entropy(m(batch["x"]), batch["y"]) + noise

    trainer = Trainer(model=model, loss_fn=loss_fn, param_groups=[{"params": model.parameters()}], settings=settings,
                      train_dataset=Toy(), collate=_collate, run_dir=run_dir, device=torch.device("cpu"), seed=1,
                      fingerprint=fingerprint, desc="toy", checkpoint_every_steps=every)
    trainer.calls = calls
    return trainer


def _same_run(a, b):
    for x, y in zip(a.model.parameters(), b.model.parameters()):
        torch.testing.assert_close(x, y, rtol=0, atol=0)
    assert [h["loss"] for h in a.history] == [h["loss"] for h in b.history]
    assert [h["epoch"] for h in b.history] == [1, 2, 3]


def test_an_interrupted_run_resumes_and_ends_like_an_uninterrupted_one(tmp_path):
    random.seed(0), np.random.seed(0)
    straight = _trainer(tmp_path / "straight")
    straight.fit()
    random.seed(0), np.random.seed(0)
    with pytest.raises(KeyboardInterrupt):
        _trainer(tmp_path / "resumed", fail_at=5).fit()  # 3 steps per epoch: dies in epoch 2
    resumed = _trainer(tmp_path / "resumed")
    resumed.fit()
    assert (resumed.start_epoch, resumed.start_step) == (1, 0)  # epoch 1 was checkpointed, epoch 2 is redone
    _same_run(straight, resumed)


@pytest.mark.reliability
def test_a_run_killed_mid_epoch_resumes_at_the_step_it_saved(tmp_path):
    random.seed(0), np.random.seed(0)
    straight = _trainer(tmp_path / "straight")
    straight.fit()
    random.seed(0), np.random.seed(0)
    with pytest.raises(KeyboardInterrupt):
        _trainer(tmp_path / "resumed", every=1, fail_at=6).fit()  # dies in step 3 of epoch 2, after 5 saved steps
    random.seed(123), np.random.seed(123)  # a new process: the saved RNG states must win over whatever is set
    resumed = _trainer(tmp_path / "resumed", every=1)
    resumed.fit()
    assert (resumed.start_epoch, resumed.start_step) == (1, 2)
    assert all(0 <= h["data_wait_share"] < 1 for h in resumed.history)  # time blocked on the loader
    assert resumed.calls["n"] == 9 - 5  # only the steps that were not saved are trained again
    _same_run(straight, resumed)


@pytest.mark.reliability
def test_sigterm_saves_at_a_step_boundary_and_stops(tmp_path):
    random.seed(0), np.random.seed(0)
    straight = _trainer(tmp_path / "straight")
    straight.fit()
    random.seed(0), np.random.seed(0)
    with pytest.raises(Preempted, match="stopped by SIGTERM after step 1 of epoch 3"):
        _trainer(tmp_path / "preempted", sigterm_at=7).fit()  # no periodic checkpoints: SIGTERM alone saves
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is gone with the trainer
    resumed = _trainer(tmp_path / "preempted")
    resumed.fit()
    assert (resumed.start_epoch, resumed.start_step) == (2, 1) and resumed.calls["n"] == 2
    _same_run(straight, resumed)


def test_epoch_order_is_a_function_of_seed_and_epoch():
    a = list(EpochOrder(10, 3, seed=1, epoch=0))
    assert len(a) == 9 and len(set(a)) == 9  # whole batches only (drop_last)
    assert a == list(EpochOrder(10, 3, seed=1, epoch=0)) and a != list(EpochOrder(10, 3, seed=1, epoch=1))
    assert list(EpochOrder(10, 3, seed=1, epoch=0, start_batch=2)) == a[6:]
    assert len(list(EpochOrder(2, 3, seed=1, epoch=0))) == 2  # smaller than one batch: kept


def test_state_of_another_configuration_is_not_resumed(tmp_path):
    _trainer(tmp_path, fingerprint="old").fit()
    fresh = _trainer(tmp_path, fingerprint="new")
    fresh.fit()
    assert fresh.start_epoch == 0 and len(fresh.history) == 3


def test_a_finished_run_is_not_trained_again(tmp_path):
    _trainer(tmp_path).fit()
    again = _trainer(tmp_path, fail_at=1)  # would raise on its first step
    assert len(again.fit()) == 3 and again.start_epoch == 3


def test_a_nan_loss_stops_training_naming_the_epoch(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    trainer = Trainer(model=model, loss_fn=lambda m, b: m(b["x"]).sum() * float("nan"),
                      param_groups=[{"params": model.parameters()}], settings=SETTINGS, train_dataset=Toy(),
                      collate=_collate, run_dir=tmp_path, device=torch.device("cpu"), seed=0, desc="toy")
    with pytest.raises(FloatingPointError, match="toy: loss is nan at epoch 1"):
        trainer.fit()
    assert not (tmp_path / "last.pt").exists()


def test_optimizer_choice_and_groups_without_weight_decay():
    a, b = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))
    sgd = build_optimizer([{"params": [a]}, {"params": [b], "weight_decay": 0.0}], SETTINGS)
    assert isinstance(sgd, torch.optim.SGD) and sgd.param_groups[0]["nesterov"]
    assert [g["weight_decay"] for g in sgd.param_groups] == [5e-4, 0.0]
    adam = build_optimizer([{"params": [a]}], OptimSettings(**{**SETTINGS.__dict__, "optimizer": "adam"}))
    assert isinstance(adam, torch.optim.Adam)
    frozen = torch.nn.Parameter(torch.zeros(1), requires_grad=False)
    with pytest.raises(ValueError, match="nothing to train"):
        build_optimizer([{"params": [frozen]}], SETTINGS)


@pytest.mark.parametrize("compiled", [False, True])
def test_seed_everything_switches_deterministic_algorithms_on_with_warnings_only(compiled):
    """Both ways of switching (the public wrapper under torch.compile, torch's own switch otherwise) leave torch
    in the same state; the test restores it afterwards."""
    before = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    try:
        torch.use_deterministic_algorithms(False)
        seed_everything(3, deterministic=True, compiled=compiled)
        assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()
        assert torch.initial_seed() == 3 and not torch.backends.cudnn.benchmark
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
