"""The plugin contract: what an ASR, a translator, a synthesizer, a separator and a diarizer look like.

A stage is any object with the one method of its kind. Each method takes one request object
(so fields can be added later without breaking plugins) and may be a plain ``def`` (the
pipeline runs it in a worker thread) or an ``async def`` (the pipeline awaits it).

Optional members the pipeline uses when present:

``transcribe_batch`` / ``translate_batch`` / ``synthesize_batch`` (and ``separate_batch``)
    Take a list of requests, return a list of results in the same order. When several
    fragments (of one or several streams) wait for the stage, the pipeline hands them over
    in one call; a GPU model turns that into batched inference.
``max_batch_size``
    The largest list a batch method is given (default 16).
``concurrency``
    How many calls the pipeline may make at once to this instance (default 1, because a
    model object is rarely safe to share between threads). A remote stage can raise it.
``supports_length_budget``
    ``True`` on a translator that honours :attr:`TranslationRequest.budget`: when the first
    translation, spoken, would need more than the duration policy's ``comfortable_speed``,
    the pipeline asks such a translator once more with a :class:`LengthBudget` (characters,
    the seconds they stand for, and the too-long translation) and speaks the shorter text.
    Translators without it are never sent a budget.
``supports_context``
    ``True`` on a translator that reads :attr:`TranslationRequest.context`: the sentences said
    before this one, with their translations (DeepL's ``context`` parameter, the preceding
    lines of an LLM's prompt). A file dub translates whole sentences, each once, and gives
    such a translator the same speaker's preceding sentences; translators without it get the
    whole sentence alone (and ``previous_text`` / ``previous_translation`` as always).
``speaker_voices(language, voice)``
    On a synthesizer: the voices it can give distinct speakers in ``language``, as two
    sequences ``(lower, higher)`` (male-sounding and female-sounding, or as close as the
    synthesizer can tell), ``voice`` being the stream's voice to vary. Without it every speaker
    of a stream without a ``voices`` map speaks with the stream's voice.
``embed(audio)`` / ``match_threshold``
    On a diarizer: a speaker embedding of one fragment (a 1-D array; empty when it holds no
    speech), which a live stream matches against its known speakers by cosine similarity
    over ``match_threshold`` (default 0.75). Without ``embed`` live fragments carry no speaker.
``supports_speed``
    ``True`` on a synthesizer that honours :attr:`SynthesisRequest.speed`; the pipeline then
    asks it to speak faster (or slower) before anything is time-stretched.
``clones_speakers``
    ``True`` on a synthesizer that clones each speaker's voice from their own speech: the
    pipeline then sets :attr:`SynthesisRequest.speaker` and :attr:`SynthesisRequest.source_audio`
    (the source fragment) on requests of fragments whose speaker is known. Other synthesizers
    get neither.
``warmup()``
    Called once, after loading, so the first fragment does not pay for lazy initialisation.
``close()`` / ``aclose()``
    Called once when the Dubber closes.

A stage reports a failure by raising :class:`stsdub.StageError` with an
:class:`stsdub.ErrorCode`; any other exception is wrapped as ``INTERNAL_ERROR``.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Protocol, runtime_checkable

from ._core._diarization import Diarization as Diarization
from ._core._diarization import DiarizationRequest as DiarizationRequest
from ._core._diarization import SpeakerTurn as SpeakerTurn
from ._core._separation import Separation as Separation
from ._core._separation import SeparationRequest as SeparationRequest
from ._core._spec import STAGE_KINDS as STAGE_KINDS

# Re-exported so a plugin author finds the whole contract here; the "as" form marks them as
# deliberate re-exports for type checkers.
from ._core._values import ASRRequest as ASRRequest
from ._core._values import AudioBuffer as AudioBuffer
from ._core._values import LengthBudget as LengthBudget
from ._core._values import SynthesisRequest as SynthesisRequest
from ._core._values import Transcript as Transcript
from ._core._values import Translation as Translation
from ._core._values import TranslationRequest as TranslationRequest

__all__ = [
    "ASR",
    "STAGE_KINDS",
    "ASRRequest",
    "AudioBuffer",
    "Diarization",
    "DiarizationRequest",
    "Diarizer",
    "LengthBudget",
    "Separation",
    "SeparationRequest",
    "Separator",
    "SpeakerTurn",
    "SynthesisRequest",
    "Synthesizer",
    "Transcript",
    "Translation",
    "TranslationRequest",
    "Translator",
]


@runtime_checkable
class ASR(Protocol):
    """Speech to text."""

    def transcribe(self, request: ASRRequest) -> Transcript | Awaitable[Transcript]:
        """Transcribe ``request.audio``; an empty ``text`` means no speech."""
        ...


@runtime_checkable
class Translator(Protocol):
    """Text to text in another language."""

    def translate(self, request: TranslationRequest) -> Translation | Awaitable[Translation]:
        """Translate ``request.text`` into ``request.target_language``."""
        ...


@runtime_checkable
class Synthesizer(Protocol):
    """Text to speech."""

    def synthesize(self, request: SynthesisRequest) -> AudioBuffer | Awaitable[AudioBuffer]:
        """Speak ``request.text`` in ``request.language`` with ``request.voice``."""
        ...


@runtime_checkable
class Separator(Protocol):
    """A recording to its speech and everything else (music, effects, ambience).

    Not part of the fragment pipeline: a file dub calls it once per file, before
    segmentation, to keep the background under the dub (``background="separate"``).
    """

    def separate(self, request: SeparationRequest) -> Separation | Awaitable[Separation]:
        """Split ``request.audio``; both tracks keep its sample rate and length."""
        ...


@runtime_checkable
class Diarizer(Protocol):
    """Who speaks when: a recording to its speaker turns.

    Not part of the fragment pipeline: a file dub calls it once per file, before segmentation,
    to cut fragments at speaker changes and give each speaker a voice of their own. For live
    streams a diarizer offers ``embed(audio)`` (see the module's optional members).
    """

    def diarize(self, request: DiarizationRequest) -> Diarization | Awaitable[Diarization]:
        """The speaker turns of ``request.audio``, labelled ``S1``, ``S2``… by first appearance."""
        ...
