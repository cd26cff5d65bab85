import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from pipeline.models import AudioCLIP, create_model


@pytest.fixture(scope='module')
def tiny():
    torch.manual_seed(0)
    return create_model('audioclip-tiny').eval()


def test_state_dict_equals_released_layout(full_audioclip, audioclip_tsv, rows_of):
    rows = rows_of(full_audioclip)
    assert len(audioclip_tsv) == 861
    assert sorted(rows) == sorted(audioclip_tsv)  # same keys, shapes, dtypes
    assert 'attn_mask' not in dict((r[0], r) for r in rows)  # non-persistent
    # Order: identical except inside each text block, where open_clip registers ln_1 before attn (OpenAI: attn
    # first). Order never matters for loading; we pin everything else.
    outside = [r for r in rows if not r[0].startswith('transformer.resblocks.')]
    assert outside == [r for r in audioclip_tsv if not r[0].startswith('transformer.resblocks.')]


def test_parameter_counts(full_audioclip):
    count = lambda params: sum(p.numel() for p in params)
    named = dict(full_audioclip.named_parameters())
    assert count(full_audioclip.parameters()) == 134_111_910
    assert count(full_audioclip.audio.parameters()) == 32_104_771
    assert count(full_audioclip.visual.parameters()) == 38_316_896
    text = [p for n, p in named.items() if not n.startswith(('audio.', 'visual.', 'logit_scale'))]
    assert count(text) == 63_690_240


def test_quick_gelu_text_tower(full_audioclip):
    from open_clip.model import QuickGELU
    assert any(isinstance(m, QuickGELU) for m in full_audioclip.transformer.modules())
    assert not any(isinstance(m, torch.nn.GELU) for m in full_audioclip.transformer.modules())


def test_logit_scale_init_and_clamp(tiny):
    assert tiny.logit_scale_ai.item() == pytest.approx(math.log(100))
    assert tiny.logit_scale_at.item() == pytest.approx(math.log(100))
    assert tiny.logit_scale.item() == pytest.approx(1.0)  # released init, not open_clip's ln(1/0.07)
    scales = tiny.logit_scales()
    assert scales['audio_image'].item() == pytest.approx(100.0, rel=1e-6)
    assert scales['image_text'].item() == pytest.approx(math.e, rel=1e-6)
    model = AudioCLIP(embed_dim=8, audio_cfg=dict(n_fft=64, hop_length=16, win_length=48, layers=(1, 1, 1, 1),
                                                  groups=1, width_per_group=64, base_planes=8),
                      vision_cfg=dict(layers=(1, 1, 1, 1), width=8, image_size=32),
                      text_cfg=dict(width=16, heads=1, layers=1), init_logit_scale=0.5)
    assert model.logit_scale.item() == pytest.approx(0.5)
    with torch.no_grad():
        model.logit_scale_ai.fill_(10.0)  # exp = 22026 -> clamped to 100
        model.logit_scale_at.fill_(-3.0)  # exp = 0.05 -> clamped to 1
        model.logit_scale.fill_(2.0)  # inside the range
    scales = model.logit_scales()
    assert scales['audio_image'].item() == pytest.approx(100.0)
    assert scales['audio_text'].item() == pytest.approx(1.0)
    assert scales['image_text'].item() == pytest.approx(math.exp(2.0), rel=1e-6)


def test_tokenize_and_encode_labels(tiny):
    tokens = tiny.tokenize(['cat, dog'])
    assert tokens.shape == (1, 77) and tokens.dtype == torch.long
    assert tokens[0, :6].tolist() == [49406, 2368, 267, 1929, 49407, 0]  # released tokenizer's ids
    with torch.no_grad():
        joined = tiny.encode_labels([['cat', 'dog'], 'church bells'])
        direct = tiny.encode_text(tiny.tokenize(['cat, dog', 'church bells']))
        other = tiny.encode_labels(['cat dog', 'church bells'])
    assert joined.shape == (2, 64)
    torch.testing.assert_close(joined, direct)
    assert not torch.allclose(joined[0], other[0])
    with pytest.raises(ValueError, match='longer than the context'):
        tiny.tokenize(['word ' * 100])
    assert tiny.tokenize(['word ' * 100], truncate=True)[0, -1].item() == 49407


def test_forward_pairs_and_normalised_features(tiny):
    audio, image = torch.randn(3, 8000) * 3000, torch.randn(3, 3, 64, 64)
    text = tiny.tokenize(['a', 'b', 'c'])
    with torch.no_grad():
        out = tiny(audio=audio, image=image, text=text)
        assert list(out.logits) == [('audio', 'image'), ('audio', 'text'), ('image', 'text')]
        for f in out.features.values():
            torch.testing.assert_close(f.norm(dim=-1), torch.ones(3))
        expected = 100.0 * out.features['audio'] @ out.features['text'].T
        torch.testing.assert_close(out.logits[('audio', 'text')], expected)
        expected = math.e * out.features['image'] @ out.features['text'].T
        torch.testing.assert_close(out.logits[('image', 'text')], expected)
        torch.testing.assert_close(out.features['audio'], F.normalize(tiny.encode_audio(audio), dim=-1))
        only_audio = tiny(audio=audio)
        assert list(only_audio.features) == ['audio'] and only_audio.logits == {}
        at = tiny(audio=audio, text=text)
        assert list(at.logits) == [('audio', 'text')]
        torch.testing.assert_close(at.logits[('audio', 'text')], out.logits[('audio', 'text')])


BPE_SHA256 = '924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a'  # AUDIOCLIP_FACTS.md section 4


def test_tokenizer_uses_the_reference_bpe_vocabulary(tiny, realdata):
    """open_clip's vocab file is the released bpe_simple_vocab_16e6.txt.gz byte for byte, and a tokenizer built
    from the copy in realdata gives the same ids as ours, cleaning (ftfy, html) included."""
    import hashlib

    import open_clip.tokenizer as octok

    packaged = Path(octok.default_bpe())
    reference = realdata / 'clip' / 'bpe_simple_vocab_16e6.txt.gz'
    assert hashlib.sha256(packaged.read_bytes()).hexdigest() == BPE_SHA256
    assert hashlib.sha256(reference.read_bytes()).hexdigest() == BPE_SHA256
    texts = ['cat, dog', 'Church  Bells &amp; rain', 'crying_baby', 'naïve café 42', 'a dog barking!!']
    from_reference = octok.SimpleTokenizer(bpe_path=str(reference), context_length=77)(texts)
    assert torch.equal(tiny.tokenize(texts), from_reference)
