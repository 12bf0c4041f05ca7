"""Values of the separator stage: the request it gets and the two tracks it returns."""

from __future__ import annotations

import attrs

from ..errors import InvalidAudioError
from ._values import AudioBuffer, _StageRequest

__all__ = ["Separation", "SeparationRequest"]


@attrs.frozen(kw_only=True)
class SeparationRequest(_StageRequest):
    """Input of :meth:`stsdub.stages.Separator.separate`.

    ``stream_id`` / ``sequence_number`` / ``fragment_id`` name what the audio belongs to (a
    file dub uses the file's stream and 0); ``options`` carries per-call options for code that
    calls a separator directly.
    """

    #: The recording to split: speech mixed with music and effects.
    audio: AudioBuffer


def _check_aligned(inst: Separation, _attr: object, _value: AudioBuffer) -> None:
    voice, background = inst.voice, inst.background
    if not isinstance(voice, AudioBuffer) or not isinstance(background, AudioBuffer):
        raise InvalidAudioError(
            "Separation: voice and background must be AudioBuffer objects, got"
            f" {type(voice).__name__} and {type(background).__name__}"
        )
    # Checked once, here (attrs validates after __init__ has set both fields), so that no user
    # of a Separation has to guard against tracks that cannot be laid over each other.
    if voice.sample_rate != background.sample_rate or voice.samples.size != background.samples.size:
        raise InvalidAudioError(
            "Separation: voice and background must have the same rate and length, got"
            f" {voice.samples.size} samples at {voice.sample_rate} Hz and"
            f" {background.samples.size} samples at {background.sample_rate} Hz"
        )


@attrs.frozen
class Separation:
    """What a separator returns: the speech and everything else, sample-aligned with its input.

    Both tracks have the input's sample rate and length, so that ``voice`` can be dropped and
    ``background`` laid under the dub sample for sample. A separator that keeps
    ``voice + background == input`` (up to clipping to [-1, 1]) loses nothing.

    Raises:
        InvalidAudioError: The two tracks differ in rate or length.
    """

    #: The speech.
    voice: AudioBuffer
    #: Music, effects, ambience: the input without the speech.
    background: AudioBuffer = attrs.field(validator=_check_aligned)

    @property
    def sample_rate(self) -> int:
        """Rate of both tracks."""
        return self.voice.sample_rate

    @property
    def duration(self) -> float:
        """Length of both tracks in seconds."""
        return self.voice.duration

    def aligned_with(self, audio: AudioBuffer) -> bool:
        """Whether both tracks have ``audio``'s rate and length (the stage contract)."""
        return self.voice.sample_rate == audio.sample_rate and self.voice.samples.size == audio.samples.size
