"""AudioCLIP models: the FBSP front end, the ESResNeXt-fbsp audio head, AudioCLIP, losses, named configs.

Names are exported lazily (PEP 562) so that importing one submodule does not import open_clip.
"""
import importlib

_EXPORTS = {
    "AudioCLIP": "audioclip", "AudioCLIPOutput": "audioclip",
    "load_audio_head": "checkpoints", "load_state_dict_strict": "checkpoints", "strip_module_prefix": "checkpoints",
    "LoadReport": "weights", "Weights": "weights", "WeightsError": "weights", "load_weights": "weights",
    "model_from_weights": "weights", "read_weights": "weights",
    "ESResNeXtFBSP": "esresnext", "LinearFBSP": "fbsp",
    "MODEL_CLASSES": "factory", "MODEL_CONFIGS": "factory", "SAMPLE_RATES": "factory", "create_model": "factory",
    "list_models": "factory", "model_config": "factory",
    "audioclip_loss": "loss", "contrastive_loss": "loss", "same_text_positives": "loss",
    "sample_weights_from_labels": "loss", "standalone_loss": "loss", "zero_shot_logits": "loss",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'pipeline.models' has no attribute {name!r}")
    return getattr(importlib.import_module(f"pipeline.models.{_EXPORTS[name]}"), name)
