"""The whole embedded pipeline, end to end, in a throw-away copy of the checkout (minutes on 2 cores).

One Snakemake run builds every table; the tests then read what it made and exercise re-runs, DVC and MLflow.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from smoke_support import env, run, snakemake

pytestmark = pytest.mark.slow

W = Path("work/embedded")
PAPER = yaml.safe_load((Path(__file__).resolve().parents[1] / "pipeline/reporting/paper_tables.yaml").read_text())


# `smoke` (tests/conftest.py): the whole DAG, run once per session in a copy of the checkout.


def _job_stats(plan: str) -> dict[str, int]:
    """The 'Job stats' block of a Snakemake dry run: {rule: count}, without the total."""
    lines = iter(plan.split("Job stats:", 1)[1].splitlines())
    for line in lines:
        if line.startswith("---"):
            break
    stats = {}
    for line in lines:
        name, count = line.split()
        if name == "total":
            return stats
        stats[name] = int(count)
    raise AssertionError("no total line in the job stats")


def _table(smoke, n) -> pd.DataFrame:
    return pd.read_csv(smoke["repo"] / f"results/table{n}.csv")


def test_the_whole_dag_runs_in_minutes(smoke):
    assert smoke["seconds"] < 15 * 60
    for n in range(1, 5):
        assert (smoke["repo"] / f"results/table{n}.csv").exists()
    metrics = json.loads((smoke["repo"] / "results/metrics.json").read_text())
    assert metrics["profile"] == "embedded"


def test_table3_has_every_paper_row_and_our_measurements(smoke):
    df = _table(smoke, 3)
    paper_rows = PAPER["table3"]["rows"]
    assert df["model"].tolist() == [r["model"] for r in paper_rows]
    assert (df["profile"] == "embedded").all()
    for row, ref in zip(df.to_dict("records"), paper_rows):
        if ref.get("ours"):
            assert row["us8k_n_folds"] == 10 and row["esc50_n_folds"] == 5
            assert row["us8k_paper"] == ref["us8k"] and row["esc50_paper"] == ref["esc50"]
        else:  # baselines: the paper's values only
            assert pd.isna(row["us8k_measured"]) and pd.isna(row["esc50_measured"])


def test_fine_tuning_is_far_above_chance(smoke):
    # chance is 10 % on both synthetic sets: a broken label, fold or text mapping collapses these
    df = _table(smoke, 3)
    tuned = df[(df["source"] == "ours") & (df["training_on_target"] == True)]  # noqa: E712
    assert len(tuned) == 3
    for col in ("us8k_measured", "esc50_measured"):
        assert (tuned[col] >= 80).all(), tuned[["model", col]]


def test_zero_shot_is_at_least_twice_chance(smoke):
    df = _table(smoke, 3)
    zero_shot = df[(df["source"] == "ours") & (df["training_on_target"] == False)]  # noqa: E712
    assert len(zero_shot) == 2
    for col in ("us8k_measured", "esc50_measured"):
        assert (zero_shot[col] >= 20).all(), zero_shot[["model", col]]


def test_no_fine_tuning_job_saw_its_test_fold(smoke):
    import h5py

    for ds, n_folds in (("esc50", 5), ("us8k", 10)):
        with h5py.File(smoke["repo"] / W / f"cache/{ds}.h5", "r") as h5:
            n_clips = len(h5["fold"])
            per_fold = {k: int((h5["fold"][()] == k).sum()) for k in range(1, n_folds + 1)}
        for mode in ("standalone", "partial", "full"):
            for k in range(1, n_folds + 1):
                m = json.loads((smoke["repo"] / W / f"metrics/finetune/{ds}/{mode}/fold{k}.json").read_text())
                assert m["n_items"] == per_fold[k] and m["n_train"] == n_clips - per_fold[k]


def test_every_table_and_metric_file_names_its_profile(smoke):
    for n in range(1, 5):
        assert set(_table(smoke, n)["profile"]) == {"embedded"}
    for path in (smoke["repo"] / W / "metrics").rglob("*.json"):
        assert json.loads(path.read_text())["profile"] == "embedded", path


def test_each_training_stage_starts_first_when_the_one_before_it_ends(smoke):
    """The stages are the critical path (`priority` in train.smk): on 2 cores, the ready fine-tuning and evaluation
    jobs wait for the next stage, not the other way round (without it, stage 2 waited 30 s behind two
    fine-tuning jobs here)."""
    events = re.findall(r"^(?:local)?rule (\w+):|^Finished jobid: \d+ \(Rule: (\w+)\)", smoke["log"], re.M)
    for before, stage in (("train_stage1", "train_stage2"), ("train_stage2", "train_stage3")):
        after = events[events.index(("", before)):]
        first_start = next(i for i, (rule, _) in enumerate(after) if rule)  # other jobs may end with `before`
        round_end = next((i for i, (_, finished) in enumerate(after) if finished and i > first_start), len(after))
        started_then = [rule for rule, _ in after[first_start:round_end]]  # the scheduling round `before` ended
        assert stage in started_then, (before, after[:8])


def test_each_rule_writes_its_log(smoke):
    logs = smoke["repo"] / "logs/embedded"
    assert (logs / "train/stage1.log").stat().st_size > 0
    assert len(list((logs / "finetune").rglob("*.log"))) == 6  # a job per dataset x mode
    assert (logs / "finetune/us8k/full.log").read_text().count("epoch=7 ") == 10  # its ten folds, in turn
    assert "epoch" in (logs / "train/stage2.log").read_text()


def test_mlflow_holds_every_table_cell_with_provenance(smoke):
    db = sqlite3.connect(smoke["repo"] / "mlflow.db")
    tables = "(select experiment_id from experiments where name = 'audioclip-tables')"
    runs = dict(db.execute(f"select run_uuid, name from runs where experiment_id = {tables}").fetchall())
    assert sorted(runs.values()) == [f"table{n}-embedded" for n in range(1, 5)]
    n_metrics = db.execute(f"select count(*) from metrics where run_uuid in "
                           f"(select run_uuid from runs where experiment_id = {tables})").fetchone()[0]
    assert n_metrics == 3 + (16 + 4) + (10 + 6) + 42  # every measured cell of our rows (fine-tuned: both protocols)
    for key in ("profile", "table", "git_commit", "params_hash"):
        values = {v for (v,) in db.execute(f"select value from tags where key = ? and run_uuid in "
                                           f"(select run_uuid from runs where experiment_id = {tables})", (key,))}
        assert len(values) == (4 if key == "table" else 1), (key, values)
    assert {v for (v,) in db.execute("select value from tags where key = 'profile'")} == {"embedded"}
    paper = dict(db.execute("select key, value from tags where key like 'cell.table3.%.paper'").fetchall())
    assert paper["cell.table3.audioclip_full_training.on_target.esc50.paper"] == "97.15"


def test_mlflow_nests_every_job_under_the_pipeline_run(smoke):
    db = sqlite3.connect(smoke["repo"] / "mlflow.db")
    parents = db.execute("select r.run_uuid from runs r join tags t on r.run_uuid = t.run_uuid "
                         "where t.key = 'kind' and t.value = 'pipeline'").fetchall()
    assert len(parents) == 1
    children = dict(db.execute("select r.name, r.run_uuid from runs r join tags t on r.run_uuid = t.run_uuid "
                               "where t.key = 'mlflow.parentRunId' and t.value = ?", parents[0]).fetchall())
    assert len(children) == 4 + 45 + 11  # clip, stage1-3; the fine-tuning folds; the evaluation jobs
    epochs = db.execute("select step from metrics where key = 'accuracy' and run_uuid = ? order by step",
                        (children["finetune/us8k/full/fold3"],)).fetchall()
    assert [s for (s,) in epochs][:7] == [1, 2, 3, 4, 5, 6, 7]  # one point per epoch, then the final value


def test_live_tracking_logs_a_fine_tuning_job_epoch_by_epoch_into_the_run_track_jobs_completes(smoke, tmp_path):
    """tracking.live: true (the paper profile's setting) through the real CLI: the job's run exists with all
    its epochs when the job ends, and track-jobs adds the final metrics to that run instead of making another."""
    repo = smoke["repo"]
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["embedded"]["tracking"]["live"] = True
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    out = tmp_path / "metrics/finetune/us8k/full/fold3.json"
    invocation = "live-" + os.urandom(4).hex()
    db = f"sqlite:///{tmp_path / 'mlflow.db'}"
    job_env = {**os.environ, "PIPELINE_INVOCATION": invocation, "MLFLOW_TRACKING_URI": db}
    common = ["--params", str(tmp_path / "params.yaml"), "--profile", "embedded"]
    for cmd in (["finetune", "--dataset", "us8k", "--mode", "full", "--folds", "3",
                 "--init", str(W / "checkpoints/stage3_full.pt"), "--cache", str(W / "cache/us8k.h5"),
                 "--out-dir", str(out.parent), "--run-dir", str(tmp_path / "run"), "--threads", "1"],
                ["track-jobs", str(out), "--invocation", invocation, "--out", str(tmp_path / "runs.json")]):
        proc = subprocess.run([sys.executable, "-m", "pipeline", *cmd, *common], cwd=repo, env=job_env,
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        if cmd[0] == "finetune":  # the epochs are in MLflow before track-jobs runs
            live = sqlite3.connect(tmp_path / "mlflow.db").execute(
                "select m.step from metrics m join tags t on m.run_uuid = t.run_uuid "
                "where t.key = 'job' and t.value = 'finetune/us8k/full/fold3' and m.key = 'loss'").fetchall()
            assert sorted(s for (s,) in live) == [1, 2, 3, 4, 5, 6, 7]
    run_id = json.loads((tmp_path / "runs.json").read_text())["runs"]["finetune/us8k/full/fold3"]
    con = sqlite3.connect(tmp_path / "mlflow.db")
    assert con.execute("select count(*) from runs where name = 'finetune/us8k/full/fold3'").fetchone() == (1,)
    steps = con.execute("select step from metrics where run_uuid = ? and key = 'loss'", (run_id,)).fetchall()
    assert sorted(s for (s,) in steps) == [1, 2, 3, 4, 5, 6, 7]  # each epoch once
    final = con.execute("select value from metrics where run_uuid = ? and key = 'accuracy_best_epoch'",
                        (run_id,)).fetchall()
    assert len(final) == 1 and con.execute("select status from runs where run_uuid = ?", (run_id,)).fetchone() == \
        ("FINISHED",)


def test_rerun_after_success_does_nothing(smoke):
    out = snakemake(smoke["repo"], "-n")
    assert "Nothing to be done" in out.stdout + out.stderr


def test_deleting_one_fold_reruns_its_job_which_retrains_nothing_and_its_tables(smoke):
    """A fold's file is an output of its cross-validation job, so the job reruns: every fold's training had
    finished (its checkpoint says so), so each is only evaluated again, and the numbers are the same."""
    repo = smoke["repo"]
    fold = repo / W / "metrics/finetune/us8k/full/fold3.json"
    before = json.loads(fold.read_text())["metrics"]
    table3 = (repo / "results/table3.csv").read_bytes()
    fold.unlink()
    plan = snakemake(repo, "-n").stdout
    # us8k/full feeds Tables 2 and 3; the flat metrics file follows the tables
    assert _job_stats(plan) == {"finetune_us8k": 1, "table": 2, "metrics_json": 1, "track_jobs": 1, "report": 1,
                                "all": 1}, plan[-2000:]
    snakemake(repo)
    log = (repo / "logs/embedded/finetune/us8k/full.log").read_text()
    assert log.count(" at epoch 8, step 0") == 10 and "epoch=" not in log, log[-3000:]  # nothing retrained
    assert json.loads(fold.read_text())["metrics"] == before  # deterministic: the same numbers again
    assert (repo / "results/table3.csv").read_bytes() == table3


@pytest.mark.reliability
def test_snakemake_terminated_mid_cross_validation_then_rerun_trains_only_what_was_missing(smoke):
    """SIGTERM to Snakemake and its jobs (what `kill` or a preemption sends) while a cross-validation runs: the
    training fold saves its step and stops, Snakemake removes the job's outputs; nothing half-written is left. A
    plain rerun (no flags) redoes only that job and the tables: the folds that had finished are only evaluated,
    the stopped one goes on from the step it saved, and the tables equal the uninterrupted run's. Folds 1-7 keep their
    finished training from the session's run, so the job reaches fold 8 in seconds; folds 8-10 train anew."""
    repo = smoke["repo"]
    folds = repo / W / "metrics/finetune/us8k/partial"
    tables = {n: (repo / f"results/table{n}.csv").read_bytes() for n in range(1, 5)}
    assert len([f.unlink() for f in folds.glob("fold*.json")]) == 10
    for k in (8, 9, 10):  # these train for real
        shutil.rmtree(repo / W / f"runs/finetune/us8k/partial/fold{k}")
    proc = subprocess.Popen([sys.executable, "-m", "snakemake", "--cores", "2"], cwd=repo, env=env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and len(list(folds.glob("fold*.json"))) < 8:
        time.sleep(0.2)
    finished = len(list(folds.glob("fold*.json")))
    time.sleep(1.0)  # into fold 9's training
    os.killpg(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=300) != 0
    assert 8 <= finished < 10
    for f in folds.glob("*"):  # Snakemake removed the failed job's outputs; anything left is whole
        assert f.name.startswith("fold") and f.suffix == ".json", f
        json.loads(f.read_text())
    plan = _job_stats(snakemake(repo, "-n").stdout)
    assert plan == {"finetune_us8k": 1, "table": 2, "metrics_json": 1, "track_jobs": 1, "report": 1, "all": 1}, plan
    snakemake(repo)
    resumed = re.findall(r"resumed finetune us8k partial fold (\d+) .* at epoch (\d+), step (\d+)",
                         (repo / "logs/embedded/finetune/us8k/partial.log").read_text())
    done = [int(k) for k, epoch, _ in resumed if epoch == "8"]
    assert done == list(range(1, len(done) + 1)) and len(done) >= finished, resumed
    # the fold SIGTERM stopped mid-epoch resumed there (a stop between folds leaves no step to resume)
    assert all(int(k) == len(done) + 1 for k, epoch, _ in resumed if epoch != "8"), resumed
    for n in range(1, 5):
        assert (repo / f"results/table{n}.csv").read_bytes() == tables[n]


def test_dvc_repro_runs_the_same_pipeline_and_then_does_nothing(smoke):
    repo = smoke["repo"]
    tables = {n: (repo / f"results/table{n}.csv").read_bytes() for n in range(1, 5)}
    dvc = [str(Path(sys.executable).parent / "dvc")]
    first = run([*dvc, "repro"], repo)
    assert "Running stage 'tables'" in first.stdout
    for n in range(1, 5):
        assert (repo / f"results/table{n}.csv").read_bytes() == tables[n]
    second = run([*dvc, "repro"], repo)
    assert "Data and pipelines are up to date" in second.stdout, second.stdout


def test_dvc_push_then_pull_into_a_fresh_clone_restores_without_rerunning(smoke, tmp_path):
    """After `dvc repro` (the test above), push everything to a DVC remote, clone the repository afresh,
    `python -m pipeline restore` (dvc pull + snakemake --touch): the same tables, and nothing to rerun."""
    repo = smoke["repo"]
    dvc = str(Path(sys.executable).parent / "dvc")
    git = ["git", "-c", "user.name=smoke", "-c", "user.email=smoke@localhost"]
    run([*git, "add", "dvc.lock"], repo)
    run([*git, "commit", "-q", "-m", "pipeline state"], repo)
    storage = tmp_path / "storage"
    run([dvc, "remote", "modify", "--local", "local", "url", str(storage)], repo)
    run([dvc, "push"], repo)
    fresh = tmp_path / "fresh"
    run(["git", "clone", "-q", str(repo), str(fresh)], tmp_path)
    assert not (fresh / "results/table3.csv").exists() and not (fresh / W).exists()
    run([dvc, "remote", "modify", "--local", "local", "url", str(storage)], fresh)
    run([sys.executable, "-m", "pipeline", "restore"], fresh)
    for n in range(1, 5):
        assert (fresh / f"results/table{n}.csv").read_bytes() == (repo / f"results/table{n}.csv").read_bytes()
    out = snakemake(fresh, "-n")
    assert "Nothing to be done" in out.stdout + out.stderr, out.stdout[-3000:]
