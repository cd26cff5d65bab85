"""ESResNeXt-fbsp: the audio head of AudioCLIP (AUDIOCLIP_FACTS.md section 3).

    waveform (B, C, L), int16 amplitude scale
      -> [-1, 1] -> frames (B*C, T, win) -> window -> zero-pad to n_fft -> FBSP -> (B*C, n_fft//2+1, T, 2)
      -> keep 3*((n_fft//2+1)//3) bins, split into 3 bands = the 3 "RGB" input channels -> power -> dB
      -> per audio channel: ResNeXt trunk with attention gates -> avgpool * att5 gate -> (B, num_features)
      -> sum over audio channels -> fc -> (B, num_classes)

At full size (n_fft 2048, hop 561, win 1654, ResNeXt-50 32x4d) the state_dict equals the released
ESRNXFBSP.pt layout key for key and in the same order (esresnext_fbsp_state_dict.tsv): `window`, conv1, bn1,
layer1, att1, layer2, att2, layer3, att3, layer4, att4, att5, fc, fbsp. Modules are registered in that order.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.models.resnet import Bottleneck

from pipeline.models.fbsp import LinearFBSP

POWER_FLOOR = 1e-18
# Blackman-Harris (4-term) cosine coefficients, as in scipy.signal.windows.blackmanharris.
_BLACKMANHARRIS = [0.35875, 0.48829, 0.14128, 0.01168]


def make_window(name: str, length: int) -> torch.Tensor:
    """Periodic window (scipy `get_window(name, length, fftbins=True)`), float32, computed in float64."""
    windows = torch.signal.windows
    if name == 'blackmanharris':
        w = windows.general_cosine(length, a=_BLACKMANHARRIS, sym=False, dtype=torch.float64)
    elif name in ('hann', 'hanning'):
        w = windows.hann(length, sym=False, dtype=torch.float64)
    elif name == 'hamming':
        w = windows.hamming(length, sym=False, dtype=torch.float64)
    elif name in ('boxcar', 'rect', 'rectangular', 'ones'):
        w = torch.ones(length, dtype=torch.float64)
    else:
        raise ValueError(f'unsupported window {name!r}: use blackmanharris, hann, hamming or boxcar')
    return w.float()


class Attention2d(nn.Module):
    """Gate computed from a block's input and multiplied onto the block's output.

    gate = sigmoid(BN(pointwise(depthwise(adaptive_max_pool(x_in, out_size)))))
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: tuple, padding: tuple):
        super().__init__()
        self.conv_depth = nn.Conv2d(in_channels, in_channels, kernel_size, padding=padding, groups=in_channels)
        self.conv_point = nn.Conv2d(in_channels, out_channels, kernel_size=1)
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, x_in: torch.Tensor, size: tuple) -> torch.Tensor:
        x = F.adaptive_max_pool2d(x_in, size)  # (N, in, H_out, W_out)
        return torch.sigmoid(self.bn(self.conv_point(self.conv_depth(x))))  # (N, out, H_out, W_out)


