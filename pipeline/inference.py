"""Zero-shot classification and embeddings of files: the library behind `classify` and `embed`.

Amplitude convention. The networks take waveforms in **int16 amplitude scale** (a float tensor whose full scale
is +-32768), exactly what the released datasets fed them and what their weights were trained on; the audio head
maps that range to [-1, 1] itself (AUDIOCLIP_FACTS.md section 3). Everything that reads audio (soundfile,
ffmpeg, torchaudio, librosa) gives [-1, 1] instead, so every waveform crosses into a model through
`to_model_amplitude(x, amplitude)`: 'unit' ([-1, 1], the default here) is multiplied by 32768, 'int16' passes
unchanged. Feeding [-1, 1] audio straight into the network, as the official demo does, shifts its log-power
input by -90.3 dB; the adapter makes that mistake impossible to make silently (a 'unit' waveform with a peak
far above 1 is refused).

A 44.1 kHz WAV of int16 samples reaches the full-size network as the released ESC-50 loader feeds it: librosa
(mono, no resampling at the native rate) gives samples/32768, times 32768 gives the integers back exactly;
here soundfile gives the same samples/32768 and the adapter the same integers. Other rates are resampled to the
model's rate (torchaudio), other channel counts mixed down to mono by averaging (librosa's mono=True).
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.data.audio_io import load_audio, load_image
from pipeline.models.factory import SAMPLE_RATES

logger = logging.getLogger(__name__)

INT16_SCALE = 32768.0
AMPLITUDES = ('unit', 'int16')
MODALITIES = ('audio', 'image', 'text')
# A standalone audio checkpoint is put into the AudioCLIP of the same size (its text and image heads then stay
# as initialised, which the loader reports).
AUDIOCLIP_FOR = {'esresnext-fbsp': 'audioclip-rn50', 'esresnext-fbsp-tiny': 'audioclip-tiny'}


def to_model_amplitude(x: torch.Tensor, amplitude: str = 'unit') -> torch.Tensor:
    """A waveform in `amplitude` convention -> the networks' int16 amplitude scale (float32)."""
    if amplitude not in AMPLITUDES:
        raise ValueError(f'amplitude must be one of {AMPLITUDES}, got {amplitude!r}')
    x = x.float()
    peak = float(x.abs().max()) if x.numel() else 0.0
    if amplitude == 'int16':
        if 0.0 < peak <= 1.0:
            logger.warning('waveform declared int16 scale has peak %.3g <= 1: is it [-1, 1] audio '
                           "(amplitude='unit')?", peak)
        return x
    if peak > 2.0:  # float files may exceed full scale a little, never by 6 dB and more
        raise ValueError(f"waveform declared [-1, 1] (amplitude='unit') has peak {peak:.6g}: it looks like "
                         f"int16-scale audio; pass amplitude='int16'")
    return x * INT16_SCALE


def read_audio(path: str | Path, sample_rate: int) -> torch.Tensor:
    """Any audio file ffmpeg or soundfile decodes -> (1, L) at `sample_rate`, int16 amplitude scale."""
    return to_model_amplitude(torch.from_numpy(load_audio(path, sample_rate, channels=1)), 'unit')


# ----------------------------------------------------------------------------- model

def load_inference_model(checkpoint: str | Path, device: torch.device | str = 'cpu') -> tuple[torch.nn.Module, int]:
    """An AudioCLIP in eval mode from any file the weights loader accepts, and its audio sample rate."""
    from pipeline.models.weights import model_from_weights, read_weights

    weights = read_weights(checkpoint)
    name = weights.model_name
    if weights.kind in ('esresnext', 'resnext'):
        name = AUDIOCLIP_FOR.get(name, 'audioclip-rn50')
    model, name, _ = model_from_weights(weights, name=name)
    return model.to(device).eval(), SAMPLE_RATES[name]


# ----------------------------------------------------------------------------- embeddings

@torch.inference_mode()
def embed_audio(model, paths: list, sample_rate: int) -> torch.Tensor:
    """L2-normalised audio embeddings (N, D), one file at a time (clips keep their own length, no padding)."""
    device = model.logit_scale.device
    rows = [model.encode_audio(read_audio(p, sample_rate).unsqueeze(0).to(device)) for p in paths]  # (1, D) each
    return F.normalize(torch.cat(rows), dim=-1)


@torch.inference_mode()
def embed_images(model, paths: list) -> torch.Tensor:
    """L2-normalised image embeddings (N, D); CLIP preprocessing (bicubic resize, centre crop, CLIP mean/std)."""
    from open_clip.transform import image_transform

    preprocess = image_transform(model.image_size, is_train=False)
    batch = torch.stack([preprocess(load_image(p)) for p in paths]).to(model.logit_scale.device)  # (N, 3, S, S)
    return F.normalize(model.encode_image(batch), dim=-1)


@torch.inference_mode()
def embed_texts(model, texts: list[str]) -> torch.Tensor:
    """L2-normalised text embeddings (N, D) of the strings as given (no template)."""
    return F.normalize(model.encode_text(model.tokenize(list(texts))), dim=-1)


def embed(model, inputs: list, modality: str, sample_rate: int) -> np.ndarray:
    if modality not in MODALITIES:
        raise ValueError(f'modality must be one of {MODALITIES}, got {modality!r}')
    if not inputs:
        raise ValueError('nothing to embed: give at least one input')
    if modality == 'audio':
        out = embed_audio(model, inputs, sample_rate)
    elif modality == 'image':
        out = embed_images(model, inputs)
    else:
        out = embed_texts(model, inputs)
    return out.float().cpu().numpy()


# ----------------------------------------------------------------------------- zero-shot classification

def parse_labels(text: str) -> list[str]:
    """'a, b,c' -> ['a', 'b', 'c']; empty or repeated labels are errors."""
    labels = [s.strip() for s in text.split(',')]
    if any(not s for s in labels):
        raise ValueError(f'--labels {text!r}: empty label (labels are comma-separated)')
    repeated = sorted({s for s in labels if labels.count(s) > 1})
    if repeated:
        raise ValueError(f'--labels: repeated label(s) {repeated}')
    if len(labels) < 2:
        raise ValueError('--labels: give at least two labels to choose between')
    return labels


@torch.inference_mode()
def classify(model, paths: list, labels: list[str], sample_rate: int, template: str = '{}') -> np.ndarray:
    """Zero-shot probabilities (N files, K labels): softmax over labels of scale_at * audio @ text.T, the text
    being `template.format(label)` (default: the bare label, as published)."""
    audio = embed_audio(model, paths, sample_rate)  # (N, D)
    text = embed_texts(model, [template.format(label) for label in labels])  # (K, D)
    logits = model.logit_scales()['audio_text'] * audio @ text.T  # (N, K)
    return logits.softmax(dim=-1).float().cpu().numpy()
