"""MLflow logging of table cells: names, tags, read-back from a sqlite store, and concurrent writers."""

from __future__ import annotations

import multiprocessing as mp
import re
import sqlite3
from pathlib import Path

import pytest
from fake_metrics import fabricate

from pipeline.reporting import tracking
from pipeline.reporting.tables import build_table, measured_cells
from pipeline.reporting.tracking import (
    default_tracking_uri,
    git_commit,
    log_table_cells,
    metric_name,

    with_retry,
)

REPO = Path(__file__).resolve().parents[2]


def test_metric_names_are_sanitised_and_unique(metrics_root):
    names = {}
    for table in ("table1", "table2", "table3", "table4"):
        for cell in measured_cells(table, build_table(table, metrics_root, "embedded")):
            names[cell.key] = metric_name(cell)
    assert names["table3/AudioCLIP (full training)/zero-shot/us8k"] == "table3.audioclip_full_training.zero_shot.us8k"
    assert names["table3/Audio-Head (ESResNeXt, our training)/on-target/esc50"] == (
        "table3.audio_head_esresnext_our_training.on_target.esc50")
    assert names["table4/AudioSet/audio->image/partial/r1"] == "table4.audioset.audio_to_image.partial.r1"
    assert names["table1/AudioSet/mAP"] == "table1.audioset.map"
    assert len(set(names.values())) == len(names) == 3 + (16 + 4) + (10 + 6) + 42
    assert all(re.fullmatch(r"[a-z0-9_.]+", n) for n in names.values())


def test_git_commit(tmp_path):
    assert git_commit(tmp_path) == "unknown"  # not a repository
    assert re.fullmatch(r"[0-9a-f]{40}|unknown", git_commit(REPO))


