"""Faults and untrusted input across the package: a full disk never costs the previous good file, and the
parsers and the decoder answer anything with their own clear error or a result, never a crash of another kind.
(Other guarantees are tested where their code is tested; README "What is guaranteed" lists them all.)"""

from __future__ import annotations

import errno

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline import io as pio
from pipeline.data import audio_io, metadata as md
from pipeline.data.cache import build_cache, cache_info
from pipeline.data.synthetic import generate
from pipeline.training.engine import OptimSettings, Trainer

pytestmark = pytest.mark.reliability


def _disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_during_a_cache_rebuild_keeps_the_previous_cache(tmp_path, monkeypatch):
    root = generate("esc50", tmp_path / "esc50", {"clips_per_class_per_fold": 1, "seconds": 0.2, "sample_rate": 8000})
    out = tmp_path / "esc50.h5"
    args = dict(sample_rate=8000, clip_seconds=0.2, channels=1, progress=False)
    before = cache_info(build_cache("esc50", root, out, **args) and out)
    data = out.read_bytes()
    import pipeline.data.cache as cache_module

    monkeypatch.setattr(cache_module, "_write_index", _disk_full)  # the disk fills up half-way through
    with pytest.raises(OSError, match="No space left"):
        build_cache("esc50", root, out, compression="gzip", **args)  # other parameters: a real rebuild
    assert out.read_bytes() == data and cache_info(out) == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary file left


def test_a_full_disk_while_checkpointing_keeps_the_last_good_state(tmp_path, monkeypatch):
    data = [{"x": torch.randn(3), "y": torch.tensor(i % 2), "index": i} for i in range(8)]
    settings = OptimSettings(optimizer="sgd", epochs=3, batch_size=4, lr=0.1, gamma=1.0, momentum=0.0,
                             nesterov=False, weight_decay=0.0)

    def trainer():
        torch.manual_seed(0)
        model = torch.nn.Linear(3, 2)
        return Trainer(model=model, loss_fn=lambda m, b: torch.nn.functional.cross_entropy(m(b["x"]), b["y"]),
                       param_groups=[{"params": model.parameters()}], settings=settings, train_dataset=data,
                       collate=lambda items: {k: torch.stack([torch.as_tensor(i[k]) for i in items]) for k in items[0]},
                       run_dir=tmp_path, device=torch.device("cpu"), seed=0)

    saves = {"n": 0}
    real = torch.save

    def fills_up(obj, f, *a, **k):
        saves["n"] += 1
        if saves["n"] == 2:  # the second epoch's checkpoint hits a full disk
            _disk_full()
        return real(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", fills_up)
    with pytest.raises(OSError, match="No space left"):
        trainer().fit()
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    assert state["epoch"] == 1 and state["step"] == 0  # the first epoch's checkpoint, whole
    monkeypatch.setattr(torch, "save", real)
    resumed = trainer()
    assert len(resumed.fit()) == 3 and resumed.start_epoch == 1


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=60), max_size=6))
def test_segment_lists_parse_or_name_the_problem(tmp_path, lines):
    path = tmp_path / "segments.csv"
    path.write_text("# a\n# b\n# YTID, start_seconds, end_seconds, positive_labels\n" + "\n".join(lines) + "\n",
                    encoding="utf-8")
    try:
        df = md.read_audioset_segments(path, {"/m/09x0r": 0, "/m/04rlf": 1})
    except md.MetadataError as err:
        assert str(path) in str(err)
    else:
        assert len(df) >= 1 and df["ytid"].str.fullmatch(r"[A-Za-z0-9_-]{11}").all()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(head=st.sampled_from([b"", b"RIFF", b"RIFF\x24\x00\x00\x00WAVEfmt ", b"OggS", b"fLaC", b"ID3"]),
       body=st.binary(max_size=300))
def test_the_decoder_answers_garbage_with_its_own_error(tmp_path, head, body):
    path = tmp_path / "clip.wav"
    path.write_bytes(head + body)
    try:
        x, sr = audio_io.decode_audio(path)
    except audio_io.AudioDecodeError as err:
        assert "clip.wav" in str(err)
    else:  # a few byte strings are valid audio: then it must be usable, never silently empty or NaN
        assert x.size > 0 and np.isfinite(x).all() and sr > 0


def test_results_are_never_half_written(tmp_path, monkeypatch):
    target = tmp_path / "table3.csv"
    pio.write_text(target, "old,complete\n")
    monkeypatch.setattr(pio.os, "replace", _disk_full)
    with pytest.raises(OSError):
        pio.write_text(target, "new,half")
    assert target.read_text() == "old,complete\n" and len(list(tmp_path.iterdir())) == 1  # no temporary left


@pytest.mark.parametrize("rate, channels, subtype", [(8000, 1, "PCM_U8"), (192000, 8, "PCM_24"), (44100, 6, "FLOAT"),
                                                     (22050, 3, "PCM_16")])
def test_any_rate_depth_and_channel_count_becomes_model_audio(tmp_path, rate, channels, subtype):
    import soundfile as sf

    t = np.arange(rate // 4) / rate  # 0.25 s
    wave = np.stack([0.5 * np.sin(2 * np.pi * (220 + 110 * c) * t) for c in range(channels)], axis=1)
    path = tmp_path / f"clip-{rate}-{channels}.wav"
    sf.write(path, wave.astype(np.float32), rate, subtype=subtype)
    x = audio_io.load_audio(path, 44100, channels=1)
    assert x.shape == (1, -(-len(t) * 44100 // rate)) and x.dtype == np.float32 and np.abs(x).max() <= 1.0
    assert 0.05 < np.abs(x).max()  # the sound survived the mix-down and the resampling
