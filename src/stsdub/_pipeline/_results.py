"""The result of a fragment: dubbed, silent (no speech), failed with fallback audio, or rejected."""

from __future__ import annotations

from typing import Any

import numpy as np

from .._core import _audio
from .._core._values import AudioAsset, AudioBuffer, DubResult, Fragment, Status
from ..errors import ErrorCode, StageError
from ._job import Job, StreamConfig, Ticket

__all__ = [
    "failed",
    "fallback_audio",
    "output_rate",
    "rejected",
    "result",
    "silence",
    "silent",
    "target_samples",
]


def output_rate(config: StreamConfig, fragment: Fragment) -> int:
    return config.output_sample_rate or fragment.sample_rate


def target_samples(fragment: Fragment, rate: int) -> int:
    return round(fragment.audio.size * rate / fragment.sample_rate)


def result(config: StreamConfig, job: Job, status: Status, audio: AudioAsset, **kwargs: Any) -> DubResult:
    fragment = job.fragment
    return DubResult(
        sequence_number=fragment.sequence_number,
        fragment_id=fragment.fragment_id,
        stream_id=config.stream_id,
        status=status,
        audio=audio,
        transcript=job.transcript,
        translation=job.translation,
        error=job.error,
        timings=job.timings,
        warnings=tuple(job.warnings),
        timestamp_ms=fragment.timestamp_ms,
        metadata=fragment.metadata,
        speaker=job.speaker,
        voice=job.voice,
        **kwargs,
    )


def silence(config: StreamConfig, fragment: Fragment) -> AudioBuffer:
    rate = output_rate(config, fragment)
    return AudioBuffer(np.zeros(target_samples(fragment, rate), dtype=np.float32), rate)


def silent(config: StreamConfig, job: Job) -> DubResult:
    """No speech: SUCCESS with silence; later stages are not called."""
    parent = job.transcript.asset_id if job.translation is None else job.translation.asset_id  # type: ignore[union-attr]
    audio = AudioAsset(job.asset_id("audio"), (parent,), silence(config, job.fragment), "silence")
    return result(config, job, Status.SUCCESS, audio)


def fallback_audio(config: StreamConfig, job: Job) -> AudioAsset:
    fragment = job.fragment
    if config.fallback == "original":
        rate = output_rate(config, fragment)
        samples = _audio.resample(fragment.audio, fragment.sample_rate, rate)
        buffer = AudioBuffer(_audio.fit_length(samples, target_samples(fragment, rate)), rate)
        kind = "original"
    else:
        buffer, kind = silence(config, fragment), "silence"
    return AudioAsset(job.asset_id("audio"), (job.fragment_asset_id,), buffer, kind)


def failed(config: StreamConfig, job: Job) -> DubResult:
    if job.error is None:  # a job can only end without a result by failing
        job.error = StageError(ErrorCode.INTERNAL_ERROR, "fragment ended without a result", "pipeline")
    return result(config, job, Status.FAILED, fallback_audio(config, job))


def rejected(config: StreamConfig, fragment: Fragment) -> DubResult:
    job = Job(fragment, Ticket())
    job.error = StageError(
        ErrorCode.BACKPRESSURE_REJECTED,
        f"{config.max_inflight} fragments already in the pipeline (overflow='reject')",
        "pipeline",
    )
    return failed(config, job)
