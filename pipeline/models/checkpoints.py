"""Checkpoint loading that never fails silently.

The released code loads everything with `strict=False`, so a wrong or `module.`-prefixed key set loads nothing
without a word (AUDIOCLIP_FACTS.md sections 2, 5, 9). Here every load is strict and reports mismatches by name;
the only tolerated difference is the explicit, logged replacement of the audio head's `fc` when a standalone
ESResNeXt-fbsp (527 AudioSet classes) is loaded into AudioCLIP (fc -> embed_dim). Reading files of every
supported kind (released checkpoints, OpenAI's TorchScript CLIP, torchvision ResNeXt) is weights.py.
"""
import logging

import torch.nn as nn

logger = logging.getLogger(__name__)

PREFIX = 'module.'  # added by DataParallel / DistributedDataParallel wrappers


def strip_module_prefix(state_dict: dict) -> dict:
    """Drop a leading 'module.' from every key that has one (checkpoints saved from a DataParallel wrapper)."""
    return {(k[len(PREFIX):] if k.startswith(PREFIX) else k): v for k, v in state_dict.items()}


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


def load_audio_head(audio_head: nn.Module, state_dict: dict, log: logging.Logger = logger) -> list[str]:
    """Load an ESResNeXt-fbsp state_dict (no prefix) into `audio_head` (a standalone model or AudioCLIP.audio).

    Strict for every key except the classifier: when `fc` differs in shape (527 AudioSet classes vs AudioCLIP's
    1024-d projection, or vs a 50-class fine-tuning head) the checkpoint's `fc.*` is not loaded and the head's
    own freshly initialised fc is kept; that head replacement is logged. Returns the replaced keys.
    """
    source = strip_module_prefix(state_dict)
    target = audio_head.state_dict()
    replaced = []
    if 'fc.weight' in source and tuple(source['fc.weight'].shape) != tuple(target['fc.weight'].shape):
        replaced = [k for k in source if k.startswith('fc.')]
        log.warning('audio head replaced: checkpoint fc %s not loaded, the freshly initialised fc %s is kept '
                    '(keys: %s)', tuple(source['fc.weight'].shape), tuple(target['fc.weight'].shape),
                    ', '.join(replaced))
        source = {k: v for k, v in source.items() if k not in replaced}
        source.update({k: v for k, v in target.items() if k.startswith('fc.')})
    load_state_dict_strict(audio_head, source, strip_prefix=False)
    return replaced
