"""The HEAR 2021 common API (https://hearbenchmark.com) over the AudioCLIP audio head.

With this, benchmark harnesses that speak HEAR (hear-eval-kit, hear-validator) can evaluate our models:

    from pipeline import hear
    model = hear.load_model('AudioCLIP-Full-Training.pt')       # any file the weights loader accepts
    scene = hear.get_scene_embeddings(audio, model)              # (n_sounds, 1024)
    emb, ts = hear.get_timestamp_embeddings(audio, model)        # (n_sounds, T, 1024), (n_sounds, T) in ms

`audio` is HEAR's convention: a float tensor (n_sounds, n_samples) in [-1, 1] at `model.sample_rate` (44100 for
the full-size AudioCLIP, 8000 for the tiny test config). Every waveform crosses into the network through
`pipeline.inference.to_model_amplitude(x, 'unit')` (times 32768: the networks take int16 amplitude scale, see
pipeline/inference.py), so int16-scale input is refused with a ValueError rather than silently mis-scaled.

Choices (documented here because a harness cannot ask):
  - Embeddings are the L2-normalised AudioCLIP audio embedding: the output of the audio head's `fc`, i.e. the
    embed_dim-wide space shared with the text and image heads (1024-d full size, 64-d tiny), so a HEAR
    embedding can be compared with `encode_text` / `encode_image` embeddings of the same model. Not the
    2048-d pooled trunk features before `fc`, and not the 527-class AudioSet logits.
  - Scene embedding: the whole sound in one pass (the network pools over time itself, as it was trained on
    whole 5-10 s clips), not a mean of timestamp embeddings.
  - Timestamp embeddings: the same embedding of a window of `window_ms` (default 1000 ms) centred on every
    multiple of `hop_ms` (default 50 ms, HEAR-typical), from 0 ms up to the last centre <= the sound's end:
    T = 1 + n_samples // hop_samples. The sound is zero-padded (silence) by window_samples // 2 on the left,
    so the first centre is at 0 ms, and as needed on the right. Timestamps are the centres in milliseconds,
    computed from the integer hop in samples (round(hop_ms * sample_rate / 1000)), the same for every sound.
  - Memory stays bounded: timestamp windows are gathered from a strided view of the padded batch and sent
    through the network `batch_size` windows at a time (default 64, i.e. 64 s of audio per pass at 1 s
    windows); scene embeddings send as many whole sounds per pass as fit in the same sample budget
    (batch_size * window_samples), at least one. A single very long sound (minutes) is still one pass.
  - Inference runs under torch.no_grad() (not inference_mode: the returned tensors stay ordinary tensors a
    harness may use in autograd code), on the device of the model's parameters (the input is moved there;
    outputs are returned there), with the model put in eval mode (BatchNorm running statistics: a sound's
    embedding does not depend on the batch it came in, within float rounding). Outputs are float32.
  - `load_model('')` (no weights file) builds the named config (default 'audioclip-rn50') with random
    weights: for testing the plumbing only, never for reporting numbers.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from pipeline.inference import AUDIOCLIP_FOR, to_model_amplitude
from pipeline.models.factory import MODEL_CLASSES, SAMPLE_RATES, create_model

logger = logging.getLogger(__name__)

DEFAULT_MODEL = 'audioclip-rn50'
WINDOW_MS = 1000.0
HOP_MS = 50.0
BATCH_SIZE = 64
_AUDIOCLIP_NAMES = tuple(n for n, cls in MODEL_CLASSES.items() if cls.endswith(':AudioCLIP'))


class HearAudioCLIP(nn.Module):
    """An AudioCLIP with the attributes HEAR harnesses read; `forward(audio)` = scene embeddings."""

    def __init__(self, audioclip: nn.Module, model_name: str, window_ms: float = WINDOW_MS, hop_ms: float = HOP_MS,
                 batch_size: int = BATCH_SIZE):
        super().__init__()
        if not hasattr(audioclip, 'encode_audio') or not hasattr(audioclip, 'embed_dim'):
            raise TypeError(f'{type(audioclip).__name__} is not an AudioCLIP (no encode_audio / embed_dim)')
        if not (window_ms > 0 and hop_ms > 0):
            raise ValueError(f'window_ms and hop_ms must be > 0, got {window_ms} and {hop_ms}')
        if int(batch_size) < 1:
            raise ValueError(f'batch_size must be >= 1, got {batch_size}')
        self.audioclip = audioclip
        self.model_name = model_name
        self.sample_rate = int(SAMPLE_RATES[model_name])
        self.scene_embedding_size = int(audioclip.embed_dim)
        self.timestamp_embedding_size = int(audioclip.embed_dim)
        self.window_samples = max(1, round(window_ms * self.sample_rate / 1000))
        self.hop_samples = max(1, round(hop_ms * self.sample_rate / 1000))
        self.window_ms = 1000.0 * self.window_samples / self.sample_rate  # as realised in whole samples
        self.hop_ms = 1000.0 * self.hop_samples / self.sample_rate
        self.batch_size = int(batch_size)

    @property
    def audio(self) -> nn.Module:
        """The audio head (ESResNeXt-fbsp): what receives the int16-scale waveform."""
        return self.audioclip.audio

    @property
    def device(self) -> torch.device:
        return self.audioclip.logit_scale.device

    def embed(self, waveform: torch.Tensor) -> torch.Tensor:
        """(B, L) int16-scale waveform on the model's device -> (B, embed_dim), L2-normalised, float32."""
        return F.normalize(self.audioclip.encode_audio(waveform), dim=-1).float()

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        return get_scene_embeddings(audio, self)


