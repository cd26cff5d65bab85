import math

import pytest
import torch

from pipeline.models import (
    AudioCLIPOutput, audioclip_loss, contrastive_loss, create_model, same_text_positives, sample_weights_from_labels,
    standalone_loss, zero_shot_logits,
)
from pipeline.models.audioclip import PAIRS


def _row_ce(logits, weights=None):
    """Hand-written cross-entropy with diagonal targets, per-sample weighted mean."""
    n = logits.shape[0]
    weights = torch.ones(n, dtype=torch.float64) if weights is None else weights.double()
    losses = []
    for i in range(n):
        row = logits[i].double()
        losses.append(-(row[i] - math.log(sum(math.exp(v) for v in row.tolist()))))
    losses = torch.tensor(losses, dtype=torch.float64)
    return float((weights * losses).sum() / weights.sum())


def _output(num_pairs, batch=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = {pair: torch.randn(batch, batch, generator=g) * 3 for pair in PAIRS[:num_pairs]}
    return AudioCLIPOutput(features={}, logits=logits)


@pytest.mark.parametrize('num_pairs, divisor', [(1, 1), (2, 2), (3, 6)])
def test_factorial_normalisation(num_pairs, divisor):
    output = _output(num_pairs)
    hand = sum(_row_ce(l) + _row_ce(l.T) for l in output.logits.values()) / divisor
    assert contrastive_loss(output).item() == pytest.approx(hand, rel=1e-5)


def test_three_pairs_equal_mean_of_six_directions():
    output = _output(3, seed=1)
    directions = [v for l in output.logits.values() for v in (_row_ce(l), _row_ce(l.T))]
    assert contrastive_loss(output).item() == pytest.approx(sum(directions) / 6, rel=1e-5)


def test_sample_weights():
    output = _output(1, batch=3)
    weights = torch.tensor([1.0, 4.0, 0.5])
    (l,) = output.logits.values()
    hand = _row_ce(l, weights) + _row_ce(l.T, weights)
    assert contrastive_loss(output, weights).item() == pytest.approx(hand, rel=1e-5)
    assert contrastive_loss(output).item() != pytest.approx(hand, rel=1e-3)


def test_no_pairs_is_an_error():
    with pytest.raises(ValueError, match='two modalities'):
        contrastive_loss(AudioCLIPOutput(features={'audio': torch.zeros(2, 4)}))


def test_sample_weights_from_labels():
    multi_hot = torch.tensor([[1, 0, 1], [0, 1, 0]], dtype=torch.uint8)
    log_w = torch.log(torch.tensor([2.0, 3.0, 5.0]))
    torch.testing.assert_close(sample_weights_from_labels(multi_hot, log_w), torch.tensor([7.0, 3.0]))


def test_standalone_loss_branches():
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.0, 1.0, -2.0]])
    multi_hot = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    bce = lambda x, y: -(y * math.log(1 / (1 + math.exp(-x))) + (1 - y) * math.log(1 - 1 / (1 + math.exp(-x))))
    hand = sum(bce(x, y) for x, y in zip(logits.flatten().tolist(), multi_hot.flatten().tolist())) / 2
    assert standalone_loss(logits, multi_hot).item() == pytest.approx(hand, rel=1e-5)
    target = torch.tensor([0, 2])
    hand_ce = (_ce_row(logits[0], 0) + _ce_row(logits[1], 2)) / 2
    assert standalone_loss(logits, target).item() == pytest.approx(hand_ce, rel=1e-5)


def _ce_row(row, k):
    return -(row[k].item() - math.log(sum(math.exp(v) for v in row.tolist())))


def test_audioclip_loss_adds_ttf_only_with_audio():
    torch.manual_seed(0)
    model = create_model('audioclip-tiny')
    with torch.no_grad():
        model.audio.fbsp.fb.mul_(4.0)  # regulariser = 1 now, so its presence is visible
    output = _output(1)
    assert audioclip_loss(model, output).item() == pytest.approx(contrastive_loss(output).item(), rel=1e-6)
    output.features['audio'] = torch.zeros(4, 64)
    expected = contrastive_loss(output).item() + 1.0
    assert audioclip_loss(model, output).item() == pytest.approx(expected, rel=1e-4)
    assert audioclip_loss(model, output, ttf_weight=0.5).item() == pytest.approx(expected - 0.5, rel=1e-4)


def test_zero_shot_logits():
    audio = torch.tensor([[3.0, 0.0], [0.0, -2.0]])
    text = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    logits = zero_shot_logits(audio, text, 100.0)
    expected = torch.tensor([[100.0, 0.0, 100 / math.sqrt(2)], [0.0, -100.0, -100 / math.sqrt(2)]])
    torch.testing.assert_close(logits, expected)


def _output_with(logits):
    from types import SimpleNamespace

    return SimpleNamespace(logits={("audio", "text"): logits}, features={})


def test_positives_equal_to_the_diagonal_give_the_released_loss():
    torch.manual_seed(0)
    logits = torch.randn(5, 5)
    w = torch.rand(5) + 0.1
    eye = torch.eye(5, dtype=torch.bool)
    for weights in (None, w):
        a = contrastive_loss(_output_with(logits), weights)
        b = contrastive_loss(_output_with(logits), weights, positives=eye)
        torch.testing.assert_close(a, b)


def test_same_text_positives_spread_the_target_over_identical_texts():
    texts = ["dog", "rain", "dog"]
    pos = same_text_positives(texts)
    assert pos.tolist() == [[True, False, True], [False, True, False], [True, False, True]]
    logits = torch.tensor([[2.0, 0.0, 2.0], [0.0, 3.0, 0.0], [2.0, 0.0, 2.0]])
    loss = contrastive_loss(_output_with(logits), positives=pos)
    # hand computation: rows 0 and 2 put half their target on each "dog"; row 1 on itself (symmetric logits)
    lsm = torch.log_softmax(logits, dim=1)
    rows = torch.stack([-(lsm[0, 0] + lsm[0, 2]) / 2, -lsm[1, 1], -(lsm[2, 0] + lsm[2, 2]) / 2])
    torch.testing.assert_close(loss, 2 * rows.mean())
    # The released diagonal target lowers the logit of the duplicate "dog" (pushes identical texts apart);
    # the soft target treats both "dog" items alike.
    for positives, same in ((None, False), (pos, True)):
        x = logits.clone().requires_grad_(True)
        contrastive_loss(_output_with(x), positives=positives).backward()
        assert torch.isclose(x.grad[0, 0], x.grad[0, 2]) == same
        if not same:
            assert x.grad[0, 2] > 0  # gradient descent lowers it


def test_positives_without_the_diagonal_are_rejected():
    with pytest.raises(ValueError, match="diagonal"):
        contrastive_loss(_output_with(torch.zeros(2, 2)), positives=torch.zeros(2, 2, dtype=torch.bool))
