"""HEAR API (pipeline/hear.py) on the tiny AudioCLIP: attributes, shapes, normalisation, batching invariance,
timestamps, window placement, input validation, and the [-1, 1] -> int16-scale crossing into the network."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from pipeline import hear, inference
from pipeline.models import create_model
from pipeline.training.model_io import save_model

RATE = 8000  # the tiny configs' sample rate
LENGTH = 4100  # 0.5125 s: not a whole number of hops (the network cost is in the 1 s windows)
COUNT = 1 + LENGTH // 400  # 11 centres: 0, 50, ..., 500 ms
HOP = 400  # 50 ms at 8 kHz
WINDOW = 8000  # 1 s at 8 kHz


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("hear") / "audioclip-tiny.pt"
    save_model(path, create_model("audioclip-tiny"), "audioclip-tiny", {}, {})
    return path


@pytest.fixture(scope="module")
def model(tiny_checkpoint):
    return hear.load_model(str(tiny_checkpoint))


@pytest.fixture(scope="module")
def stamped(model, sounds):
    return hear.get_timestamp_embeddings(sounds, model)


@pytest.fixture(scope="module")
def sounds():
    """Three sounds of different content in [-1, 1]: a tone, noise, a chirp with silence."""
    g = torch.Generator().manual_seed(1)
    t = torch.arange(LENGTH, dtype=torch.float64) / RATE
    tone = 0.5 * torch.sin(2 * math.pi * 440 * t)
    noise = (torch.rand(LENGTH, generator=g, dtype=torch.float64) * 2 - 1) * 0.9
    chirp = 0.8 * torch.sin(2 * math.pi * (200 + 1500 * t) * t) * (t > 0.2)
    return torch.stack([tone, noise, chirp]).float()


def test_attributes(model):
    assert isinstance(model, torch.nn.Module) and not model.training
    assert model.sample_rate == RATE and isinstance(model.sample_rate, int)
    assert model.scene_embedding_size == 64 and model.timestamp_embedding_size == 64
    assert isinstance(model.scene_embedding_size, int) and isinstance(model.timestamp_embedding_size, int)
    assert (model.window_samples, model.hop_samples) == (WINDOW, HOP)
    assert model.hop_ms == 50.0 and model.window_ms == 1000.0


def test_scene_embeddings_are_the_normalised_audioclip_embedding(model, tiny_checkpoint, sounds):
    emb = hear.get_scene_embeddings(sounds, model)
    assert emb.shape == (3, 64) and emb.dtype == torch.float32
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(3), rtol=0, atol=1e-5)
    assert not torch.allclose(emb[0], emb[1], atol=1e-3) and not torch.allclose(emb[1], emb[2], atol=1e-3)
    # Same weights and the same numbers as the inference library's loader, computed independently.
    reference, rate = inference.load_inference_model(tiny_checkpoint)
    assert rate == model.sample_rate
    with torch.no_grad():
        expected = F.normalize(reference.encode_audio(sounds * 32768.0), dim=-1)
    torch.testing.assert_close(emb, expected, rtol=0, atol=1e-5)


def test_timestamp_embeddings_shapes_and_timestamps(stamped):
    emb, ts = stamped
    count = COUNT
    assert emb.shape == (3, count, 64) and emb.dtype == torch.float32
    assert ts.shape == (3, count) and ts.dtype == torch.float32
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(3, count), rtol=0, atol=1e-5)
    assert torch.equal(ts[0], ts[1]) and torch.equal(ts[0], ts[2])
    assert ts[0, 0].item() == 0.0
    torch.testing.assert_close(ts[0].diff(), torch.full((count - 1,), 50.0), rtol=0, atol=1e-4)
    assert ts[0, -1].item() == pytest.approx(500.0) and ts[0, -1].item() <= 1000 * LENGTH / RATE
    assert not torch.allclose(emb[0], emb[1], atol=1e-3)
    assert not torch.allclose(emb[2, 0], emb[2, -1], atol=1e-3)  # silence at 0 ms, chirp at the end


def test_each_window_is_centred_on_its_timestamp(model, sounds, stamped):
    """Row t embeds the zero-padded window of 1 s centred on t * hop, computed here by hand."""
    emb, _ = stamped
    padded = F.pad(sounds * 32768.0, (WINDOW // 2, WINDOW))
    for t in (0, 1, 6, COUNT - 1):
        window = padded[:, t * HOP:t * HOP + WINDOW]
        with torch.no_grad():
            expected = F.normalize(model.audioclip.encode_audio(window), dim=-1)
        torch.testing.assert_close(emb[:, t], expected, rtol=0, atol=1e-5)


def test_batching_does_not_change_results(tiny_checkpoint, model, sounds, stamped):
    small = hear.load_model(str(tiny_checkpoint), batch_size=5)  # windows split across passes and sounds
    scene = hear.get_scene_embeddings(sounds, model)
    emb, ts = stamped
    emb_small, ts_small = hear.get_timestamp_embeddings(sounds, small)
    torch.testing.assert_close(emb_small, emb, rtol=0, atol=1e-5)
    assert torch.equal(ts_small, ts)
    for i in range(3):
        alone = sounds[i:i + 1]
        torch.testing.assert_close(hear.get_scene_embeddings(alone, model), scene[i:i + 1], rtol=0, atol=1e-5)
        emb_alone, ts_alone = hear.get_timestamp_embeddings(alone, model)
        torch.testing.assert_close(emb_alone, emb[i:i + 1], rtol=0, atol=1e-5)
        assert torch.equal(ts_alone, ts[i:i + 1])
    # Deterministic: the same call twice gives the same numbers.
    assert torch.equal(hear.get_scene_embeddings(sounds, model), scene)


def test_unit_audio_reaches_the_network_in_int16_scale(model, sounds):
    seen = []
    handle = model.audio.register_forward_pre_hook(lambda module, args: seen.append(args[0].clone()))
    try:
        hear.get_scene_embeddings(sounds, model)
        scene_inputs = list(seen)
        seen.clear()
        hear.get_timestamp_embeddings(sounds[:1], model)
    finally:
        handle.remove()
    assert len(scene_inputs) == 1 and torch.equal(scene_inputs[0], sounds * 32768.0)
    first = seen[0][0]  # sound 0, window centred on 0 ms: half a window of silence, then the sound
    assert first.shape == (WINDOW,)
    assert torch.equal(first, torch.cat([torch.zeros(WINDOW // 2), sounds[0, :WINDOW // 2] * 32768.0]))
    assert seen[0].abs().max() > 1000  # int16 scale, not [-1, 1]


@pytest.mark.parametrize("audio, message", [
    (torch.zeros(LENGTH), "shape \\(n_sounds, n_samples\\), got rank 1"),
    (torch.zeros(2, 1, LENGTH), "got rank 3"),
    (torch.zeros(3, 0), "0 samples"),
    (torch.full((2, LENGTH), 1000.0), "int16-scale"),
    (torch.zeros(2, LENGTH, dtype=torch.int16), "must be float"),
])
def test_bad_input_is_a_clear_value_error(model, audio, message):
    with pytest.raises(ValueError, match=message):
        hear.get_scene_embeddings(audio, model)
    with pytest.raises(ValueError, match=message):
        hear.get_timestamp_embeddings(audio, model)


def test_short_sounds_and_empty_batches(model):
    emb, ts = hear.get_timestamp_embeddings(torch.full((2, 10), 0.1), model)  # shorter than one hop
    assert emb.shape == (2, 1, 64) and ts.tolist() == [[0.0], [0.0]]
    assert hear.get_scene_embeddings(torch.zeros(0, LENGTH), model).shape == (0, 64)
    emb, ts = hear.get_timestamp_embeddings(torch.zeros(0, LENGTH), model)
    assert emb.shape == (0, COUNT, 64) and ts.shape == (0, COUNT)


def test_load_model_without_weights_and_bad_names(sounds):
    torch.manual_seed(0)
    random = hear.load_model(model_name="audioclip-tiny")  # random weights: testing only
    assert random.sample_rate == RATE and random.scene_embedding_size == 64
    assert hear.get_scene_embeddings(sounds[:1], random).shape == (1, 64)
    with pytest.raises(ValueError, match="AudioCLIP config"):
        hear.load_model(model_name="esresnext-fbsp-tiny")
    with pytest.raises(ValueError, match="hop_ms"):
        hear.load_model(model_name="audioclip-tiny", hop_ms=0)


@pytest.mark.slow
def test_full_size_random_model_shapes():
    model = hear.load_model()  # audioclip-rn50 with random weights
    assert model.sample_rate == 44100 and model.scene_embedding_size == 1024 == model.timestamp_embedding_size
    assert (model.window_samples, model.hop_samples) == (44100, 2205)
    audio = torch.rand(1, 4410) * 2 - 1  # 100 ms: 3 windows of 1 s centred on 0, 50 and 100 ms
    assert hear.get_scene_embeddings(audio, model).shape == (1, 1024)
    emb, ts = hear.get_timestamp_embeddings(audio, model)
    assert emb.shape == (1, 3, 1024) and ts[0].tolist() == pytest.approx([0.0, 50.0, 100.0])
