"""MLflow logging against a tracking server: `mlflow server` on 127.0.0.1, reached through $MLFLOW_TRACKING_URI.

The pipeline's real logging code (log_table_cells, log_jobs) writes to the server over HTTP; everything is read
back through MlflowClient. The second test lets 15 processes write at once into a fresh server and checks that
no run and no metric is lost or duplicated and that all job runs hang under one parent run.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing as mp
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from pipeline.reporting import tracking
from pipeline.reporting.tables import build_table, measured_cells
from pipeline.reporting.tracking import JOB_EXPERIMENT, metric_name

pytestmark = pytest.mark.slow  # each test starts its own server (~15-40 s on 2 cores)

TABLES = ("table1", "table2", "table3", "table4")
START_TIMEOUT_S = 90.0
N_WRITERS = 15


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the server's process group, SIGKILL to whatever is left after 20 s."""
    pgid = proc.pid  # start_new_session: the server leads its own group
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)  # the leader or its uvicorn workers still there
    proc.wait(timeout=20)


@pytest.fixture
def mlflow_server(tmp_path):
    """A fresh `mlflow server` on a free port with a sqlite backend in tmp; yields (url, server dir)."""
    root = tmp_path / "server"
    root.mkdir()
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [
        sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "2",
        "--backend-store-uri", f"sqlite:///{root / 'server.db'}", "--default-artifact-root", str(root / "artifacts"),
    ]
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"  # no huey job consumers: halves the start-up on 2 cores
    log = open(root / "server.log", "wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                            cwd=root, start_new_session=True)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _healthy(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = (root / "server.log").read_text(errors="replace")[-3000:]
                pytest.fail(f"mlflow server did not answer {url}/health (exit code {proc.poll()}):\n{tail}")
            time.sleep(0.5)
        yield url, root
    finally:
        _stop(proc)
        log.close()


def _forbid_store_lock(monkeypatch):
    """The flock is only for sqlite stores: with a server URI taking it is an error."""
    def flock(*args):
        raise AssertionError("_store_lock took an flock for an http store")

    monkeypatch.setattr(tracking.fcntl, "flock", flock)


def _client(url: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=url)


def _runs(client, experiment: str) -> list:
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"experiment {experiment} missing on the server"
    return client.search_runs([exp.experiment_id], max_results=1000)


def _assert_table_run(client, run, table, df) -> None:
    """Every measured cell of the table exactly once, with its value and all seven cell tags; run tags."""
    cells = measured_cells(table, df)
    expected = {metric_name(c): c for c in cells}
    assert set(run.data.metrics) == set(expected), table
    tags = run.data.tags
    for name, cell in expected.items():
        history = client.get_metric_history(run.info.run_id, name)
        assert [m.value for m in history] == [pytest.approx(cell.value)], (name, history)
        described = {"row": "/".join(cell.row), "column": cell.column, "dataset": cell.dataset,
                     "n_folds": cell.n_folds, "paper": cell.paper, "std": cell.std, "ci95": cell.ci95}
        for key, value in described.items():
            assert tags[f"cell.{name}.{key}"] == tracking._tag_value(value), (name, key)
    assert {k: tags[k] for k in ("table", "profile", "params_hash", "git_commit", "n_cells")} == {
        "table": table, "profile": "embedded", "params_hash": "abcdef012345", "git_commit": "c0ffee",
        "n_cells": str(len(cells))}
    assert run.info.status == "FINISHED"


def _job_file(root: Path, rel: str, k: int) -> Path:
    """A fine-tuning metric file with a 3-epoch history whose values depend on k."""
    history = [{"epoch": e, "lr": 0.1 * 0.9 ** (e - 1), "loss": k / e, "accuracy": round(0.01 * k + 0.1 * e, 6),
                "train_seconds": 1.0 + k, "clips_per_second": 50.0 + k} for e in (1, 2, 3)]
    path = root / "metrics" / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"kind": "finetune", "dataset": "us8k", "model": "full", "fold": k, "n_items": 40,
                                "metrics": {"accuracy": 0.5 + 0.01 * k, "accuracy_best_epoch": 0.6 + 0.01 * k},
                                "history": history}))
    return path


def _assert_job_run(client, run_id: str, k: int, parent: str) -> None:
    run = client.get_run(run_id)
    assert run.data.tags["mlflow.parentRunId"] == parent and run.data.tags["fold"] == str(k)
    assert run.info.status == "FINISHED"
    assert set(run.data.metrics) == {*(m for m in tracking.HISTORY_METRICS if m != "data_wait_share"),
                                     "accuracy_best_epoch"}
    accuracy = sorted((m.step, round(m.value, 6)) for m in client.get_metric_history(run_id, "accuracy"))
    assert accuracy == [(1, round(0.01 * k + 0.1, 6)), (2, round(0.01 * k + 0.2, 6)), (3, round(0.01 * k + 0.3, 6)),
                        (3, round(0.5 + 0.01 * k, 6))]  # each epoch once, then the job's final metric
    for name in ("loss", "lr", "train_seconds", "clips_per_second"):
        assert sorted(m.step for m in client.get_metric_history(run_id, name)) == [1, 2, 3], name
    assert [m.value for m in client.get_metric_history(run_id, "accuracy_best_epoch")] == [
        pytest.approx(0.6 + 0.01 * k)]


