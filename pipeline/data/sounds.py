"""Procedural sound recipes: one acoustically distinct, jittered sound per class name.

SOUND_RECIPES maps a sound name to fn(rng, sample_rate, n_samples) -> float32 (n_samples,). Every recipe jitters
pitch, timing and timbre through `rng`, so no two clips are equal, but each class keeps its own signature
(harmonic barks, broadband rain with droplets, a wailing tone, periodic clicks, ...). All energy stays below
3.5 kHz so a cache at 8 kHz (Nyquist 4 kHz) keeps every class intact.

`render(names, rng, sample_rate, n_samples, channels)` mixes one or more recipes, adds coloured background noise
at a random SNR and a random level: that is what the synthetic datasets write. The same recipe is used wherever
the same sound appears (ESC-50 "dog", UrbanSound8K "dog_bark", AudioSet "Dog"+"Bark"), so zero-shot transfer
between the synthetic sets is meaningful.
"""

from __future__ import annotations

import functools
from typing import Callable

import numpy as np

BAND_TOP = 3400.0  # Hz; everything generated lives below this (8 kHz caches have a 4 kHz Nyquist)

Recipe = Callable[[np.random.Generator, int, int], np.ndarray]
SOUND_RECIPES: dict[str, Recipe] = {}


def recipe(fn: Recipe) -> Recipe:
    """Register fn under its name; the registered version returns float32 (recipes compute in float64)."""
    @functools.wraps(fn)
    def as_float32(rng: np.random.Generator, sample_rate: int, n_samples: int) -> np.ndarray:
        return fn(rng, sample_rate, n_samples).astype(np.float32)

    SOUND_RECIPES[fn.__name__] = as_float32
    return as_float32


# -----------------------------------------------------------------------------
# building blocks; t is seconds, every array is float64 (n,) until `render` casts to float32

_TABLE = 1024  # wavetable length; linear-interpolation error (< 0.2 % at the 40th harmonic) hides under the noise


def _tone(f: np.ndarray, sr: int, harmonics: int, rolloff: float, rng: np.random.Generator,
          odd_only: bool = False) -> np.ndarray:
    """Harmonic tone following the frequency track f (n,): harmonic k weighted k**-rolloff, random phases.

    One period is summed into a wavetable (harmonics that would cross BAND_TOP at the track's highest pitch
    are left out) and read at the running phase: one lookup per sample instead of one sine per harmonic.
    """
    k = np.arange(1, harmonics + 1)
    k = k[(k * f.max() < BAND_TOP) & ((k % 2 == 1) | (not odd_only))]
    theta = 2 * np.pi * np.arange(_TABLE) / _TABLE
    table = (k[:, None] ** -rolloff * np.sin(k[:, None] * theta + rng.uniform(0, 2 * np.pi, (len(k), 1)))).sum(0)
    pos = (np.cumsum(f) / sr % 1.0) * _TABLE  # (n,) running phase in table samples
    return np.interp(pos, np.arange(_TABLE + 1), np.append(table, table[0]))


def _noise(rng: np.random.Generator, n: int, sr: int, lo: float, hi: float, slope: float = 0.0) -> np.ndarray:
    """Gaussian noise band-limited to [lo, hi] Hz with power ~ f**-slope (0 white, 1 pink), unit RMS."""
    size = _fast_len(n)  # shape the noise at a length with small prime factors (fast FFT), keep the first n
    spec = np.fft.rfft(rng.standard_normal(size))
    freqs = np.fft.rfftfreq(size, 1 / sr)
    weight = ((freqs >= lo) & (freqs <= min(hi, BAND_TOP))) / np.maximum(freqs, 1.0) ** (slope / 2)
    x = np.fft.irfft(spec * weight, size)[:n]
    return x / (np.sqrt(np.mean(x**2)) + 1e-12)


def _lowpass(x: np.ndarray, sr: int) -> np.ndarray:
    """Brick-wall low-pass at BAND_TOP in the frequency domain (n,) -> (n,)."""
    spec = np.fft.rfft(x)
    spec[np.fft.rfftfreq(len(x), 1 / sr) > BAND_TOP] = 0
    return np.fft.irfft(spec, len(x))


