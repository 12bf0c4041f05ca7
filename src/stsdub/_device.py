"""Choosing the compute device: ``"auto"`` means CUDA when a CUDA device is visible."""

from __future__ import annotations

import importlib.util
import re
import sys

from .errors import ConfigurationError

__all__ = ["cuda_device_count", "resolve_device"]

_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def cuda_device_count() -> int:
    """How many CUDA devices the installed inference libraries can see (0 when none)."""
    if importlib.util.find_spec("ctranslate2") is not None:
        try:
            import ctranslate2

            count = int(ctranslate2.get_cuda_device_count())
            if count:
                return count
        except Exception:  # a broken CUDA install must not break CPU use
            pass
    # Only ask torch when it is already imported: importing it costs seconds.
    torch = sys.modules.get("torch")
    if torch is not None:
        try:
            return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0
        except Exception:
            return 0
    return 0


def resolve_device(device: str) -> str:
    """``"auto"`` → ``"cuda"`` or ``"cpu"``; ``"cuda"`` without a GPU is an error."""
    if not isinstance(device, str) or not _DEVICE.match(device):
        raise ConfigurationError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    if device == "auto":
        return "cuda" if cuda_device_count() > 0 else "cpu"
    if device.startswith("cuda") and cuda_device_count() == 0:
        raise ConfigurationError(
            f"device={device!r} but no CUDA device is visible; use device='auto' or 'cpu'"
        )
    return device
