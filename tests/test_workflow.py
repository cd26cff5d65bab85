"""The Snakemake DAG: lint-clean, dry-runs, validates params.yaml before running anything."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
import yaml

from pipeline.config import REPO_ROOT

SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def _run(*args, cwd=REPO_ROOT):
    return subprocess.run([*SNAKEMAKE, *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_lint_is_clean():
    proc = _run("--lint")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Congratulations" in proc.stdout + proc.stderr


def test_dry_run_of_table3_plans_one_cross_validation_per_dataset_and_mode(tmp_path):
    proc = _run("-n", "--cores", "2", "--forceall", "results/table3.csv")
    assert proc.returncode == 0, proc.stderr
    stats = {}
    for line in proc.stdout.split("Job stats:", 1)[1].splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            stats[parts[0]] = int(parts[1])
        if parts[:1] == ["total"]:
            break
    assert stats["finetune_esc50"] == stats["finetune_us8k"] == 3  # standalone, partial, full
    for k in range(1, 11):  # each job writes every fold of its dataset
        assert f"metrics/finetune/us8k/full/fold{k}.json" in proc.stdout
    assert stats["zeroshot"] == 2 * 2
    assert stats["train_stage1"] == stats["train_stage2"] == stats["train_stage3"] == 1
    assert stats["table"] == 1


def _copy_workflow(dest):
    for name in ("Snakefile", "params.yaml"):
        shutil.copy2(REPO_ROOT / name, dest / name)
    shutil.copytree(REPO_ROOT / "workflow", dest / "workflow")
    shutil.copytree(REPO_ROOT / "pipeline", dest / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    return dest


@pytest.mark.reliability
def test_a_bad_params_file_stops_snakemake_naming_the_key(tmp_path):
    repo = _copy_workflow(tmp_path)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["embedded"]["train"]["finetune"]["esc50"]["epochs"] = 0
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    proc = _run("-n", "--cores", "1", cwd=repo)
    assert proc.returncode != 0
    assert "embedded.train.finetune.esc50.epochs: 0 is less than the minimum of 1" in proc.stdout + proc.stderr


def test_an_unknown_profile_on_the_command_line_is_refused():
    proc = _run("-n", "--cores", "1", "--forceall", "results/table3.csv", "--config", "profile=nope")
    assert proc.returncode != 0 and "unknown profile 'nope'" in proc.stdout + proc.stderr


def test_dvc_yaml_check_command_detects_drift(tmp_path):
    stale = tmp_path / "dvc.yaml"
    stale.write_text((REPO_ROOT / "dvc.yaml").read_text().replace("phase_cache", "phase_kash"))
    check = [sys.executable, "-m", "pipeline", "dvc-yaml", "--check"]
    assert subprocess.run([*check, "--out", str(stale)], capture_output=True).returncode == 1
    assert subprocess.run([*check, "--out", str(REPO_ROOT / "dvc.yaml")], capture_output=True).returncode == 0


def test_evaluate_only_from_released_models_skips_audioset_training(tmp_path):
    repo = _copy_workflow(tmp_path)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["embedded"]["train"]["released"] = True
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    proc = _run("-n", "--cores", "2", "results/table3.csv", cwd=repo)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    plan = proc.stdout
    assert "train_stage" not in plan and "pretrain_clip" not in plan and "cache_audioset" not in plan
    for stage, name in (("standalone", "ESRNXFBSP.pt"), ("partial", "AudioCLIP-Partial-Training.pt"),
                        ("full", "AudioCLIP-Full-Training.pt")):
        assert f"rule import_released_{stage}:" in plan
        assert f"data/paper/weights/{name}" in plan  # fetched by fetch_weights, sha256-verified


def test_slurm_profile_plans_the_dag_with_per_rule_resources():
    """The SLURM profile parses and plans the DAG (a dry run needs no SLURM); model jobs carry their GPU
    request from params (none in the embedded profile); fine-tuning is one job per dataset x mode (its folds run
    one after the other in it), each asking for the rule's resources."""
    proc = _run("--workflow-profile", "workflow/profiles/slurm", "-n", "--forceall", "results/table3.csv")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    out = proc.stdout + proc.stderr
    stage1 = out.split("rule train_stage1:", 1)[1].split("\n\n", 1)[0]
    assert "runtime=4320" in stage1 and "gpu=0" in stage1  # embedded profile: no GPU requests
    profile = yaml.safe_load((REPO_ROOT / "workflow/profiles/slurm/config.yaml").read_text())
    assert profile["executor"] == "slurm" and profile["slurm-status-command"] == "squeue"
    for ds, n_folds in (("esc50", 5), ("us8k", 10)):
        jobs = out.split(f"rule finetune_{ds}:")[1:]
        assert len(jobs) == 3, ds  # standalone, partial, full
        for job in jobs:
            job = job.split("\n\n", 1)[0]
            assert job.count(".json") == n_folds and "cpus_per_task=8" in job and "gpu=0" in job, job
    assert out.count("Group job reporting") == 1  # the bookkeeping jobs at the end share one submission
    for rule in ("train_stage1", "finetune_esc50", "finetune_us8k", "zeroshot"):
        assert profile["set-resources"][rule]["runtime"] > 0
