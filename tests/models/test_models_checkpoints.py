import logging

import pytest
import torch

from pipeline.models import (
    create_model, load_audio_head, load_state_dict_strict, strip_module_prefix,
)


@pytest.fixture(scope='module')
def tiny_pair():
    torch.manual_seed(0)
    return create_model('esresnext-fbsp-tiny'), create_model('esresnext-fbsp-tiny')


def test_strict_load_names_missing_unexpected_and_shapes(tiny_pair):
    source, target = tiny_pair
    sd = source.state_dict()
    sd.pop('layer2.0.conv1.weight')
    sd['extra.weight'] = torch.zeros(1)
    sd['fc.bias'] = torch.zeros(3)
    with pytest.raises(ValueError) as err:
        load_state_dict_strict(target, sd)
    message = str(err.value)
    assert 'missing keys (1): layer2.0.conv1.weight' in message
    assert 'unexpected keys (1): extra.weight' in message
    assert 'fc.bias: checkpoint (3,) vs model (527,)' in message


def test_strict_load_copies_everything(tiny_pair):
    source, target = tiny_pair
    with torch.no_grad():
        source.fbsp.m.fill_(0.25)
    load_state_dict_strict(target, source.state_dict())
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key


def test_module_prefix(tiny_pair):
    source, target = tiny_pair
    prefixed = {f'module.{k}': v for k, v in source.state_dict().items()}
    assert list(strip_module_prefix(prefixed)) == list(source.state_dict())
    assert strip_module_prefix({'module.a': 1, 'b': 2}) == {'a': 1, 'b': 2}
    with torch.no_grad():
        source.conv1.weight.add_(1.0)
    load_state_dict_strict(target, prefixed)  # stripped by default
    assert torch.equal(target.conv1.weight, source.conv1.weight)
    with pytest.raises(ValueError, match='unexpected keys .*module.conv1.weight'):
        load_state_dict_strict(target, prefixed, strip_prefix=False)


def test_audio_head_from_standalone_replaces_fc_and_logs(caplog):
    torch.manual_seed(0)
    standalone = create_model('esresnext-fbsp-tiny')  # fc 527
    audioclip = create_model('audioclip-tiny')  # audio.fc 64
    fc_before = audioclip.audio.fc.weight.clone()
    sd = {f'module.{k}': v for k, v in standalone.state_dict().items()}
    with caplog.at_level(logging.WARNING, logger='pipeline.models.checkpoints'):
        skipped = load_audio_head(audioclip.audio, sd)
    assert skipped == ['fc.weight', 'fc.bias']
    assert 'audio head replaced' in caplog.text and '(527, 512)' in caplog.text and '(64, 512)' in caplog.text
    assert torch.equal(audioclip.audio.fc.weight, fc_before)
    assert torch.equal(audioclip.audio.layer4[0].conv3.weight, standalone.layer4[0].conv3.weight)
    assert torch.equal(audioclip.audio.window, standalone.window)
    # Anything else missing is still an error.
    broken = dict(standalone.state_dict())
    broken.pop('att3.bn.running_var')
    with pytest.raises(ValueError, match='att3.bn.running_var'):
        load_audio_head(audioclip.audio, broken)


def test_audio_head_same_fc_shape_is_loaded_without_replacement(caplog):
    torch.manual_seed(0)
    standalone = create_model('esresnext-fbsp-tiny', num_classes=64)
    audioclip = create_model('audioclip-tiny')
    with caplog.at_level(logging.WARNING, logger='pipeline.models.checkpoints'):
        assert load_audio_head(audioclip.audio, standalone.state_dict()) == []
    assert 'replaced' not in caplog.text
    assert torch.equal(audioclip.audio.fc.weight, standalone.fc.weight)
