"""Live captions of a stream: interims over the growing utterance, finals, translations.

A stream opened with ``captions="final"`` puts out a :class:`~stsdub.Caption` for each
fragment as soon as its ASR is done (``final``) and as soon as it is translated
(``translation``), before its dub is ready. With ``captions="interim"`` the host may also hand
in the audio of the utterance still being spoken (:meth:`stsdub.Stream.send_audio`); a fast
pass of the stream's ASR over all of it so far (greedy, no prompt, no word times; at most one
every ``caption_interval`` seconds) gives an ``interim``, whose stable prefix is decided by
LocalAgreement-2: a word is committed once two passes in a row agree on it, and committed
words never change. Sending the utterance as a fragment ends its interims; its final
supersedes them.

Interims give way: a pass runs only while the ASR has a free slot and the stream is below its
``max_inflight``; otherwise it is skipped (the stream's :class:`~stsdub.CaptionStatus` says
so), and an interim the host has not read yet is replaced by the next one. Finals,
translations and dubs are never dropped or delayed for an interim.
"""

from __future__ import annotations

import logging
import math
import re
from collections import deque
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import anyio
import attrs
import numpy as np

from .._core import _audio
from .._core._captions import Caption, CaptionStatus
from .._core._languages import same_language
from .._core._values import ASRRequest, AudioBuffer, DubResult, Transcript, Word
from ..errors import ConfigurationError, InvalidAudioError, SequenceError, StageError, StreamClosedError

if TYPE_CHECKING:
    from ._job import Job, Stages, StreamConfig
    from ._stream import Stream

__all__ = ["CAPTION_MODES", "Captioner", "LocalAgreement", "check_captions"]

logger = logging.getLogger("stsdub.captions")

#: What a stream can be asked for (``captions=``); ``None`` is no captions.
CAPTION_MODES = ("final", "interim")
#: Default seconds between two interim passes of one stream.
DEFAULT_INTERVAL = 0.5
# Interims start once this much of the utterance has been heard (less says nothing yet).
_MIN_SECONDS = 0.4
_RATE = 16_000
_PLAIN = re.compile(r"[^\w']+")


def check_captions(captions: object, interval: object) -> None:
    """Raise ConfigurationError for a ``captions`` or ``caption_interval`` a stream cannot take."""
    if captions is not None and captions not in CAPTION_MODES:
        raise ConfigurationError(f"captions must be one of {CAPTION_MODES} or None, got {captions!r}")
    if isinstance(interval, bool) or not isinstance(interval, (int, float)) or not interval > 0:
        raise ConfigurationError(f"caption_interval must be a number of seconds > 0, got {interval!r}")


def _plain(word: str) -> str:
    return _PLAIN.sub("", word.lower())


class LocalAgreement:
    """LocalAgreement-2 over the words of successive hypotheses of one utterance.

    :meth:`update` takes a pass's text and returns what to show and how many of its leading
    characters are stable. Words two passes in a row agree on (after the committed ones,
    compared without case and punctuation) are committed; committed words are shown as they
    are, whatever later passes say, so the stable prefix never shrinks.
    """

    def __init__(self) -> None:
        self.committed: list[str] = []
        self._last: list[str] | None = None

    def update(self, text: str) -> tuple[str, int]:
        tail = text.split()[len(self.committed) :]
        if self._last is not None:
            agreed = 0
            for a, b in zip(self._last, tail, strict=False):
                if _plain(a) != _plain(b):
                    break
                agreed += 1
            self.committed += tail[:agreed]
            tail = tail[agreed:]
        self._last = tail
        stable = " ".join(self.committed)
        return " ".join([*self.committed, *tail]), len(stable)


