"""Exceptions and error codes.

Every exception stsdub raises derives from :class:`StsdubError`::

    StsdubError
    ├── ConfigurationError        bad Dubber options
    │   └── PluginError           unknown stage name, or its extra is not installed
    ├── StageLoadError            a stage could not be built / loaded at ``async with``
    ├── InvalidFragmentError      (also a ValueError) refused at ``send``
    │   ├── InvalidAudioError     NaN/inf, wrong dtype or shape, bad rate, empty, oversize
    │   └── SequenceError         duplicate or decreasing sequence number, wrong stream
    ├── StreamClosedError         ``send`` after ``end`` / close
    ├── MediaError                a media file cannot be used (``dub_file``, ``stsdub dub``)
    │   ├── MediaInputError       missing, unreadable, corrupt, truncated or empty input
    │   │   └── NoAudioStreamError
    │   └── MediaOutputError      the output cannot be written (path, format, codec)
    ├── ProjectError              a dubbing project or subtitle file cannot be used: another
    │                             input, a newer format, cues that do not parse or overlap,
    │                             edits that leave a segment empty
    └── StageError                one stage failed on one fragment; carries an ErrorCode

`StageError` is what a stage raises to report a failure with a code. It is never raised out of
``Dubber.dub`` or a stream: a failed fragment becomes a ``DubResult`` with ``status=FAILED`` and
the error attached, so every accepted fragment still gets exactly one result.
"""

from __future__ import annotations

import enum

__all__ = [
    "ConfigurationError",
    "ErrorCode",
    "InvalidAudioError",
    "InvalidFragmentError",
    "MediaError",
    "MediaInputError",
    "MediaOutputError",
    "NoAudioStreamError",
    "PluginError",
    "ProjectError",
    "SequenceError",
    "StageError",
    "StageLoadError",
    "StreamClosedError",
    "StsdubError",
]


class ErrorCode(str, enum.Enum):
    """Why a fragment failed. The values are the reference protocol's wire codes."""

    # Transient: the same request may succeed later.
    TIMEOUT = "TIMEOUT"
    RATE_LIMIT_EXCEEDED = "RATE_LIMIT_EXCEEDED"
    NETWORK_ERROR = "NETWORK_ERROR"
    TEMPORARY_UNAVAILABLE = "TEMPORARY_UNAVAILABLE"
    # Permanent: retrying the same request will not help.
    INVALID_AUDIO_FORMAT = "INVALID_AUDIO_FORMAT"
    UNSUPPORTED_LANGUAGE = "UNSUPPORTED_LANGUAGE"
    INVALID_TEXT = "INVALID_TEXT"
    SYNTHESIS_FAILED = "SYNTHESIS_FAILED"
    QUOTA_EXCEEDED = "QUOTA_EXCEEDED"
    AUTHENTICATION_FAILED = "AUTHENTICATION_FAILED"
    DURATION_MISMATCH_EXCEEDED = "DURATION_MISMATCH_EXCEEDED"
    BACKPRESSURE_REJECTED = "BACKPRESSURE_REJECTED"
    #: Catch-all for an exception a stage raised that was not a StageError.
    INTERNAL_ERROR = "INTERNAL_ERROR"

    @property
    def retryable(self) -> bool:
        """Whether a failure with this code may succeed when tried again."""
        return self in _RETRYABLE

    def __str__(self) -> str:
        return self.value


_RETRYABLE = frozenset(
    {
        ErrorCode.TIMEOUT,
        ErrorCode.RATE_LIMIT_EXCEEDED,
        ErrorCode.NETWORK_ERROR,
        ErrorCode.TEMPORARY_UNAVAILABLE,
    }
)


class StsdubError(Exception):
    """Root of every exception raised by stsdub."""


class ConfigurationError(StsdubError):
    """The Dubber or a stream was configured with options that cannot work."""


class PluginError(ConfigurationError):
    """A stage name is unknown, or the package that provides it is not installed."""


class StageLoadError(StsdubError):
    """A stage could not be created or could not load its model."""


class InvalidFragmentError(StsdubError, ValueError):
    """A fragment was refused at ``send``; nothing already accepted is affected."""


class InvalidAudioError(InvalidFragmentError):
    """The fragment's audio is not finite float32 mono at a positive sample rate."""


class SequenceError(InvalidFragmentError):
    """The fragment's sequence number does not increase strictly within its stream."""


class StreamClosedError(StsdubError):
    """The stream was ended or closed; it accepts no more fragments."""


class MediaError(StsdubError):
    """A media file cannot be used."""


class MediaInputError(MediaError):
    """The input file is missing, unreadable, corrupt, truncated or holds no audio."""


class NoAudioStreamError(MediaInputError):
    """The input file has no audio stream to dub."""


class MediaOutputError(MediaError):
    """The output cannot be written: bad path, no permission, or an unsupported format."""


class ProjectError(StsdubError):
    """A dubbing project (``--stop-after`` / ``--resume``) or a subtitle file cannot be used.

    Raised for a project made from another input (the fingerprint does not match), one written
    by a newer stsdub (``format_version``), a project file that is not valid JSON of the
    documented shape, SRT cues that do not parse or overlap, and edits that leave a segment
    that has speech without text.
    """


class StageError(StsdubError):
    """A stage failed on one fragment.

    Stages raise it to report a failure with a code; the pipeline wraps any other exception
    in one with :attr:`ErrorCode.INTERNAL_ERROR`. ``retryable`` follows from the code.

    Args:
        code: Why it failed.
        message: What happened, for people.
        stage: ``"asr"``, ``"translator"``, ``"synthesizer"``, ``"duration"`` or
            ``"pipeline"``; filled in by the pipeline when a stage leaves it out.
    """

    def __init__(self, code: ErrorCode | str, message: str, stage: str | None = None) -> None:
        self.code = ErrorCode(code)
        self.message = message
        self.stage = stage
        super().__init__(code, message, stage)

    @property
    def retryable(self) -> bool:
        """True for TIMEOUT, RATE_LIMIT_EXCEEDED, NETWORK_ERROR, TEMPORARY_UNAVAILABLE."""
        return self.code.retryable

    def with_stage(self, stage: str) -> StageError:
        """This error with ``stage`` filled in where it was missing."""
        if self.stage is not None:
            return self
        err = StageError(self.code, self.message, stage)
        err.__cause__ = self.__cause__
        return err

    def to_dict(self) -> dict[str, object]:
        """The reference protocol's ``error`` object."""
        return {
            "code": self.code.value,
            "message": self.message,
            "stage": self.stage,
            "retryable": self.retryable,
        }

    def __str__(self) -> str:
        where = f" in {self.stage}" if self.stage else ""
        return f"{self.code.value}{where}: {self.message}"

    def __repr__(self) -> str:
        return f"StageError({self.code.value!r}, {self.message!r}, stage={self.stage!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, StageError):
            return NotImplemented
        return (self.code, self.message, self.stage) == (other.code, other.message, other.stage)

    def __hash__(self) -> int:
        return hash((self.code, self.message, self.stage))
