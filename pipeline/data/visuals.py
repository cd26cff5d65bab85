"""Procedural visual patterns: one colour + shape/texture per sound class, jittered per image.

VISUAL_RECIPES maps the same names as sounds.SOUND_RECIPES to fn(rng, (width, height)) -> PIL RGB image. A class
is recognisable by its colour and its shape (a brown disc for "dog", blue diagonal streaks for "rain", a red
triangle for "siren", ...); position, size, rotation, hue and the background vary. AudioSet-like frames and
ImageNet-like images both draw from this registry, so image-audio pairs carry shared class evidence.
"""

from __future__ import annotations

from functools import partial
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw

VisualRecipe = Callable[[np.random.Generator, tuple[int, int]], Image.Image]

# name: (RGB colour, shape or texture)
_PATTERNS: dict[str, tuple[tuple[int, int, int], str]] = {
    "dog": ((139, 90, 43), "disc"),
    "rain": ((40, 90, 210), "diagonal"),
    "crying_baby": ((240, 140, 190), "ring"),
    "clock_tick": ((235, 235, 235), "frame"),
    "helicopter": ((100, 130, 40), "x"),
    "chainsaw": ((255, 130, 0), "zigzag"),
    "siren": ((220, 20, 30), "triangle"),
    "engine": ((70, 70, 80), "square"),
    "engine_idling": ((40, 40, 40), "hexagon"),
    "train": ((120, 20, 40), "hstripes"),
    "church_bells": ((230, 190, 40), "bell"),
    "air_conditioner": ((60, 210, 220), "grid"),
    "car_horn": ((250, 240, 60), "diamond"),
    "children_playing": ((120, 230, 60), "dots"),
    "drilling": ((130, 50, 200), "vstripes"),
    "gun_shot": ((255, 255, 255), "star"),
    "jackhammer": ((200, 170, 120), "checker"),
    "street_music": ((220, 40, 220), "plus"),
}