class Captioner:
    """The captions of one stream: its queue of events, interim passes, and its status."""

    def __init__(self, config: StreamConfig, stages: Stages, stream: Stream) -> None:
        assert config.captions in CAPTION_MODES
        self.mode: str = config.captions
        self.interval = float(config.caption_interval)
        self._config = config
        self._stages = stages
        self._stream = stream
        self._events: deque[Caption] = deque()
        self._wake = anyio.Event()
        # The utterance being spoken: its audio (16 kHz), when its last audio arrived, and
        # which fragment it will be. A new generation begins when a fragment is sent.
        self._audio: list[np.ndarray] = []
        self._samples = 0
        self._heard_at = 0.0
        self._sequence: int | None = None
        self._generation = 0
        self._agreement = LocalAgreement()
        self._shown: tuple[str, int] | None = None
        self._more = anyio.Event()
        self._input_ended = False
        self.done = False
        # Passes start at most every `interval` s, and leave the ASR idle at least as long as
        # the last one took: interims never hold more than half of it.
        self._next_pass = -math.inf
        self._passes = 0
        self._interims = 0
        self._dropped = 0
        self._paused = False
        self._finals = 0
        self._translations = 0
        self._notes: list[str] = []
        # Read through Stream.events(); plain iteration reads the results only.
        self._keep = True
        if stages.translator is None and not same_language(config.source_language, config.target_language):
            self._note("this stream has no translator: source captions only")

    # -- status -------------------------------------------------------------------------------

    def status(self) -> CaptionStatus:
        return CaptionStatus(
            captions=self.mode,
            interim_passes=self._passes,
            interims=self._interims,
            interims_dropped=self._dropped,
            interims_paused=self._paused,
            finals=self._finals,
            translations=self._translations,
            notes=tuple(self._notes),
        )

    def _note(self, note: str) -> None:
        if note not in self._notes:
            self._notes.append(note)
            logger.info("stream %s: %s", self._config.stream_id, note)

    # -- what the host hands in --------------------------------------------------------------------

    def feed(self, samples: np.ndarray, sample_rate: int, sequence_number: int | None) -> None:
        """Audio of the utterance in progress, appended to what came since the last fragment."""
        if self._input_ended:
            raise StreamClosedError(f"stream {self._config.stream_id!r} is ended; it takes no audio")
        audio = np.asarray(samples)
        if audio.ndim != 1 or not np.issubdtype(audio.dtype, np.floating):
            raise InvalidAudioError("send_audio() takes a 1-D float array of samples in [-1, 1]")
        if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate <= 0:
            raise InvalidAudioError(f"sample_rate must be a positive int, got {sample_rate!r}")
        if sequence_number is not None and sequence_number != self._sequence:
            if self._sequence is not None and sequence_number < self._sequence:
                raise SequenceError(
                    f"stream {self._config.stream_id!r}: audio for fragment {sequence_number}, and"
                    f" the utterance in progress is fragment {self._sequence}"
                )
            if self._sequence is not None:
                self._new_utterance(sequence_number)  # the one before comes as its fragment
            self._sequence = sequence_number
        chunk = _audio.resample(np.clip(audio.astype(np.float32), -1.0, 1.0), sample_rate, _RATE)
        if self._samples + chunk.size > self._config.max_fragment_seconds * _RATE:
            raise InvalidAudioError(
                f"the utterance in progress passed {self._config.max_fragment_seconds:g} s"
                " (max_fragment_seconds); send it as a fragment"
            )
        self._audio.append(chunk)
        self._samples += chunk.size
        self._heard_at = anyio.current_time()
        self._more.set()

    def sent(self, sequence_number: int) -> None:
        """A fragment was accepted: the utterance in progress was that fragment (unless the
        host already hands in audio of a later one, by its sequence number)."""
        if self._sequence is None or sequence_number >= self._sequence:
            self._new_utterance(sequence_number + 1)

    def _new_utterance(self, sequence_number: int) -> None:
        self._audio, self._samples, self._sequence = [], 0, sequence_number
        self._generation += 1
        self._agreement = LocalAgreement()
        self._shown = None

    def input_ended(self) -> None:
        self._input_ended = True
        self._more.set()

    # -- what the pipeline hands in ------------------------------------------------------------

    def results_only(self) -> None:
        """The host iterates the stream itself: captions are not kept for it."""
        self._keep = False
        self._events.clear()

    def _put(self, caption: Caption) -> None:
        if not self._keep:
            return
        if caption.kind == "interim":
            last = self._events[-1] if self._events else None
            if (
                last is not None
                and last.kind == "interim"
                and last.sequence_number == caption.sequence_number
            ):
                # Not read yet: the newer one replaces it.
                self._events.pop()
                self._dropped += 1
                caption = attrs.evolve(caption, dropped=last.dropped + 1)
            self._interims += 1
        else:
            # A final supersedes the fragment's interims still unread.
            kept = [
                e for e in self._events if e.kind != "interim" or e.sequence_number != caption.sequence_number
            ]
            self._dropped += len(self._events) - len(kept)
            self._events = deque(kept)
        self._events.append(caption)
        self._wake.set()

    def final(self, job: Job) -> None:
        """The fragment's ASR is done (or failed): its final caption."""
        fragment = job.fragment
        transcript = job.transcript.transcript if job.transcript is not None else None
        note = None
        if transcript is None:
            note = f"no transcript: {job.error}" if job.error is not None else "no transcript"
        self._finals += 1
        self._put(
            _final(
                self._config.stream_id,
                fragment.sequence_number,
                fragment.fragment_id,
                transcript,
                fragment.duration,
                job.accepted_at,
                note,
            )
        )

    def translated(self, job: Job) -> None:
        """The fragment is translated: its translation caption (none when it was not)."""
        asset = job.translation
        if asset is None or not asset.translated or not asset.translation.text.strip():
            return
        self._translations += 1
        self._put(
            Caption(
                kind="translation",
                stream_id=self._config.stream_id,
                sequence_number=job.fragment.sequence_number,
                fragment_id=job.fragment.fragment_id,
                text=asset.translation.text,
                stable_chars=len(asset.translation.text),
                language=job.transcript.transcript.language if job.transcript is not None else None,
                target_language=self._config.target_language,
                source_text=asset.source_text,
                audio_seconds=job.fragment.duration,
                heard_at=job.accepted_at,
                emitted_at=anyio.current_time(),
            )
        )

    # -- interim passes ---------------------------------------------------------------------------

    def _busy(self) -> bool:
        # Any call in the ASR (a fragment's, or another stream's interim) takes the CPU an
        # interim pass would slow it down with; a full stream has fragments waiting for it.
        return self._stages.asr.active > 0 or self._stream.in_flight >= self._config.max_inflight

    async def run(self) -> None:
        """Interim passes while audio comes in; at the end, a final for an utterance never sent."""
        try:
            while not self._input_ended:
                await self._more.wait()
                self._more = anyio.Event()
                if self.mode != "interim" or self._input_ended:
                    continue
                await anyio.sleep(max(0.0, self._next_pass - anyio.current_time()))
                if self._samples < _MIN_SECONDS * _RATE or self._input_ended:
                    continue
                if self._busy():
                    self._paused = True
                    self._dropped += 1
                    continue
                self._paused = False
                await self._interim_pass()
            if self._samples:
                await self._last_words()
        finally:
            self.done = True
            self._wake.set()

    def _request(self, *, interim: bool) -> ASRRequest:
        sequence = self._sequence if self._sequence is not None else 0
        return ASRRequest(
            audio=AudioBuffer(np.concatenate(self._audio), _RATE),
            language=self._stream.language,
            interim=interim,
            stream_id=self._config.stream_id,
            sequence_number=sequence,
            fragment_id=f"{'interim' if interim else 'unsent'}-{sequence}",
        )

    async def _interim_pass(self) -> None:
        generation, heard_at, seconds = self._generation, self._heard_at, self._samples / _RATE
        request = self._request(interim=True)
        started = anyio.current_time()
        self._passes += 1
        try:
            with anyio.fail_after(self._config.fragment_timeout):
                transcript = await self._stages.asr.call(request, started + self._config.fragment_timeout)
        except (StageError, TimeoutError) as exc:
            logger.debug("stream %s: interim pass failed: %s", self._config.stream_id, exc)
            return
        finally:
            ended = anyio.current_time()
            self._next_pass = max(started + self.interval, ended + (ended - started))
        if generation != self._generation:  # sent meanwhile: its final supersedes this
            self._dropped += 1
            return
        text, stable = self._agreement.update(transcript.text.strip())
        if not text or (text, stable) == self._shown:
            return  # nothing new to show
        self._shown = (text, stable)
        self._put(
            Caption(
                kind="interim",
                stream_id=self._config.stream_id,
                sequence_number=request.sequence_number,
                fragment_id=None,
                text=text,
                stable_chars=stable,
                language=transcript.language,
                audio_seconds=seconds,
                heard_at=heard_at,
                emitted_at=anyio.current_time(),
            )
        )

    async def _last_words(self) -> None:
        """The stream ended mid-utterance: a final for what was heard, with a note."""
        request = self._request(interim=False)
        note = "the stream ended before this utterance was sent as a fragment; it is not dubbed"
        transcript: Transcript | None = None
        try:
            with anyio.fail_after(self._config.fragment_timeout):
                transcript = await self._stages.asr.call(
                    request, anyio.current_time() + self._config.fragment_timeout
                )
        except (StageError, TimeoutError) as exc:
            note += f" (and its transcription failed: {exc})"
        self._finals += 1
        self._put(
            _final(
                self._config.stream_id,
                request.sequence_number,
                None,
                transcript,
                request.audio.duration,
                self._heard_at,
                note,
            )
        )
        self._audio, self._samples = [], 0

    # -- what the host reads ---------------------------------------------------------------------

    async def events(self) -> AsyncIterator[DubResult | Caption]:
        """Stream.events(): :meth:`next` until the stream is done."""
        while True:
            try:
                yield await self.next()
            except StopAsyncIteration:
                return

    async def next(self) -> DubResult | Caption:
        """The next caption or result: captions as they come, results in input order."""
        stream = self._stream
        while True:
            if self._events:
                return self._events.popleft()
            tickets = stream._tickets
            if tickets and tickets[0].done.is_set():
                ticket = tickets.popleft()
                if ticket.result is None:  # closed under us
                    raise StopAsyncIteration
                return ticket.result
            if not tickets and stream.ended and (self.done or stream._closed):
                raise StopAsyncIteration
            waits = [self._wake, stream._tickets_changed] + ([tickets[0].done] if tickets else [])
            await _first(waits)
            if self._wake.is_set():
                self._wake = anyio.Event()
            if stream._tickets_changed.is_set():
                stream._tickets_changed = anyio.Event()


async def _first(events: list[anyio.Event]) -> None:
    """Wait until one of ``events`` is set."""
    if any(e.is_set() for e in events):
        return
    async with anyio.create_task_group() as tg:

        async def wait(event: anyio.Event) -> None:
            await event.wait()
            tg.cancel_scope.cancel()

        for event in events:
            tg.start_soon(wait, event)


def _final(
    stream_id: str,
    sequence_number: int,
    fragment_id: str | None,
    transcript: Transcript | None,
    seconds: float,
    heard_at: float,
    note: str | None,
) -> Caption:
    text = transcript.text.strip() if transcript is not None else ""
    words: tuple[Word, ...] = tuple(w for s in transcript.segments for w in s.words) if transcript else ()
    return Caption(
        kind="final",
        stream_id=stream_id,
        sequence_number=sequence_number,
        fragment_id=fragment_id,
        text=text,
        stable_chars=len(text),
        language=transcript.language if transcript is not None else None,
        words=words,
        audio_seconds=seconds,
        heard_at=heard_at,
        emitted_at=anyio.current_time(),
        note=note,
    )
