"""AudioCLIP: OpenAI CLIP (image + text heads, from open_clip) plus an ESResNeXt-fbsp audio head.

We subclass open_clip's CLIP so that the CLIP keys stay un-prefixed (`visual.*`, `transformer.*`,
`logit_scale`, ...) exactly as in the released checkpoints; the audio head lives under `audio.*` and the two
audio logit scales are `logit_scale_ai` (audio-image) and `logit_scale_at` (audio-text). At full size the
state_dict equals audioclip_state_dict.tsv (861 keys, same order). See AUDIOCLIP_FACTS.md section 2.

Build with quick_gelu=True: the released CLIP is RN50 with QuickGELU; plain GELU changes text embeddings.
"""
import math
from dataclasses import dataclass, field
from functools import lru_cache

import open_clip
import torch
import torch.nn as nn
import torch.nn.functional as F
from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

from pipeline.models.esresnext import ESResNeXtFBSP

MODALITIES = ('audio', 'image', 'text')
# Modality pairs in the released order; each has its own learnable logit scale.
PAIRS = (('audio', 'image'), ('audio', 'text'), ('image', 'text'))
SCALE_NAMES = {('audio', 'image'): 'audio_image', ('audio', 'text'): 'audio_text', ('image', 'text'): 'image_text'}


@dataclass
class AudioCLIPOutput:
    features: dict = field(default_factory=dict)  # modality -> (B, embed_dim), L2-normalised
    logits: dict = field(default_factory=dict)  # (a, b) -> (B_a, B_b) = scale_ab * f_a @ f_b.T
    scales: dict = field(default_factory=dict)  # 'audio_image' / 'audio_text' / 'image_text' -> scalar


@lru_cache(maxsize=None)
def _tokenizer(context_length: int) -> open_clip.tokenizer.SimpleTokenizer:
    # Loading the BPE merges takes ~0.5 s: build one tokenizer per context length and share it.
    return open_clip.tokenizer.SimpleTokenizer(context_length=context_length)


class AudioCLIP(CLIP):

    def __init__(
            self,
            embed_dim: int = 1024,
            audio_cfg: dict | None = None,
            vision_cfg: dict | None = None,
            text_cfg: dict | None = None,
            init_logit_scale: float = 1.0,
    ):
        """`init_logit_scale` is the initial *parameter* value of the image-text scale (effective scale
        clamp(exp(s), 1, 100)). The default 1.0 reproduces the released AudioCLIP code (effective e ~ 2.718),
        not open_clip's ln(1/0.07); any loaded CLIP or AudioCLIP checkpoint overrides it anyway."""
        vision_cfg = CLIPVisionCfg(**(vision_cfg or dict(layers=(3, 4, 6, 3), width=64, image_size=224)))
        text_cfg = CLIPTextCfg(**(text_cfg or {}))
        super().__init__(embed_dim, vision_cfg, text_cfg, quick_gelu=True, init_logit_scale=init_logit_scale)
        self.embed_dim = embed_dim
        self.image_size = vision_cfg.image_size
        # Audio pairs start at ln(100): the clamp's upper bound, as released.
        self.logit_scale_ai = nn.Parameter(torch.tensor(math.log(100.0)))
        self.logit_scale_at = nn.Parameter(torch.tensor(math.log(100.0)))
        # The audio "projection" is just the ResNeXt fc (num_features -> embed_dim).
        self.audio = ESResNeXtFBSP(**{**(audio_cfg or {}), 'num_classes': embed_dim})

    # ---------------------------------------------------------------- encoders

    def encode_audio(self, audio: torch.Tensor) -> torch.Tensor:
        """Waveform (B, L) or (B, C, L) in int16 amplitude scale -> (B, embed_dim), unnormalised."""
        return self.audio(audio)

    def tokenize(self, texts: list[str], truncate: bool = False) -> torch.Tensor:
        """CLIP BPE tokens (N, context_length), on the model's device.

        Like the released code, a text longer than the context raises, unless `truncate` (open_clip's
        behaviour: cut, keeping the end-of-text token)."""
        tokenizer = _tokenizer(self.context_length)
        if not truncate:
            for text in texts:
                if len(tokenizer.encode(text)) + 2 > self.context_length:
                    raise ValueError(f'text longer than the context ({self.context_length} tokens): {text!r}')
        return tokenizer(list(texts)).to(self.positional_embedding.device)

    def encode_labels(self, label_lists: list) -> torch.Tensor:
        """Texts for label sets -> (N, embed_dim), unnormalised.

        Each item is a str or a list of str; lists are joined with ', ' (multi-label, as released). No prompt
        template is applied."""
        texts = [item if isinstance(item, str) else ', '.join(item) for item in label_lists]
        return self.encode_text(self.tokenize(texts))

    # ---------------------------------------------------------------- logits

    def logit_scales(self) -> dict:
        """Effective scales clamp(exp(s), 1, 100) per pair."""
        raw = {'audio_image': self.logit_scale_ai, 'audio_text': self.logit_scale_at, 'image_text': self.logit_scale}
        return {name: torch.clamp(s.exp(), 1.0, 100.0) for name, s in raw.items()}

    def forward(self, audio=None, image=None, text=None) -> AudioCLIPOutput:
        """Any subset of audio (B, [C,] L), image (B, 3, S, S) and text tokens (B, context_length)."""
        features = {}
        if audio is not None:
            features['audio'] = F.normalize(self.encode_audio(audio), dim=-1)
        if image is not None:
            features['image'] = F.normalize(self.encode_image(image), dim=-1)
        if text is not None:
            features['text'] = F.normalize(self.encode_text(text), dim=-1)
        scales = self.logit_scales()
        logits = {}
        for a, b in PAIRS:
            if a in features and b in features:
                logits[(a, b)] = scales[SCALE_NAMES[(a, b)]] * features[a] @ features[b].T
        return AudioCLIPOutput(features=features, logits=logits, scales=scales)
