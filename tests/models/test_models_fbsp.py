import math

import pytest
import torch

from pipeline.models.fbsp import LinearFBSP


def test_state_dict_has_empty_bias_and_released_inits():
    layer = LinearFBSP(9)
    sd = layer.state_dict()
    assert list(sd) == ['m', 'fb', 'fc', 'bias']
    assert sd['bias'].shape == (0,)
    assert torch.equal(sd['m'], torch.zeros(9))
    assert torch.equal(sd['fb'], torch.ones(9))
    assert torch.equal(sd['fc'], torch.arange(9, dtype=torch.float32))


def test_at_init_it_is_the_shifted_dft():
    # m = 0 makes the window exactly 1: X_k = sum_n x[n] exp(-i k t_n) / sqrt(N), t_n = pi * linspace(-1, 1, N).
    n, k = 64, 33
    x = torch.randn(2, 5, n)
    out = LinearFBSP(k)(x)  # (2, 5, k, 2)
    assert out.shape == (2, 5, k, 2)
    t = math.pi * torch.linspace(-1, 1, n, dtype=torch.float64)
    basis = torch.exp(-1j * torch.arange(k, dtype=torch.float64)[:, None] * t) / math.sqrt(n)  # (k, n)
    expected = x.double().to(torch.complex128) @ basis.T
    torch.testing.assert_close(out[..., 0].double(), expected.real, atol=1e-4, rtol=0)
    torch.testing.assert_close(out[..., 1].double(), expected.imag, atol=1e-4, rtol=0)


def test_unnormalised_is_sqrt_n_larger():
    x = torch.randn(3, 32)
    a, b = LinearFBSP(17, normalized=True)(x), LinearFBSP(17, normalized=False)(x)
    torch.testing.assert_close(b, a * math.sqrt(32))


def test_window_is_a_complex_power_of_a_negative_base():
    # With m != 0 the sinc base is negative in places: compare with torch's complex power.
    layer = LinearFBSP(6)
    with torch.no_grad():
        layer.m.copy_(torch.tensor([0.5, 1.0, 1.5, 2.0, 2.7, 3.0]))
        layer.fb.copy_(torch.tensor([1.0, 2.0, 0.5, 1.5, 3.0, 1.0]))
    n = 128
    re, im = layer.filters(n, torch.float64)
    t = math.pi * torch.linspace(-1, 1, n, dtype=torch.float64) + 1e-8
    m, fb, fc = (p.detach().double()[:, None] for p in (layer.m, layer.fb, layer.fc))
    base = torch.sinc(fb * t / (m + 1e-8) / math.pi).to(torch.complex128)  # torch.sinc is sin(pi x)/(pi x)
    assert (base.real < 0).any()
    w = fb.sqrt() * base ** m * torch.exp(-1j * fc * t) / math.sqrt(n)
    torch.testing.assert_close(re, w.real, atol=1e-9, rtol=1e-7)
    torch.testing.assert_close(im, w.imag, atol=1e-9, rtol=1e-7)


def test_loss_ttf_is_zero_at_init_and_grows_when_filters_change():
    layer = LinearFBSP(1025)
    assert layer.loss_ttf(2048).item() < 1e-10  # released value at init: 1.6e-16
    with torch.no_grad():
        layer.fb.mul_(4.0)  # sqrt(fb) doubles every norm: (2 - 1)^2 = 1
    assert layer.loss_ttf(2048).item() == pytest.approx(1.0, rel=1e-4)
    unnormalised = LinearFBSP(5, normalized=False)
    assert unnormalised.loss_ttf(256).item() < 1e-6  # target sqrt(N) when not normalised


def test_gradient_hooks_divide_by_linf_norm():
    torch.manual_seed(0)
    layer = LinearFBSP(16)
    x, weights = torch.randn(4, 32) * 100, torch.randn(4, 16, 2)
    (layer(x) * weights).sum().backward()
    # Raw gradients: the same computation on hook-free copies of the parameters.
    params = {name: p.detach().clone().requires_grad_() for name, p in layer.named_parameters()}
    (torch.func.functional_call(layer, params, (x,)) * weights).sum().backward()
    for name in ('m', 'fb', 'fc'):
        raw, hooked = params[name].grad, getattr(layer, name).grad
        torch.testing.assert_close(hooked, raw / (raw.abs().max() + 1e-8))
        if name != 'm':  # d/dm is exactly 0 at m = 0 (0 / (0 + eps) stays 0)
            assert hooked.abs().max().item() == pytest.approx(1.0, rel=1e-5), name
    assert params['fc'].grad.abs().max().item() > 10  # the raw scale differs, so the hook really acted