def test_tables_and_jobs_logged_to_a_tracking_server(mlflow_server, metrics_root, tmp_path, monkeypatch):
    import torch

    from pipeline.models import create_model
    from pipeline.training.model_io import save_model

    url, server_dir = mlflow_server
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    client_dir = tmp_path / "client"
    client_dir.mkdir()
    monkeypatch.chdir(client_dir)  # a fallback to the default sqlite store would land here
    _forbid_store_lock(monkeypatch)

    built = {t: build_table(t, metrics_root, "embedded") for t in TABLES}
    run_ids = {t: tracking.log_table_cells(t, df, profile="embedded", params_hash="abcdef012345",
                                           git_commit="c0ffee", repo_root=client_dir)
               for t, df in built.items()}

    fold = _job_file(tmp_path, "finetune/us8k/full/fold2.json", 2)
    zeroshot = tmp_path / "metrics/zeroshot/us8k/partial.json"
    zeroshot.parent.mkdir(parents=True)
    zeroshot.write_text(json.dumps({"kind": "zeroshot", "dataset": "us8k", "model": "partial",
                                    "metrics": {"folds": {"1": 0.25, "2": 0.5}}}))
    torch.manual_seed(0)
    stage = tmp_path / "stage1.pt"
    history = [{"epoch": e, "loss": 2.0 / e, "lr": 0.1, "data_wait_share": 0.1 * e} for e in (1, 2)]
    save_model(stage, create_model("esresnext-fbsp-tiny"), "esresnext-fbsp-tiny", {},
               {"stage": "stage1", "history": history})
    jobs = tracking.log_jobs([fold, zeroshot, stage], invocation="inv-server", profile="embedded",
                             params_hash="abcdef012345", git_commit="c0ffee", repo_root=client_dir)

    # nothing went to a local store: no sqlite file, no lock file, neither on the client side nor next to the
    # server's own database (the server takes no flock of ours; only it touches server.db)
    assert list(client_dir.iterdir()) == []
    assert not list(server_dir.glob("*.lock"))
    assert (server_dir / "server.db").exists()

    client = _client(url)
    runs = {r.data.tags["table"]: r for r in _runs(client, "audioclip-tables")}
    assert sorted(runs) == sorted(TABLES) and {t: r.info.run_id for t, r in runs.items()} == run_ids
    for table, run in runs.items():
        _assert_table_run(client, run, table, built[table])
    n_cells = sum(len(r.data.metrics) for r in runs.values())
    assert n_cells == 3 + (16 + 4) + (10 + 6) + 42

    job_runs = _runs(client, JOB_EXPERIMENT)
    parents = [r for r in job_runs if r.data.tags.get("kind") == "pipeline"]
    assert len(parents) == 1 and parents[0].data.tags["invocation"] == "inv-server"
    parent = parents[0].info.run_id
    children = {r.data.tags["job"]: r.info.run_id for r in job_runs if r.data.tags.get("kind") != "pipeline"}
    assert children == jobs
    assert sorted(jobs) == ["finetune/us8k/full/fold2", "stage1", "zeroshot/us8k/partial"]
    _assert_job_run(client, jobs["finetune/us8k/full/fold2"], 2, parent)
    assert client.get_run(jobs["zeroshot/us8k/partial"]).data.metrics == {"folds.1": 0.25, "folds.2": 0.5}
    assert client.get_run(jobs["zeroshot/us8k/partial"]).data.tags["mlflow.parentRunId"] == parent
    stage_run = client.get_run(jobs["stage1"])
    assert stage_run.data.tags["mlflow.parentRunId"] == parent and stage_run.data.tags["stage"] == "stage1"
    assert sorted(m.step for m in client.get_metric_history(jobs["stage1"], "data_wait_share")) == [1, 2]


def _job_writer(path: str, out: str, barrier) -> None:
    # a fresh (spawned) interpreter; $MLFLOW_TRACKING_URI is inherited from the test, no tracking_uri is passed
    import mlflow.tracking  # noqa: F401  (import before the barrier so all writers hit the server together)

    barrier.wait(timeout=240)
    runs = tracking.log_jobs([path], invocation="inv-parallel", profile="embedded", params_hash="p" * 12,
                             git_commit="c" * 40, repo_root=Path(out).parent)
    Path(out).write_text(json.dumps(runs))


def test_parallel_writers_lose_nothing_on_a_tracking_server(mlflow_server, tmp_path, monkeypatch):
    url, server_dir = mlflow_server
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    out = tmp_path / "out"
    out.mkdir()
    files = {k: _job_file(tmp_path, f"finetune/us8k/full/fold{k}.json", k) for k in range(1, N_WRITERS + 1)}
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(N_WRITERS)
    procs = [ctx.Process(target=_job_writer, args=(str(f), str(out / f"{k}.json"), barrier))
             for k, f in files.items()]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=300)
    for proc in procs:
        if proc.exitcode is None:
            proc.kill()
    assert [proc.exitcode for proc in procs] == [0] * N_WRITERS
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{k}.json" for k in files)  # no sqlite fallback

    client = _client(url)
    job_runs = _runs(client, JOB_EXPERIMENT)
    parents = [r for r in job_runs if r.data.tags.get("kind") == "pipeline"]
    children = [r for r in job_runs if r.data.tags.get("kind") != "pipeline"]
    assert len(parents) == 1, f"{len(parents)} parent runs for one invocation"
    assert parents[0].data.tags["invocation"] == "inv-parallel"
    assert len(children) == N_WRITERS  # exactly one run per writer: none lost, none duplicated
    by_job = {r.data.tags["job"]: r.info.run_id for r in children}
    for k in files:
        reported = json.loads((out / f"{k}.json").read_text())
        assert reported == {f"finetune/us8k/full/fold{k}": by_job[f"finetune/us8k/full/fold{k}"]}
        _assert_job_run(client, by_job[f"finetune/us8k/full/fold{k}"], k, parents[0].info.run_id)
    assert not list(server_dir.glob("*.lock"))
