"""params.yaml: both profiles resolve; bad values fail naming the key."""

import copy
import hashlib
import re

import pytest
import yaml

from pipeline.config import DEFAULT_PARAMS, ConfigError, load_config, params_hash, resolve

RAW = yaml.safe_load(DEFAULT_PARAMS.read_text())


def test_default_profile_is_embedded_and_small():
    cfg = load_config()
    assert cfg.profile == "embedded"
    assert cfg["data"]["source"] == "synthetic"
    assert cfg["model"]["audioclip"].endswith("tiny")
    assert str(cfg.workdir) == "work/embedded"


def test_paper_profile_holds_the_published_settings():
    cfg = load_config(profile="paper")
    assert cfg["data"]["sample_rate"] == 44100
    assert cfg["model"]["audioclip"] == "audioclip-rn50"
    s1 = cfg["train"]["stage1"]
    assert (s1["epochs"], s1["batch_size"], s1["lr"], s1["gamma"]) == (30, 64, 1e-4, 0.95)
    assert s1["nesterov"] and s1["momentum"] == 0.9 and s1["weight_decay"] == 5e-4
    ft = cfg["train"]["finetune"]
    assert (ft["esc50"]["lr"], ft["us8k"]["lr"], ft["esc50"]["epochs"]) == (5e-5, 1e-5, 50)


def test_embedded_overrides_only_what_it_names():
    paper, embedded = load_config(profile="paper"), load_config(profile="embedded")
    # momentum is not overridden by the embedded block, so it is inherited from the paper block
    assert embedded["train"]["stage1"]["momentum"] == paper["train"]["stage1"]["momentum"]
    assert embedded.params_hash != paper.params_hash


@pytest.mark.parametrize(
    "path, value, expected",
    [
        (("embedded", "train", "stage1", "epochs"), -3, "embedded.train.stage1.epochs"),
        (("embedded", "train", "finetune", "us8k", "lr"), "fast", "embedded.train.finetune.us8k.lr"),
        (("paper", "augment", "flip", "mode"), "sideways", "embedded.augment.flip.mode"),
        (("paper", "seed"), -1, "embedded.seed"),
        (("embedded", "data", "sample_rate"), 8000.5, "embedded.data.sample_rate"),
    ],
)
def test_wrong_values_name_the_key(path, value, expected):
    raw = copy.deepcopy(RAW)
    node = raw
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(ConfigError, match=expected.replace(".", r"\.")):
        resolve(raw)


def test_unknown_key_is_rejected():
    raw = copy.deepcopy(RAW)
    raw["embedded"]["train"]["stage1"]["epohcs"] = 2
    with pytest.raises(ConfigError, match=r"unknown key 'embedded\.train\.stage1\.epohcs'"):
        resolve(raw)


def test_unknown_key_in_paper_block_is_rejected_by_the_schema():
    raw = copy.deepcopy(RAW)
    raw["paper"]["model"]["size"] = "xl"
    with pytest.raises(ConfigError, match=r"model: Additional properties are not allowed \('size'"):
        resolve(raw)


def test_unknown_profile_is_rejected():
    with pytest.raises(ConfigError, match="unknown profile 'laptop'"):
        resolve(copy.deepcopy(RAW), profile="laptop")


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "params.yaml"
    bad.write_text("profile: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_params_hash_is_canonical():
    a = params_hash({"b": 1, "a": [1, 2.5, "x"]})
    assert a == params_hash({"a": [1, 2.5, "x"], "b": 1})  # key order does not matter
    assert a == hashlib.sha256(b'{"a":[1,2.5,"x"],"b":1}').hexdigest()[:12]
    assert a != params_hash({"a": [1, 2.5, "x"], "b": 2})
    assert re.fullmatch(r"[0-9a-f]{12}", a)


def _write(tmp_path, raw):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.reliability
@pytest.mark.parametrize("value", ["3", True, None, 2.0, 2.5])
def test_an_epoch_count_of_another_type_is_refused_from_the_file(tmp_path, value):
    # 2.0 passes JSON Schema's own 'integer' (2.0 == 2) but would fail in range() hours into a job; "3" and true
    # are what a quoted or mistyped YAML value reads as
    raw = copy.deepcopy(RAW)
    raw["embedded"]["train"]["stage1"]["epochs"] = value
    path = _write(tmp_path, raw)
    with pytest.raises(ConfigError, match=rf"{re.escape(str(path))}: invalid parameters.*\n  embedded\.train\.stage1"
                                          rf"\.epochs: {re.escape(repr(value))} is not of type 'integer'"):
        load_config(path)


@pytest.mark.reliability
def test_a_file_whose_own_profile_does_not_exist_is_refused(tmp_path):
    raw = copy.deepcopy(RAW)
    raw["profile"] = "laptop"
    path = _write(tmp_path, raw)
    with pytest.raises(ConfigError, match=rf"{re.escape(str(path))}: key 'profile': unknown profile 'laptop'; "
                                          r"defined: embedded, paper"):
        load_config(path)
