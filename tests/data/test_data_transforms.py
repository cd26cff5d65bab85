"""Augmentations: the released code's semantics (facts §7), deterministic given the Generator."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.data.transforms import (RandomCrop, RandomFlip, RandomNoise, RandomPadding, RandomScale,
                                      audio_transform)


def rng(seed=0):
    return np.random.default_rng(seed)


def test_scale_length_and_interpolation():
    x = torch.arange(100, dtype=torch.float32).view(1, 100)
    s = 1.5 ** np.random.default_rng(7).uniform(-1, 1)  # the factor RandomScale draws from this seed
    y = RandomScale(1.5)(x, rng(7))
    assert y.shape == (1, int(100 * s))
    up = RandomScale.scale(x, 2.0)  # sample i reads position i / 2
    assert up.shape == (1, 200)
    assert torch.allclose(up[0, :198], torch.arange(198) / 2.0)
    assert up[0, -1] == 99  # clamped at the last sample
    down = RandomScale.scale(x, 0.5)
    assert torch.equal(down[0], torch.arange(0, 100, 2, dtype=torch.float32))
    factors = [RandomScale(1.5)(torch.zeros(1, 1000), rng(s)).shape[1] / 1000 for s in range(200)]
    assert 0.66 <= min(factors) < 0.75 and 1.4 < max(factors) <= 1.5
    assert torch.equal(RandomScale(1.0)(x, rng()), x)


def test_flip_modes():
    x = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    assert torch.equal(RandomFlip(1.0, "time")(x, rng()), torch.tensor([[3.0, 2.0, 1.0], [6.0, 5.0, 4.0]]))
    assert torch.equal(RandomFlip(1.0, "channel")(x, rng()), torch.tensor([[4.0, 5.0, 6.0], [1.0, 2.0, 3.0]]))
    mono = x[:1]
    assert torch.equal(RandomFlip(1.0, "channel")(mono, rng()), mono)  # released code: a no-op on mono
    assert torch.equal(RandomFlip(0.0, "time")(x, rng()), x)
    flips = sum(not torch.equal(RandomFlip(0.5)(x, rng(s)), x) for s in range(400))
    assert 150 < flips < 250
    with pytest.raises(ValueError):
        RandomFlip(0.5, "space")


def test_padding_centre_at_eval_with_edge_means():
    x = torch.tensor([[1.0, 5.0, 2.0], [3.0, 7.0, 4.0]])
    y = RandomPadding(8, train=False)(x, rng())
    # gap 5 -> left round(2.5) = 2 (banker's rounding, as Python/numpy round), right 3
    assert torch.equal(y[:, 2:5], x)
    assert torch.equal(y[:, :2], torch.full((2, 2), 2.0))  # mean(1, 3)
    assert torch.equal(y[:, 5:], torch.full((2, 3), 3.0))  # mean(2, 4)
    lefts = {int((RandomPadding(8, train=True)(x, rng(s))[0] == 5.0).nonzero()[0]) - 1 for s in range(100)}
    assert lefts == {0, 1, 2, 3, 4}  # randint(0, gap): the last offset (5) is never drawn, as released
    assert torch.equal(RandomPadding(3, train=False)(x, rng()), x)
    assert torch.equal(RandomPadding(10, train=False)(x, rng())[:, 4:7], x)  # gap 7 -> left round(3.5) = 4


def test_crop_centre_at_eval_and_heuristic():
    x = torch.arange(10, dtype=torch.float32).view(1, 10)
    assert torch.equal(RandomCrop(4, train=False, heuristic=False)(x, rng()), x[:, 3:7])
    lefts = {int(RandomCrop(4, train=True, heuristic=False)(x, rng(s))[0, 0]) for s in range(200)}
    assert lefts == set(range(6))
    # loud start, silent middle: the centred crop is quiet, so the heuristic takes the first out_len samples
    sig = torch.zeros(1, 30)
    sig[0, :6] = torch.tensor([1.0, -1.0, 1.0, -1.0, 1.0, -1.0])
    assert torch.equal(RandomCrop(8, train=False)(sig, rng()), sig[:, :8])
    assert torch.equal(RandomCrop(8, train=False, heuristic=False)(sig, rng()), sig[:, 11:19])
    # silent middle, nearly silent start, loud end: the second rule takes the last out_len samples
    tail = torch.zeros(1, 30)
    tail[0, 2] = 0.2
    tail[0, -6:] = torch.tensor([1.0, -1.0, 1.0, -1.0, 1.0, -1.0])
    assert torch.equal(RandomCrop(8, train=False)(tail, rng()), tail[:, -8:])


def test_noise_snr():
    x = torch.from_numpy(np.sin(np.arange(20000) / 5.0)).float().view(1, -1) * 1000
    snrs = []
    for s in range(20):
        y = RandomNoise(snr_min=20, snr_max=20, p=1.0)(x, rng(s))  # target SNR in [20, 21)
        snrs.append(10 * np.log10(float(x.pow(2).mean()) / float((y - x).pow(2).mean())))
    assert 19.7 < min(snrs) and max(snrs) < 21.3
    assert torch.equal(RandomNoise(p=0.0)(x, rng()), x)
    applied = sum(not torch.equal(RandomNoise(p=0.25)(x, rng(s)), x) for s in range(400))
    assert 60 < applied < 140
    assert torch.equal(RandomNoise(p=1.0)(torch.zeros(1, 10), rng()), torch.zeros(1, 10))


AUG = {"time_scale": 1.5, "flip": {"mode": "time", "p": 0.5}, "noise": {"p": 0.25, "snr_min": 10, "snr_max": 120},
       "crop_heuristic": True}


def test_pipeline_order_and_determinism():
    train, test = audio_transform(AUG, 100, True), audio_transform(AUG, 100, False)
    assert [type(t).__name__ for t in train.transforms] == ["RandomFlip", "RandomScale", "RandomPadding",
                                                           "RandomCrop", "RandomNoise"]
    assert [type(t).__name__ for t in test.transforms] == ["RandomPadding", "RandomCrop"]
    x = torch.randn(2, 137)
    assert torch.equal(train(x, rng(3)), train(x, rng(3)))
    assert not torch.equal(train(x, rng(3)), train(x, rng(4)))
    with pytest.raises(ValueError, match="time_stretch"):
        audio_transform({"time_stretch": 2}, 100, True)
    assert len(audio_transform({"time_scale": 1.0}, 100, True).transforms) == 2  # everything off


@settings(max_examples=60, deadline=None)
@given(length=st.integers(1, 400), channels=st.integers(1, 2), seed=st.integers(0, 2**32 - 1),
       train=st.booleans())
def test_output_always_has_clip_length(length, channels, seed, train):
    x = torch.from_numpy(np.random.default_rng(seed).standard_normal((channels, length))).float()
    y = audio_transform(AUG, 160, train)(x, rng(seed))
    assert y.shape == (channels, 160) and torch.isfinite(y).all()
