"""A training process SIGKILLed at random moments, several times, resumes and ends exactly like an
uninterrupted run (deterministic CPU training; step-level checkpoints written atomically)."""
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.reliability  # README: What is guaranteed

TOY = Path(__file__).with_name("toy_training.py")


def _start(out, *extra):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, str(TOY), str(out), *extra], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_sigkill_at_random_points_then_resume_equals_an_uninterrupted_run(tmp_path):
    straight = _start(tmp_path / "straight.pt")
    assert straight.wait(timeout=120) == 0, straight.stderr.read()
    out = tmp_path / "killed.pt"
    state = tmp_path / "run-killed" / "last.pt"
    rng = random.Random(7)
    kills = 0
    while kills < 3:
        before = state.stat().st_mtime_ns if state.exists() else 0
        proc = _start(out, "--every", "1", "--step-delay", "0.05")
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline and \
                (not state.exists() or state.stat().st_mtime_ns == before):
            time.sleep(0.01)  # until this process has saved at least one step (start-up takes seconds)
        time.sleep(rng.uniform(0.0, 0.3))  # then anywhere: inside a step, between steps, while saving
        if proc.poll() is not None:
            break  # finished before the kill: nothing left to interrupt
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        kills += 1
    assert kills >= 2
    final = _start(out, "--every", "1")
    assert final.wait(timeout=120) == 0, final.stderr.read()
    a, b = torch.load(tmp_path / "straight.pt", weights_only=True), torch.load(out, weights_only=True)
    for key, value in a["state"].items():
        torch.testing.assert_close(b["state"][key], value, rtol=0, atol=0)
    assert b["losses"] == a["losses"]
    # A kill during a save can leave the temporary file it was writing (SIGKILL runs no clean-up), but never a
    # half-written last.pt: the state above resumed cleanly and matched.
    assert all(p.name.startswith(".last.pt.") for p in (tmp_path / "run-killed").glob(".*"))
