"""Constants shared by the data tests and their conftest.

A plain module (not conftest.py) so tests can import it under a name no other test folder uses.
"""

from pathlib import Path

# real sample files live outside the repo; tests that need them skip when the folder is absent
REALDATA = Path(__file__).resolve().parents[2].parent / "shared" / "realdata"

SMALL = {
    "esc50": {"clips_per_class_per_fold": 1, "seconds": 0.5},
    "us8k": {"clips_per_class_per_fold": 1, "max_seconds": 0.3},
    "audioset": {"train_clips": 30, "eval_clips": 12, "seconds": 0.5, "frames_per_clip": 3, "frame_size": 32},
    "imagenet": {"images_per_class": 4, "size": 40},
}
CACHE_ARGS = {
    "esc50": {"sample_rate": 8000, "clip_seconds": 1.0, "channels": 1},
    "us8k": {"sample_rate": 8000, "clip_seconds": 0.3, "channels": 2},
    "audioset": {"sample_rate": 8000, "clip_seconds": 0.5, "channels": 1, "frames_per_clip": 3, "image_size": 24},
    "imagenet": {"image_size": 32},
}
