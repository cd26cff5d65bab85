"""MLflow tracking of the tables: every measured cell of our rows becomes one metric of one run per table.

A run is one invocation of `log_table_cells` (one table, one profile). MLflow tags belong to a run, not to a
metric, so what describes a single cell is stored as run tags named after the metric:
    metric  table3.audioclip_full_training.zero_shot.us8k = 68.78       (percent, like the table)
    tags    cell.table3.audioclip_full_training.zero_shot.us8k.paper = 68.78, ... .row, .column, .dataset,
            .n_folds, .std, .ci95
and the run itself carries table, profile, git_commit and params_hash.

Parallel safety. Snakemake may run the four table jobs at once, all writing to one sqlite file. SQLite allows
one writer at a time and answers a second with "database is locked" after a short busy timeout; worse, the
first use of a fresh store runs MLflow's schema migrations, which break when two processes run them together.
So for a sqlite store every writer takes an exclusive fcntl.flock on `<store>.lock` for the whole logging
session (creation and migration included), and each MLflow call is still retried with backoff on "database is
locked", which covers readers that do not take our lock (e.g. `mlflow ui`). Each retried call is one
transaction, so a retry never logs a value twice. Other stores (an MLflow server) are used without the lock;
there the get-or-create of an experiment or of an invocation's parent run must tolerate a concurrent
writer (`_experiment_id`, `_invocation_parent`).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import math
import os
import random
import re
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

import pandas as pd

from pipeline.reporting.tables import Cell, measured_cells

T = TypeVar("T")
log = logging.getLogger(__name__)

LOCK_TIMEOUT_S = 600.0  # give up rather than hang a Snakemake job forever behind a stuck writer
RETRIES = 8
TAGS_PER_BATCH = 100  # MLflow's limit for params + tags in one log_batch


def git_commit(cwd: str | Path | None = None) -> str:
    """HEAD of the repository at `cwd` (default: the current directory); 'unknown' outside git."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