@functools.lru_cache(maxsize=None)
def _fast_len(n: int) -> int:
    """Smallest m >= n whose prime factors are all 2, 3 or 5."""
    m = max(n, 1)
    while True:
        r = m
        for p in (2, 3, 5):
            while r % p == 0:
                r //= p
        if r == 1:
            return m
        m += 1


def _decay(m: int, sr: int, attack: float, decay: float) -> np.ndarray:
    """Percussive envelope (m,): exponential rise with time constant `attack`, then exponential decay."""
    t = np.arange(m) / sr
    return (1 - np.exp(-t / attack)) * np.exp(-t / decay)


def _smooth(m: int, sr: int, ramp: float) -> np.ndarray:
    """Sustained envelope (m,): raised-cosine ramps of `ramp` seconds at both ends."""
    env = np.ones(m)
    r = min(int(ramp * sr), m // 2)
    if r > 0:
        edge = 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, r))
        env[:r], env[m - r:] = edge, edge[::-1]
    return env


def _onsets(rng: np.random.Generator, n: int, count: int, length: int) -> list[int]:
    """`count` event starts: one per equal slot of the clip, jittered inside its slot (events never pile up)."""
    slot = n // count
    return [k * slot + int(rng.integers(0, max(1, slot - length))) for k in range(count)]


def _add(out: np.ndarray, start: int, event: np.ndarray) -> None:
    """out[start:] += event, cut at the clip end."""
    m = min(len(event), len(out) - start)
    if m <= 0:
        return
    out[start:start + m] += event[:m]


def _pitch(rng: np.random.Generator) -> float:
    return float(rng.uniform(0.88, 1.12))  # +-2 semitones of jitter on every tonal recipe


# -----------------------------------------------------------------------------
# the recipes (shared names: ESC-50 / UrbanSound8K / AudioSet classes map onto these)

@recipe
def dog(rng, sr, n):
    """1-3 barks: harmonic voice ~550 Hz gliding down, sharp attack, short decay, a breath of noise."""
    out, p = np.zeros(n), _pitch(rng)
    count = int(rng.integers(1, 4))
    for start in _onsets(rng, n, count, int(0.16 * sr)):
        m = int(rng.uniform(0.08, 0.16) * sr)
        f = p * rng.uniform(500, 650) * (1 - 0.35 * np.arange(m) / m)
        bark = _tone(f, sr, 10, 0.8, rng) + 0.3 * _noise(rng, m, sr, 400, 2500)
        _add(out, start, bark * _decay(m, sr, 0.005, m / sr * 0.35))
    return out


@recipe
def rain(rng, sr, n):
    """Steady broadband hiss plus dense random droplet clicks (damped 1-3 kHz sinusoids)."""
    out = _noise(rng, n, sr, rng.uniform(300, 600), BAND_TOP, slope=0.3)
    m = int(0.012 * sr)
    t = np.arange(m) / sr
    for start in rng.integers(0, n, size=int(rng.uniform(40, 80) * n / sr)):
        drop = np.sin(2 * np.pi * rng.uniform(1000, 3000) * t) * np.exp(-t / 0.003)
        _add(out, int(start), rng.uniform(1.0, 3.0) * drop)
    return out


@recipe
def crying_baby(rng, sr, n):
    """1-2 long 'waah' cries: ~430 Hz voice with a rise-fall contour and 6 Hz vibrato."""
    out, p = np.zeros(n), _pitch(rng)
    count = int(rng.integers(1, 3))
    for start in _onsets(rng, n, count, int(0.45 * n / count)):
        m = int(rng.uniform(0.35, 0.5) * n / count)
        u = np.arange(m) / m
        f = p * 430 * (1 + 0.18 * np.sin(np.pi * u)) * (1 + 0.03 * np.sin(2 * np.pi * 6 * np.arange(m) / sr))
        _add(out, start, _tone(f, sr, 8, 0.6, rng) * _smooth(m, sr, 0.05))
    return out


