"""Inference: the amplitude adapter, audio reaching the network exactly, and the classify/embed CLI contract."""
from __future__ import annotations

import json
import logging
import subprocess

import numpy as np
import pytest
import soundfile as sf
import torch

from pipeline import inference
from pipeline.cli import main
from pipeline.models import create_model
from pipeline.training.model_io import save_model

LABELS = ["dog", "rain", "church bells"]


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "audioclip-tiny.pt"
    save_model(path, create_model("audioclip-tiny"), "audioclip-tiny", {}, {"stage": "test"})
    return path


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Three short clips at different rates, channel counts and formats."""
    root = tmp_path_factory.mktemp("clips")
    t = np.arange(16000) / 16000
    sf.write(root / "a.wav", (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 16000, subtype="PCM_16")
    stereo = np.stack([0.2 * np.sin(2 * np.pi * 300 * t[:11025]), 0.1 * np.sign(np.sin(2 * np.pi * 5 * t[:11025]))], 1)
    sf.write(root / "b.flac", stereo, 11025)
    m4a = root / "c.m4a"  # a container only ffmpeg reads
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-f", "lavfi", "-i", "sine=frequency=900:duration=0.7",
                    "-ar", "22050", "-c:a", "aac", str(m4a)], check=True)
    return [root / "a.wav", root / "b.flac", m4a]


def test_amplitude_adapter():
    x = torch.tensor([-1.0, 0.5, 32767 / 32768])
    assert torch.equal(inference.to_model_amplitude(x, "unit"), torch.tensor([-32768.0, 16384.0, 32767.0]))
    ints = torch.tensor([-32768.0, 12.0, 32767.0])
    assert torch.equal(inference.to_model_amplitude(ints, "int16"), ints)
    with pytest.raises(ValueError, match="peak 32768.*amplitude='int16'"):
        inference.to_model_amplitude(ints, "unit")
    with pytest.raises(ValueError, match="amplitude must be one of"):
        inference.to_model_amplitude(x, "float")


def test_int16_declared_unit_audio_is_flagged(caplog):
    with caplog.at_level(logging.WARNING, logger="pipeline.inference"):
        inference.to_model_amplitude(torch.tensor([0.5, -0.25]), "int16")
    assert "peak 0.5 <= 1" in caplog.text


def test_44k_int16_wav_reaches_the_model_as_the_released_esc50_loader_feeds_it(tmp_path):
    """librosa.load(sr=44100, mono=True) * 32768 on a native 44.1 kHz int16 file = the integers themselves."""
    rng = np.random.default_rng(0)
    ints = rng.integers(-32768, 32768, 44100, dtype=np.int16)
    ints[:2] = (-32768, 32767)
    sf.write(tmp_path / "clip.wav", ints, 44100, subtype="PCM_16")
    x = inference.read_audio(tmp_path / "clip.wav", 44100)
    assert x.dtype == torch.float32 and x.shape == (1, 44100)
    assert torch.equal(x[0], torch.from_numpy(ints.astype(np.float32)))


def test_any_rate_channels_and_format_are_brought_to_the_model_rate(clips):
    lengths = [inference.read_audio(p, 8000).shape for p in clips]
    assert lengths[0] == (1, 8000) and lengths[1] == (1, 8000)  # 1 s at 16 kHz and 1 s at 11.025 kHz
    assert 5600 <= lengths[2][1] <= 5600 + 1024 * 8000 // 22050 + 8  # 0.7 s of AAC, padded to whole 1024-sample frames
    stereo = inference.read_audio(clips[1], 11025)[0].numpy()
    left, right = sf.read(clips[1], dtype="float32")[0].T
    np.testing.assert_allclose(stereo, (left + right) / 2 * 32768, atol=0.02)  # mono = channel mean


def test_the_network_receives_exactly_the_adapted_waveform(tiny_checkpoint, clips):
    model, rate = inference.load_inference_model(tiny_checkpoint)
    seen = []
    handle = model.audio.register_forward_pre_hook(lambda module, args: seen.append(args[0].clone()))
    try:
        probs = inference.classify(model, clips[:2], LABELS, rate)
    finally:
        handle.remove()
    assert rate == 8000 and probs.shape == (2, 3)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    for got, path in zip(seen, clips[:2]):
        assert torch.equal(got, inference.read_audio(path, rate).unsqueeze(0))


def test_embeddings_are_normalised_and_in_input_order(tiny_checkpoint, clips):
    model, rate = inference.load_inference_model(tiny_checkpoint)
    forward = inference.embed(model, clips, "audio", rate)
    backward = inference.embed(model, clips[::-1], "audio", rate)
    assert forward.shape == (3, 64) and forward.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(forward, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(forward, backward[::-1], rtol=1e-5, atol=1e-6)
    assert not np.allclose(forward[0], forward[1])


def test_classify_cli_json_contract(tiny_checkpoint, clips, capsys):
    code = main(["classify", *map(str, clips), "--labels", " dog, rain,church bells", "--checkpoint",
                 str(tiny_checkpoint), "--json"])
    assert code == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["file"] for r in rows] == [str(p) for p in clips]
    for row in rows:
        assert list(row["probabilities"]) == LABELS
        assert abs(sum(row["probabilities"].values()) - 1) < 1e-5
    assert main(["classify", str(clips[0]), "--labels", "dog,rain", "--checkpoint", str(tiny_checkpoint)]) == 0
    assert capsys.readouterr().out.startswith(f"{clips[0]}\t")


@pytest.mark.parametrize("modality", ["audio", "image", "text"])
def test_embed_cli_writes_one_row_per_input(tiny_checkpoint, clips, realdata, tmp_path, modality):
    inputs = {"audio": [str(p) for p in clips],
              "image": [str(realdata / "images" / "astronaut.png"), str(realdata / "tuxpaint" / "cow.png")],
              "text": ["a dog barking", "rain on a roof"]}[modality]
    out = tmp_path / "e.npy"
    assert main(["embed", *inputs, "--modality", modality, "--checkpoint", str(tiny_checkpoint), "--out", str(out)]) == 0
    vectors = np.load(out)
    assert vectors.shape == (len(inputs), 64)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    model, rate = inference.load_inference_model(tiny_checkpoint)
    np.testing.assert_allclose(vectors[-1], inference.embed(model, inputs[-1:], modality, rate)[0], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("argv, message", [
    (["--labels", "dog"], "at least two labels"),
    (["--labels", "dog,,rain"], "empty label"),
    (["--labels", "dog,rain,dog"], "repeated label(s) ['dog']"),
])
def test_classify_cli_bad_labels(tiny_checkpoint, clips, capsys, argv, message):
    assert main(["classify", str(clips[0]), *argv, "--checkpoint", str(tiny_checkpoint)]) == 2
    assert message in capsys.readouterr().err


def test_cli_names_bad_files(tiny_checkpoint, tmp_path, capsys):
    (tmp_path / "noise.wav").write_bytes(b"not audio at all")
    assert main(["classify", str(tmp_path / "noise.wav"), "--labels", "a,b", "--checkpoint", str(tiny_checkpoint)]) == 2
    assert "noise.wav" in capsys.readouterr().err
    assert main(["embed", "x", "--modality", "text", "--checkpoint", str(tmp_path / "none.pt"),
                 "--out", str(tmp_path / "e.npy")]) == 2
    assert "none.pt: no such checkpoint" in capsys.readouterr().err
    assert main(["embed", "x", "--modality", "text", "--checkpoint", str(tiny_checkpoint),
                 "--out", str(tmp_path / "e.txt")]) == 2
    assert "expected a .npy file" in capsys.readouterr().err
    assert not (tmp_path / "e.npy").exists()


@pytest.mark.slow
def test_full_size_released_layout_classifies_a_44k_clip(tmp_path, capsys):
    """A full-size AudioCLIP state_dict (the released files' layout) through the CLI on a 5 s, 44.1 kHz clip;
    the same bytes under a published name are refused because the published sha256 differs."""
    torch.manual_seed(0)
    state = create_model("audioclip-rn50").state_dict()
    torch.save(state, tmp_path / "my-audioclip.pt")
    t = np.arange(5 * 44100) / 44100
    sf.write(tmp_path / "clip.wav", (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32), 44100, subtype="PCM_16")
    assert main(["classify", str(tmp_path / "clip.wav"), "--labels", "dog,rain", "--json",
                 "--checkpoint", str(tmp_path / "my-audioclip.pt")]) == 0
    probs = json.loads(capsys.readouterr().out)[0]["probabilities"]
    assert abs(sum(probs.values()) - 1) < 1e-5
    (tmp_path / "my-audioclip.pt").rename(tmp_path / "AudioCLIP-Full-Training.pt")
    assert main(["classify", str(tmp_path / "clip.wav"), "--labels", "dog,rain",
                 "--checkpoint", str(tmp_path / "AudioCLIP-Full-Training.pt")]) == 2
    assert "differs from the published AudioCLIP-Full-Training.pt" in capsys.readouterr().err
