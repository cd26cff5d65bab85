import math

import pytest
import torch

from pipeline.models import create_model
from pipeline.models.esresnext import ESResNeXtFBSP

# AUDIOCLIP_FACTS.md section 11(a): 16384 sin(2 pi 1000 n / 44100), 5 s, frame 200, bins 40..56 (dB).
SINE_FRAME200_BINS_40_56 = [
    -105.898, -83.745, -48.039, -18.864, -3.100, 5.906, 9.938, 9.580, 4.786, -5.165, -22.412, -56.122,
    -81.928, -101.347, -91.785, -96.395, -85.656,
]


def test_state_dict_equals_released_layout(full_esresnext, esresnext_tsv, rows_of):
    assert len(esresnext_tsv) == 370
    assert rows_of(full_esresnext) == esresnext_tsv  # keys, shapes, dtypes and order


def test_parameter_count(full_esresnext):
    assert sum(p.numel() for p in full_esresnext.parameters()) == 31_086_418
    assert sum(p.numel() for p in full_esresnext.fbsp.parameters()) == 3_075


def test_window_is_periodic_blackmanharris(full_esresnext):
    w = full_esresnext.window
    assert w.shape == (1654,) and w.dtype == torch.float32
    assert w[0].item() == pytest.approx(6.0e-5, rel=1e-3)
    assert w.max().item() == pytest.approx(1.0, abs=1e-6)
    # Periodic (fftbins=True): symmetric about sample N/2 = 827, so w[N-1] == w[1]. A symmetric window of even
    # length would instead have two equal maxima at 826 and 827.
    assert w.argmax().item() == 827
    assert w[826].item() < w[827].item() and w[826].item() == pytest.approx(w[828].item(), rel=1e-6)
    assert w[-1].item() == pytest.approx(w[1].item(), rel=1e-5)
    signal = pytest.importorskip('scipy.signal')
    expected = torch.from_numpy(signal.get_window('blackmanharris', 1654, fftbins=True)).float()
    torch.testing.assert_close(w, expected, atol=1e-7, rtol=0)


def test_sine_reference_spectrogram(full_esresnext):
    n = torch.arange(220500, dtype=torch.float64)
    x = (16384 * torch.sin(2 * math.pi * 1000 * n / 44100)).float().reshape(1, 1, -1)
    with torch.no_grad():
        db = full_esresnext.spectrogram(x)
    assert db.shape == (1, 1, 3, 341, 392)
    bins = db.reshape(1023, 392)  # the 3 bands stacked back: 341 consecutive bins each
    frame = bins[:, 200]
    assert frame.argmax().item() == 46
    assert frame[46].item() == pytest.approx(9.9377, abs=1e-3)
    for k, ref in zip(range(40, 57), SINE_FRAME200_BINS_40_56):
        if ref > -100:  # the deepest sidelobes are numerically fragile
            assert frame[k].item() == pytest.approx(ref, abs=1e-3), k
    assert bins[:, 0].argmax().item() == 46
    assert bins[:, 0].max().item() == pytest.approx(9.9123, abs=1e-3)
    assert db.max().item() == pytest.approx(9.9377, abs=1e-3)
    assert db.min().item() == pytest.approx(-173.9079, abs=0.05)
    assert db.mean().item() == pytest.approx(-117.6985, abs=0.05)


@pytest.mark.parametrize('length, frames', [(220500, 392), (176400, 313), (1654, 1), (100, 1), (1655, 2)])
def test_frame_count(length, frames):
    model = ESResNeXtFBSP(layers=(1, 1, 1, 1), groups=1, width_per_group=64, base_planes=8, num_classes=3)
    with torch.no_grad():
        db = model.spectrogram(torch.zeros(1, length))
    assert db.shape == (1, 1, 3, 341, frames)


def _tiny(**kw):
    torch.manual_seed(0)
    return create_model('esresnext-fbsp-tiny', **kw).eval()


def test_mono_shapes_and_stereo_sum():
    model = _tiny(num_classes=7)
    x = torch.randn(3, 8000) * 3000
    with torch.no_grad():
        mono = model.features(x)
        assert mono.shape == (3, model.num_features) == (3, 512)
        torch.testing.assert_close(model.features(x[:, None]), mono)  # (B, L) == (B, 1, L)
        stereo = model.features(torch.stack([x, x], dim=1))
        torch.testing.assert_close(stereo, 2 * mono)  # per-channel trunk, features summed
        swapped = torch.stack([x, x.flip(-1)], dim=1)
        assert not torch.allclose(model.features(swapped), 2 * mono)
        assert model(x).shape == (3, 7)
        spec = model.spectrogram(torch.stack([x, x], dim=1))
    assert spec.shape == (3, 2, 3, 43, 62)  # 129 bins -> 3 x 43; 1 + ceil((8000 - 200) / 128) frames


def test_attention_gates_change_the_output():
    torch.manual_seed(0)
    x = torch.randn(2, 8000) * 3000
    with_att, without = _tiny(), _tiny(apply_attention=False)
    assert any(k.startswith('att') for k in with_att.state_dict())
    assert not any(k.startswith('att') for k in without.state_dict())
    with torch.no_grad():
        without.load_state_dict({k: v for k, v in with_att.state_dict().items() if not k.startswith('att')})
        assert not torch.allclose(with_att.features(x), without.features(x))


def test_int16_mapping_and_power_floor():
    model = _tiny()
    with torch.no_grad():
        # (x + 32768) * 2 / 65535 - 1 maps -0.5 to exactly 0: all-zero frames hit the 1e-18 power floor.
        silent = model.spectrogram(torch.full((1, 8000), -0.5))
        loud = model.spectrogram(torch.full((1, 8000), -32768.0))  # maps to -1: a constant (DC) signal
    assert torch.equal(silent, torch.full_like(silent, -180.0))
    assert torch.isfinite(loud).all() and loud.max().item() > -100


def test_replace_head_and_initialisation():
    model = _tiny()
    conv = model.layer1[0].conv1.weight
    expected_std = math.sqrt(2.0 / (conv.shape[0] * conv.shape[2] * conv.shape[3]))  # kaiming fan_out, relu
    big = model.layer3[0].conv3.weight
    assert big.std().item() == pytest.approx(math.sqrt(2.0 / big.shape[0]), rel=0.1)
    assert conv.std().item() == pytest.approx(expected_std, rel=0.3)
    assert torch.equal(model.att1.bn.weight, torch.ones_like(model.att1.bn.weight))
    assert torch.equal(model.bn1.bias, torch.zeros_like(model.bn1.bias))
    old_fc = model.fc
    model.replace_head(11)
    assert model.fc is not old_fc and model.fc.weight.shape == (11, model.num_features)
    with torch.no_grad():
        assert model(torch.randn(2, 4000)).shape == (2, 11)


def test_loss_ttf_and_backward_reach_fbsp():
    model = _tiny().train()
    loss = model(torch.randn(4, 8000) * 3000).pow(2).mean() + model.loss_ttf()
    assert model.loss_ttf().item() < 1e-10
    loss.backward()
    assert model.fbsp.fc.grad is not None and model.fbsp.fc.grad.abs().max().item() == pytest.approx(1.0, rel=1e-5)
