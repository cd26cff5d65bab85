"""Complex frequency B-spline wavelet layer (FBSP), the learnable "Fourier transform" of ESResNeXt-fbsp.

Each of the `out_features` outputs is one complex filter over the N samples of a frame:

    w_j(t) = sqrt(fb_j) * sinc(fb_j * t / (m_j + eps)) ** m_j * exp(-i * fc_j * t),   t = pi * linspace(-1, 1, N) + eps

with three learnable vectors: the B-spline order m (init 0), the bandwidth fb (init 1) and the centre frequency
fc (init arange(out_features), i.e. the bin index). At init the window term is exactly 1, so the layer is a
DFT-like transform and every filter has unit norm (normalized=True). See AUDIOCLIP_FACTS.md section 3.
"""
import math

import torch
import torch.nn as nn

EPS = 1e-8


class LinearFBSP(nn.Module):

    def __init__(self, out_features: int, normalized: bool = True):
        super().__init__()
        self.out_features = out_features
        self.normalized = normalized
        self.m = nn.Parameter(torch.zeros(out_features))  # B-spline order
        self.fb = nn.Parameter(torch.ones(out_features))  # bandwidth
        self.fc = nn.Parameter(torch.arange(out_features, dtype=torch.float32))  # centre frequency (bin index)
        # The released layer has bias=False implemented as an empty Parameter, so its state_dict holds
        # `fbsp.bias` with shape (0,). We keep it (unused) for key-for-key checkpoint compatibility.
        self.bias = nn.Parameter(torch.empty(0))
        # The released training divides each parameter's gradient by its own max-abs value before the
        # optimiser step: only the direction of the update is kept, its scale comes from the learning rate.
        for p in (self.m, self.fb, self.fc):
            p.register_hook(_linf_normalise)

    def filters(self, n: int, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
        """The complex filter bank as (real, imag), each (out_features, n)."""
        t = math.pi * torch.linspace(-1.0, 1.0, n, dtype=dtype, device=self.m.device) + EPS  # (n,)
        m, fb, fc = (p.to(dtype)[:, None] for p in (self.m, self.fb, self.fc))  # each (out, 1)
        # Window: a real base z, possibly negative, raised to a real power m as a complex power:
        # z**m = |z|**m * exp(i * m * arg z), with arg z = pi for z < 0 and 0 otherwise.
        x = fb * t / (m + EPS)  # (out, n)
        safe_x = torch.where(x == 0, torch.ones_like(x), x)  # no 0/0 (and no NaN gradient) where sinc(0) = 1
        z = torch.where(x == 0, torch.ones_like(x), torch.sin(safe_x) / safe_x)  # sinc
        magnitude = fb.sqrt() * z.abs().pow(m)  # (out, n); 0 ** 0 == 1 in torch
        phase = math.pi * (z < 0).to(dtype) * m - fc * t  # window phase + carrier exp(-i fc t)
        re, im = magnitude * torch.cos(phase), magnitude * torch.sin(phase)
        if self.normalized:
            re, im = re / math.sqrt(n), im / math.sqrt(n)
        return re, im

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., N) real frames -> (..., out_features, 2) as (real, imag) of sum_n w_j(t_n) x[n]."""
        re, im = self.filters(x.shape[-1], x.dtype)
        return torch.stack((x @ re.T, x @ im.T), dim=-1)

    def loss_ttf(self, n: int) -> torch.Tensor:
        """Regulariser: MSE between each filter's L2 norm and its target (1, or sqrt(n) when unnormalised).

        `n` is the frame length the layer is applied to (n_fft). At init every norm is 1 up to rounding (~1e-16).
        """
        re, im = self.filters(n)
        norms = (re.pow(2) + im.pow(2)).sum(dim=-1).sqrt()  # (out,)
        target = 1.0 if self.normalized else math.sqrt(n)
        return torch.mean((norms - target) ** 2)

    def extra_repr(self) -> str:
        return f'out_features={self.out_features}, normalized={self.normalized}'


def _linf_normalise(grad: torch.Tensor) -> torch.Tensor:
    return grad / (grad.abs().max() + EPS)
