"""Choosing the compute device (``"auto"`` means CUDA when a CUDA device is visible), and
the CPU thread budget of the stages that run on the CPU.

The thread budget: the pipeline overlaps stages (the ASR of one fragment runs while the one
before it is synthesized and fitted) and runs each stage ``concurrency`` calls at a time, so
the threads of one call should not claim every core. A CPU stage's default threads per call
are the usable cores divided among its own concurrent calls and the other half of the
machine's work, at least one: on a 2-core machine one thread per call, where CTranslate2 and
ONNX Runtime threads that wait for each other cost more than they give (docs/performance.md).
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys

from ..errors import ConfigurationError

__all__ = ["cpu_cores", "cuda_device_count", "resolve_device", "threads_per_call"]

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


def cpu_cores() -> int:
    """The CPU cores this process may run on (its affinity mask, not the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on Linux
        return max(1, os.cpu_count() or 1)


def threads_per_call(concurrency: int, *, cap: int = 4) -> int:
    """Default threads for one call of a CPU stage that runs ``concurrency`` calls at once.

    Half the cores go to the stage (the other half to the stages it overlaps with), shared
    among its concurrent calls; at least 1, at most ``cap`` (beyond a few threads a call of
    the small models stsdub runs gains little).
    """
    return max(1, min(cap, cpu_cores() // (2 * max(1, concurrency))))
