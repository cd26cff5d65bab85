"""Decode audio files to float32 (C, L) in [-1, 1] at a requested rate, and image files to RGB.

soundfile (libsndfile) reads WAV/FLAC/OGG/MP3 exactly and fast; anything else (mp4/aac, webm/opus, ...) goes
through the ffmpeg binary via ffmpeg-python, an argument list and never a shell. A file that is missing,
cannot be decoded, is empty, truncated (a WAV shorter than its header says), entirely silent (every sample
zero) or holds NaN/inf samples raises AudioDecodeError naming it: a zero or NaN waveform would be trained on
and never noticed. (A truncated FLAC or OGG fails in the decoder; MP3 and MP4 declare no reliable length.)
"""

from __future__ import annotations

import io
import os
import struct
from pathlib import Path

import ffmpeg
import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF
from PIL import Image, ImageOps, UnidentifiedImageError


class AudioDecodeError(ValueError):
    """An audio file could not be turned into a usable waveform; the message names the file."""


class ImageDecodeError(ValueError):
    """An image could not be decoded; the message names the file."""


# -----------------------------------------------------------------------------
# audio

def decode_audio(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Native decode: float32 (C, L) and the file's own sample rate, no resampling or channel change."""
    path = Path(path)
    if not path.is_file():
        raise AudioDecodeError(f"{path}: no such audio file")
    _check_wav_length(path)
    try:
        data, sr = sf.read(path, dtype="float32", always_2d=True)  # (L, C)
        x = np.ascontiguousarray(data.T)
    except (sf.LibsndfileError, RuntimeError) as sf_err:
        # libsndfile does not know the container (mp4, webm, ...): let ffmpeg try before giving up.
        try:
            x, sr = _decode_ffmpeg(path)
        except AudioDecodeError as ff_err:
            raise AudioDecodeError(f"{ff_err} (soundfile also failed: {sf_err})") from None
    _check_waveform(x, path)
    return x, int(sr)


def _decode_ffmpeg(path: Path) -> tuple[np.ndarray, int]:
    # "file:" + an absolute path: a name starting with '-' is never read as an option, and a name containing
    # ':' is never read as a protocol (http:, concat:, ...).
    src = "file:" + str(path.resolve())
    try:
        probe = ffmpeg.probe(src)
    except ffmpeg.Error as err:
        raise AudioDecodeError(f"{path}: ffprobe cannot read it ({_stderr(err)})") from None
    streams = [s for s in probe.get("streams", []) if s.get("codec_type") == "audio"]
    if not streams:
        raise AudioDecodeError(f"{path}: no audio stream")
    sr, channels = int(streams[0]["sample_rate"]), int(streams[0]["channels"])
    try:
        raw, _ = (
            ffmpeg.input(src)["a:0"]  # first audio stream only; maps to `-map 0:a:0`
            .output("pipe:", format="f32le", acodec="pcm_f32le", ac=channels, ar=sr)
            .global_args("-nostdin", "-hide_banner", "-loglevel", "error")
            .run(capture_stdout=True, capture_stderr=True)
        )
    except ffmpeg.Error as err:
        raise AudioDecodeError(f"{path}: ffmpeg cannot decode it ({_stderr(err)})") from None
    samples = np.frombuffer(raw, dtype="<f4")
    samples = samples[: len(samples) // channels * channels]
    return samples.reshape(-1, channels).T.copy(), sr  # (C, L); a copy: frombuffer memory is read-only


def _stderr(err: ffmpeg.Error) -> str:
    text = (err.stderr or b"").decode("utf-8", "replace").strip().splitlines()
    return text[-1] if text else "no message"


def _check_wav_length(path: Path) -> None:
    """A RIFF/WAVE file whose data chunk is shorter than its header declares was cut off (an interrupted copy or
    download); libsndfile would quietly return the part that is there, and the cache would zero-pad the rest."""
    try:
        f = open(path, "rb")
    except OSError as err:
        raise AudioDecodeError(f"{path}: cannot read it ({err.strerror})") from None
    with f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return  # another format (RF64, FLAC, ...): the decoder's own checks apply
        size, pos = os.fstat(f.fileno()).st_size, 12
        while pos + 8 <= size:
            f.seek(pos)
            chunk, declared = struct.unpack("<4sI", f.read(8))
            if chunk == b"data":
                held = size - pos - 8
                # 0 and 0xFFFFFFFF: written to a pipe, the length was never filled in
                if declared not in (0, 0xFFFFFFFF) and held < declared:
                    raise AudioDecodeError(f"{path}: truncated: the header declares {declared} bytes of audio, "
                                           f"the file holds {held}")
                return
            pos += 8 + declared + (declared & 1)  # chunks are padded to an even length


def _check_waveform(x: np.ndarray, path: Path) -> None:
    if x.size == 0 or x.shape[-1] == 0:
        raise AudioDecodeError(f"{path}: empty audio (0 samples)")
    if not np.isfinite(x).all():
        raise AudioDecodeError(f"{path}: NaN or infinite samples")
    if not x.any():
        raise AudioDecodeError(f"{path}: silent (every sample is zero)")


def to_channels(x: np.ndarray, channels: int | None) -> np.ndarray:
    """(C, L) -> (channels, L). 1: mean of all channels; 2: mono duplicated, more than 2 keep the first two
    (front left/right in every common layout); None keeps the file's channels."""
    if channels is None or x.shape[0] == channels:
        return x
    if channels == 1:
        return x.mean(axis=0, keepdims=True)
    if channels == 2:
        return np.repeat(x, 2, axis=0) if x.shape[0] == 1 else x[:2]
    raise ValueError(f"channels must be 1, 2 or None, got {channels}")


def resample(x: np.ndarray, orig_sr: int, new_sr: int) -> np.ndarray:
    """(C, L) float32 at orig_sr -> (C, ceil(L * new_sr / orig_sr)) at new_sr (windowed-sinc, torchaudio)."""
    if orig_sr == new_sr:
        return x
    return AF.resample(torch.from_numpy(np.ascontiguousarray(x)), orig_sr, new_sr).numpy()


def load_audio(path: str | os.PathLike, sample_rate: int, channels: int | None = 1) -> np.ndarray:
    """float32 (C, L) in [-1, 1] at `sample_rate` with `channels` channels; AudioDecodeError on any failure."""
    x, sr = decode_audio(path)
    x = to_channels(x, channels)  # mix down first: resampling one channel is cheaper than six
    x = resample(x, sr, sample_rate)
    _check_waveform(x, Path(path))
    # float files may exceed full scale and the sinc filter can overshoot a little: keep the contract.
    return np.clip(x, -1.0, 1.0, out=x).astype(np.float32, copy=False)


# -----------------------------------------------------------------------------
# images

def load_image(path_or_bytes: str | os.PathLike | bytes) -> Image.Image:
    """Any PIL-readable image -> RGB, upright (EXIF orientation applied), alpha composited over white."""
    name = "<bytes>" if isinstance(path_or_bytes, (bytes, bytearray)) else str(path_or_bytes)
    try:
        src = io.BytesIO(path_or_bytes) if isinstance(path_or_bytes, (bytes, bytearray)) else path_or_bytes
        with Image.open(src) as img:
            img.load()  # decode now so a truncated file fails here, not later in a worker
            img = ImageOps.exif_transpose(img)
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as err:
        raise ImageDecodeError(f"{name}: cannot decode image ({err})") from None
    return _to_rgb(img)


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        # high bit depth grayscale: stretch to 8 bits rather than let convert() clip it to white
        a = np.asarray(img, dtype=np.float64)
        lo, hi = float(a.min()), float(a.max())
        a = (a - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(a)
        img = Image.fromarray(a.round().astype(np.uint8), mode="L")
    if img.mode == "P":
        img = img.convert("RGBA")  # palette images may carry a transparent index
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)
    return img.convert("RGB")