def test_default_tracking_uri(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert default_tracking_uri(tmp_path) == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking:5000")
    assert default_tracking_uri(tmp_path) == "http://tracking:5000"


def test_retry_only_on_locked_database(monkeypatch):
    monkeypatch.setattr(tracking.time, "sleep", lambda s: None)
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise sqlite3.OperationalError("database is locked")
        return "ok"

    assert with_retry(flaky) == "ok" and len(calls) == 3

    def broken():
        calls.append(1)
        raise ValueError("no such table")

    calls.clear()
    with pytest.raises(ValueError):
        with_retry(broken)
    assert len(calls) == 1  # other errors are not retried

    def always_locked():
        raise sqlite3.OperationalError("database is locked")

    with pytest.raises(sqlite3.OperationalError):
        with_retry(always_locked, retries=2)


def test_refuses_a_table_of_another_profile(metrics_root, tmp_path):
    df = build_table("table1", metrics_root, "embedded")
    with pytest.raises(ValueError, match="profile"):
        log_table_cells("table1", df, profile="paper", params_hash="x", git_commit="y",
                        tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")


def read_runs(uri: str, experiment: str = "audioclip-tables") -> tuple:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    return client, client.search_runs([exp.experiment_id]) if exp else []


def assert_run_holds_table(client, run, table, df, profile):
    """Every measured cell exactly once with its value, its cell tags and the run tags."""
    cells = measured_cells(table, df)
    expected = {metric_name(c): c for c in cells}
    assert set(run.data.metrics) == set(expected)
    for name, cell in expected.items():
        history = client.get_metric_history(run.info.run_id, name)
        assert len(history) == 1, (name, history)
        assert history[0].value == pytest.approx(cell.value)
        tags = run.data.tags
        assert tags[f"cell.{name}.row"] == "/".join(cell.row)
        assert tags[f"cell.{name}.column"] == cell.column
        assert tags[f"cell.{name}.dataset"] == cell.dataset
        assert tags[f"cell.{name}.paper"] == ("n/a" if cell.paper != cell.paper else str(cell.paper))
        assert tags[f"cell.{name}.n_folds"] == ("n/a" if cell.n_folds is None else str(cell.n_folds))
    assert run.data.tags["table"] == table and run.data.tags["profile"] == profile
    assert run.info.status == "FINISHED"


def test_log_table_and_read_back(metrics_root, tmp_path):
    uri = f"sqlite:///{tmp_path}/store/mlflow.db"
    df = build_table("table3", metrics_root, "embedded")
    run_id = log_table_cells("table3", df, profile="embedded", params_hash="abcdef012345", git_commit="c0ffee",
                             tracking_uri=uri)
    client, runs = read_runs(uri)
    assert [r.info.run_id for r in runs] == [run_id]
    run = runs[0]
    assert_run_holds_table(client, run, "table3", df, "embedded")
    assert len(run.data.metrics) == 10 + 6  # 5 of our rows x 2 datasets, the 3 fine-tuned also as paper protocol
    assert run.data.metrics["table3.audioclip_full_training.on_target.us8k"] == 89.0
    assert run.data.metrics["table3.audioclip_full_training.on_target.us8k.paper_protocol"] == 91.0
    assert run.data.tags["cell.table3.audioclip_full_training.on_target.us8k.paper"] == "90.07"
    assert run.data.tags["git_commit"] == "c0ffee" and run.data.tags["params_hash"] == "abcdef012345"
    assert (tmp_path / "store" / "mlflow.db.lock").exists()


def _log_worker(uri, metrics_root, profile, table, barrier):
    # runs in a fresh (spawned) interpreter: build the table, wait for the others, then all write at once
    df = build_table(table, metrics_root, profile)
    barrier.wait(timeout=120)
    log_table_cells(table, df, profile=profile, params_hash="p" * 12, git_commit="c" * 40, tracking_uri=uri)


@pytest.mark.slow
@pytest.mark.reliability
def test_concurrent_writers_into_one_sqlite_store(tmp_path):
    roots = {p: fabricate(tmp_path / "work" / p / "metrics", p) for p in ("embedded", "paper")}
    jobs = [("embedded", t) for t in ("table1", "table2", "table3", "table4")]
    jobs += [("paper", "table3"), ("paper", "table4")]
    uri = f"sqlite:///{tmp_path}/mlflow.db"  # fresh store: the writers also race to create its schema
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(len(jobs))
    procs = [ctx.Process(target=_log_worker, args=(uri, roots[p], p, t, barrier)) for p, t in jobs]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=300)
    assert [proc.exitcode for proc in procs] == [0] * len(jobs)

    client, runs = read_runs(uri)
    assert sorted((r.data.tags["profile"], r.data.tags["table"]) for r in runs) == sorted(jobs)  # one run each
    for run in runs:
        profile, table = run.data.tags["profile"], run.data.tags["table"]
        assert_run_holds_table(client, run, table, build_table(table, roots[profile], profile), profile)


def test_jobs_become_runs_nested_under_their_invocation(tmp_path):
    import json

    import torch
    from mlflow.tracking import MlflowClient

    from pipeline.models import create_model
    from pipeline.training.model_io import save_model

    history = [{"epoch": e, "lr": 0.1 * 0.9 ** (e - 1), "loss": 2.0 / e, "accuracy": 0.2 * e, "train_seconds": 1.0,
                "clips_per_second": 50.0} for e in (1, 2, 3)]
    fold = tmp_path / "metrics/finetune/esc50/full/fold2.json"
    fold.parent.mkdir(parents=True)
    fold.write_text(json.dumps({"kind": "finetune", "dataset": "esc50", "model": "full", "fold": 2, "n_items": 40,
                                "metrics": {"accuracy": 0.6, "accuracy_best_epoch": 0.6}, "history": history}))
    zeroshot = tmp_path / "metrics/zeroshot/us8k/partial.json"
    zeroshot.parent.mkdir(parents=True)
    zeroshot.write_text(json.dumps({"kind": "zeroshot", "dataset": "us8k", "model": "partial",
                                    "metrics": {"folds": {"1": 0.25, "2": 0.5}}}))
    torch.manual_seed(0)
    stage = tmp_path / "stage1.pt"
    save_model(stage, create_model("esresnext-fbsp-tiny"), "esresnext-fbsp-tiny", {}, {"stage": "stage1",
                                                                                     "history": history[:2]})
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    kw = dict(invocation="inv-1", profile="embedded", params_hash="abc", git_commit="deadbeef", tracking_uri=uri)
    runs = tracking.log_jobs([fold, zeroshot, stage], **kw)
    assert sorted(runs) == ["finetune/esc50/full/fold2", "stage1", "zeroshot/us8k/partial"]
    client = MlflowClient(tracking_uri=uri)
    parent = client.search_runs([client.get_experiment_by_name("audioclip-jobs").experiment_id],
                                filter_string="tags.kind = 'pipeline'")
    assert len(parent) == 1 and parent[0].data.tags["invocation"] == "inv-1"
    child = client.get_run(runs["finetune/esc50/full/fold2"])
    assert child.data.tags["mlflow.parentRunId"] == parent[0].info.run_id and child.data.tags["fold"] == "2"
    steps = sorted((m.step, round(m.value, 9)) for m in client.get_metric_history(child.info.run_id, "accuracy"))
    assert steps == [(1, 0.2), (2, 0.4), (3, 0.6), (3, 0.6)]  # each epoch, then the job's final metric
    assert [m.step for m in client.get_metric_history(runs["stage1"], "loss")] == [1, 2]
    assert client.get_run(runs["zeroshot/us8k/partial"]).data.metrics == {"folds.1": 0.25, "folds.2": 0.5}
    again = tracking.log_jobs([fold], **kw)  # the same invocation logs again: one parent, not two
    assert len(client.search_runs([parent[0].info.experiment_id], filter_string="tags.kind = 'pipeline'")) == 1
    assert client.get_run(again["finetune/esc50/full/fold2"]).data.tags["mlflow.parentRunId"] == parent[0].info.run_id
