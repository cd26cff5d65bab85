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


def test_dry_run_of_table3_plans_one_job_per_dataset_fold_and_mode(tmp_path):
    proc = _run("-n", "--cores", "2", "--forceall", "results/table3.csv")
    assert proc.returncode == 0, proc.stderr
    stats = {}
    for line in proc.stdout.split("Job stats:", 1)[1].splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            stats[parts[0]] = int(parts[1])
        if parts[:1] == ["total"]:
            break
    assert stats["finetune"] == 3 * (5 + 10)
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
    request from params (none in the embedded profile), fine-tuning folds are grouped."""
    proc = _run("--workflow-profile", "workflow/profiles/slurm", "-n", "--forceall", "results/table3.csv")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    out = proc.stdout + proc.stderr
    assert out.count("Group job finetune") == 45 // 5  # five folds per SLURM submission
    stage1 = out.split("rule train_stage1:", 1)[1].split("\n\n", 1)[0]
    assert "runtime=4320" in stage1 and "gpu=0" in stage1  # embedded profile: no GPU requests
    profile = yaml.safe_load((REPO_ROOT / "workflow/profiles/slurm/config.yaml").read_text())
    assert profile["executor"] == "slurm" and profile["slurm-status-command"] == "squeue"
    group = "finetune_{ftdataset}_{mode}"  # a bundle holds folds of one dataset and mode: it waits for one stage
    assert profile["groups"] == {"finetune": group} and profile["group-components"][group] == 5
    for ds in ("esc50", "us8k"):
        for mode in ("standalone", "partial", "full"):
            assert out.count(f"Group job finetune_{ds}_{mode} ") == (1 if ds == "esc50" else 2), (ds, mode)
    for rule in ("train_stage1", "finetune", "zeroshot"):
        assert profile["set-resources"][rule]["runtime"] > 0
