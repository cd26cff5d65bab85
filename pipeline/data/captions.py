"""A synthetic image-caption corpus: the embedded profile's stand-in for the web data CLIP was trained on.

The paper starts AudioCLIP from OpenAI's CLIP, whose text and image heads already know that "dog", "dog bark"
and a picture of a dog belong together. Offline there are no such weights, so the embedded profile pre-trains
its tiny CLIP heads on this corpus: every visual recipe drawn many times, captioned with each name any dataset
uses for that concept (ESC-50 "dog", UrbanSound8K "dog bark", AudioSet "Dog, Bark", ImageNet "dog"). No audio
is involved: what AudioCLIP then learns about sound still comes from the AudioSet stages alone.
"""

from __future__ import annotations

import numpy as np
import torch

from pipeline.data import synthetic
from pipeline.data.datasets import clip_normalise
from pipeline.data.visuals import VISUAL_RECIPES


def captions() -> list[tuple[str, str]]:
    """(visual recipe, caption) pairs, deduplicated, in a fixed order."""
    pairs: list[tuple[str, str]] = []
    for category in synthetic.ESC50_CLASSES:
        pairs.append((category, category.replace("_", " ")))
    for name in synthetic.US8K_CLASSES:
        pairs.append((synthetic.US8K_SOUNDS.get(name, name), name.replace("_", " ").strip()))
    for recipe, labels in synthetic.AUDIOSET_SOUNDS.items():
        pairs.append((recipe, ", ".join(labels)))
        pairs.extend((recipe, label) for label in labels)
    for _wnid, names, recipe in synthetic.IMAGENET_CLASSES:
        pairs.append((recipe, names.split(",")[0].strip()))
    unknown = sorted({r for r, _ in pairs} - set(VISUAL_RECIPES))
    if unknown:
        raise KeyError(f"no visual recipe for {unknown}")
    return list(dict.fromkeys(pairs))


class CaptionImageDataset(torch.utils.data.Dataset):
    """`images_per_caption` freshly drawn images per caption. Item: image (3, S, S) CLIP-normalised, text str,
    label int (the caption's index), index int. Deterministic in (seed, epoch, index)."""

    def __init__(self, images_per_caption: int, image_size: int, seed: int = 0):
        self.pairs = captions()
        self.images_per_caption = images_per_caption
        self.image_size = image_size
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.pairs) * self.images_per_caption

    def __getitem__(self, i: int) -> dict:
        k = i // self.images_per_caption
        recipe, text = self.pairs[k]
        rng = np.random.default_rng((self.seed, self.epoch, i))
        size = int(round(self.image_size * 1.25))  # drawn larger, then resized/cropped as every frame is
        pixels = np.asarray(VISUAL_RECIPES[recipe](rng, (size, size)))
        return {"image": clip_normalise(pixels, self.image_size), "text": text, "label": k, "index": i}
