"""The conda environment of the rules (`--sdm conda`) pins exactly what pyproject.toml pins."""

import tomllib

import yaml

from pipeline.config import REPO_ROOT


def _pip_pins(env: dict) -> set[str]:
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    return {p for p in pip if not p.startswith("-e")}


def test_conda_env_pins_equal_pyproject():
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    env = yaml.safe_load((REPO_ROOT / "envs" / "audioclip.yaml").read_text())
    assert _pip_pins(env) == set(project["dependencies"])
    assert all("==" in pin for pin in project["dependencies"])  # exact pins: a reproduction must not drift
    assert "python=3.11" in env["dependencies"] and "ffmpeg" in env["dependencies"]
