"""Live MLflow logging of training epochs (tracking.EpochLogger through the Trainer's on_epoch), its resumption
after a kill, and track-jobs completing the same run."""

from __future__ import annotations

import json
import logging

import pytest
import torch

from pipeline.reporting import tracking
from pipeline.training.engine import OptimSettings, Trainer

JOB = "finetune/toy/full/fold1"
SETTINGS = OptimSettings(optimizer="sgd", epochs=4, batch_size=4, lr=0.1, gamma=0.9, momentum=0.9, nesterov=True,
                         weight_decay=0.0)


class Points(torch.utils.data.Dataset):
    def __init__(self):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(12, 3, generator=g)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i], "index": i}


def _collate(items):
    return {k: torch.stack([torch.as_tensor(i[k]) for i in items]) for k in items[0]}


def _trainer(run_dir, on_epoch, die_in_epoch: int | None = None) -> Trainer:
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    calls = {"steps": 0}

    def loss_fn(m, batch):
        calls["steps"] += 1
        if die_in_epoch is not None and calls["steps"] > 3 * (die_in_epoch - 1):  # 3 steps an epoch
            raise KeyboardInterrupt  # stands for a kill after the last saved epoch
        return m(batch["x"]).pow(2).mean()

    return Trainer(model=model, loss_fn=loss_fn, param_groups=[{"params": model.parameters()}], settings=SETTINGS,
                   train_dataset=Points(), collate=_collate, run_dir=run_dir, device=torch.device("cpu"), seed=1,
                   desc="toy", on_epoch=on_epoch)


@pytest.fixture
def store(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("PIPELINE_INVOCATION", "inv-live")
    return uri


def _job_runs(uri):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(tracking.JOB_EXPERIMENT)
    return client, client.search_runs([exp.experiment_id], filter_string=f"tags.job = '{JOB}'")


def test_epochs_are_logged_as_they_end_and_a_resumed_job_repeats_none(store, tmp_path):
    tags = {"profile": "embedded", "params_hash": "abc", "git_commit": "deadbeef", "kind": "finetune"}
    with pytest.raises(KeyboardInterrupt):
        _trainer(tmp_path / "run", tracking.epoch_logger(JOB, tags, SETTINGS.epochs), die_in_epoch=3).fit()
    client, runs = _job_runs(store)
    assert len(runs) == 1 and runs[0].info.status == "RUNNING"  # two epochs in, visible while the job runs
    run_id = runs[0].info.run_id
    assert [m.step for m in client.get_metric_history(run_id, "loss")] == [1, 2]
    assert runs[0].data.tags["invocation"] == "inv-live" and runs[0].data.tags["kind"] == "finetune"
    assert runs[0].data.tags["git_commit"] == "deadbeef"  # the job's own tags win over the logger's default

    # the restarted job resumes at epoch 3 and logs epochs 3 and 4 into the same run, then finishes it
    history = _trainer(tmp_path / "run", tracking.epoch_logger(JOB, tags, SETTINGS.epochs)).fit()
    client, runs = _job_runs(store)
    assert [r.info.run_id for r in runs] == [run_id] and runs[0].info.status == "FINISHED"
    losses = client.get_metric_history(run_id, "loss")
    assert sorted(m.step for m in losses) == [1, 2, 3, 4]
    assert [round(m.value, 9) for m in sorted(losses, key=lambda m: m.step)] == [round(h["loss"], 9) for h in history]
    parent = client.get_run(runs[0].data.tags["mlflow.parentRunId"])
    assert parent.data.tags["kind"] == "pipeline" and parent.data.tags["invocation"] == "inv-live"

    # track-jobs at the end of the pipeline completes that run: the final metrics, no second copy of the epochs
    out = tmp_path / "metrics" / f"{JOB}.json"
    out.parent.mkdir(parents=True)
    out.write_text(json.dumps({"kind": "finetune", "dataset": "toy", "model": "full", "fold": 1,
                               "metrics": {"accuracy": 0.5}, "history": history}))
    logged = tracking.log_jobs([out], invocation="inv-live", profile="embedded", params_hash="abc",
                               git_commit="deadbeef", tracking_uri=store)
    assert logged == {JOB: run_id}
    assert sorted(m.step for m in client.get_metric_history(run_id, "loss")) == [1, 2, 3, 4]
    final = client.get_run(run_id)
    assert final.data.metrics["accuracy"] == 0.5 and final.data.tags["dataset"] == "toy"


def test_no_live_logging_outside_a_pipeline_invocation(monkeypatch):
    monkeypatch.delenv("PIPELINE_INVOCATION", raising=False)
    assert tracking.epoch_logger(JOB, {}, 4) is None


def test_a_failing_store_never_stops_training(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("PIPELINE_INVOCATION", "inv-broken")
    logger = tracking.EpochLogger(JOB, "inv-broken", {}, SETTINGS.epochs, tracking_uri="unknown-scheme://nowhere")
    with caplog.at_level(logging.WARNING, logger="pipeline.reporting.tracking"):
        history = _trainer(tmp_path / "run", logger).fit()
    assert len(history) == SETTINGS.epochs and logger.failed
    warnings = [r for r in caplog.records if "live logging of finetune/toy/full/fold1 stopped" in r.getMessage()]
    assert len(warnings) == 1  # said once, not once per epoch
