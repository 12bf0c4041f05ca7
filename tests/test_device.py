"""The device choice and the CPU thread budget of the stages."""

from __future__ import annotations

import os

import pytest

from stsdub._core._device import cpu_cores, resolve_device, threads_per_call
from stsdub.errors import ConfigurationError


def test_cpu_cores_are_those_this_process_may_use() -> None:
    assert cpu_cores() == len(os.sched_getaffinity(0))


@pytest.mark.parametrize(
    ("cores", "concurrency", "threads"),
    [
        (1, 1, 1),
        (2, 1, 1),  # half the machine for the stage: the other half for the stage it overlaps
        (2, 2, 1),
        (4, 1, 2),
        (8, 2, 2),
        (16, 2, 4),
        (64, 1, 4),  # capped: more threads per call gain little on these models
        (64, 8, 4),
    ],
)
def test_threads_per_call_share_half_the_cores(
    monkeypatch: pytest.MonkeyPatch, cores: int, concurrency: int, threads: int
) -> None:
    monkeypatch.setattr("stsdub._core._device.cpu_cores", lambda: cores)
    assert threads_per_call(concurrency) == threads
    # Busy threads of the stage never exceed its half of the cores (beyond one each).
    assert concurrency * threads <= max(cores // 2, concurrency)


def test_resolve_device() -> None:
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") in ("cpu", "cuda")
    with pytest.raises(ConfigurationError):
        resolve_device("tpu")
