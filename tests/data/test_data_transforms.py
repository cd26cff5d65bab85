"""Augmentations: the released code's semantics (facts §7), drawn per clip, applied per batch, deterministic."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.data.transforms import Augment, apply_plans, draw_plan

AUG = {"time_scale": 1.5, "flip": {"mode": "time", "p": 0.5}, "noise": {"p": 0.25, "snr_min": 10, "snr_max": 120},
       "crop_heuristic": True}
PAPER = Augment.from_dict(AUG)
PLAIN = Augment()  # nothing random; crop heuristic on, as released


def rng(seed=0):
    return np.random.default_rng(seed)


def plan(flip=0, scale=1.0, offset=0, snr=math.nan, seed=0):
    return torch.tensor([[flip, scale, offset, snr, seed]], dtype=torch.float64)


def apply_one(x, clip, aug=PLAIN, **kw):
    """x (C, L) with the plan given by kw -> (C, clip), the same from both implementations."""
    args = (x.unsqueeze(0), torch.tensor([x.shape[-1]]), plan(**kw), clip, aug)
    per_clip, vectorised = apply_plans(*args, vectorised=False)[0], apply_plans(*args, vectorised=True)[0]
    assert torch.equal(per_clip, vectorised)
    return per_clip


def test_scale_interpolates_at_k_over_s():
    x = torch.arange(100, dtype=torch.float32).view(1, 100)
    up = apply_one(x, 200, scale=2.0)  # sample k reads position k / 2
    assert torch.allclose(up[0, :198], torch.arange(198) / 2.0)
    assert up[0, -1] == 99  # clamped at the last sample
    down = apply_one(x, 50, scale=0.5)
    assert torch.equal(down[0], torch.arange(0, 100, 2, dtype=torch.float32))
    assert torch.equal(apply_one(x, 100), x)  # no plan: the clip itself


def test_scale_factor_and_length_drawn_as_released():
    factors = [draw_plan(PAPER, 1000, 1000, True, rng(s))[1] for s in range(300)]
    assert 1 / 1.5 <= min(factors) < 0.75 and 1.4 < max(factors) <= 1.5
    # the draw order is the released one: flip first, then the scale factor
    g = rng(7)
    flip = g.random() < 0.5
    assert draw_plan(PAPER, 1000, 1000, True, rng(7))[:2].tolist() == [float(flip), 1.5 ** g.uniform(-1, 1)]
    assert draw_plan(Augment.from_dict({"time_scale": 1.0}), 1000, 1000, True, rng())[1] == 1.0


def test_flip_modes():
    x = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    assert torch.equal(apply_one(x, 3, flip=1), torch.tensor([[3.0, 2.0, 1.0], [6.0, 5.0, 4.0]]))
    channel = Augment(flip_mode="channel")
    assert torch.equal(apply_one(x, 3, channel, flip=1), torch.tensor([[4.0, 5.0, 6.0], [1.0, 2.0, 3.0]]))
    assert torch.equal(apply_one(x[:1], 3, channel, flip=1), x[:1])  # released code: a no-op on mono
    flips = sum(draw_plan(PAPER, 3, 3, True, rng(s))[0] for s in range(400))
    assert 150 < flips < 250
    with pytest.raises(ValueError, match="space"):
        Augment.from_dict({"flip": {"mode": "space", "p": 0.5}})


def test_padding_centre_at_eval_with_edge_means():
    x = torch.tensor([[1.0, 5.0, 2.0], [3.0, 7.0, 4.0]])
    offset = draw_plan(PLAIN, 3, 8, False, rng())[2]
    assert offset == 2  # gap 5 -> left round(2.5) = 2 (banker's rounding, as Python/numpy round), right 3
    y = apply_one(x, 8, offset=offset)
    assert torch.equal(y[:, 2:5], x)
    assert torch.equal(y[:, :2], torch.full((2, 2), 2.0))  # mean(1, 3)
    assert torch.equal(y[:, 5:], torch.full((2, 3), 3.0))  # mean(2, 4)
    lefts = {int(draw_plan(PLAIN, 3, 8, True, rng(s))[2]) for s in range(100)}
    assert lefts == {0, 1, 2, 3, 4}  # randint(0, gap): the last offset (5) is never drawn, as released
    assert draw_plan(PLAIN, 3, 10, False, rng())[2] == 4  # gap 7 -> round(3.5) = 4


def test_crop_centre_at_eval_and_heuristic():
    x = torch.arange(10, dtype=torch.float32).view(1, 10)
    no_rule = Augment(crop_heuristic=False)
    assert draw_plan(no_rule, 10, 4, False, rng())[2] == 3
    assert torch.equal(apply_one(x, 4, no_rule, offset=3), x[:, 3:7])
    assert {int(draw_plan(no_rule, 10, 4, True, rng(s))[2]) for s in range(200)} == set(range(6))
    # loud start, silent middle: the centred crop is quiet, so the heuristic takes the first clip samples
    sig = torch.zeros(1, 30)
    sig[0, :6] = torch.tensor([1.0, -1.0, 1.0, -1.0, 1.0, -1.0])
    assert torch.equal(apply_one(sig, 8, offset=11), sig[:, :8])
    assert torch.equal(apply_one(sig, 8, no_rule, offset=11), sig[:, 11:19])
    # silent middle, nearly silent start, loud end: the second rule takes the last clip samples
    tail = torch.zeros(1, 30)
    tail[0, 2] = 0.2
    tail[0, -6:] = torch.tensor([1.0, -1.0, 1.0, -1.0, 1.0, -1.0])
    assert torch.equal(apply_one(tail, 8, offset=11), tail[:, -8:])


def test_noise_snr_probability_and_silence():
    x = torch.from_numpy(np.sin(np.arange(20000) / 5.0)).float().view(1, -1) * 1000
    snrs = []
    for s in range(20):
        y = apply_one(x, 20000, snr=20.0 + s / 20, seed=s)
        snrs.append(10 * np.log10(float(x.pow(2).mean()) / float((y - x).pow(2).mean())) - s / 20)
    assert 19.7 < min(snrs) and max(snrs) < 20.3
    assert torch.equal(apply_one(x, 20000, snr=20.0, seed=3), apply_one(x, 20000, snr=20.0, seed=3))
    assert not torch.equal(apply_one(x, 20000, snr=20.0, seed=3), apply_one(x, 20000, snr=20.0, seed=4))
    noise_on = Augment(noise_p=1.0, snr_min=20, snr_max=20)
    assert all(20 <= draw_plan(noise_on, 10, 10, True, rng(s))[3] < 21 for s in range(50))
    applied = sum(not math.isnan(draw_plan(PAPER, 10, 10, True, rng(s))[3]) for s in range(400))
    assert 60 < applied < 140
    assert math.isnan(draw_plan(PAPER, 10, 10, False, rng())[3])  # never at evaluation
    assert torch.equal(apply_one(torch.zeros(1, 10), 10, snr=20.0, seed=1), torch.zeros(1, 10))


@pytest.mark.parametrize("vectorised", [False, True])
def test_a_batch_is_augmented_exactly_as_its_clips_one_by_one(vectorised):
    """Plans, lengths and channels mixed in one batch: each row equals that clip augmented alone, so batching,
    batch order and the number of loader threads change nothing; and both implementations agree."""
    g = rng(11)
    lengths = [50, 400, 137, 1, 260, 160]
    x = torch.zeros(len(lengths), 2, 400)
    for i, n in enumerate(lengths):
        x[i, :, :n] = torch.from_numpy(g.standard_normal((2, n))).float() * 1000
    plans = torch.from_numpy(np.stack([draw_plan(PAPER, n, 160, True, rng(100 + i)) for i, n in enumerate(lengths)]))
    plans[1, 3], plans[1, 4] = 30.0, 5  # at least one clip with noise
    batch = apply_plans(x, torch.tensor(lengths), plans, 160, PAPER, vectorised)
    assert batch.shape == (6, 2, 160) and batch.dtype == torch.float32
    assert torch.equal(batch, apply_plans(x, torch.tensor(lengths), plans, 160, PAPER, not vectorised))
    for i, n in enumerate(lengths):
        alone = apply_plans(x[i:i + 1, :, :n], torch.tensor([n]), plans[i:i + 1], 160, PAPER, vectorised)
        assert torch.equal(batch[i], alone[0]), i


def test_augment_keys_are_checked():
    with pytest.raises(ValueError, match="time_stretch"):
        Augment.from_dict({"time_stretch": 2})
    assert Augment.from_dict(None) == PLAIN


@settings(max_examples=60, deadline=None)
@given(length=st.integers(1, 400), channels=st.integers(1, 2), seed=st.integers(0, 2**32 - 1),
       train=st.booleans())
def test_output_always_has_clip_length(length, channels, seed, train):
    x = torch.from_numpy(np.random.default_rng(seed).standard_normal((channels, length))).float()
    p = torch.from_numpy(draw_plan(PAPER, length, 160, train, rng(seed))).unsqueeze(0)
    y = apply_plans(x.unsqueeze(0), torch.tensor([length]), p, 160, PAPER, vectorised=False)
    assert y.shape == (1, channels, 160) and torch.isfinite(y).all()
    assert torch.equal(y, apply_plans(x.unsqueeze(0), torch.tensor([length]), p, 160, PAPER, vectorised=True))
