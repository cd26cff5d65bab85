# Shared set-up: the resolved profile, paths, and the command prefix every rule uses.
# Logic lives in the package (pipeline/); rules only say what goes in and out.
import json
import os
import re
import sys
import uuid
from pathlib import Path

import yaml

sys.path.insert(0, workflow.basedir)  # import `pipeline` from this checkout

from pipeline import layout
from pipeline.config import resolve
from pipeline.io import write_text

PARAMS_FILE = Path(workflow.basedir) / "params.yaml"

# params.yaml is validated against workflow/schemas/params.schema.yaml here, before any job runs; the error
# names the offending key. `--config profile=paper` picks the other profile.
CFG = resolve(config, profile=config.get("profile"), source=PARAMS_FILE)
PROFILE = CFG.profile
W = str(CFG.workdir)
LOGS = f"logs/{PROFILE}"


def _params_for_jobs():
    """The params file jobs read. If --config/--configfile changed anything, hand jobs the merged copy."""
    if config == yaml.safe_load(PARAMS_FILE.read_text()):
        return str(PARAMS_FILE.relative_to(Path.cwd())) if PARAMS_FILE.is_relative_to(Path.cwd()) else str(PARAMS_FILE)
    effective = Path(W) / "params.effective.yaml"
    text = yaml.safe_dump(dict(config), sort_keys=False)
    if not effective.exists() or effective.read_text() != text:
        write_text(effective, text)
    return str(effective)


ARGS = f"--params {_params_for_jobs()} --profile {PROFILE}"
# One id per `snakemake` invocation: MLflow nests every job's run under the run of the invocation that made it.
# Jobs see it in their environment (not as a rule parameter, which would rerun them on every invocation).
INVOCATION = os.environ.setdefault("PIPELINE_INVOCATION", uuid.uuid4().hex)
CONDA_ENV = "../../envs/audioclip.yaml"  # used with --sdm conda; pins mirror pyproject.toml
# The AudioSet stages run under torchrun when train.speed.devices > 1 (data parallel, one process per GPU).
_DEVICES = CFG["train"]["speed"]["devices"]
TRAIN_CMD = "python -m pipeline" if _DEVICES == 1 else f"torchrun --standalone --nproc_per_node {_DEVICES} -m pipeline"
# GPUs a cluster job asks for (resources: gpu=..., read by the SLURM executor; ignored when run locally).
TRAIN_GPUS = _DEVICES if CFG["train"]["speed"]["gpu_jobs"] else 0
MODEL_GPUS = 1 if CFG["train"]["speed"]["gpu_jobs"] else 0
# Training stages take half the cores: tiny CPU models gain little from more threads, and the fine-tuning
# jobs that do not depend on the running stage can use the other half meanwhile.
TRAIN_THREADS = max(1, workflow.cores // 2)


wildcard_constraints:
    dataset="esc50|us8k|audioset|imagenet",
    ftdataset="esc50|us8k",
    mode="standalone|partial|full",
    clipmodel="partial|full",


def section(*keys):
    """A slice of the resolved settings, as a `params:` value so that changing it reruns the rule."""
    value = CFG.settings
    for k in keys:
        value = value[k]
    return json.dumps(value, sort_keys=True)


def raw_input(dataset):
    """The input of a cache job: the dataset folder, or the coverage report of a fetched AudioSet."""
    return layout.raw_target(CFG, dataset)


def raw_folder(raw):
    """The dataset folder behind the `raw` input of a cache job (for a fetched AudioSet, a file in it)."""
    raw = Path(raw)
    return str(raw.parent if raw.name == "coverage.json" else raw)


def checkpoint_of(model):
    return layout.checkpoint(CFG, model)
