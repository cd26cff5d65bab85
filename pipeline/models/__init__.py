"""AudioCLIP models: the FBSP front end, the ESResNeXt-fbsp audio head, AudioCLIP, losses, named configs."""
from pipeline.models.audioclip import AudioCLIP, AudioCLIPOutput
from pipeline.models.checkpoints import (
    load_audio_head_from_standalone, load_file, load_state_dict_strict, strip_module_prefix,
)
from pipeline.models.esresnext import ESResNeXtFBSP
from pipeline.models.factory import MODEL_CLASSES, MODEL_CONFIGS, SAMPLE_RATES, create_model, list_models, model_config
from pipeline.models.fbsp import LinearFBSP
from pipeline.models.loss import (
    audioclip_loss, contrastive_loss, sample_weights_from_labels, standalone_loss, zero_shot_logits,
)
