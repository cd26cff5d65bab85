"""Stages 1 and 2 start from pretrained files through the one weights loader (models/weights.py)."""

import copy

import pytest
import torch
import yaml

from pipeline.config import DEFAULT_PARAMS, resolve
from pipeline.models import create_model
from pipeline.training import stages


def _cfg(**model):
    raw = yaml.safe_load(DEFAULT_PARAMS.read_text())
    raw = copy.deepcopy(raw)
    raw["embedded"]["model"].update(model)
    return resolve(raw, profile="embedded")


def test_stage2_clip_heads_come_from_clip_weights(tmp_path):
    torch.manual_seed(0)
    source = create_model("audioclip-tiny")
    clip_state = {k: v for k, v in source.state_dict().items()
                  if not k.startswith("audio.") and k not in ("logit_scale_ai", "logit_scale_at")}
    torch.save(clip_state, tmp_path / "CLIP-tiny.pt")  # CLIP.pt's layout, at the tiny size
    model = stages._clip_heads(_cfg(clip_init="openai"), tmp_path / "CLIP-tiny.pt")
    for key, value in clip_state.items():
        assert torch.equal(model.state_dict()[key], value), key
    assert not torch.equal(model.audio.fc.weight, source.audio.fc.weight)  # the audio head is not in CLIP.pt


def test_stage1_init_must_match_audio_init(tmp_path):
    with pytest.raises(ValueError, match="needs --init <ImageNet ResNeXt weights> exactly when it is 'imagenet'"):
        stages.train_stage1(_cfg(audio_init="imagenet"), tmp_path / "a.h5", tmp_path / "o.pt", tmp_path / "r")
    torch.save(create_model("esresnext-fbsp-tiny").state_dict(), tmp_path / "audio.pt")
    with pytest.raises(ValueError, match="needs --init"):
        stages.train_stage1(_cfg(), tmp_path / "a.h5", tmp_path / "o.pt", tmp_path / "r", init=tmp_path / "audio.pt")