def default_tracking_uri(repo_root: str | Path | None = None) -> str:
    """$MLFLOW_TRACKING_URI, else sqlite:///<repo_root>/mlflow.db (repo_root defaults to the current directory)."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return f"sqlite:///{Path(repo_root or Path.cwd()).resolve() / 'mlflow.db'}"


def metric_name(cell: Cell) -> str:
    """table3 / AudioCLIP (full training) / zero-shot / us8k -> table3.audioclip_full_training.zero_shot.us8k"""
    parts = [cell.table, *cell.row, *cell.label.split("/")]
    return ".".join(_slug(p) for p in parts if p)


def _slug(text: str) -> str:
    text = text.replace("->", " to ")  # keep retrieval direction readable: text_to_audio, audio_to_image
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def _tag_value(x: Any) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return str(x)


# -----------------------------------------------------------------------------
# locking and retrying


def _sqlite_path(uri: str) -> Path | None:
    # SQLAlchemy: sqlite:///relative/path, sqlite:////absolute/path
    return Path(uri[len("sqlite:///") :]) if uri.startswith("sqlite:///") else None


@contextlib.contextmanager
def _store_lock(uri: str, timeout: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """Exclusive flock on <db>.lock for sqlite stores; nothing for other stores."""
    db = _sqlite_path(uri)
    if db is None:
        yield
        return
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{db}.lock", "a") as lock:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"could not lock {db}.lock within {timeout:.0f} s") from None
                time.sleep(0.05 + 0.1 * random.random())
        try:
            yield
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def _is_locked_error(err: BaseException) -> bool:
    return "database is locked" in str(err) or "database table is locked" in str(err)


def with_retry(fn: Callable[[], T], retries: int = RETRIES, base_delay: float = 0.1) -> T:
    """fn(), retried with jittered exponential backoff while sqlite says the database is locked."""
    for attempt in range(retries + 1):
        try:
            return fn()
        except Exception as err:  # MLflow wraps SQLAlchemy's OperationalError in MlflowException
            if attempt == retries or not _is_locked_error(err):
                raise
            time.sleep(base_delay * 2**attempt * (0.5 + random.random()))
    raise AssertionError("unreachable")


# -----------------------------------------------------------------------------
# logging


def _experiment_id(client: Any, name: str) -> str:
    """Id of experiment `name`, created on first use. Writers that do not share our lock (clients of a tracking
    server) may create it between our look-up and our create: then theirs is used."""
    from mlflow.exceptions import MlflowException

    exp = with_retry(lambda: client.get_experiment_by_name(name))
    if exp is not None:
        return exp.experiment_id
    try:
        return with_retry(lambda: client.create_experiment(name))
    except MlflowException:
        exp = with_retry(lambda: client.get_experiment_by_name(name))
        if exp is None:
            raise
        return exp.experiment_id


def log_table_cells(
    table_name: str,
    df: pd.DataFrame,
    *,
    profile: str,
    params_hash: str,
    git_commit: str,
    tracking_uri: str | None = None,
    experiment: str = "audioclip-tables",
    repo_root: str | Path | None = None,
) -> str:
    """Log every measured cell of our rows of one table as metrics of one new MLflow run; returns the run id."""
    if set(df["profile"]) != {profile}:
        raise ValueError(f"{table_name}: table rows have profile {sorted(set(df['profile']))}, logging as {profile!r}")
    cells = measured_cells(table_name, df)
    names = [metric_name(c) for c in cells]
    if len(set(names)) != len(names):
        raise ValueError(f"{table_name}: two cells sanitise to the same metric name: {names}")

    from mlflow.entities import Metric, RunTag  # mlflow takes seconds to import: only once there is work
    from mlflow.tracking import MlflowClient

    now = int(time.time() * 1000)
    metrics = [Metric(name, c.value, now, 0) for name, c in zip(names, cells)]
    cell_tags = []
    for name, c in zip(names, cells):
        described = {
            "row": "/".join(c.row), "column": c.column, "dataset": c.dataset, "n_folds": c.n_folds,
            "paper": c.paper, "std": c.std, "ci95": c.ci95,
        }
        cell_tags += [RunTag(f"cell.{name}.{k}", _tag_value(v)) for k, v in described.items()]
    run_tags = {
        "table": table_name, "profile": profile, "git_commit": git_commit, "params_hash": params_hash,
        "n_cells": str(len(cells)), "caption": str(df.attrs.get("caption", "")),
    }

    uri = tracking_uri or default_tracking_uri(repo_root)
    with _store_lock(uri):
        client = with_retry(lambda: MlflowClient(tracking_uri=uri))
        exp_id = _experiment_id(client, experiment)
        run = with_retry(lambda: client.create_run(exp_id, tags=run_tags, run_name=f"{table_name}-{profile}"))
        run_id = run.info.run_id
        try:
            with_retry(lambda: client.log_batch(run_id, metrics=metrics))
            for i in range(0, len(cell_tags), TAGS_PER_BATCH):
                chunk = cell_tags[i : i + TAGS_PER_BATCH]
                with_retry(lambda: client.log_batch(run_id, tags=chunk))
        except BaseException:
            with contextlib.suppress(Exception):
                with_retry(lambda: client.set_terminated(run_id, "FAILED"))
            raise
        with_retry(lambda: client.set_terminated(run_id, "FINISHED"))
    return run_id


# -----------------------------------------------------------------------------
# training and evaluation jobs: one run per job, nested under one run per pipeline invocation

JOB_EXPERIMENT = "audioclip-jobs"
HISTORY_METRICS = ("loss", "lr", "accuracy", "clips_per_second", "train_seconds", "data_wait_share")


def job_record(path: str | Path) -> dict[str, Any]:
    """What one job left behind, as {name, tags, history, metrics}: a metric JSON (fine-tuning, evaluation) or
    a stage checkpoint (its meta holds the per-epoch history)."""
    path = Path(path)
    if path.suffix == ".json":
        blob = json.loads(path.read_text())
        tags = {k: blob.get(k) for k in ("kind", "dataset", "model", "fold", "n_items", "checkpoint")}
        metrics = _flatten(blob.get("metrics", {}))
        history = blob.get("history", [])
    else:
        import torch

        blob = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        meta = blob.get("meta", {})
        tags = {"kind": "train", "stage": meta.get("stage"), "model": blob.get("model_name")}
        history = meta.get("history", [])
        metrics = {}
    return {"name": job_name(path), "tags": {k: v for k, v in tags.items() if v is not None}, "history": history,
            "metrics": metrics}


def job_name(output: str | Path) -> str:
    """A job's name from its output: metric files by their place under <workdir>/metrics/
    (finetune/esc50/full/fold2), checkpoints by stem (stage1)."""
    parts = Path(output).with_suffix("").parts
    return "/".join(parts[len(parts) - parts[::-1].index("metrics"):]) if "metrics" in parts else Path(output).stem


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """{"folds": {"1": 0.5}} -> {"folds.1": 0.5}; keys slugged, non-numbers dropped."""
    out = {}
    for k, v in d.items():
        key = prefix + _slug(str(k))
        if isinstance(v, dict):
            out.update(_flatten(v, f"{key}."))
        elif isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            out[key] = float(v)
    return out


def _invocation_parent(client: Any, exp_id: str, invocation: str, tags: dict[str, str]) -> str:
    """The run of pipeline invocation `invocation`, created on first use; the same one for every writer.

    Clients of a tracking server do not share our lock, so two writers may both find no parent and both create
    one. A store offers one atomic get-or-create: experiment names are unique. So every writer proposes a parent
    run by creating the (hidden) experiment f"{JOB_EXPERIMENT}/invocations/{invocation}" tagged with that run's
    id; the one creation that succeeds decides, the others read its tag and delete the run they proposed."""
    from mlflow.exceptions import MlflowException

    name = f"{JOB_EXPERIMENT}/invocations/{invocation}"
    marker = with_retry(lambda: client.get_experiment_by_name(name))  # deleted experiments are found too
    if marker is not None:
        return marker.tags["parent_run_id"]
    found = with_retry(lambda: client.search_runs(  # a parent logged before the marker existed, oldest first
        [exp_id], filter_string=f"tags.invocation = '{invocation}' and tags.kind = 'pipeline'",
        order_by=["attributes.start_time ASC"]))
    if found:
        proposed, created = found[0].info.run_id, False
    else:
        proposed, created = with_retry(lambda: client.create_run(
            exp_id, run_name=f"pipeline-{invocation[:8]}", tags={**tags, "kind": "pipeline"})).info.run_id, True
    try:
        marker_id = with_retry(lambda: client.create_experiment(name, tags={"parent_run_id": proposed}))
    except MlflowException:  # another writer's proposal won (or our own, if a retried request had got through)
        marker = with_retry(lambda: client.get_experiment_by_name(name))
        if marker is None:
            raise
    else:
        with_retry(lambda: client.delete_experiment(marker_id))  # keeps it out of the UI's experiment list
        return proposed
    parent = marker.tags["parent_run_id"]
    if created and proposed != parent:
        with_retry(lambda: client.delete_run(proposed))
    return parent


def log_jobs(files: list[str | Path], *, invocation: str, profile: str, params_hash: str, git_commit: str,
             tracking_uri: str | None = None, repo_root: str | Path | None = None) -> dict[str, str]:
    """One MLflow run per job file, its per-epoch history as step metrics (step = epoch) and its final metrics,
    all nested under the run of pipeline invocation `invocation` (created on first use). Returns job -> run id."""
    from mlflow.entities import Metric, RunTag
    from mlflow.tracking import MlflowClient

    records = [job_record(f) for f in files]
    uri = tracking_uri or default_tracking_uri(repo_root)
    common = {"profile": profile, "params_hash": params_hash, "git_commit": git_commit, "invocation": invocation}
    run_ids = {}
    with _store_lock(uri):
        client = with_retry(lambda: MlflowClient(tracking_uri=uri))
        exp_id = _experiment_id(client, JOB_EXPERIMENT)
        parent = _invocation_parent(client, exp_id, invocation, common)
        for rec in records:
            tags = {**common, **{k: str(v) for k, v in rec["tags"].items()}}
            # a training job that logged its epochs live (EpochLogger) already has its run: complete that one
            run_id, logged = _job_run(client, exp_id, parent, rec["name"], invocation, tags)
            with_retry(lambda: client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()]))
            now = int(time.time() * 1000)
            last = int(rec["history"][-1]["epoch"]) if rec["history"] else 0
            metrics = _epoch_metrics(rec["history"], after=logged, now=now)
            metrics += [Metric(k, v, now, last) for k, v in rec["metrics"].items()]
            _log_metrics(client, run_id, metrics)
            with_retry(lambda: client.set_terminated(run_id, "FINISHED"))
            run_ids[rec["name"]] = run_id
        with_retry(lambda: client.set_terminated(parent, "FINISHED"))
    return run_ids


def _epoch_metrics(history: list[dict[str, Any]], after: int, now: int) -> list:
    """The HISTORY_METRICS of the epochs after epoch `after`, as MLflow metrics with step = epoch."""
    from mlflow.entities import Metric

    return [Metric(k, float(h[k]), now, int(h["epoch"])) for h in history if int(h["epoch"]) > after
            for k in HISTORY_METRICS if isinstance(h.get(k), (int, float)) and math.isfinite(h[k])]


def _log_metrics(client: Any, run_id: str, metrics: list) -> None:
    for i in range(0, len(metrics), 1000):  # MLflow's limit per log_batch
        chunk = metrics[i:i + 1000]
        with_retry(lambda: client.log_batch(run_id, metrics=chunk))


def _job_run(client: Any, exp_id: str, parent: str, job: str, invocation: str, tags: dict[str, str]) -> tuple[str, int]:
    """The run of `job` in pipeline invocation `invocation`, created (nested under `parent`) on first use, and the
    last epoch it holds (0 for a new run). One writer per job at a time (Snakemake's own lock), so no race here."""
    found = with_retry(lambda: client.search_runs(
        [exp_id], filter_string=f"tags.job = '{job}' and tags.invocation = '{invocation}'",
        order_by=["attributes.start_time ASC"], max_results=1))
    if found:
        run_id = found[0].info.run_id
        steps = with_retry(lambda: client.get_metric_history(run_id, "loss"))
        return run_id, max((m.step for m in steps), default=0)
    run = with_retry(lambda: client.create_run(exp_id, run_name=job, tags={
        **tags, "job": job, "invocation": invocation, "mlflow.parentRunId": parent}))
    return run.info.run_id, 0


class EpochLogger:
    """A training job's epochs to MLflow as they end: after each epoch the Trainer calls it with its history,
    and the epochs not yet in the job's run are logged (step = epoch), so a job resumed after a kill neither
    repeats nor skips one. The run is the one track-jobs later completes with the final metrics (log_jobs),
    nested under the run of the pipeline invocation. Tracking never stops training: a failing store is
    reported once as a warning, and track-jobs logs the history at the end instead."""

    def __init__(self, job: str, invocation: str, tags: dict[str, str], epochs: int,
                 tracking_uri: str | None = None):
        self.job, self.invocation, self.tags, self.epochs = job, invocation, tags, epochs
        self.uri = tracking_uri or default_tracking_uri()
        self.failed = False

    def __call__(self, history: list[dict[str, Any]]) -> None:
        if self.failed or not history:
            return
        try:
            self._log(history)
        except Exception as err:  # noqa: BLE001 - any store failure: keep training, say so once
            self.failed = True
            log.warning("MLflow: live logging of %s stopped (%s: %s); track-jobs logs its history when the "
                        "pipeline ends", self.job, type(err).__name__, err)

    def _log(self, history: list[dict[str, Any]]) -> None:
        from mlflow.tracking import MlflowClient

        with _store_lock(self.uri):
            client = with_retry(lambda: MlflowClient(tracking_uri=self.uri))
            exp_id = _experiment_id(client, JOB_EXPERIMENT)
            parent = _invocation_parent(client, exp_id, self.invocation, {**self.tags, "invocation": self.invocation})
            run_id, logged = _job_run(client, exp_id, parent, self.job, self.invocation, self.tags)
            _log_metrics(client, run_id, _epoch_metrics(history, after=logged, now=int(time.time() * 1000)))
            if int(history[-1]["epoch"]) >= self.epochs:
                with_retry(lambda: client.set_terminated(run_id, "FINISHED"))


def epoch_logger(job: str, tags: dict[str, str], epochs: int) -> EpochLogger | None:
    """An EpochLogger inside a pipeline invocation (Snakemake sets $PIPELINE_INVOCATION for its jobs), its run
    tagged with the checkout's git commit; None outside one (a job run by hand), where track-jobs has no run to
    nest it under."""
    invocation = os.environ.get("PIPELINE_INVOCATION")
    if not invocation:
        return None
    return EpochLogger(job, invocation, {"git_commit": git_commit(), **tags}, epochs)