class ESResNeXtFBSP(nn.Module):

    def __init__(
            self,
            n_fft: int = 2048,
            hop_length: int = 561,
            win_length: int = 1654,
            window: str = 'blackmanharris',
            normalized: bool = True,
            layers: tuple = (3, 4, 6, 3),
            groups: int = 32,
            width_per_group: int = 4,
            base_planes: int = 64,
            num_classes: int = 527,
            apply_attention: bool = True,
    ):
        super().__init__()
        if win_length > n_fft:
            raise ValueError(f'win_length {win_length} > n_fft {n_fft}')
        self.n_fft, self.hop_length, self.win_length = n_fft, hop_length, win_length
        self.apply_attention = apply_attention
        self.num_bins = 3 * ((n_fft // 2 + 1) // 3)  # bins kept: 1023 of 1025 at n_fft 2048
        self.register_buffer('window', make_window(window, win_length))  # persistent: it is in the checkpoint

        # ImageNet-style ResNeXt trunk; its 3 input channels are the 3 frequency bands.
        planes = [base_planes * 2 ** i for i in range(4)]  # 64, 128, 256, 512
        widths = [p * Bottleneck.expansion for p in planes]  # 256, 512, 1024, 2048
        self.conv1 = nn.Conv2d(3, base_planes, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(base_planes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        # Gates alternate between frequency-only (3, 1) and time-only (1, 5) kernels.
        gate_shapes = [((3, 1), (1, 0)), ((1, 5), (0, 2)), ((3, 1), (1, 0)), ((1, 5), (0, 2))]
        inplanes = base_planes
        for i in range(4):
            layer = self._make_layer(inplanes, planes[i], layers[i], 1 if i == 0 else 2, groups, width_per_group)
            self.add_module(f'layer{i + 1}', layer)
            if apply_attention:
                kernel, pad = gate_shapes[i]
                self.add_module(f'att{i + 1}', Attention2d(inplanes, widths[i], kernel, pad))
            inplanes = widths[i]
        if apply_attention:
            self.att5 = Attention2d(widths[3], widths[3], (3, 5), (1, 2))  # on a 1x1 map: only the centre tap acts
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.num_features = widths[3]
        self.fc = nn.Linear(self.num_features, num_classes)
        self.fbsp = LinearFBSP(n_fft // 2 + 1, normalized=normalized)  # last, to match the released key order
        self._init_weights()

    @staticmethod
    def _make_layer(inplanes, planes, blocks, stride, groups, width_per_group) -> nn.Sequential:
        out = planes * Bottleneck.expansion
        downsample = None
        if stride != 1 or inplanes != out:
            downsample = nn.Sequential(
                nn.Conv2d(inplanes, out, kernel_size=1, stride=stride, bias=False), nn.BatchNorm2d(out))
        blocks_ = [Bottleneck(inplanes, planes, stride, downsample, groups=groups, base_width=width_per_group)]
        blocks_ += [Bottleneck(out, planes, groups=groups, base_width=width_per_group) for _ in range(1, blocks)]
        return nn.Sequential(*blocks_)

    def _init_weights(self):
        # Released code defaults (pretrained=False): kaiming fan_out for every conv, BN 1/0, fc left at
        # PyTorch's default Linear init, no zero-init of the last BN in each residual block.
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode='fan_out', nonlinearity='relu')
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def replace_head(self, num_classes: int) -> None:
        """Swap `fc` for a freshly initialised Linear(num_features, num_classes) (fine-tuning on a new label set)."""
        old = self.fc
        self.fc = nn.Linear(self.num_features, num_classes).to(device=old.weight.device, dtype=old.weight.dtype)

    # ---------------------------------------------------------------- front end

    def spectrogram(self, x: torch.Tensor) -> torch.Tensor:
        """Waveform (B, L) or (B, C, L) in int16 amplitude scale -> dB power (B, C, 3, num_bins // 3, T)."""
        if x.dim() == 2:
            x = x.unsqueeze(1)
        batch, channels, length = x.shape
        x = x.float().reshape(batch * channels, length)
        x = (x + 32768.0) * 2.0 / 65535.0 - 1.0  # int16 range -> [-1, 1] (so 0 maps to +1.5e-5)

        # Framing (no gradient needed: the waveform is an input, not a parameter).
        with torch.no_grad():
            win, hop = self.win_length, self.hop_length
            num_frames = 1 + max(0, math.ceil((length - win) / hop))
            pad = (num_frames - 1) * hop + win - length  # centred zero padding, extra sample on the right
            x = F.pad(x, (pad // 2, pad - pad // 2))
            frames = x.unfold(-1, win, hop) * self.window  # (B*C, T, win)
            fft_pad = self.n_fft - win
            frames = F.pad(frames, (fft_pad // 2, fft_pad - fft_pad // 2))  # (B*C, T, n_fft)

        spec = self.fbsp(frames).transpose(1, 2)  # (B*C, n_fft//2+1, T, 2)
        spec = spec[:, :self.num_bins]  # drop the top bins so they split evenly into 3 bands
        power = spec.pow(2).sum(dim=-1)  # (B*C, num_bins, T)
        power = torch.where(power > 0, power, torch.full_like(power, POWER_FLOOR))
        db = 10.0 * torch.log10(power)
        return db.reshape(batch, channels, 3, self.num_bins // 3, -1)  # bands are contiguous bin ranges

    # ---------------------------------------------------------------- trunk

    def _trunk(self, x: torch.Tensor) -> torch.Tensor:
        """One audio channel's 3-band spectrogram (B, 3, F, T) -> pooled gated features (B, num_features)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # (B, base, F/4, T/4)
        for i in range(1, 5):
            x_in = x
            x = getattr(self, f'layer{i}')(x)
            if self.apply_attention:
                x = x * getattr(self, f'att{i}')(x_in, x.shape[-2:])
        pooled = self.avgpool(x)  # (B, num_features, 1, 1)
        if self.apply_attention:
            pooled = pooled * self.att5(x, pooled.shape[-2:])
        return pooled.flatten(1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Waveform -> pooled features summed over audio channels, (B, num_features), before `fc`."""
        spec = self.spectrogram(x)  # (B, C, 3, F, T)
        # Each audio channel goes through the shared trunk separately (as released: in training mode the
        # BatchNorm statistics are per channel), and the pooled features are summed, so duplicated stereo
        # gives exactly twice the mono features.
        return sum(self._trunk(spec[:, c]) for c in range(spec.shape[1]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Waveform (B, L) or (B, C, L), int16 amplitude scale -> (B, num_classes)."""
        return self.fc(self.features(x))

    def loss_ttf(self) -> torch.Tensor:
        """FBSP filter-norm regulariser (weight 1 in the released losses)."""
        return self.fbsp.loss_ttf(self.n_fft)
