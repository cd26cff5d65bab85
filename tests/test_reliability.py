"""Faults and untrusted input across the package: a full disk or a read-only folder never costs the previous
good file, a Snakemake killed outright loses nothing, and the parsers and the decoder answer anything with their
own clear error or a result, never a crash of another kind.
(Other guarantees are tested where their code is tested; README "What is guaranteed" lists them all.)"""

from __future__ import annotations

import csv
import ctypes
import errno
import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from smoke_support import copy_checkout, env, snakemake

from pipeline import io as pio
from pipeline.config import REPO_ROOT
from pipeline.data import audio_io, metadata as md
from pipeline.data.cache import build_cache, cache_info, open_cache
from pipeline.data.synthetic import generate
from pipeline.training.engine import OptimSettings, Trainer

pytestmark = pytest.mark.reliability


# 0.5 s: shorter synthetic clock-tick clips can fall between two ticks, all zeros, which the decoder refuses
_SMALL_ESC50 = {"clips_per_class_per_fold": 1, "seconds": 0.5, "sample_rate": 8000}


def _disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_during_a_cache_rebuild_keeps_the_previous_cache(tmp_path, monkeypatch):
    root = generate("esc50", tmp_path / "esc50", _SMALL_ESC50)
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


# one plausible row per dataset; the fuzz replaces cells with arbitrary text
_GOOD_ROWS = {"esc50": ["1-100032-A-0.wav", "1", "0", "dog", "True", "100032", "A"],
              "us8k": ["100032-3-0-0.wav", "100032", "0.0", "0.3", "1", "5", "3", "dog_bark"]}
_CELL = st.one_of(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12),
                  st.integers(-5, 60).map(str), st.sampled_from(["", "True", "nan", "1e3", "0x10", " 1"]))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(dataset=st.sampled_from(["esc50", "us8k"]), data=st.data())
def test_esc50_and_us8k_metadata_parse_or_name_the_file(tmp_path, dataset, data):
    """Arbitrary cells in the official CSV layouts: a Metadata whose labels and folds are in range, or our own
    MetadataError naming the file; never another exception."""
    columns = md.ESC50_COLUMNS if dataset == "esc50" else md.US8K_COLUMNS
    rows = data.draw(st.lists(st.lists(_CELL, min_size=len(columns), max_size=len(columns)), max_size=4))
    rows = [_GOOD_ROWS[dataset]] + rows
    path = tmp_path / dataset / ("meta/esc50.csv" if dataset == "esc50" else "metadata/UrbanSound8K.csv")
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([columns, *rows])
    try:
        meta = md.read(dataset, tmp_path / dataset)
    except md.MetadataError as err:
        assert str(path) in str(err)
    else:
        items = meta.items
        assert len(items) == len(rows)
        assert items["fold"].between(1, md.FOLDS[dataset]).all()
        assert items["label"].between(0, len(meta.class_names) - 1).all()


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


# -----------------------------------------------------------------------------
# a read-only output folder
#
# CI runs as root, and root writes through any permission bits (CAP_DAC_OVERRIDE). The writer therefore runs in
# a child that has lost that capability: it keeps uid 0 (the interpreter may live under /root, which another
# user could not even read), but obeys the bits of a root-owned 0o555 folder like any user. Not root: the
# bits alone stop it.

_PR_CAPBSET_DROP, _CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH = 24, 1, 2
_LIBC = ctypes.CDLL(None, use_errno=True)  # loaded here: a forked child of a threaded process must not dlopen


def _run_unprivileged(args: list[str]) -> subprocess.CompletedProcess:
    status = Path("/proc/self/status").read_text()
    bounding = int(status.split("CapBnd:", 1)[1].split()[0], 16)
    held = [cap for cap in (_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH) if bounding >> cap & 1]

    def drop_root_override() -> None:  # in the child, before exec: out of the bounding set, gone after exec
        for cap in held:
            if _LIBC.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
                raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")

    return subprocess.run(args, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
                          preexec_fn=drop_root_override if os.geteuid() == 0 and held else None)


def _fit_toy(run_dir: str | Path, epochs: int) -> tuple[int, int]:
    """A tiny Trainer run in `run_dir` (resumed from its last.pt): (epochs in its history, epoch it resumed at)."""
    g = torch.Generator().manual_seed(1)
    data = [{"x": torch.randn(3, generator=g), "y": torch.tensor(i % 2), "index": torch.tensor(i)} for i in range(8)]
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    settings = OptimSettings(optimizer="sgd", epochs=epochs, batch_size=4, lr=0.1, gamma=1.0, momentum=0.0,
                             nesterov=False, weight_decay=0.0)
    trainer = Trainer(model=model, loss_fn=lambda m, b: torch.nn.functional.cross_entropy(m(b["x"]), b["y"]),
                      param_groups=[{"params": model.parameters()}], settings=settings, train_dataset=data,
                      collate=lambda items: {k: torch.stack([i[k] for i in items]) for k in items[0]},
                      run_dir=run_dir, device=torch.device("cpu"), seed=0)
    return len(trainer.fit()), trainer.start_epoch


