"""Fitting synthesized speech into the time of the source fragment."""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs
import numpy as np

from .. import _audio
from .._model import AudioBuffer, Status
from ..errors import ConfigurationError, ErrorCode, StageError

if TYPE_CHECKING:
    from .._audio import FloatArray

__all__ = ["DurationMatcher", "DurationPolicy", "Fitted", "trim_silence"]

# Below this level (-50 dBFS) a sample counts as silence when trimming the ends.
_SILENCE_LEVEL = 10 ** (-50 / 20)


def _check_ratio(_inst: object, attr: attrs.Attribute[float], value: float) -> None:
    if not 0 <= value:
        raise ConfigurationError(f"DurationPolicy.{attr.name} must be >= 0, got {value!r}")


@attrs.frozen
class DurationPolicy:
    """How strictly dubbed speech must fit the source fragment's length.

    Args:
        success_max: Largest relative difference still reported as SUCCESS (10 %).
        partial_max: Largest relative difference reported as PARTIAL (20 %).
        strict: Beyond ``partial_max``, FAILED with ``DURATION_MISMATCH_EXCEEDED`` instead of
            PARTIAL with a warning.
    """

    success_max: float = attrs.field(default=0.10, validator=_check_ratio)
    partial_max: float = attrs.field(default=0.20, validator=_check_ratio)
    strict: bool = False

    def __attrs_post_init__(self) -> None:
        if self.partial_max < self.success_max:
            raise ConfigurationError("DurationPolicy.partial_max must be >= success_max")

    def status_for(self, variance: float) -> Status:
        if variance <= self.success_max:
            return Status.SUCCESS
        return Status.PARTIAL


@attrs.frozen
class Fitted:
    audio: AudioBuffer
    variance: float
    status: Status
    warnings: tuple[str, ...] = ()
    error: StageError | None = None


def trim_silence(samples: FloatArray, level: float = _SILENCE_LEVEL) -> FloatArray:
    """The samples between the first and the last one louder than ``level``."""
    loud = np.flatnonzero(np.abs(samples) > level)
    if loud.size == 0:
        return samples[:0]
    return samples[loud[0] : loud[-1] + 1]


class DurationMatcher:
    """Makes dubbed speech exactly as long as its fragment and says how well it fit."""

    def __init__(self, policy: DurationPolicy | None = None) -> None:
        self.policy = policy or DurationPolicy()

    def fit(self, speech: AudioBuffer, target_samples: int, sample_rate: int) -> Fitted:
        """Fit ``speech`` into ``target_samples`` samples at ``sample_rate``."""
        samples = trim_silence(_audio.resample(speech.samples, speech.sample_rate, sample_rate))
        natural = samples.size
        variance = abs(natural - target_samples) / max(target_samples, 1)
        warnings: list[str] = []
        if natural > target_samples:
            over_ms = 1000 * (natural - target_samples) / sample_rate
            warnings.append(f"speech is {over_ms:.0f} ms longer than the fragment; its end was cut")
        status = self.policy.status_for(variance)
        error = None
        if variance > self.policy.partial_max:
            message = (
                f"speech lasts {natural / sample_rate:.2f} s for a {target_samples / sample_rate:.2f} s"
                f" fragment ({variance:.0%} off, limit {self.policy.partial_max:.0%})"
            )
            if self.policy.strict:
                status = Status.FAILED
                error = StageError(ErrorCode.DURATION_MISMATCH_EXCEEDED, message, "duration")
            else:
                warnings.append(message)
        elif status is Status.PARTIAL:
            warnings.append(f"speech length is {variance:.0%} off the fragment's")
        out = AudioBuffer(_audio.fit_length(samples, target_samples), sample_rate)
        return Fitted(out, variance, status, tuple(warnings), error)
