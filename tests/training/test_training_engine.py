"""The training loop: resumes exactly where it stopped, never from another run's state, fails loudly on NaN."""

from __future__ import annotations

import pytest
import torch

from pipeline.training.engine import OptimSettings, Trainer, build_optimizer

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


def _trainer(run_dir, fingerprint="a", fail_at=None, settings=SETTINGS):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    calls = {"n": 0}

    def loss_fn(m, batch):
        calls["n"] += 1
        if fail_at is not None and calls["n"] == fail_at:
            raise KeyboardInterrupt("killed")  # an interruption in the middle of an epoch
        return torch.nn.functional.cross_entropy(m(batch["x"]), batch["y"])

    return Trainer(model=model, loss_fn=loss_fn, param_groups=[{"params": model.parameters()}], settings=settings,
                   train_dataset=Toy(), collate=_collate, run_dir=run_dir, device=torch.device("cpu"), seed=1,
                   fingerprint=fingerprint, desc="toy")


def test_an_interrupted_run_resumes_and_ends_like_an_uninterrupted_one(tmp_path):
    straight = _trainer(tmp_path / "straight")
    straight.fit()
    with pytest.raises(KeyboardInterrupt):
        _trainer(tmp_path / "resumed", fail_at=5).fit()  # 3 steps per epoch: dies in epoch 2
    resumed = _trainer(tmp_path / "resumed")
    history = resumed.fit()
    assert resumed.start_epoch == 1  # epoch 1 was checkpointed, epoch 2 is redone
    assert [h["epoch"] for h in history] == [1, 2, 3]
    for a, b in zip(straight.model.parameters(), resumed.model.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert [h["loss"] for h in history] == [h["loss"] for h in straight.history]


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
