"""Named model configurations (timm-style): `create_model('audioclip-rn50')`, `list_models()`.

Full-size names reproduce the released models (44.1 kHz audio, 224 px images). The `-tiny` names are the same
architectures shrunk for the synthetic smoke run at 8 kHz on a couple of CPU cores; they keep the real CLIP
BPE tokenizer (vocab 49408, context 77) so the text path is exercised for real.
"""
import copy
import importlib

_AUDIO_FULL = dict(
    n_fft=2048, hop_length=561, win_length=1654, window='blackmanharris', normalized=True,
    layers=(3, 4, 6, 3), groups=32, width_per_group=4, base_planes=64, apply_attention=True,
)
# Bottleneck width = int(planes * width_per_group / 64) * groups = 16 at base_planes 16: non-zero.
_AUDIO_TINY = dict(
    n_fft=256, hop_length=128, win_length=200, window='blackmanharris', normalized=True,
    layers=(1, 1, 1, 1), groups=2, width_per_group=32, base_planes=16, apply_attention=True,
)

# name -> constructor keyword arguments (like open_clip's model_configs/*.json).
MODEL_CONFIGS = {
    'esresnext-fbsp': dict(**_AUDIO_FULL, num_classes=527),
    'esresnext-fbsp-tiny': dict(**_AUDIO_TINY, num_classes=527),
    'audioclip-rn50': dict(
        embed_dim=1024,
        audio_cfg=_AUDIO_FULL,
        vision_cfg=dict(layers=(3, 4, 6, 3), width=64, image_size=224),
        text_cfg=dict(context_length=77, vocab_size=49408, width=512, heads=8, layers=12),
    ),
    'audioclip-tiny': dict(
        embed_dim=64,
        audio_cfg=_AUDIO_TINY,
        vision_cfg=dict(layers=(1, 1, 1, 1), width=16, image_size=64),
        text_cfg=dict(context_length=77, vocab_size=49408, width=64, heads=2, layers=2),
    ),
}
# name -> "module:Class", imported on first use: AudioCLIP pulls in open_clip (about 1.5 s), which jobs that only
# build the standalone ESResNeXt should not pay for.
MODEL_CLASSES = {
    'esresnext-fbsp': 'pipeline.models.esresnext:ESResNeXtFBSP',
    'esresnext-fbsp-tiny': 'pipeline.models.esresnext:ESResNeXtFBSP',
    'audioclip-rn50': 'pipeline.models.audioclip:AudioCLIP',
    'audioclip-tiny': 'pipeline.models.audioclip:AudioCLIP',
}
# The audio sample rate each configuration is meant for (the front end's hop/window are in samples).
SAMPLE_RATES = {'esresnext-fbsp': 44100, 'esresnext-fbsp-tiny': 8000, 'audioclip-rn50': 44100, 'audioclip-tiny': 8000}


def list_models() -> list[str]:
    return sorted(MODEL_CONFIGS)


def model_config(name: str, **overrides) -> dict:
    """The resolved constructor arguments of a named model. A dict-valued override (e.g. audio_cfg) is merged
    into the named config's dict, anything else replaces the value."""
    if name not in MODEL_CONFIGS:
        raise KeyError(f'unknown model {name!r}; known: {", ".join(list_models())}')
    args = copy.deepcopy(MODEL_CONFIGS[name])
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(args.get(key), dict):
            args[key] = {**args[key], **value}
        else:
            args[key] = value
    return args


def create_model(name: str, **overrides):
    """Build a named model, e.g. create_model('esresnext-fbsp', num_classes=50)."""
    args = model_config(name, **overrides)
    module, cls = MODEL_CLASSES[name].split(':')
    return getattr(importlib.import_module(module), cls)(**args)