def _polygon(kind: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    """Vertices of a centred shape of radius r, rotated by `angle` radians."""
    if kind == "triangle":
        a = np.array([90, 210, 330]) * np.pi / 180
        pts = np.stack([np.cos(a), -np.sin(a)], 1)
    elif kind == "square":
        pts = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * 0.75
    elif kind == "diamond":
        pts = np.array([[0, -1], [0.7, 0], [0, 1], [-0.7, 0]])
    elif kind == "hexagon":
        a = np.arange(6) * np.pi / 3
        pts = np.stack([np.cos(a), np.sin(a)], 1)
    elif kind == "star":
        a = np.arange(10) * np.pi / 5 - np.pi / 2
        rad = np.where(np.arange(10) % 2 == 0, 1.0, 0.4)
        pts = np.stack([rad * np.cos(a), rad * np.sin(a)], 1)
    elif kind == "bell":
        pts = np.array([[-0.35, -0.9], [0.35, -0.9], [0.5, 0.2], [0.9, 0.8], [-0.9, 0.8], [-0.5, 0.2]])
    elif kind == "zigzag":  # a saw blade: a bar with teeth on top
        teeth = [(x, -0.45 if i % 2 else -0.1) for i, x in enumerate(np.linspace(-1, 1, 9))]
        pts = np.array(teeth + [(1, 0.35), (-1, 0.35)])
    elif kind in ("x", "plus"):
        w = 0.28
        arm = np.array([[-1, -w], [-w, -w], [-w, -1], [w, -1], [w, -w], [1, -w],
                        [1, w], [w, w], [w, 1], [-w, 1], [-w, w], [-1, w]])
        pts = arm if kind == "plus" else arm @ np.array([[1, 1], [-1, 1]]) / np.sqrt(2)
    else:
        raise ValueError(f"unknown shape {kind!r}")
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    pts = pts @ rot.T * r + np.array([cx, cy])
    return [tuple(p) for p in pts]


def _draw(colour: tuple[int, int, int], kind: str, rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    w, h = size
    # background: a muted random colour far enough from the class colour, with pixel noise
    bg = rng.uniform(40, 200, 3)
    while np.abs(bg - np.array(colour)).sum() < 150:
        bg = rng.uniform(40, 200, 3)
    fg = tuple(int(c) for c in np.clip(np.array(colour) + rng.uniform(-25, 25, 3), 0, 255))
    img = Image.new("RGB", (w, h), tuple(int(c) for c in bg))
    d = ImageDraw.Draw(img)
    m = min(w, h)
    period = rng.uniform(0.12, 0.2) * m  # texture spacing
    phase = rng.uniform(0, period)
    line = max(1, int(period * rng.uniform(0.3, 0.5)))
    cx, cy = w / 2 + rng.uniform(-0.12, 0.12) * w, h / 2 + rng.uniform(-0.12, 0.12) * h
    r = rng.uniform(0.28, 0.4) * m
    angle = rng.uniform(-0.35, 0.35)
    if kind == "disc":
        d.ellipse([cx - r, cy - r * 0.85, cx + r, cy + r * 0.85], fill=fg)
    elif kind == "ring":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], outline=fg, width=max(2, int(r * 0.3)))
    elif kind == "frame":
        d.rectangle([cx - r, cy - r, cx + r, cy + r], outline=fg, width=max(2, int(r * 0.2)))
    elif kind == "hstripes":
        for y in np.arange(phase - period, h + period, period):
            d.rectangle([0, y, w, y + line], fill=fg)
    elif kind == "vstripes":
        for x in np.arange(phase - period, w + period, period):
            d.rectangle([x, 0, x + line, h], fill=fg)
    elif kind == "diagonal":
        for x in np.arange(phase - h, w + period, period):
            d.line([(x, 0), (x + h * 0.5, h)], fill=fg, width=line)
    elif kind == "grid":
        for t in np.arange(phase - period, max(w, h) + period, period):
            d.line([(t, 0), (t, h)], fill=fg, width=max(1, line // 2))
            d.line([(0, t), (w, t)], fill=fg, width=max(1, line // 2))
    elif kind == "checker":
        for i, x in enumerate(np.arange(phase - period, w + period, period)):
            for j, y in enumerate(np.arange(phase - period, h + period, period)):
                if (i + j) % 2 == 0:
                    d.rectangle([x, y, x + period, y + period], fill=fg)
    elif kind == "dots":
        for x in np.arange(phase, w, period):
            for y in np.arange(phase, h, period):
                d.ellipse([x - line / 2, y - line / 2, x + line / 2, y + line / 2], fill=fg)
    else:
        d.polygon(_polygon(kind, cx, cy, r, angle), fill=fg)
    # sensor noise so that no two images are flat copies of each other
    a = np.asarray(img, dtype=np.int16) + rng.integers(-12, 13, (h, w, 3), dtype=np.int16)
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), "RGB")


VISUAL_RECIPES: dict[str, VisualRecipe] = {name: partial(_draw, c, k) for name, (c, k) in _PATTERNS.items()}


def scene(names: list[str], rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    """The first class fills the picture; a second one appears as an inset in a random corner."""
    img = VISUAL_RECIPES[names[0]](rng, size)
    if len(names) > 1:
        w, h = size
        iw, ih = w // 2, h // 2
        inset = VISUAL_RECIPES[names[1]](rng, (iw, ih))
        img.paste(inset, (int(rng.choice([0, w - iw])), int(rng.choice([0, h - ih]))))
    return img


def video_frames(names: list[str], rng: np.random.Generator, size: int, count: int) -> list[Image.Image]:
    """`count` frames (size x size) of one scene seen by a slowly panning camera."""
    big = int(round(size * 1.25))
    base = scene(names, rng, (big, big))
    slack = big - size
    x0, y0 = rng.uniform(0, slack, 2)
    vx, vy = rng.uniform(-slack / 4, slack / 4, 2)
    frames = []
    for i in range(count):
        x = int(np.clip(x0 + i * vx, 0, slack))
        y = int(np.clip(y0 + i * vy, 0, slack))
        frames.append(base.crop((x, y, x + size, y + size)))
    return frames