def load_model(model_file_path: str = '', model_name: str | None = None, device: str | torch.device = 'cpu',
               window_ms: float = WINDOW_MS, hop_ms: float = HOP_MS, batch_size: int = BATCH_SIZE) -> HearAudioCLIP:
    """HEAR `load_model`: an AudioCLIP from any file pipeline.models.weights accepts, in eval mode.

    model_file_path: a released AudioCLIP / ESRNXFBSP / CLIP file, torchvision ResNeXt weights, or a pipeline
        checkpoint (training.model_io.save_model). Empty: `model_name` (default 'audioclip-rn50') with random
        weights, for testing only.
    model_name: the AudioCLIP config to build (e.g. 'audioclip-tiny'); with a file, overrides the config the
        file implies (as model_from_weights' `name`).
    window_ms, hop_ms: timestamp-embedding window length and hop (rounded to whole samples).
    batch_size: windows per forward pass (scene embeddings use the same number of samples per pass).
    """
    if model_name is not None and model_name not in _AUDIOCLIP_NAMES:
        raise ValueError(f'model_name must be an AudioCLIP config ({", ".join(_AUDIOCLIP_NAMES)}), got {model_name!r}')
    if not model_file_path:
        name = model_name or DEFAULT_MODEL
        logger.warning('HEAR load_model without a weights file: %s with RANDOM weights (testing only)', name)
        audioclip = create_model(name)
    else:
        from pipeline.models.weights import model_from_weights, read_weights

        weights = read_weights(Path(model_file_path))
        name = model_name or weights.model_name
        if weights.kind in ('esresnext', 'resnext') and name not in _AUDIOCLIP_NAMES:
            name = AUDIOCLIP_FOR.get(name, DEFAULT_MODEL)  # an audio head alone goes into the AudioCLIP of its size
        audioclip, name, _ = model_from_weights(weights, name=name)
        if name not in _AUDIOCLIP_NAMES:
            raise ValueError(f'{model_file_path}: holds a {name!r} model, not an AudioCLIP')
    model = HearAudioCLIP(audioclip, name, window_ms=window_ms, hop_ms=hop_ms, batch_size=batch_size)
    return model.to(device).eval()


def _check_audio(audio, model: HearAudioCLIP) -> torch.Tensor:
    """HEAR input (n_sounds, n_samples) in [-1, 1] -> int16 scale, float32, on the model's device."""
    if not isinstance(model, HearAudioCLIP):
        raise TypeError(f'model must come from pipeline.hear.load_model, got {type(model).__name__}')
    if not isinstance(audio, torch.Tensor):
        raise TypeError(f'audio must be a torch.Tensor (n_sounds, n_samples), got {type(audio).__name__}')
    if audio.dim() != 2:
        raise ValueError(f'audio must have shape (n_sounds, n_samples), got rank {audio.dim()} shape '
                         f'{tuple(audio.shape)}')
    if audio.shape[1] == 0:
        raise ValueError(f'audio has 0 samples per sound (shape {tuple(audio.shape)}): nothing to embed')
    if not audio.is_floating_point():
        raise ValueError(f'audio must be float in [-1, 1] (HEAR convention), got dtype {audio.dtype}')
    return to_model_amplitude(audio.to(model.device), 'unit')


def get_scene_embeddings(audio: torch.Tensor, model: HearAudioCLIP) -> torch.Tensor:
    """HEAR scene embeddings: (n_sounds, n_samples) in [-1, 1] at model.sample_rate -> (n_sounds,
    scene_embedding_size) float32, L2-normalised, each sound embedded whole."""
    x = _check_audio(audio, model)
    model.eval()
    n, length = x.shape
    per_pass = max(1, model.batch_size * model.window_samples // length)
    with torch.no_grad():
        rows = [model.embed(x[i:i + per_pass]) for i in range(0, n, per_pass)]
    if not rows:
        return torch.zeros(0, model.scene_embedding_size, device=model.device)
    return torch.cat(rows)


def timestamps_ms(n_samples: int, model: HearAudioCLIP) -> torch.Tensor:
    """The window centres of a sound of n_samples, in ms: 0, hop, 2 hop, ... <= the sound's end; (T,) float32."""
    count = 1 + n_samples // model.hop_samples
    centres = torch.arange(count, dtype=torch.float64) * model.hop_samples
    return (centres * 1000.0 / model.sample_rate).float()


def get_timestamp_embeddings(audio: torch.Tensor, model: HearAudioCLIP) -> tuple[torch.Tensor, torch.Tensor]:
    """HEAR timestamp embeddings: (n_sounds, n_samples) in [-1, 1] -> (embeddings (n_sounds, T,
    timestamp_embedding_size) float32 L2-normalised, timestamps (n_sounds, T) in ms, float32), T = 1 +
    n_samples // hop_samples; row t embeds the zero-padded window of window_samples centred on t * hop_samples."""
    x = _check_audio(audio, model)
    model.eval()
    n, length = x.shape
    win, hop = model.window_samples, model.hop_samples
    stamps = timestamps_ms(length, model).to(model.device)
    count = stamps.numel()
    left = win // 2
    right = max(0, (count - 1) * hop + win - left - length)
    frames = F.pad(x, (left, right)).unfold(-1, win, hop)[:, :count]  # (n, T, win): a view, nothing copied
    flat = torch.arange(n * count, device=model.device)
    out = torch.empty(n * count, model.timestamp_embedding_size, device=model.device)
    with torch.no_grad():
        for start in range(0, n * count, model.batch_size):
            idx = flat[start:start + model.batch_size]
            out[start:start + idx.numel()] = model.embed(frames[idx // count, idx % count])  # gathers the batch only
    return out.reshape(n, count, model.timestamp_embedding_size), stamps.expand(n, count).clone()