@recipe
def clock_tick(rng, sr, n):
    """Regular tick-tock every 0.22-0.35 s: 4 ms damped sinusoids alternating ~2.2 and ~1.8 kHz."""
    out, p = np.zeros(n), _pitch(rng)
    period = int(rng.uniform(0.22, 0.35) * sr)
    m = int(0.02 * sr)
    t = np.arange(m) / sr
    for k, start in enumerate(range(int(rng.integers(0, period)), n, period)):
        f = p * (2200 if k % 2 == 0 else 1800)
        _add(out, start, np.sin(2 * np.pi * f * t) * np.exp(-t / 0.004))
    return out


@recipe
def helicopter(rng, sr, n):
    """Low rotor noise (< 800 Hz) chopped by blade pulses at 9-14 Hz, plus a faint rotor hum."""
    t = np.arange(n) / sr
    rate = rng.uniform(9, 14)
    pulse = (0.5 + 0.5 * np.cos(2 * np.pi * rate * t + rng.uniform(0, 2 * np.pi))) ** 4
    hum = _tone(np.full(n, rate * 6), sr, 4, 1.0, rng)
    return _noise(rng, n, sr, 60, 800, slope=1.0) * (0.15 + pulse) + 0.3 * hum


@recipe
def chainsaw(rng, sr, n):
    """Buzzy sawtooth ~130 Hz with slow revving, 30 Hz roughness and high chain noise."""
    t = np.arange(n) / sr
    f = _pitch(rng) * rng.uniform(115, 145) * (1 + 0.2 * np.sin(2 * np.pi * rng.uniform(0.8, 2) * t))
    rough = 1 + 0.4 * np.sin(2 * np.pi * 30 * t)
    return _tone(f, sr, 26, 1.0, rng) * rough + 0.3 * _noise(rng, n, sr, 1000, 3000)


@recipe
def siren(rng, sr, n):
    """Slow 'wail' (1-2 Hz) or fast 'yelp' (4-6 Hz) sweep of a ~1 kHz tone over +-300 Hz."""
    t = np.arange(n) / sr
    rate = rng.uniform(1, 2) if rng.random() < 0.5 else rng.uniform(4, 6)
    f = _pitch(rng) * 1000 + rng.uniform(250, 350) * np.sin(2 * np.pi * rate * t + rng.uniform(0, 2 * np.pi))
    return _tone(f, sr, 3, 1.2, rng)


@recipe
def engine(rng, sr, n):
    """Revving engine: low harmonic series 45-70 Hz rising 1.3-1.8x over the clip, firing roughness."""
    u = np.arange(n) / n
    f = _pitch(rng) * rng.uniform(45, 70) * (1 + (rng.uniform(1.3, 1.8) - 1) * u)
    firing = 1 + 0.3 * np.sin(2 * np.pi * np.cumsum(f / 2) / sr)
    return _tone(f, sr, 30, 1.2, rng) * firing + 0.2 * _noise(rng, n, sr, 50, 1000, slope=1.0)


@recipe
def engine_idling(rng, sr, n):
    """Idling engine: steady 25-35 Hz series with strong chugging at the firing rate, rumble below 400 Hz."""
    f = np.full(n, _pitch(rng) * rng.uniform(25, 35))
    chug = (0.5 + 0.5 * np.sin(2 * np.pi * np.cumsum(f) / sr)) ** 3
    return _tone(f, sr, 40, 1.0, rng) * (0.3 + chug) + 0.3 * _noise(rng, n, sr, 30, 400, slope=1.0)


@recipe
def train(rng, sr, n):
    """Rail rumble below 300 Hz plus a clickety-clack: pairs of noisy knocks every 0.45-0.6 s."""
    out = _noise(rng, n, sr, 40, 300, slope=1.0)
    period, gap = int(rng.uniform(0.45, 0.6) * sr), int(rng.uniform(0.1, 0.14) * sr)
    m = int(0.05 * sr)
    for start in range(int(rng.integers(0, period)), n, period):
        for s in (start, start + gap):
            _add(out, s, 3 * _noise(rng, m, sr, 300, 1200) * _decay(m, sr, 0.001, 0.012))
    return out


