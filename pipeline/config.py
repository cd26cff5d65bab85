"""params.yaml: load it, pick the profile, merge its overrides over `paper`, validate, hash.

Snakemake, DVC and the CLI all go through `load_config`, so one file and one schema decide every
hyper-parameter, and a bad value fails the same way everywhere: with the dotted key that is wrong.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PARAMS = REPO_ROOT / "params.yaml"
SCHEMA_PATH = REPO_ROOT / "workflow" / "schemas" / "params.schema.yaml"
BASE_PROFILE = "paper"


NOT_RESULTS = ("tracking",)  # settings left out of params_hash


class ConfigError(ValueError):
    """params.yaml is wrong; the message names the file and the dotted key."""


@dataclass(frozen=True)
class Config:
    profile: str
    settings: dict[str, Any]
    source: Path

    def __getitem__(self, key: str) -> Any:
        return self.settings[key]

    @property
    def workdir(self) -> Path:
        """Intermediates of this profile: work/<profile>/ (so a smoke run never touches paper checkpoints)."""
        return Path(self.settings["workdir"]) / self.profile

    @property
    def params_hash(self) -> str:
        """Identity of everything that can change a result (`tracking` only says where results are reported)."""
        return params_hash({k: v for k, v in self.settings.items() if k not in NOT_RESULTS})


def params_hash(obj: Any) -> str:
    canonical = json.dumps(obj, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def load_config(path: str | Path = DEFAULT_PARAMS, profile: str | None = None) -> Config:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err})") from None
    return resolve(raw, profile=profile, source=path)


def resolve(raw: Any, profile: str | None = None, source: Path = DEFAULT_PARAMS) -> Config:
    """Merge the chosen profile over `paper` and validate the result against the schema."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level")
    if BASE_PROFILE not in raw or not isinstance(raw[BASE_PROFILE], dict):
        raise ConfigError(f"{source}: key '{BASE_PROFILE}' (the full paper settings) is missing")
    profile = profile or raw.get("profile")
    if not isinstance(profile, str):
        raise ConfigError(f"{source}: key 'profile' must name a profile, got {profile!r}")
    profiles = sorted(k for k, v in raw.items() if k != "profile" and isinstance(v, dict))
    if profile not in profiles:
        raise ConfigError(f"{source}: key 'profile': unknown profile {profile!r}; defined: {', '.join(profiles)}")

    settings = copy.deepcopy(raw[BASE_PROFILE])
    if profile != BASE_PROFILE:
        _merge(settings, raw[profile], where=profile, source=source)
    _validate(settings, profile, source)
    return Config(profile=profile, settings=settings, source=source)


def _merge(base: dict, overrides: dict, where: str, source: Path) -> None:
    # An override may only change a key the paper block defines: a typo must not pass silently.
    for key, value in overrides.items():
        dotted = f"{where}.{key}"
        if key not in base:
            raise ConfigError(f"{source}: unknown key '{dotted}' (not defined in '{BASE_PROFILE}')")
        if isinstance(value, dict) and isinstance(base[key], dict):
            _merge(base[key], value, dotted, source)
        else:
            base[key] = copy.deepcopy(value)


# JSON Schema counts 2.0 as an integer; Python does not (range(2.0), a batch size of 64.0 fail deep inside a job).
_STRICT_TYPES = jsonschema.Draft202012Validator.TYPE_CHECKER.redefine(
    "integer", lambda checker, value: isinstance(value, int) and not isinstance(value, bool))
_Validator = jsonschema.validators.extend(jsonschema.Draft202012Validator, type_checker=_STRICT_TYPES)


def _validate(settings: dict, profile: str, source: Path) -> None:
    schema = yaml.safe_load(SCHEMA_PATH.read_text(encoding="utf-8"))
    validator = _Validator(schema)
    errors = sorted(validator.iter_errors(settings), key=lambda e: list(e.absolute_path))
    if errors:
        lines = []
        for err in errors:
            key = ".".join(str(p) for p in err.absolute_path) or "(top level)"
            lines.append(f"  {profile}.{key}: {err.message}")
        raise ConfigError(f"{source}: invalid parameters for profile '{profile}':\n" + "\n".join(lines))
