"""The synthetic image-caption corpus that stands in for CLIP's web pre-training (embedded profile)."""

import torch

from pipeline.data.captions import CaptionImageDataset, captions


def test_every_dataset_name_is_captioned_and_synonyms_share_a_picture():
    pairs = captions()
    texts = [t for _, t in pairs]
    for name in ("dog", "dog bark", "Dog, Bark", "engine idling", "Engine, Idling", "drilling", "Drill",
                 "air conditioner", "Air conditioning", "church bells", "Church bell", "car horn", "street music"):
        assert name in texts, name
    recipe = {t: r for r, t in pairs}
    assert recipe["dog bark"] == recipe["Dog, Bark"] == recipe["dog"]
    assert recipe["drilling"] == recipe["Drill"] and recipe["air conditioner"] == recipe["Air conditioning"]
    assert recipe["siren"] != recipe["dog"]
    assert len(set(pairs)) == len(pairs)


def test_images_are_deterministic_per_epoch_and_differ_across_epochs():
    ds = CaptionImageDataset(images_per_caption=2, image_size=32, seed=3)
    assert len(ds) == 2 * len(captions())
    item = ds[5]
    assert item["image"].shape == (3, 32, 32) and item["text"] == captions()[item["label"]][1]
    assert torch.equal(item["image"], CaptionImageDataset(2, 32, seed=3)[5]["image"])
    ds.set_epoch(1)
    assert not torch.equal(item["image"], ds[5]["image"])
