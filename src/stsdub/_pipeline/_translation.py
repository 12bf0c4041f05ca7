"""A stream's translation step: each fragment as it is heard, or whole sentences (``sentence_wait``).

A live stream translates a fragment as soon as its transcript is ready, with the stream's last
fragments (or sentences) and their translations as context for a translator that reads it. A
host cuts fragments where its speaker pauses, and a pause is often a breath in the middle of a
sentence ("As many of you know." / "The old building on Station Road is closing."), which the
translator then gets in halves.

With ``sentence_wait`` above 0, a fragment that ends mid-sentence is held here until the
fragments that finish its sentence are heard, but never longer than ``sentence_wait`` seconds
after its own transcript was ready (nor past half of what is left of its ``fragment_timeout``).
The held fragments' words are then joined into sentences as a file dub joins them
(:func:`._sentences.sentences`: punctuation, a full stop at a fragment's end
believed only before a pause of ``edge_pause``, speaker and language changes), each sentence is
translated once, and its translation is split back over its fragments in proportion to the words
each holds. Every fragment keeps its own time span, result, order and exactly one answer; what
holding changes is only when its translation starts. A fragment ends its sentence when its last
word ends with ``?`` or ``!``, or with a full stop and at least ``edge_pause`` of silence after
it in the fragment itself.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
import attrs

from .._core._languages import same_language
from .._core._values import Translation, TranslationAsset, TranslationRequest
from ..errors import ConfigurationError, ErrorCode, StageError
from . import _job
from ._runner import guarded
from ._sentences import (
    Sentence,
    Token,
    ends_sentence,
    sentences,
    split_text,
    tokens_of,
)

if TYPE_CHECKING:
    from ._captions import Captioner
    from ._job import Job, Stages, StreamConfig

__all__ = ["DEFAULT_SENTENCE_WAIT", "TranslationStep", "check_sentence_wait"]

log = logging.getLogger("stsdub")

#: How long (seconds) a fragment that ends mid-sentence waits for the rest by default: 0, it
#: never waits (see docs/performance.md, "Whole sentences, live").
DEFAULT_SENTENCE_WAIT = 0.0
#: How many of the stream's last units (fragments, or sentences) a context-reading translator gets.
CONTEXT_UNITS = 3
#: The longest ``sentence_wait`` accepted (seconds): past it a live dub is no longer live.
MAX_SENTENCE_WAIT = 30.0

#: ``Stream._call``: one stage call inside a job's budget, ``None`` when it failed.
StageCall = Callable[..., Awaitable[Any]]


def check_sentence_wait(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= MAX_SENTENCE_WAIT:
        raise ConfigurationError(
            f"sentence_wait must be seconds between 0 and {MAX_SENTENCE_WAIT:g}, got {value!r}"
        )
    return float(value)


@attrs.define
class _Held:
    """A fragment waiting for the rest of its sentence."""

    job: Job
    #: When its transcript reached this step (anyio time).
    arrived: float
    #: Seconds from the start of the first held fragment to its start.
    offset: float


class TranslationStep:
    """The translation worker of one stream (see the module's docstring)."""

    def __init__(
        self, config: StreamConfig, stages: Stages, call: StageCall, captions: Captioner | None
    ) -> None:
        self._config = config
        self._runner = stages.translator
        self._call = call
        self._captions = captions
        self._reads_context = self._runner is not None and self._runner.reads_context
        #: The stream's last units and their translations: context for the next one.
        self._said: deque[tuple[str, str]] = deque(maxlen=CONTEXT_UNITS)
        self._held: list[_Held] = []
        #: Fragments whose translation was a share of a sentence spanning several (for tests
        #: and benchmarks: how often holding joined something).
        self.joined = 0

    # -- the worker -------------------------------------------------------------------------

    async def run(
        self, jobs: anyio.abc.ObjectReceiveStream[Job], out: anyio.abc.ObjectSendStream[Job]
    ) -> None:
        async with jobs, out:
            while True:
                job, ended = await self._receive(jobs)
                if job is None:  # the wait ran out, or the input ended
                    await self._release(len(self._held), out)
                    if ended:
                        return
                    continue
                if not self._holdable(job):
                    await self._release(len(self._held), out)
                    await self._send([job], out)
                    continue
                self._hold(job)
                try:
                    closed = self._closed()
                except Exception:  # a bug in joining: nothing waits for it
                    log.exception("stsdub: sentence joining failed on fragment %s", job.fragment.fragment_id)
                    closed = len(self._held)
                await self._release(closed, out)

    async def _receive(self, jobs: anyio.abc.ObjectReceiveStream[Job]) -> tuple[Job | None, bool]:
        """The next job, or ``(None, ended)`` when the input ended or the first held one's wait ran out."""
        timeout = None
        if self._held:
            first = self._held[0]
            left = max(first.job.deadline - first.arrived, 0.0)
            timeout = max(
                first.arrived + min(self._config.sentence_wait, left / 2) - anyio.current_time(), 0.0
            )
        with anyio.move_on_after(timeout):
            try:
                return await jobs.receive(), False
            except anyio.EndOfStream:
                return None, True
        return None, False

    def _holdable(self, job: Job) -> bool:
        """Whether the job's text may wait to be joined with the next fragments'."""
        if self._config.sentence_wait <= 0 or not job.pending or self._runner is None:
            return False
        if job.transcript is None or not job.transcript.text.strip() or job.fragment.translation is not None:
            return False
        source = self._config.source_language or job.transcript.language
        return not same_language(source, self._config.target_language)

    def _hold(self, job: Job) -> None:
        offset = 0.0
        if self._held:
            last = self._held[-1]
            offset = last.offset + last.job.fragment.duration
            before, now = last.job.fragment.timestamp_ms, job.fragment.timestamp_ms
            if before is not None and now is not None and now - before >= 1000 * last.job.fragment.duration:
                offset = last.offset + (now - before) / 1000  # the host said when it began
        self._held.append(_Held(job, anyio.current_time(), offset))

    def _closed(self) -> int:
        """How many of the held fragments (from the first) can be translated now.

        All when the last one ends its sentence, or when every one of the stream's
        ``max_inflight`` slots is held here (no later fragment can come in); otherwise those
        before the sentence still open.
        """
        if len(self._held) >= self._config.max_inflight:
            return len(self._held)
        tokens = self._tokens(self._held)
        last = self._held[-1]
        # The silence after the last word, inside the last fragment.
        if not tokens or ends_sentence(
            tokens[-1].text, last.offset + last.job.fragment.duration - tokens[-1].end
        ):
            return len(self._held)
        return sentences(tokens)[-1].pieces[0]

    def _tokens(self, held: Sequence[_Held]) -> list[Token]:
        tokens: list[Token] = []
        for n, item in enumerate(held):
            job = item.job
            assert job.transcript is not None
            language = self._config.source_language or job.transcript.language
            transcript = job.transcript.transcript
            tokens += tokens_of(n, transcript, item.offset, job.fragment.duration, job.speaker, language)
        return tokens

    async def _release(self, count: int, out: anyio.abc.ObjectSendStream[Job]) -> None:
        if count <= 0:
            return
        held, self._held = self._held[:count], self._held[count:]
        now = anyio.current_time()
        for item in held:
            item.job.timings["sentence_wait"] = 1000 * (now - item.arrived)
        if len(held) == 1:
            await self._send([held[0].job], out)
            return
        try:
            await self._translate_sentences(held)
        except Exception as exc:  # a bug here: each fragment is translated alone instead
            for item in held:
                item.job.warnings.append(f"joining sentences failed ({type(exc).__name__}: {exc})")
        await self._send([item.job for item in held], out)

    async def _send(self, jobs: Sequence[Job], out: anyio.abc.ObjectSendStream[Job]) -> None:
        for job in jobs:
            if job.pending and job.translation is None:
                await guarded(job, self.translate(job))
            if self._captions is not None:
                self._captions.translated(job)
            await out.send(job)

    # -- translating ------------------------------------------------------------------------

    def _request(self, text: str, source: str | None, job: Job) -> TranslationRequest:
        return TranslationRequest(
            text=text,
            source_language=source,
            target_language=self._config.target_language,
            previous_text=self._said[-1][0] if self._said else None,
            previous_translation=self._said[-1][1] if self._said else None,
            context=tuple(self._said) if self._reads_context else (),
            stream_id=self._config.stream_id,
            sequence_number=job.fragment.sequence_number,
            fragment_id=job.fragment.fragment_id,
        )

    async def translate(self, job: Job) -> None:
        """Translate one fragment's text as it is (a given translation is taken as it is)."""
        assert job.transcript is not None
        text = job.transcript.text
        source = self._config.source_language or job.transcript.language
        target = self._config.target_language
        translation: Translation | None
        request = self._request(text, source, job)
        if job.fragment.translation is not None:  # given (reviewed, or from subtitles)
            translation = job.fragment.translation
            if job.fragment.metadata.get(_job.SHORTENABLE_KEY) is True and not same_language(source, target):
                job.translation_request = request  # a share of a sentence's: may still be shortened
        elif same_language(source, target):
            translation = Translation(text)
        elif self._runner is None:
            job.error = StageError(
                ErrorCode.UNSUPPORTED_LANGUAGE,
                f"speech is in {source or 'an unknown language'} and no translator is configured"
                f" to reach {target}",
                "translation",
            )
            return
        else:
            job.translation_request = request
            translation = await self._call(job, "translation", self._runner, request, Translation)
            if translation is None:
                return
        translated = not same_language(source, target)
        job.translation = TranslationAsset(
            job.asset_id("translation"), (job.transcript.asset_id,), translation, text, translated
        )
        self._said.append((text, translation.text))

    async def _translate_sentences(self, held: Sequence[_Held]) -> None:
        """Each sentence of the held fragments translated once, split back over its fragments.

        A fragment one of whose sentences could not be translated is left untranslated here
        (with a warning), and :meth:`_send` translates it alone.
        """
        assert self._runner is not None
        jobs = [item.job for item in held]
        parts: list[list[str]] = [[] for _ in jobs]
        sources: list[set[int]] = [{n} for n in range(len(jobs))]
        failed: set[int] = set()
        for sentence in sentences(self._tokens(held)):
            pieces = sentence.pieces
            lead = jobs[pieces[0]]
            started = anyio.current_time()
            translated = await self._translate_one(sentence, lead)
            if translated is None:
                failed.update(pieces)
                continue
            if len(pieces) > 1:
                spent = 1000 * (anyio.current_time() - started)
                for n in pieces[1:]:
                    jobs[n].timings["translation"] = jobs[n].timings.get("translation", 0.0) + spent
            weights = sentence.weights()
            for n, part in zip(pieces, split_text(translated.text.strip(), weights), strict=True):
                if part:
                    parts[n].append(part)
                sources[n].update(pieces)
        for n, job in enumerate(jobs):
            if n in failed:
                continue
            assert job.transcript is not None
            source = self._config.source_language or job.transcript.language
            others = (jobs[k].transcript for k in sorted(sources[n] - {n}))
            parents = (job.transcript.asset_id, *(t.asset_id for t in others if t is not None))
            if len(parents) > 1:
                self.joined += 1
            job.translation_request = self._request(job.transcript.text, source, job)
            job.translation = TranslationAsset(
                job.asset_id("translation"),
                parents,
                Translation(" ".join(parts[n])),
                job.transcript.text,
                True,
            )

    async def _translate_one(self, sentence: Sentence, lead: Job) -> Translation | None:
        """One sentence's translation (the call's time and errors are its first fragment's)."""
        assert self._runner is not None
        source = self._config.source_language or sentence.language
        request = self._request(sentence.text, source, lead)
        translation = await self._call(lead, "translation", self._runner, request, Translation)
        if translation is None:
            error, lead.error = lead.error, None
            if error is not None and error.code is ErrorCode.TIMEOUT:
                lead.error = error  # its budget is spent: alone it would time out again
            else:
                lead.warnings.append(
                    f"translating the sentence {sentence.text!r} failed ({error}); translated alone"
                )
            return None
        self._said.append((sentence.text, translation.text))
        return translation  # type: ignore[no-any-return]
