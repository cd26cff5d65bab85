import pytest
import torch

from pipeline.models import MODEL_CONFIGS, AudioCLIP, ESResNeXtFBSP, create_model, list_models, model_config
from pipeline.models.factory import SAMPLE_RATES

FULL_SIZE = {'esresnext-fbsp', 'audioclip-rn50'}
NAMES = [pytest.param(n, marks=pytest.mark.slow) if n in FULL_SIZE else n for n in sorted(MODEL_CONFIGS)]


def test_names():
    assert list_models() == sorted(['esresnext-fbsp', 'esresnext-fbsp-tiny', 'audioclip-rn50', 'audioclip-tiny'])
    with pytest.raises(KeyError, match='unknown model'):
        create_model('audioclip-rn101')


@pytest.mark.parametrize('name', NAMES)
def test_build_and_forward(name):
    torch.manual_seed(0)
    model = create_model(name).eval()
    config = MODEL_CONFIGS[name]
    # A short clip: 0.5 s at the model's sample rate, int16 amplitude scale.
    audio = torch.randn(2, SAMPLE_RATES[name] // 2) * 3000
    with torch.no_grad():
        if not name.startswith('audioclip'):
            assert isinstance(model, ESResNeXtFBSP)
            assert model(audio).shape == (2, config['num_classes'])
            assert model.features(audio).shape == (2, model.num_features)
            return
        assert isinstance(model, AudioCLIP)
        size = model.image_size
        out = model(audio=audio, image=torch.randn(2, 3, size, size), text=model.tokenize(['dog', 'church bells']))
    embed = config['embed_dim']
    assert set(out.features) == {'audio', 'image', 'text'}
    for features in out.features.values():
        assert features.shape == (2, embed)
        torch.testing.assert_close(features.norm(dim=-1), torch.ones(2))
    assert all(logits.shape == (2, 2) for logits in out.logits.values())


def test_overrides():
    model = create_model('esresnext-fbsp-tiny', num_classes=50)
    assert model.fc.out_features == 50
    args = model_config('audioclip-tiny', audio_cfg=dict(apply_attention=False), embed_dim=32)
    assert args['audio_cfg']['apply_attention'] is False and args['audio_cfg']['n_fft'] == 256  # merged
    assert args['embed_dim'] == 32
    assert MODEL_CONFIGS['audioclip-tiny']['audio_cfg']['apply_attention'] is True  # not mutated
    model = create_model('audioclip-tiny', audio_cfg=dict(apply_attention=False), embed_dim=32)
    assert model.audio.fc.out_features == 32 and not hasattr(model.audio, 'att1')


def test_tiny_bottleneck_width_is_non_zero():
    model = create_model('esresnext-fbsp-tiny')
    assert model.layer1[0].conv2.out_channels > 0
    assert model.num_features == 512
