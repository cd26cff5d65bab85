"""The paper's audio augmentations with the released code's exact semantics (facts §7).

Every transform maps a float tensor (C, L) to (C, L') and draws its randomness from the numpy Generator passed
in, never from a global RNG, so an item's augmentation is a pure function of its seed.

Train order (released protocols): flip -> scale -> pad -> crop -> noise. Eval: pad -> crop (centred).
"""

from __future__ import annotations

import math

import numpy as np
import torch

Tensor = torch.Tensor


class RandomFlip:
    """With probability p, flip. mode='time' reverses time (the paper's "time inversion"); mode='channel'
    flips the channel axis as the released code does on (C, L) input: a no-op for mono, L/R swap for stereo."""

    def __init__(self, p: float = 0.5, mode: str = "time"):
        if mode not in ("time", "channel"):
            raise ValueError(f"flip mode must be 'time' or 'channel', got {mode!r}")
        self.p, self.mode = p, mode

    def __call__(self, x: Tensor, rng: np.random.Generator) -> Tensor:
        if rng.random() < self.p:
            return x.flip(-1 if self.mode == "time" else 0)
        return x


class RandomScale:
    """Time-stretch by s = max_scale ** U(-1, 1) with linear interpolation (pitch shifts with it).

    Output length int(L * s) (at least 1); output sample i reads input position i / s, interpolating between floor and
    floor + 1 (clamped to the last sample).
    """

    def __init__(self, max_scale: float = 1.5):
        self.max_scale = max_scale

    def __call__(self, x: Tensor, rng: np.random.Generator) -> Tensor:
        s = self.max_scale ** rng.uniform(-1.0, 1.0)
        return self.scale(x, s)

    @staticmethod
    def scale(x: Tensor, s: float) -> Tensor:
        n = x.shape[-1]
        out = max(1, int(n * s))  # released: int(n * s); never let a 1-sample clip vanish
        pos = torch.arange(out, dtype=torch.float64) / s  # (L',) input positions
        i0 = pos.long()
        i1 = torch.clamp(i0 + 1, max=n - 1)
        frac = (pos - i0).to(x.dtype)
        return x[..., i0] * (1 - frac) + x[..., i1] * frac


class RandomPadding:
    """If L < out_len, pad to out_len: train at a random offset randint(0, out_len - L), eval centred
    (round((out_len - L) / 2)). The left pad repeats the channel-mean of the first sample, the right pad that
    of the last sample (edge-mean padding, not zeros)."""

    def __init__(self, out_len: int, train: bool = True):
        self.out_len, self.train = out_len, train

    def __call__(self, x: Tensor, rng: np.random.Generator) -> Tensor:
        n = x.shape[-1]
        if n >= self.out_len:
            return x
        gap = self.out_len - n
        left = int(rng.integers(0, gap)) if self.train else int(round(gap / 2))
        c = x.shape[0]
        return torch.cat([x[:, :1].mean().expand(c, left), x, x[:, -1:].mean().expand(c, gap - left)], dim=-1)


class RandomCrop:
    """If L > out_len, crop out_len samples: train at randint(0, L - out_len), eval centred.

    heuristic=True keeps the released low-energy rejection (applied in train and eval, as released): with
    ref = 0.5 * std(x), a crop quieter than ref is replaced by the first out_len samples; then, if that is
    louder than the original crop but still below ref, by the last out_len samples.
    """

    def __init__(self, out_len: int, train: bool = True, heuristic: bool = True):
        self.out_len, self.train, self.heuristic = out_len, train, heuristic

    def __call__(self, x: Tensor, rng: np.random.Generator) -> Tensor:
        n = x.shape[-1]
        if n <= self.out_len:
            return x
        gap = n - self.out_len
        left = int(rng.integers(0, gap)) if self.train else int(round(gap / 2))
        crop = x[..., left:left + self.out_len]
        if not self.heuristic:
            return crop
        ref = 0.5 * x.std()
        crop_std = crop.std()
        if crop_std < ref:
            out = x[..., :self.out_len]
            if ref > out.std() > crop_std:
                out = x[..., -self.out_len:]
            return out
        return crop


class RandomNoise:
    """With probability p (drawn as U[0,1) <= p), add white Gaussian noise at an SNR of
    U[0,1) * (snr_max - snr_min + 1) + snr_min dB, relative to the mean power over all channels and samples."""

    def __init__(self, snr_min: float = 10.0, snr_max: float = 120.0, p: float = 0.25):
        self.snr_min, self.snr_max, self.p = snr_min, snr_max, p

    def __call__(self, x: Tensor, rng: np.random.Generator) -> Tensor:
        if not rng.random() <= self.p:
            return x
        snr = rng.random() * (self.snr_max - self.snr_min + 1.0) + self.snr_min
        power = float(x.double().pow(2).mean())
        if power <= 0.0:  # silence: the released code adds N(0, 0), i.e. nothing
            return x
        std = math.sqrt(power * 10 ** (-snr / 10))
        noise = torch.from_numpy(rng.standard_normal(tuple(x.shape))).to(x.dtype)
        return x + std * noise


class Compose:
    def __init__(self, transforms: list):
        self.transforms = transforms

    def __call__(self, x: Tensor, rng: np.random.Generator) -> Tensor:
        for t in self.transforms:
            x = t(x, rng)
        return x


AUGMENT_KEYS = {"time_scale", "flip", "noise", "crop_heuristic"}


def audio_transform(augment: dict | None, clip_samples: int, train: bool) -> Compose:
    """The released pipeline from an `augment` block of params.yaml:
    {time_scale: 1.5, flip: {mode, p}, noise: {p, snr_min, snr_max}, crop_heuristic: true}.
    time_scale 1.0 (or absent), flip/noise absent or p 0 disable that step. Eval ignores all but crop_heuristic."""
    augment = dict(augment or {})
    unknown = set(augment) - AUGMENT_KEYS
    if unknown:
        raise ValueError(f"unknown augment keys {sorted(unknown)}; known: {sorted(AUGMENT_KEYS)}")
    heuristic = bool(augment.get("crop_heuristic", True))
    steps: list = []
    if train:
        flip = augment.get("flip") or {}
        if flip.get("p", 0) > 0:
            steps.append(RandomFlip(p=float(flip["p"]), mode=flip.get("mode", "time")))
        scale = float(augment.get("time_scale", 1.0))
        if scale != 1.0:
            steps.append(RandomScale(scale))
    steps += [RandomPadding(clip_samples, train), RandomCrop(clip_samples, train, heuristic)]
    noise = augment.get("noise") or {}
    if train and noise.get("p", 0) > 0:
        steps.append(RandomNoise(float(noise.get("snr_min", 10)), float(noise.get("snr_max", 120)), float(noise["p"])))
    return Compose(steps)
