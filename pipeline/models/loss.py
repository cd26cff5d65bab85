"""Losses of AudioCLIP and of the standalone ESResNeXt-fbsp (AUDIOCLIP_FACTS.md sections 2 and 3).

Contrastive loss, released quirks kept on purpose:
  * per modality pair: CE(logits, diag) + CE(logits.T, diag), i.e. symmetric, row and column;
  * the sum over pairs is divided by num_pairs! (1 pair -> /1, 2 -> /2, 3 -> /6), not by the pair count;
  * the targets are always the diagonal, even when two clips of a batch share their labels.
"""
import math

import torch
import torch.nn.functional as F


def contrastive_loss(output, sample_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric CE over every modality pair of an AudioCLIPOutput, summed, divided by factorial(pairs).

    `sample_weights` (B,) weight each sample in both directions (F.cross_entropy `weight=`: the "classes" are
    the batch indices, so this is a per-sample weighted mean)."""
    logits = list(output.logits.values())
    if not logits:
        raise ValueError('contrastive_loss needs at least two modalities (no logits in the output)')
    total = 0.0
    for pair_logits in logits:  # (B, B)
        target = torch.arange(pair_logits.shape[0], device=pair_logits.device)
        total = total + F.cross_entropy(pair_logits, target, weight=sample_weights) \
            + F.cross_entropy(pair_logits.T, target, weight=sample_weights)
    return total / math.factorial(len(logits))


def audioclip_loss(model, output, sample_weights: torch.Tensor | None = None,
                   ttf_weight: float = 1.0) -> torch.Tensor:
    """Contrastive loss plus the FBSP filter-norm regulariser whenever audio was encoded (weight 1 as released)."""
    loss = contrastive_loss(output, sample_weights)
    if 'audio' in output.features and ttf_weight:
        loss = loss + ttf_weight * model.audio.loss_ttf()
    return loss


def standalone_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Standalone classifier loss (without the FBSP regulariser; add `model.loss_ttf()` for the released loss).

    Multi-hot targets of the logits' shape (B, K): BCE-with-logits summed over classes and samples, divided by
    the batch size. Class indices (B,): softmax cross-entropy."""
    if logits.shape == target.shape:
        return F.binary_cross_entropy_with_logits(logits, target.to(logits.dtype), reduction='sum') / logits.shape[0]
    return F.cross_entropy(logits, target)


def sample_weights_from_labels(multi_hot: torch.Tensor, log_class_weights: torch.Tensor) -> torch.Tensor:
    """(B, K) multi-hot, (K,) log class weights -> (B,) sum of the clip's class weights exp(log w)."""
    return (multi_hot.to(log_class_weights.dtype) * log_class_weights.exp()).sum(dim=-1)


def zero_shot_logits(audio_features: torch.Tensor, text_features: torch.Tensor, scale) -> torch.Tensor:
    """(B, D) audio, (K, D) class-text features -> (B, K) = scale * cosine similarity.

    `scale` is the effective scale, e.g. `model.logit_scales()['audio_text']`; softmax over dim 1 classifies."""
    return scale * F.normalize(audio_features, dim=-1) @ F.normalize(text_features, dim=-1).T