def test_a_read_only_cache_folder_is_named_and_the_previous_cache_kept(tmp_path):
    root = generate("esc50", tmp_path / "esc50", _SMALL_ESC50)
    folder = tmp_path / "cache"
    out = folder / "esc50.h5"
    build_cache("esc50", root, out, sample_rate=8000, clip_seconds=0.2, channels=1, progress=False)
    data = out.read_bytes()
    folder.chmod(0o555)
    try:  # the real command; params.yaml's embedded clips are 1 s long, so this is a real rebuild
        proc = _run_unprivileged([sys.executable, "-m", "pipeline", "cache", "--dataset", "esc50", "--root", str(root),
                                  "--out", str(out)])
    finally:
        folder.chmod(0o755)
    assert proc.returncode == 2, proc.stderr[-2000:]
    # one line that names the result, the reason and the folder (not a random temporary name)
    assert f"error: [Errno 13] cannot write {out}: Permission denied (no new file can be made in {folder}" in \
        proc.stderr, proc.stderr[-2000:]
    assert out.read_bytes() == data and sorted(os.listdir(folder)) == ["esc50.h5"]
    assert cache_info(out)["clip_samples"] == 1600  # still the previous, complete cache


def test_a_read_only_run_folder_stops_training_naming_the_checkpoint_and_keeps_the_last_one(tmp_path):
    run_dir = tmp_path / "run"
    assert _fit_toy(run_dir, 1) == (1, 0)
    checkpoint = run_dir / "last.pt"
    data = checkpoint.read_bytes()
    run_dir.chmod(0o555)
    script = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
              f"from test_reliability import _fit_toy; _fit_toy({str(run_dir)!r}, 3)")
    try:  # resumes from epoch 1, trains epoch 2, then cannot save it
        proc = _run_unprivileged([sys.executable, "-c", script])
    finally:
        run_dir.chmod(0o755)
    assert proc.returncode != 0
    assert f"PermissionError: [Errno 13] cannot write {checkpoint}: Permission denied" in proc.stderr, \
        proc.stderr[-2000:]
    assert checkpoint.read_bytes() == data and os.listdir(run_dir) == ["last.pt"]
    assert _fit_toy(run_dir, 3) == (3, 1)  # writable again: it resumes from that checkpoint and finishes


# -----------------------------------------------------------------------------
# Snakemake itself killed (SIGKILL: the OOM killer, `kill -9`, a lost login node), mid-DAG

_CACHES = ("work/embedded/cache/esc50.h5",)  # generate_esc50, then cache: the smallest chain with a job after a job


def _group(pgid: int) -> list[tuple[int, str]]:
    """The live (not zombie) processes of a process group, as (pid, command line)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat, cmd = (proc / "stat").read_text(), (proc / "cmdline").read_bytes()
        except OSError:
            continue  # it ended meanwhile
        state, _, group = stat.rsplit(")", 1)[1].split()[:3]
        if int(group) == pgid and state != "Z":
            found.append((int(proc.name), cmd.replace(b"\0", b" ").decode(errors="replace")))
    return found


def _cache_phase_outputs(repo: Path) -> dict[str, str]:
    """sha256 of every generated file, and of every cache's contents (all but its build id, a random name that
    differs on every build); open_cache refuses an incomplete cache."""
    out = {str(f.relative_to(repo)): hashlib.sha256(f.read_bytes()).hexdigest()
           for f in sorted((repo / "data/embedded").rglob("*")) if f.is_file()}
    for rel in _CACHES:
        digest = hashlib.sha256()
        with open_cache(repo / rel) as h5:
            for key in sorted(set(h5.attrs) - {"build_id"}):
                digest.update(f"{key}={h5.attrs[key]!r}\n".encode())
            for name in sorted(h5):
                data = h5[name][()]
                digest.update(name.encode())
                digest.update(repr(data.tolist()).encode() if data.dtype.kind == "O" else data.tobytes())  # str: repr
        out[rel] = digest.hexdigest()
    return out


@pytest.mark.slow
def test_snakemake_killed_mid_dag_then_unlock_and_rerun_gives_the_uninterrupted_outputs(tmp_path):
    """SIGKILL to Snakemake alone: its running jobs are not told and finish as orphans; nothing they leave is
    partial. The lock the killed run leaves blocks the next run with Snakemake's hint; `snakemake --unlock` once
    those jobs have ended (README, What is guaranteed), then a plain rerun, gives what an uninterrupted run gives."""
    repo = tmp_path / "repo"
    repo.mkdir()
    copy_checkout(repo)
    snakemake(repo, *_CACHES)  # the uninterrupted run
    reference = _cache_phase_outputs(repo)
    for made in (repo / "work", repo / "data/embedded"):
        shutil.rmtree(made)

    proc = subprocess.Popen([sys.executable, "-m", "snakemake", "--cores", "2", *_CACHES], cwd=repo, env=env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    while not any("pipeline cache" in cmd for _, cmd in _group(proc.pid)):  # generated data, a cache job running
        assert proc.poll() is None and time.monotonic() < deadline, "Snakemake ended before a cache job started"
        time.sleep(0.05)
    jobs = [cmd for pid, cmd in _group(proc.pid) if pid != proc.pid]
    proc.kill()  # Snakemake only, not its process group
    proc.wait(timeout=60)
    assert jobs  # orphans: the case a Ctrl-C (which reaches the whole group) never makes
    while _group(proc.pid):  # the orphans run on, and write their outputs, after Snakemake's death
        assert time.monotonic() < deadline, _group(proc.pid)
        time.sleep(0.2)

    assert not [str(p) for top in ("work", "data") for p in (repo / top).rglob(".*tmp*")]  # no temporary left
    for rel in _CACHES:  # a cache that is there is complete
        if (repo / rel).exists():
            open_cache(repo / rel).close()
    blocked = snakemake(repo, *_CACHES, check=False)
    assert blocked.returncode != 0 and "LockException" in blocked.stderr and "--unlock" in blocked.stderr
    snakemake(repo, "--unlock")
    snakemake(repo, *_CACHES)  # profiles/default: the jobs the kill left incomplete are rerun
    assert _cache_phase_outputs(repo) == reference
