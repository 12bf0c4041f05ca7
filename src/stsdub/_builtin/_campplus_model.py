"""The CAM++ speaker-embedding network (Wang et al., Interspeech 2023), for inference only.

The layout follows 3D-Speaker's published model (Apache-2.0) closely enough that its
``state_dict`` loads unchanged: the module names below are the names of the weight file's
keys. Training-only parts (gradient checkpointing, weight initialisation) are left out.

Input: ``(batch, frames, 80)`` mean-normalised log-mel filterbanks (Kaldi style, 25 ms / 10 ms).
Output: ``(batch, 192)`` embeddings (not normalised).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["CAMPPlus", "kaldi_fbank"]


def _bn_relu(channels: int) -> nn.Sequential:
    """Batch norm then ReLU, under the name the weight file uses (``batchnorm``)."""
    return nn.Sequential(OrderedDict(batchnorm=nn.BatchNorm1d(channels), relu=nn.ReLU()))


class _ResBlock2d(nn.Module):
    """A 2-D residual block of the front end; ``stride`` shrinks the frequency axis only."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=(stride, 1), padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=(stride, 1), bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(y + self.shortcut(x))


class _FrontEnd(nn.Module):
    """The 2-D convolutional head ("FCM"): (B, F, T) -> (B, 32 * F / 8, T)."""

    def __init__(self, feat_dim: int = 80, width: int = 32) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.layer1 = nn.Sequential(_ResBlock2d(width, width, 2), _ResBlock2d(width, width, 1))
        self.layer2 = nn.Sequential(_ResBlock2d(width, width, 2), _ResBlock2d(width, width, 1))
        self.conv2 = nn.Conv2d(width, width, 3, stride=(2, 1), padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.out_channels = width * (feat_dim // 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x.unsqueeze(1))))
        x = self.layer2(self.layer1(x))
        x = F.relu(self.bn2(self.conv2(x)))
        return x.flatten(1, 2)


class _TDNN(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int, stride: int) -> None:
        super().__init__()
        self.linear = nn.Conv1d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=False)
        self.nonlinear = _bn_relu(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.nonlinear(self.linear(x))


class _ContextMask(nn.Module):
    """Context-aware masking: a local convolution gated by utterance- and segment-level means."""

    def __init__(self, cin: int, cout: int, kernel: int, dilation: int, segment: int = 100) -> None:
        super().__init__()
        pad = (kernel - 1) // 2 * dilation
        self.linear_local = nn.Conv1d(cin, cout, kernel, padding=pad, dilation=dilation, bias=False)
        self.linear1 = nn.Conv1d(cin, cin // 2, 1)
        self.linear2 = nn.Conv1d(cin // 2, cout, 1)
        self.segment = segment

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        frames = x.shape[-1]
        seg = F.avg_pool1d(x, self.segment, self.segment, ceil_mode=True)
        seg = seg.repeat_interleave(self.segment, dim=-1)[..., :frames]
        context = x.mean(-1, keepdim=True) + seg
        gate = torch.sigmoid(self.linear2(F.relu(self.linear1(context))))
        return self.linear_local(x) * gate


class _DenseLayer(nn.Module):
    def __init__(self, cin: int, growth: int, bottleneck: int, kernel: int, dilation: int) -> None:
        super().__init__()
        self.nonlinear1 = _bn_relu(cin)
        self.linear1 = nn.Conv1d(cin, bottleneck, 1, bias=False)
        self.nonlinear2 = _bn_relu(bottleneck)
        self.cam_layer = _ContextMask(bottleneck, growth, kernel, dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cam_layer(self.nonlinear2(self.linear1(self.nonlinear1(x))))


class _DenseBlock(nn.Module):
    """Densely connected CAM layers: each one's output is appended to its input."""

    def __init__(
        self, layers: int, cin: int, growth: int, bottleneck: int, kernel: int, dilation: int
    ) -> None:
        super().__init__()
        for i in range(layers):
            layer = _DenseLayer(cin + i * growth, growth, bottleneck, kernel, dilation)
            self.add_module(f"tdnnd{i + 1}", layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.children():
            x = torch.cat([x, layer(x)], dim=1)
        return x


class _Transit(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.nonlinear = _bn_relu(cin)
        self.linear = nn.Conv1d(cin, cout, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.nonlinear(x))


class _StatsPool(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x.mean(-1), x.std(-1, unbiased=True)], dim=-1)


class _Embedding(nn.Module):
    """The final affine layer and a batch norm without scale or shift (no ReLU)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.linear = nn.Conv1d(cin, cout, 1, bias=False)
        self.nonlinear = nn.Sequential(OrderedDict(batchnorm=nn.BatchNorm1d(cout, affine=False)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.nonlinear(self.linear(x.unsqueeze(-1)).squeeze(-1))


class CAMPPlus(nn.Module):
    """CAM++: front end, a TDNN layer, three densely connected CAM blocks, statistics pooling."""

    def __init__(
        self,
        feat_dim: int = 80,
        embedding_size: int = 192,
        growth: int = 32,
        bottleneck_factor: int = 4,
        init_channels: int = 128,
    ) -> None:
        super().__init__()
        self.head = _FrontEnd(feat_dim)
        modules: OrderedDict[str, nn.Module] = OrderedDict()
        modules["tdnn"] = _TDNN(self.head.out_channels, init_channels, 5, stride=2)
        channels = init_channels
        for i, (layers, dilation) in enumerate(((12, 1), (24, 2), (16, 2)), start=1):
            modules[f"block{i}"] = _DenseBlock(
                layers, channels, growth, bottleneck_factor * growth, 3, dilation
            )
            channels += layers * growth
            modules[f"transit{i}"] = _Transit(channels, channels // 2)
            channels //= 2
        modules["out_nonlinear"] = _bn_relu(channels)
        modules["stats"] = _StatsPool()
        modules["dense"] = _Embedding(channels * 2, embedding_size)
        self.xvector = nn.Sequential(modules)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.xvector(self.head(feats.transpose(1, 2)))


def _mel_banks(num_bins: int, fft_size: int, rate: int, low: float = 20.0) -> torch.Tensor:
    """Kaldi's triangular mel filters (mel = 1127 ln(1 + f/700)), ``(num_bins, fft_size//2 + 1)``;
    the Nyquist bin gets no weight, as in Kaldi."""

    def mel(f: torch.Tensor) -> torch.Tensor:
        return 1127.0 * torch.log1p(f / 700.0)

    high = rate / 2.0
    lo, hi = mel(torch.tensor(low, dtype=torch.float64)), mel(torch.tensor(high, dtype=torch.float64))
    edges = lo + (hi - lo) / (num_bins + 1) * torch.arange(num_bins + 2, dtype=torch.float64)
    freqs = mel(torch.arange(fft_size // 2, dtype=torch.float64) * rate / fft_size)
    left, centre, right = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    up = (freqs - left) / (centre - left)
    down = (right - freqs) / (right - centre)
    banks = torch.clamp(torch.minimum(up, down), min=0.0)
    return F.pad(banks, (0, 1)).to(torch.float32)


def kaldi_fbank(wav: torch.Tensor, rate: int = 16_000, num_bins: int = 80) -> torch.Tensor:
    """Log mel filterbank energies as Kaldi computes them (25 ms frames every 10 ms, edges
    snipped, DC removed, pre-emphasis 0.97, Povey window, 512-point power spectrum, no dither):
    ``(frames, num_bins)`` for a 1-D ``wav``. CAM++ was trained on these (then mean-normalised)."""
    length, shift, fft_size = round(0.025 * rate), round(0.010 * rate), 512
    if wav.numel() < length:
        return wav.new_zeros((0, num_bins))
    frames = wav.unfold(0, length, shift).to(torch.float32)
    frames = frames - frames.mean(dim=1, keepdim=True)
    previous = torch.cat([frames[:, :1], frames[:, :-1]], dim=1)
    frames = frames - 0.97 * previous
    n = torch.arange(length, dtype=torch.float32)
    window = (0.5 - 0.5 * torch.cos(2 * torch.pi * n / (length - 1))) ** 0.85
    power = torch.fft.rfft(frames * window, n=fft_size).abs().pow(2)
    energies = power @ _mel_banks(num_bins, fft_size, rate).T
    return torch.clamp(energies, min=torch.finfo(torch.float32).eps).log()
