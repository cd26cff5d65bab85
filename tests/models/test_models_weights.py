"""The one weights loader: every supported file kind, verification, refusal of unsafe or wrong files."""
import logging
import os

import pytest
import torch
import torch.nn as nn

from pipeline.models import create_model
from pipeline.models.weights import (
    PUBLISHED, WeightsError, load_weights, model_from_weights, read_weights,
)
from pipeline.io import sha256sum
from pipeline.training.model_io import save_model


@pytest.fixture(scope='module')
def tiny_audioclip():
    torch.manual_seed(1)
    return create_model('audioclip-tiny')


def _clip_part(model):
    return {k: v for k, v in model.state_dict().items()
            if not k.startswith('audio.') and k not in ('logit_scale_ai', 'logit_scale_at')}


@pytest.mark.parametrize('wrap', ['raw', 'model', 'state_dict', 'module_prefix'])
def test_released_audioclip_layouts_load_strictly(tmp_path, tiny_audioclip, wrap):
    sd = tiny_audioclip.state_dict()
    obj = {'raw': sd, 'model': {'model': sd, 'epoch': 3}, 'state_dict': {'state_dict': sd},
           'module_prefix': {f'module.{k}': v for k, v in sd.items()}}[wrap]
    torch.save(obj, tmp_path / 'audioclip.pt')
    model, name, report = model_from_weights(tmp_path / 'audioclip.pt', name='audioclip-tiny')
    assert (name, report.kind, report.replaced, report.kept_initialised) == ('audioclip-tiny', 'audioclip', [], [])
    assert report.sha256 == sha256sum(tmp_path / 'audioclip.pt') and report.published is None
    for k, v in model.state_dict().items():
        assert torch.equal(v, sd[k]), k


def test_pipeline_checkpoint_rebuilds_its_own_model(tmp_path):
    torch.manual_seed(2)
    source = create_model('esresnext-fbsp-tiny', num_classes=10)
    save_model(tmp_path / 'ft.pt', source, 'esresnext-fbsp-tiny', {'num_classes': 10}, {'stage': 'finetune'})
    model, name, report = model_from_weights(tmp_path / 'ft.pt')
    assert name == 'esresnext-fbsp-tiny' and report.kind == 'esresnext' and model.fc.out_features == 10
    assert torch.equal(model.fc.weight, source.fc.weight)


def test_partial_or_wrong_files_fail_naming_keys(tmp_path, tiny_audioclip):
    sd = dict(tiny_audioclip.state_dict())
    sd.pop('audio.att2.bn.bias')
    sd['audio.extra'] = torch.zeros(1)
    torch.save(sd, tmp_path / 'partial.pt')
    with pytest.raises(ValueError, match=r'(?s)partial.pt.*missing keys \(1\): audio.att2.bn.bias.*unexpected keys \(1\): audio.extra'):
        model_from_weights(tmp_path / 'partial.pt', name='audioclip-tiny')
    torch.save({'encoder.weight': torch.zeros(2)}, tmp_path / 'other.pt')
    with pytest.raises(WeightsError, match='unknown weights layout.*encoder.weight'):
        read_weights(tmp_path / 'other.pt')
    torch.save([1, 2], tmp_path / 'list.pt')
    with pytest.raises(WeightsError, match='expected a state_dict'):
        read_weights(tmp_path / 'list.pt')
    with pytest.raises(FileNotFoundError, match='nothing.pt'):
        read_weights(tmp_path / 'nothing.pt')


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f'touch {self.marker}',)


@pytest.mark.reliability
def test_pickle_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / 'pwned'
    torch.save({'fc.weight': torch.zeros(1), 'payload': _RunsCode(marker)}, tmp_path / 'evil.pt')
    with pytest.raises(WeightsError, match='weights_only=True'):
        read_weights(tmp_path / 'evil.pt')
    assert not marker.exists()


@pytest.mark.reliability
def test_published_names_must_have_the_published_hash(tmp_path):
    sd = create_model('esresnext-fbsp-tiny').state_dict()
    torch.save(sd, tmp_path / 'ESRNXFBSP.pt')
    with pytest.raises(WeightsError, match=f'differs from the published ESRNXFBSP.pt \\({PUBLISHED["ESRNXFBSP.pt"][0]}'):
        read_weights(tmp_path / 'ESRNXFBSP.pt')
    torch.save(sd, tmp_path / 'resnext50_32x4d-7cdf4587.pth')  # torch.hub naming: sha256 prefix in the name
    with pytest.raises(WeightsError, match='does not start with 7cdf4587'):
        read_weights(tmp_path / 'resnext50_32x4d-7cdf4587.pth')
    good = tmp_path / 'mine.pth'
    torch.save(sd, good)
    renamed = good.rename(tmp_path / f'resnext-{sha256sum(good)[:8]}.pth')  # torch.save's bytes depend on the name
    assert read_weights(renamed).kind == 'esresnext'


