"""Losses of AudioCLIP and of the standalone ESResNeXt-fbsp (AUDIOCLIP_FACTS.md sections 2 and 3).

Contrastive loss, released quirks kept on purpose:
  * per modality pair: CE(logits, diag) + CE(logits.T, diag), i.e. symmetric, row and column;
  * the sum over pairs is divided by num_pairs! (1 pair -> /1, 2 -> /2, 3 -> /6), not by the pair count;
  * the targets are the diagonal, even when two clips of a batch share their labels. `positives` (an option
    beyond the released code, params `loss.targets: same_text`) instead spreads each row's target uniformly
    over every item of the batch with the same text, so identical label strings are not pushed apart.
"""
import math

import torch
import torch.nn.functional as F


def contrastive_loss(output, sample_weights: torch.Tensor | None = None,
                     positives: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric CE over every modality pair of an AudioCLIPOutput, summed, divided by factorial(pairs).

    `sample_weights` (B,) weight each sample in both directions: a per-sample weighted mean, as F.cross_entropy's
    `weight=` gives when the "classes" are the batch indices. `positives` (B, B) bool, True where item j is a
    match for item i (the diagonal must be True): soft targets instead of the diagonal."""
    logits = list(output.logits.values())
    if not logits:
        raise ValueError('contrastive_loss needs at least two modalities (no logits in the output)')
    total = 0.0
    for pair_logits in logits:  # (B, B)
        total = total + _cross_entropy(pair_logits, sample_weights, positives) \
            + _cross_entropy(pair_logits.T, sample_weights, None if positives is None else positives.T)
    return total / math.factorial(len(logits))


def _cross_entropy(logits: torch.Tensor, weights: torch.Tensor | None, positives: torch.Tensor | None) -> torch.Tensor:
    """Row-wise CE of (B, B) logits against the diagonal, or against `positives` normalised per row."""
    if positives is None:
        target = torch.arange(logits.shape[0], device=logits.device)
        return F.cross_entropy(logits, target, weight=weights)
    if not bool(positives.diagonal().all()):
        raise ValueError('positives must include the diagonal (every item matches itself)')
    target = positives.to(logits.dtype)
    target = target / target.sum(dim=1, keepdim=True)
    per_row = -(target * F.log_softmax(logits, dim=1)).sum(dim=1)  # (B,)
    if weights is None:
        return per_row.mean()
    return (weights * per_row).sum() / weights.sum()


def audioclip_loss(model, output, sample_weights: torch.Tensor | None = None,
                   ttf_weight: float = 1.0, positives: torch.Tensor | None = None) -> torch.Tensor:
    """Contrastive loss plus the FBSP filter-norm regulariser whenever audio was encoded (weight 1 as released)."""
    loss = contrastive_loss(output, sample_weights, positives)
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


def same_text_positives(texts: list[str], device=None) -> torch.Tensor:
    """(B, B) bool: True where two items of the batch carry the identical text."""
    ids = {t: i for i, t in enumerate(dict.fromkeys(texts))}
    codes = torch.tensor([ids[t] for t in texts], device=device)
    return codes[:, None] == codes[None, :]


def sample_weights_from_labels(multi_hot: torch.Tensor, log_class_weights: torch.Tensor) -> torch.Tensor:
    """(B, K) multi-hot, (K,) log class weights -> (B,) sum of the clip's class weights exp(log w)."""
    return (multi_hot.to(log_class_weights.dtype) * log_class_weights.exp()).sum(dim=-1)


def zero_shot_logits(audio_features: torch.Tensor, text_features: torch.Tensor, scale) -> torch.Tensor:
    """(B, D) audio, (K, D) class-text features -> (B, K) = scale * cosine similarity.

    `scale` is the effective scale, e.g. `model.logit_scales()['audio_text']`; softmax over dim 1 classifies."""
    return scale * F.normalize(audio_features, dim=-1) @ F.normalize(text_features, dim=-1).T
