"""Checkpoint loading that never fails silently.

The released code loads everything with `strict=False`, so a wrong or `module.`-prefixed key set loads nothing
without a word (AUDIOCLIP_FACTS.md sections 2, 5, 9). Here every load is strict and reports mismatches by name;
the only tolerated difference is the explicit, logged replacement of the audio head's `fc` when a standalone
ESResNeXt-fbsp (527 AudioSet classes) is loaded into AudioCLIP (fc -> embed_dim).
"""
import logging
from pathlib import Path

import torch
import torch.nn as nn

logger = logging.getLogger(__name__)

PREFIX = 'module.'  # added by DataParallel / DistributedDataParallel wrappers


def strip_module_prefix(state_dict: dict) -> dict:
    """Drop a leading 'module.' from every key that has one (checkpoints saved from a DataParallel wrapper)."""
    return {(k[len(PREFIX):] if k.startswith(PREFIX) else k): v for k, v in state_dict.items()}


def load_file(path) -> dict:
    """A state_dict from disk: a raw state_dict, or a dict holding it under 'model' or 'state_dict'.

    weights_only=True: never unpickle arbitrary objects from a downloaded file."""
    obj = torch.load(Path(path), weights_only=True, map_location='cpu')
    for key in ('model', 'state_dict'):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            return obj[key]
    if not isinstance(obj, dict):
        raise ValueError(f'{path}: expected a state_dict, got {type(obj).__name__}')
    return obj


def check_state_dict(model: nn.Module, state_dict: dict) -> list[str]:
    """Human-readable problems (missing, unexpected, shape mismatches) of loading `state_dict` into `model`."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    shapes = [f'{k}: checkpoint {tuple(v.shape)} vs model {tuple(expected[k].shape)}'
              for k, v in state_dict.items() if k in expected and tuple(v.shape) != tuple(expected[k].shape)]
    problems = []
    if missing:
        problems.append(f'missing keys ({len(missing)}): {", ".join(missing)}')
    if unexpected:
        problems.append(f'unexpected keys ({len(unexpected)}): {", ".join(unexpected)}')
    if shapes:
        problems.append(f'shape mismatches ({len(shapes)}): {"; ".join(shapes)}')
    return problems


def load_state_dict_strict(model: nn.Module, state_dict: dict, strip_prefix: bool = True) -> None:
    """Load every key or nothing: raise ValueError naming missing/unexpected keys and shape mismatches.

    A 'module.' prefix is stripped first unless `strip_prefix=False`."""
    if strip_prefix:
        state_dict = strip_module_prefix(state_dict)
    problems = check_state_dict(model, state_dict)
    if problems:
        raise ValueError(f'cannot load state_dict into {type(model).__name__}:\n  ' + '\n  '.join(problems))
    model.load_state_dict(state_dict, strict=True)


def load_audio_head_from_standalone(audioclip_model: nn.Module, standalone_state_dict: dict,
                                    log: logging.Logger = logger) -> list[str]:
    """Load a standalone ESResNeXt-fbsp state_dict into `audioclip_model.audio`, strictly.

    When the classifier shapes differ (527 AudioSet classes vs the embed_dim projection) the checkpoint's
    `fc.*` is skipped and AudioCLIP's freshly initialised fc is kept; this is logged. Returns the skipped keys.
    """
    source = strip_module_prefix(standalone_state_dict)
    target = audioclip_model.audio.state_dict()
    skipped = []
    if 'fc.weight' in source and tuple(source['fc.weight'].shape) != tuple(target['fc.weight'].shape):
        skipped = [k for k in source if k.startswith('fc.')]
        log.info('audio head replaced: checkpoint fc %s not loaded; keeping the freshly initialised fc %s '
                 '(keys skipped: %s)', tuple(source['fc.weight'].shape), tuple(target['fc.weight'].shape),
                 ', '.join(skipped))
        source = {k: v for k, v in source.items() if k not in skipped}
        source.update({k: v for k, v in target.items() if k.startswith('fc.')})
    load_state_dict_strict(audioclip_model.audio, source, strip_prefix=False)
    return skipped
