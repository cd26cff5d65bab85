"""Audio and image decoding: formats, rates, channels, and loud failures."""

import io
import shutil

import ffmpeg
import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from pipeline.data import audio_io
from pipeline.data.audio_io import AudioDecodeError, ImageDecodeError, load_audio, load_image

needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg binary not installed")


def _sine(sr, seconds, freq=440.0, channels=1, amp=0.5):
    t = np.arange(int(sr * seconds)) / sr
    x = amp * np.sin(2 * np.pi * freq * t)
    return np.stack([x * (1 - 0.5 * c) for c in range(channels)], axis=1).astype(np.float32)  # (L, C)


@pytest.mark.parametrize("subtype", ["PCM_16", "PCM_24", "FLOAT", "PCM_U8"])
def test_wav_subtypes_round_trip(tmp_path, subtype):
    x = _sine(16000, 0.25)
    sf.write(tmp_path / "a.wav", x, 16000, subtype=subtype)
    y = load_audio(tmp_path / "a.wav", 16000, 1)
    assert y.shape == (1, 4000) and y.dtype == np.float32
    assert np.abs(y[0] - x[:, 0]).max() < (2e-2 if subtype == "PCM_U8" else 1e-3)


@pytest.mark.parametrize("rate", [8000, 11025, 22050, 48000])
def test_resampling_keeps_duration_and_pitch(tmp_path, rate):
    sf.write(tmp_path / "a.wav", _sine(rate, 0.5, freq=440), rate)
    y = load_audio(tmp_path / "a.wav", 16000, 1)
    assert y.shape == (1, 8000)
    spectrum = np.abs(np.fft.rfft(y[0]))
    assert np.fft.rfftfreq(8000, 1 / 16000)[spectrum.argmax()] == pytest.approx(440, abs=2)
    assert np.abs(y).max() <= 1.0


def test_channel_conversion(tmp_path):
    stereo = _sine(8000, 0.1, channels=2)
    sf.write(tmp_path / "s.wav", stereo, 8000, subtype="FLOAT")
    mono = load_audio(tmp_path / "s.wav", 8000, 1)
    np.testing.assert_allclose(mono[0], stereo.mean(1), atol=1e-6)
    np.testing.assert_allclose(load_audio(tmp_path / "s.wav", 8000, 2), stereo.T, atol=1e-6)
    sf.write(tmp_path / "m.wav", stereo[:, :1], 8000, subtype="FLOAT")
    dup = load_audio(tmp_path / "m.wav", 8000, 2)
    assert dup.shape == (2, 800) and np.array_equal(dup[0], dup[1])
    six = np.random.default_rng(0).uniform(-0.5, 0.5, (800, 6)).astype(np.float32)
    sf.write(tmp_path / "six.wav", six, 8000, subtype="FLOAT")
    np.testing.assert_allclose(load_audio(tmp_path / "six.wav", 8000, 2), six[:, :2].T, atol=1e-6)


def test_float_wav_beyond_full_scale_is_clipped(tmp_path):
    sf.write(tmp_path / "loud.wav", np.full((100, 1), 1.7, np.float32), 8000, subtype="FLOAT")
    assert load_audio(tmp_path / "loud.wav", 8000, 1).max() == 1.0


@pytest.mark.reliability
def test_broken_files_raise_naming_the_file(tmp_path):
    (tmp_path / "junk.wav").write_bytes(np.random.default_rng(0).bytes(3000))
    sf.write(tmp_path / "empty.wav", np.zeros((0, 1), np.float32), 8000)
    sf.write(tmp_path / "nan.wav", np.full((100, 1), np.nan, np.float32), 8000, subtype="FLOAT")
    (tmp_path / "zero.wav").write_bytes(b"")
    for name, why in [("junk.wav", None), ("empty.wav", "empty"), ("nan.wav", "NaN"), ("zero.wav", None),
                      ("missing.wav", "no such")]:
        with pytest.raises(AudioDecodeError, match=why) as err:
            load_audio(tmp_path / name, 8000, 1)
        assert name in str(err.value)
        assert isinstance(err.value, ValueError)


