"""dvc.yaml is generated from the same phase definitions Snakemake uses; these tests fail when they drift."""

from pathlib import Path

import pytest
import yaml

from pipeline import dvc_stages, layout
from pipeline.config import REPO_ROOT, load_config

DVC_YAML = REPO_ROOT / "dvc.yaml"
SNAKE_RULES = REPO_ROOT / "workflow" / "rules"


def test_committed_dvc_yaml_is_what_the_generator_writes():
    assert DVC_YAML.read_text() == dvc_stages.render(), "run `python -m pipeline dvc-yaml` and commit dvc.yaml"


def test_every_phase_has_a_dvc_stage_calling_its_snakemake_target():
    stages = yaml.safe_load(DVC_YAML.read_text())["stages"]
    phases = list(layout.phase_targets(load_config()))
    assert list(stages) == phases
    for phase, stage in stages.items():
        assert stage["cmd"] == f"snakemake --cores all phase_{phase}"
        assert all(o[next(iter(o))]["persist"] for o in stage["outs"]), "outputs must persist for Snakemake"


@pytest.mark.parametrize("profile", ["embedded", "paper"])
def test_dvc_outs_cover_exactly_the_snakemake_targets(profile):
    cfg = load_config(profile=profile)
    stages = yaml.safe_load(DVC_YAML.read_text())["stages"]
    all_outs = []
    for phase, targets in layout.phase_targets(cfg).items():
        outs = [Path(next(iter(o)).replace("${profile}", profile)) for o in stages[phase]["outs"]]
        outs += [Path(next(iter(m))) for m in stages[phase].get("metrics", [])]
        for target in map(Path, targets):
            assert any(target == o or o in target.parents for o in outs), f"{phase}: {target} not under {outs}"
        for out in outs:  # and no declared out is left without a target inside it
            assert any(t == out or out in t.parents for t in map(Path, targets)), f"{phase}: {out} has no target"
        all_outs += outs
    for a in all_outs:  # DVC refuses overlapping outputs
        assert not any(a != b and (a in b.parents or b in a.parents) for b in all_outs), a


def test_dvc_stage_dependencies_follow_the_phase_order():
    stages = yaml.safe_load(DVC_YAML.read_text())["stages"]
    produced = set()
    for stage in stages.values():
        for dep in stage["deps"]:
            if dep not in dvc_stages.CODE_DEPS:
                assert dep in produced, f"{dep} is consumed before any stage produces it"
        produced.update(next(iter(o)) for o in stage["outs"])


def test_snakemake_defines_one_phase_rule_per_dvc_stage():
    text = (SNAKE_RULES / "phases.smk").read_text()
    assert "layout.phase_targets(CFG)" in text and 'f"phase_{_phase}"' in text


def test_python_bytecode_is_ignored_by_dvc():
    ignored = (REPO_ROOT / ".dvcignore").read_text().split()
    assert "__pycache__/" in ignored