def _openai_style_archive(clip_sd: dict, path):
    """A TorchScript archive shaped like OpenAI's RN50.pt: fp16 weights at CLIP's key names plus the three
    hyper-parameter entries."""
    root = nn.Module()
    for key, value in clip_sd.items():
        *mods, leaf = key.split('.')
        parent = root
        for m in mods:
            if not hasattr(parent, m):
                parent.add_module(m, nn.Module())
            parent = getattr(parent, m)
        parent.register_parameter(leaf, nn.Parameter(value.detach().clone(), requires_grad=False))
    for name, value in (('input_resolution', 64), ('context_length', 77), ('vocab_size', 49408)):
        root.register_buffer(name, torch.tensor(value))
    torch.jit.save(torch.jit.script(root.half()), str(path))


def test_openai_torchscript_is_converted_and_only_trusted_by_hash(tmp_path, tiny_audioclip, caplog):
    clip_sd = _clip_part(tiny_audioclip)
    path = tmp_path / 'RN50-like.pt'
    _openai_style_archive(clip_sd, path)
    with pytest.raises(WeightsError, match='TorchScript archive runs code.*refused'):
        read_weights(path)
    weights = read_weights(path, trusted_sha256={sha256sum(path)})
    assert weights.kind == 'clip' and 'input_resolution' not in weights.state_dict
    assert all(v.dtype == torch.float32 for v in weights.state_dict.values() if v.is_floating_point())
    torch.manual_seed(5)
    target = create_model('audioclip-tiny')
    audio_before = {k: v.clone() for k, v in target.audio.state_dict().items()}
    with caplog.at_level(logging.WARNING, logger='pipeline.models.weights'):
        report = load_weights(target, weights)
    assert report.kept_initialised[:3] == ['audio', 'logit_scale_ai', 'logit_scale_at']
    assert 'left as initialised' in caplog.text
    for k, v in _clip_part(target).items():
        assert torch.equal(v, clip_sd[k].half().float()), k
    assert all(torch.equal(v, audio_before[k]) for k, v in target.audio.state_dict().items())
    with pytest.raises(WeightsError, match='hold no audio head'):
        load_weights(create_model('esresnext-fbsp-tiny'), weights)


def test_clip_weights_with_a_missing_key_fail(tmp_path, tiny_audioclip):
    clip_sd = _clip_part(tiny_audioclip)
    clip_sd.pop('ln_final.bias')
    torch.save(clip_sd, tmp_path / 'clip.pt')
    with pytest.raises(WeightsError, match=r"missing \['ln_final.bias'\]"):
        load_weights(create_model('audioclip-tiny'), tmp_path / 'clip.pt')


def test_standalone_head_into_audioclip_is_a_logged_replacement(tmp_path, caplog):
    torch.manual_seed(3)
    standalone = create_model('esresnext-fbsp-tiny')  # fc 527
    torch.save(standalone.state_dict(), tmp_path / 'standalone.pt')
    target = create_model('audioclip-tiny')
    with caplog.at_level(logging.WARNING):
        report = load_weights(target, tmp_path / 'standalone.pt')
    assert report.replaced == ['fc.weight', 'fc.bias'] and 'visual' in report.kept_initialised
    assert 'audio head replaced' in caplog.text
    assert torch.equal(target.audio.layer2[0].conv2.weight, standalone.layer2[0].conv2.weight)


def test_audioclip_audio_head_into_standalone(tmp_path, tiny_audioclip):
    torch.save(tiny_audioclip.state_dict(), tmp_path / 'audioclip.pt')
    target = create_model('esresnext-fbsp-tiny', num_classes=64)
    report = load_weights(target, tmp_path / 'audioclip.pt')
    assert report.replaced == []
    assert torch.equal(target.fc.weight, tiny_audioclip.audio.fc.weight)


@pytest.mark.slow
def test_imagenet_resnext_initialisation(tmp_path):
    """torchvision's ResNeXt-50 32x4d layout -> the full-size trunk, attention BN weight and bias reset to 1."""
    import torchvision
    torch.manual_seed(4)
    imagenet = torchvision.models.resnext50_32x4d(weights=None).state_dict()
    torch.save(imagenet, tmp_path / 'resnext50_imagenet.pth')
    model = create_model('esresnext-fbsp')
    fbsp_before = model.fbsp.fc.detach().clone()
    report = load_weights(model, tmp_path / 'resnext50_imagenet.pth')
    assert report.kind == 'resnext' and report.replaced == ['fc.weight', 'fc.bias']
    assert report.kept_initialised == ['window', 'fbsp', 'fc', 'att1', 'att2', 'att3', 'att4', 'att5']
    for k in ('conv1.weight', 'bn1.running_mean', 'layer3.5.conv2.weight', 'layer4.0.downsample.1.bias'):
        assert torch.equal(model.state_dict()[k], imagenet[k]), k
    for i in range(1, 6):
        bn = getattr(model, f'att{i}').bn
        assert torch.all(bn.weight == 1) and torch.all(bn.bias == 1)
    assert model.fc.out_features == 527 and torch.equal(model.fbsp.fc, fbsp_before)
    broken = {k: v for k, v in imagenet.items() if k != 'layer2.1.bn3.weight'}
    torch.save(broken, tmp_path / 'broken.pth')
    with pytest.raises(WeightsError, match='missing layer2.1.bn3.weight'):
        load_weights(create_model('esresnext-fbsp'), tmp_path / 'broken.pth')