@needs_ffmpeg
@pytest.mark.reliability
def test_ffmpeg_fallback_and_option_injection_safety(tmp_path, monkeypatch):
    sf.write(tmp_path / "src.wav", _sine(22050, 0.5, channels=2), 22050)
    monkeypatch.chdir(tmp_path)
    ffmpeg.input("src.wav").output("src.m4a", acodec="aac").global_args("-loglevel", "error").run(quiet=True)
    (tmp_path / "src.m4a").rename(tmp_path / "-y.m4a")  # a name an unguarded command line reads as an option
    with pytest.raises(sf.LibsndfileError):
        sf.info("-y.m4a")  # soundfile cannot read it: the ffmpeg path is really taken
    y = load_audio("-y.m4a", 16000, 1)
    assert y.shape[0] == 1 and abs(y.shape[1] - 8000) < 1200  # AAC adds priming/padding samples
    assert 0.3 < np.abs(y).max() <= 1.0
    # mono at the native rate: the decoded buffer itself is returned, so it must be a writable copy
    sf.write("mono.wav", _sine(16000, 0.3), 16000)
    ffmpeg.input("mono.wav").output("mono.m4a", acodec="aac").global_args("-loglevel", "error").run(quiet=True)
    z = load_audio("mono.m4a", 16000, 1)
    assert z.shape[0] == 1 and z.flags.writeable


@needs_ffmpeg
def test_real_video_audio_through_ffmpeg(realdata):
    mp4 = realdata / "video" / "bigbuckbunny.mp4"  # 6-channel AAC, 48 kHz, ~5.3 s
    x, sr = audio_io.decode_audio(mp4)
    assert sr == 48000 and x.shape[0] == 6 and 5.0 < x.shape[1] / sr < 5.6
    y = load_audio(mp4, 8000, 1)
    assert y.shape == (1, int(np.ceil(x.shape[1] * 8000 / 48000))) and np.abs(y).max() > 1e-3
    with pytest.raises(AudioDecodeError, match="no audio stream") as err:
        load_audio(realdata / "video" / "bikes.mp4", 8000, 1)
    assert "bikes.mp4" in str(err.value)


@needs_ffmpeg
def test_real_ogg_same_through_soundfile_and_ffmpeg(realdata):
    ogg = realdata / "misc_audio" / "456440__inspectorj__bird-whistling-robin-single-13.hq.ogg"
    a, sr_a = audio_io.decode_audio(ogg)
    b, sr_b = audio_io._decode_ffmpeg(ogg)
    assert sr_a == sr_b == 44100 and a.shape[0] == b.shape[0] == 2
    n = min(a.shape[1], b.shape[1])
    assert abs(a.shape[1] - b.shape[1]) < 2048 and np.abs(a[:, :n] - b[:, :n]).max() < 1e-3
    assert load_audio(ogg, 16000, 2).shape == (2, int(np.ceil(a.shape[1] * 16000 / 44100)))


