"""AudioSet test material: tiny served media and official-format segment lists (used by two test files).

Four 3 s MP4s (a 440 Hz tone and a video whose brightness encodes the frame number, so frame times can be
checked) and one audio-only MP4. The lists hold, besides good segments, one whose video is not on the server,
one audio-only, one whose window runs past the end of its media, and an id that starts with '-'.
"""

import csv
import subprocess

RATE = 16000
FPS = 10
FRAMES = 4
LABELS = [("0", "/m/09x0r", "Speech"), ("1", "/m/04rlf", "Music"), ("2", "/m/0jbk", "Animal")]
# (split, ytid, start, end, labels, media): media None = not on the server
SEGMENTS = [
    ("train", "vidAAAAAAAA", 0.5, 2.5, "/m/09x0r,/m/04rlf", "video"),
    ("train", "-leadDash01", 0.0, 2.0, "/m/04rlf", "video"),
    ("train", "goneGONE123", 1.0, 3.0, "/m/0jbk", None),
    ("eval", "audioOnly01", 0.5, 2.5, "/m/09x0r", "audio"),
    ("eval", "shortClip01", 1.0, 6.0, "/m/0jbk", "video"),
    ("eval", "vidBBBBBBBB", 0.3, 2.3, "/m/04rlf,/m/0jbk", "video"),
]
FETCHED = [s for s in SEGMENTS if s[1] not in ("goneGONE123", "shortClip01")]


def stem(ytid, start):
    return f"{ytid}_{int(round(start * 1000))}"


def ffmpeg(*args):
    subprocess.run(["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args], check=True)


def make_media(folder):
    tone = ["-f", "lavfi", "-i", f"sine=frequency=440:duration=3:sample_rate={RATE}"]
    # frame N has luminance 8 N: a grabbed frame tells which moment of the video it shows
    ramp = ["-f", "lavfi", "-i", f"color=c=black:s=32x24:r={FPS}:d=3,geq=lum='8*N':cb=128:cr=128"]
    for _, ytid, *_, kind in SEGMENTS:
        out = str(folder / f"{ytid}.mp4")
        if kind == "video":
            ffmpeg(*tone, *ramp, "-c:v", "mpeg4", "-q:v", "2", "-c:a", "aac", "-shortest", out)
        elif kind == "audio":
            ffmpeg(*tone, "-c:a", "aac", out)


def write_lists(root):
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "class_labels_indices.csv", "w", newline="") as f:
        w = csv.writer(f, quoting=csv.QUOTE_MINIMAL)
        w.writerow(["index", "mid", "display_name"])
        w.writerows(LABELS)
    for split, fname in (("train", "balanced_train_segments.csv"), ("eval", "eval_segments.csv")):
        lines = ["# Segments csv created Sun Mar  5 10:54:31 2017",
                 "# num_ytids=3, num_segs=3, num_unique_labels=3, num_positive_labels=5",
                 "# YTID, start_seconds, end_seconds, positive_labels"]
        lines += [f'{y}, {s:.3f}, {e:.3f}, "{labels}"' for sp, y, s, e, labels, _ in SEGMENTS if sp == split]
        (root / fname).write_text("\n".join(lines) + "\n")