@recipe
def church_bells(rng, sr, n):
    """1-3 bell strikes: inharmonic partials (0.5, 1, 1.19, 1.5, 2, 2.5, 3 x ~350 Hz), long decays."""
    out, base = np.zeros(n), _pitch(rng) * rng.uniform(300, 400)
    ratios = np.array([0.5, 1.0, 1.19, 1.5, 2.0, 2.51, 3.01])
    amps = np.array([0.6, 1.0, 0.6, 0.5, 0.45, 0.3, 0.2])
    count = int(rng.integers(1, 4))
    t = np.arange(n) / sr
    for start in _onsets(rng, n, count, n // (2 * count)):
        m = n - start
        strike = sum(a * np.sin(2 * np.pi * base * r * t[:m]) * np.exp(-t[:m] / (0.9 / r))
                     for r, a in zip(ratios, amps) if base * r < BAND_TOP)
        _add(out, start, strike * (1 - np.exp(-t[:m] / 0.002)))
    return out


@recipe
def air_conditioner(rng, sr, n):
    """Steady pink noise below ~2 kHz plus a fan-blade hum around 120 Hz, slow 0.5 Hz swell."""
    t = np.arange(n) / sr
    hum = _tone(np.full(n, _pitch(rng) * 120), sr, 5, 1.0, rng)
    swell = 1 + 0.1 * np.sin(2 * np.pi * 0.5 * t + rng.uniform(0, 2 * np.pi))
    return (_noise(rng, n, sr, 80, rng.uniform(1500, 2200), slope=1.0) + 0.4 * hum) * swell


@recipe
def car_horn(rng, sr, n):
    """1-2 honks: two square-ish tones a major third apart (~410 and ~520 Hz), abrupt on/off."""
    out, p = np.zeros(n), _pitch(rng)
    count = int(rng.integers(1, 3))
    for start in _onsets(rng, n, count, int(0.5 * n / count)):
        m = int(rng.uniform(0.3, 0.5) * n / count)
        f1 = np.full(m, p * 410)
        honk = _tone(f1, sr, 9, 1.0, rng, odd_only=True) + _tone(f1 * 1.26, sr, 7, 1.0, rng, odd_only=True)
        _add(out, start, honk * _smooth(m, sr, 0.01))
    return out


@recipe
def children_playing(rng, sr, n):
    """Many short voiced syllables (250-500 Hz, random glides, formant colour) over a babble bed."""
    out = 0.3 * _noise(rng, n, sr, 300, 3000) * (1 + 0.5 * np.sin(2 * np.pi * 4 * np.arange(n) / sr))
    for start in rng.integers(0, n, size=int(rng.integers(5, 9))):
        m = int(rng.uniform(0.08, 0.22) * sr)
        u = np.arange(m) / m
        f = rng.uniform(250, 500) * (1 + rng.uniform(-0.2, 0.2) * u)
        voice = _tone(f, sr, 10, 0.5, rng)
        formant = 0.5 * _noise(rng, m, sr, rng.uniform(700, 1000), rng.uniform(1800, 2800))
        _add(out, int(start), (voice + formant) * _smooth(m, sr, 0.02))
    return out


@recipe
def drilling(rng, sr, n):
    """Steady high whine 0.9-1.4 kHz with 80 Hz motor roughness and grinding noise; it may pause once."""
    t = np.arange(n) / sr
    f = np.full(n, _pitch(rng) * rng.uniform(900, 1400)) * (1 - 0.1 * np.exp(-t / 0.05))  # spin-up
    x = _tone(f, sr, 3, 0.8, rng) * (1 + 0.3 * np.sin(2 * np.pi * 80 * t)) + 0.4 * _noise(rng, n, sr, 600, 3000)
    if rng.random() < 0.5:  # the operator lets go for a moment
        a = int(rng.uniform(0.3, 0.7) * n)
        x[a:a + int(0.1 * n)] *= 0.05
    return x


@recipe
def gun_shot(rng, sr, n):
    """One or two shots: a broadband crack (40-80 ms decay) plus a low thump and a short reverb tail."""
    out = np.zeros(n)
    for start in _onsets(rng, n, int(rng.integers(1, 3)), int(0.3 * sr)):
        m = n - start
        crack = _noise(rng, m, sr, 100, BAND_TOP) * _decay(m, sr, 0.0005, rng.uniform(0.04, 0.08))
        thump = np.sin(2 * np.pi * rng.uniform(60, 100) * np.arange(m) / sr) * _decay(m, sr, 0.002, 0.15)
        tail = 0.1 * _noise(rng, m, sr, 200, 2000) * _decay(m, sr, 0.01, 0.3)
        _add(out, start, crack + thump + tail)
    return out


@recipe
def jackhammer(rng, sr, n):
    """Rapid hammering at 18-26 Hz: 1-3 kHz noise bursts with a metallic ring, in one or two runs."""
    out = np.zeros(n)
    period = int(sr / rng.uniform(18, 26))
    m = int(0.03 * sr)
    t = np.arange(m) / sr
    ring = rng.uniform(1500, 2500)
    run_start, run_end = int(rng.uniform(0, 0.2) * n), int(rng.uniform(0.7, 1.0) * n)
    for start in range(run_start, run_end, period):
        hit = _noise(rng, m, sr, 800, 3000) + 0.8 * np.sin(2 * np.pi * ring * t)
        _add(out, start, hit * _decay(m, sr, 0.0005, 0.008))
    return out


@recipe
def street_music(rng, sr, n):
    """A pentatonic melody (notes 0.12-0.25 s, 220-880 Hz) over a bass line changing every ~0.4 s."""
    out, p = np.zeros(n), _pitch(rng)
    scale = 220 * 2 ** (np.array([0, 2, 4, 7, 9, 12, 14, 16, 19, 21, 24]) / 12)
    start = 0
    while start < n:
        m = int(rng.uniform(0.12, 0.25) * sr)
        note = _tone(np.full(m, p * rng.choice(scale)), sr, 6, 1.5, rng) * _decay(m, sr, 0.01, m / sr * 0.6)
        _add(out, start, note)
        start += m
    bar = int(0.4 * sr)
    for start in range(0, n, bar):
        _add(out, start, 0.6 * _tone(np.full(bar, p * rng.choice(scale[:4]) / 2), sr, 4, 1.0, rng))
    return out


# -----------------------------------------------------------------------------
# mixing: the recipes plus level, background noise and channels

def render(names: str | list[str], rng: np.random.Generator, sample_rate: int, n_samples: int,
           channels: int = 1, snr_db: tuple[float, float] = (10.0, 30.0)) -> np.ndarray:
    """Mix recipes (each at unit RMS, secondary ones 0-8 dB softer) over coloured background noise.

    Returns float32 (channels, n_samples) with peak in [0.25, 0.9]. Stereo copies the sources into the second
    channel with a small delay and gain and gives each channel its own background noise.
    """
    names = [names] if isinstance(names, str) else list(names)
    clean = np.zeros(n_samples)
    for k, name in enumerate(names):
        x = SOUND_RECIPES[name](rng, sample_rate, n_samples).astype(np.float64)
        gain = 1.0 if k == 0 else 10 ** (-rng.uniform(0, 8) / 20)
        clean += gain * x / (np.sqrt(np.mean(x**2)) + 1e-12)
    noise_rms = np.sqrt(np.mean(clean**2)) * 10 ** (-rng.uniform(*snr_db) / 20)
    slope = rng.uniform(0.0, 1.5)  # white .. beyond pink: the backgrounds differ too
    out = []
    for c in range(channels):
        src = clean if c == 0 else rng.uniform(0.6, 1.0) * np.roll(clean, int(rng.integers(0, 20)))
        # sharp attacks, clip edges and truncated noise leak a little above the band: cut everything there
        out.append(_lowpass(src + noise_rms * _noise(rng, n_samples, sample_rate, 40, BAND_TOP, slope), sample_rate))
    y = np.stack(out)
    y *= rng.uniform(0.25, 0.9) / (np.abs(y).max() + 1e-12)
    return y.astype(np.float32)