@pytest.mark.reliability
def test_images_become_upright_rgb(tmp_path):
    gray = Image.fromarray(np.arange(48, dtype=np.uint8).reshape(6, 8) * 5, "L")
    gray.save(tmp_path / "g.png")
    rgb = load_image(tmp_path / "g.png")
    a = np.asarray(rgb)
    assert rgb.mode == "RGB" and a.shape == (6, 8, 3) and (a[..., 0] == a[..., 2]).all()

    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))  # fully transparent red
    buf = io.BytesIO()
    rgba.save(buf, format="PNG")
    assert np.asarray(load_image(buf.getvalue()))[0, 0].tolist() == [255, 255, 255]  # composited over white

    tall = Image.new("RGB", (10, 4), (0, 128, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees on display
    tall.save(tmp_path / "r.jpg", exif=exif.tobytes())
    assert load_image(tmp_path / "r.jpg").size == (4, 10)

    Image.new("CMYK", (3, 2), (0, 255, 255, 0)).save(tmp_path / "c.jpg")  # print-shop JPEG: red in CMYK
    red = np.asarray(load_image(tmp_path / "c.jpg"))
    assert red.shape == (2, 3, 3) and red[0, 0, 0] > 200 and red[0, 0, 1] < 60

    deep = Image.fromarray(np.array([[0, 60000]], dtype=np.uint16))
    deep.save(tmp_path / "d.png")
    assert np.asarray(load_image(tmp_path / "d.png"))[0, :, 0].tolist() == [0, 255]


@pytest.mark.reliability
def test_broken_images_raise_naming_the_file(tmp_path):
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    with pytest.raises(ImageDecodeError, match="bad.jpg"):
        load_image(tmp_path / "bad.jpg")
    Image.new("RGB", (64, 64), (1, 2, 3)).save(tmp_path / "t.jpg")
    (tmp_path / "cut.jpg").write_bytes((tmp_path / "t.jpg").read_bytes()[:200])
    with pytest.raises(ImageDecodeError, match="cut.jpg"):
        load_image(tmp_path / "cut.jpg")
    with pytest.raises(ImageDecodeError, match="<bytes>"):
        load_image(b"nope")


def test_real_images_load(realdata):
    for path in sorted((realdata / "images").iterdir()):
        img = load_image(path)
        assert img.mode == "RGB" and min(img.size) > 16


@pytest.mark.reliability
def test_truncated_silent_and_partly_nan_audio_raise_naming_the_file(tmp_path):
    x = _sine(8000, 0.5)
    for subtype, ext in (("PCM_16", "wav"), ("FLOAT", "wav"), ("PCM_16", "flac"), ("VORBIS", "ogg")):
        sf.write(tmp_path / f"whole-{subtype}.{ext}", x, 8000, subtype=subtype)
        whole = (tmp_path / f"whole-{subtype}.{ext}").read_bytes()
        (tmp_path / f"cut-{subtype}.{ext}").write_bytes(whole[: len(whole) // 2])  # an interrupted copy or download
    (tmp_path / "header.wav").write_bytes((tmp_path / "whole-PCM_16.wav").read_bytes()[:60])  # 8 samples left
    sf.write(tmp_path / "silent.wav", np.zeros((4000, 1), np.float32), 8000)  # a muted track: all zeros
    for name, bad in (("inf.wav", np.inf), ("nan.wav", np.nan)):  # one bad sample is enough to poison a batch
        y = x.copy()
        y[1234] = bad
        sf.write(tmp_path / name, y, 8000, subtype="FLOAT")
    cut = r"truncated: the header declares \d+ bytes of audio, the file holds \d+"
    for name, why in [("cut-PCM_16.wav", cut), ("cut-FLOAT.wav", cut), ("header.wav", cut),
                      ("cut-PCM_16.flac", None), ("cut-VORBIS.ogg", None),  # these two: the decoders' own errors
                      ("silent.wav", r"silent \(every sample is zero\)"), ("inf.wav", "NaN or infinite samples"),
                      ("nan.wav", "NaN or infinite samples")]:
        # libsndfile alone returns the part of a cut WAV that is there: the cache would zero-pad the rest
        with pytest.raises(AudioDecodeError, match=why) as err:
            load_audio(tmp_path / name, 8000, 1)
        assert name in str(err.value)


@pytest.mark.reliability
def test_a_wav_streamed_without_its_length_still_loads(tmp_path):
    # ffmpeg writing to a pipe cannot go back to fill in the sizes: 0xFFFFFFFF there is not a truncation
    sf.write(tmp_path / "a.wav", _sine(8000, 0.5), 8000)
    data = bytearray((tmp_path / "a.wav").read_bytes())
    at = data.index(b"data") + 4
    data[at:at + 4] = b"\xff\xff\xff\xff"
    (tmp_path / "streamed.wav").write_bytes(bytes(data))
    np.testing.assert_array_equal(load_audio(tmp_path / "streamed.wav", 8000, 1),
                                  load_audio(tmp_path / "a.wav", 8000, 1))
