"""A toy contrastive training run for the distributed and kill tests:
`python toy_training.py OUT [--lr-scaling linear] [--every K] [--step-delay S]`, alone or under
`torchrun --nproc_per_node N`. Rank 0 saves the final weights to OUT; the run's state lives in run-<OUT stem>/.

Two linear encoders map paired (x, y) vectors to embeddings; the loss is the symmetric cross-entropy of the
similarity logits over the *global* batch (features gathered over ranks), as AudioCLIP's contrastive loss is.
No BatchNorm: per-rank statistics would make a distributed run differ from a single-process one by design.
"""
import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from pipeline.training import distributed  # noqa: E402
from pipeline.training.engine import OptimSettings, Speed, Trainer  # noqa: E402


class Pairs(torch.utils.data.Dataset):
    def __init__(self):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(32, 6, generator=g)
        self.y = self.x @ torch.randn(6, 5, generator=g) + 0.1 * torch.randn(32, 5, generator=g)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i], "y": self.y[i], "index": i}


class TwoTowers(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = torch.nn.Linear(6, 4), torch.nn.Linear(5, 4)

    def forward(self, x, y):
        return F.normalize(self.a(x), dim=-1), F.normalize(self.b(y), dim=-1)


STEP_DELAY = [0.0]  # seconds per step: gives a test time to kill the process mid-epoch


def loss_fn(model, batch):
    time.sleep(STEP_DELAY[0])
    fa, fb = model(batch["x"], batch["y"])
    fa, fb = distributed.gather(fa), distributed.gather(fb)  # the global batch
    logits = 10.0 * fa @ fb.T
    target = torch.arange(len(logits))
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def collate(items):
    return {k: torch.stack([torch.as_tensor(i[k]) for i in items]) for k in items[0]}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--lr-scaling", default="none")
    parser.add_argument("--every", type=int, default=None, help="checkpoint every K steps")
    parser.add_argument("--step-delay", type=float, default=0.0)
    args = parser.parse_args()
    STEP_DELAY[0] = args.step_delay
    torch.manual_seed(0)
    model = TwoTowers()
    settings = OptimSettings(optimizer="sgd", epochs=3, batch_size=8, lr=0.5, gamma=0.9, momentum=0.9,
                             nesterov=True, weight_decay=0.0)
    trainer = Trainer(model=model, loss_fn=loss_fn, param_groups=[{"params": model.parameters()}], settings=settings,
                      train_dataset=Pairs(), collate=collate, run_dir=args.out.parent / f"run-{args.out.stem}",
                      device=torch.device("cpu"), seed=3, desc="toy", speed=Speed(lr_scaling=args.lr_scaling),
                      checkpoint_every_steps=args.every)
    history = trainer.fit()
    if distributed.current().is_main:
        torch.save({"state": model.state_dict(), "losses": [h["loss"] for h in history]}, args.out)


if __name__ == "__main__":
    main()
