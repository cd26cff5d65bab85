"""The command line: bad input ends with one line naming the problem, exit status 2."""

from __future__ import annotations

import json

import pytest

from pipeline.cli import main


@pytest.mark.parametrize("folds, message", [(["2", "7"], "--folds 2 7: esc50 has folds 1..5, each given at most "
                                                         "once (not 7)"),
                                            (["1", "1"], "--folds 1 1: esc50 has folds 1..5, each given at most once")])
def test_folds_outside_the_dataset_or_repeated_are_refused(capsys, tmp_path, folds, message):
    code = main(["finetune", "--dataset", "esc50", "--folds", *folds, "--mode", "full", "--init", "x.pt",
                 "--cache", "x.h5", "--out-dir", str(tmp_path), "--run-dir", str(tmp_path)])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not list(tmp_path.iterdir())  # refused before anything ran


def test_missing_checkpoint_is_named(capsys, tmp_path):
    code = main(["evaluate", "imagenet", "--model", "full", "--checkpoint", str(tmp_path / "none.pt"),
                 "--cache", str(tmp_path / "none.h5"), "--out", str(tmp_path / "m.json")])
    assert code == 2
    assert "none.pt: checkpoint not found" in capsys.readouterr().err


def test_unknown_profile_is_named(capsys, tmp_path):
    assert main(["generate-data", "--dataset", "esc50", "--out", str(tmp_path / "d"), "--profile", "gpu"]) == 2
    assert "unknown profile 'gpu'" in capsys.readouterr().err


def test_querying_needs_every_cache(capsys, tmp_path):
    code = main(["evaluate", "querying", "--model", "full", "--checkpoint", "x.pt", "--cache", "esc50=e.h5",
                 "--out", str(tmp_path / "q.json")])
    assert code == 2
    assert "missing for audioset, imagenet, us8k" in capsys.readouterr().err


def test_generate_and_describe_a_cache(capsys, tmp_path):
    root, cache = tmp_path / "esc50", tmp_path / "esc50.h5"
    assert main(["generate-data", "--dataset", "esc50", "--out", str(root)]) == 0
    assert main(["cache", "--dataset", "esc50", "--root", str(root), "--out", str(cache)]) == 0
    capsys.readouterr()
    assert main(["cache-info", str(cache), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["dataset"] == "esc50" and info["sample_rate"] == 8000 and info["n_clips"] == 200
    assert info["folds"] == {str(k): 40 for k in range(1, 6)}


@pytest.mark.parametrize("argv", [["train", "--stage", "stage2", "--cache", "a.h5", "--out", "o.pt",
                                   "--run-dir", "r"],
                                  ["train", "--stage", "stage1", "--out", "o.pt", "--run-dir", "r"]])
def test_training_stages_name_their_missing_inputs(capsys, argv):
    assert main(argv) == 2
    assert "needs --" in capsys.readouterr().err


def test_openai_clip_init_needs_clip_weights(capsys, tmp_path):
    import yaml

    from pipeline.config import DEFAULT_PARAMS

    params = yaml.safe_load(DEFAULT_PARAMS.read_text())
    params["embedded"]["model"]["clip_init"] = "openai"
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    code = main(["train", "--stage", "stage2", "--cache", "a.h5", "--init", "s1.pt", "--out", str(tmp_path / "o.pt"),
                 "--run-dir", str(tmp_path / "r"), "--params", str(path)])
    assert code == 2
    assert "clip_init: openai needs the CLIP weights (--clip-init RN50.pt or CLIP.pt)" in capsys.readouterr().err
    import torch

    from pipeline.models import create_model

    torch.save(create_model("esresnext-fbsp-tiny").state_dict(), tmp_path / "audio.pt")
    code = main(["train", "--stage", "stage2", "--cache", "a.h5", "--init", "s1.pt", "--out", str(tmp_path / "o.pt"),
                 "--clip-init", str(tmp_path / "audio.pt"), "--run-dir", str(tmp_path / "r"), "--params", str(path)])
    assert code == 2
    assert "audio.pt: model.clip_init: openai takes CLIP RN50 weights (RN50.pt, CLIP.pt), this is esresnext" in \
        capsys.readouterr().err


def test_import_weights_makes_a_stage_checkpoint(tmp_path, capsys):
    import torch

    from pipeline.models import create_model
    from pipeline.training.model_io import load_model

    torch.manual_seed(0)
    released = create_model("audioclip-tiny")
    torch.save(released.state_dict(), tmp_path / "released.pt")
    out = tmp_path / "stage3_full.pt"
    assert main(["import-weights", str(tmp_path / "released.pt"), "--stage", "full", "--name", "audioclip-tiny",
                 "--out", str(out)]) == 0
    model, meta = load_model(out)
    assert meta["stage"] == "released:full" and meta["weights"]["kind"] == "audioclip"
    assert all(torch.equal(v, released.state_dict()[k]) for k, v in model.state_dict().items())
    clip_only = {k: v for k, v in released.state_dict().items() if not k.startswith("audio.")}
    clip_only = {k: v for k, v in clip_only.items() if k not in ("logit_scale_ai", "logit_scale_at")}
    torch.save(clip_only, tmp_path / "clip.pt")
    assert main(["import-weights", str(tmp_path / "clip.pt"), "--stage", "full", "--name", "audioclip-tiny",
                 "--out", str(tmp_path / "x.pt")]) == 2
    assert "does not cover the whole audioclip-tiny" in capsys.readouterr().err and not (tmp_path / "x.pt").exists()


@pytest.mark.reliability
def test_a_bad_params_file_stops_a_command_naming_the_key(capsys, tmp_path):
    import yaml

    from pipeline.config import DEFAULT_PARAMS

    params = yaml.safe_load(DEFAULT_PARAMS.read_text())
    params["embedded"]["train"]["finetune"]["esc50"]["epochs"] = -2
    params["embedded"]["data"]["sample_rate"] = "8k"
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    code = main(["generate-data", "--dataset", "esc50", "--out", str(tmp_path / "d"), "--params", str(path)])
    err = capsys.readouterr().err
    assert code == 2 and not (tmp_path / "d").exists()  # nothing done
    assert "embedded.data.sample_rate: '8k' is not of type 'integer'" in err
    assert "embedded.train.finetune.esc50.epochs: -2 is less than the minimum of 1" in err  # every problem at once
