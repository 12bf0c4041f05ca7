"""One stream: admission, the pipelined stage workers, and in-order results.

Each stream runs three workers, one per step (ASR, translation, synthesis + duration
matching), joined by bounded channels. Each worker takes the stream's fragments in order, so
fragment N+1 can be transcribed while N is translated or synthesized, every stage sees the
previous fragment's output as context, and results come out in input order by construction.

A fragment's time budget (``fragment_timeout``) starts when its turn at the first stage
comes, so a fragment that hangs delays the fragments behind it by at most one budget instead
of eating theirs too.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
import attrs

from .._core._captions import Caption, CaptionStatus
from .._core._languages import doubtful_change, kept_language, same_language
from .._core._values import (
    ASRRequest,
    AudioAsset,
    AudioBuffer,
    DubResult,
    Fit,
    Fragment,
    LengthBudget,
    Status,
    SynthesisRequest,
    Transcript,
    TranscriptAsset,
    Translation,
)
from .._speakers import _casting
from .._speakers._tracking import DEFAULT_MATCH_THRESHOLD, SpeakerTracker
from ..errors import (
    ConfigurationError,
    ErrorCode,
    InvalidAudioError,
    SequenceError,
    StageError,
    StreamClosedError,
)
from . import _results
from ._backpressure import LevelTracker
from ._captions import Captioner
from ._job import Job, Stages, StreamConfig, StreamRates, Ticket, fragment_tail, speech_seconds, speech_span
from ._runner import guarded, wrap_exception
from ._soundtrack import LiveSoundtrack
from ._translation import TranslationStep

if TYPE_CHECKING:
    from ._duration import Carry, Fitted
    from ._runner import StageRunner

__all__ = ["Stream"]


class Stream:
    """A sequence of fragments dubbed in order; get one from :meth:`stsdub.Dubber.open_stream`.

    ``await send(fragment)`` hands a fragment in (waiting while ``max_inflight`` are inside
    the pipeline), ``await end()`` says no more will come, and ``async for result in stream``
    yields exactly one :class:`~stsdub.DubResult` per accepted fragment, in order. Read the
    results while sending (from another task), or use ``overflow="reject"``: with neither,
    ``send`` waits for room that only reading makes. A stream opened with ``captions`` also
    yields live :class:`~stsdub.Caption` events, from :meth:`events` (see docs/captions.md).
    """

    def __init__(self, config: StreamConfig, stages: Stages) -> None:
        self.config = config
        self._stages = stages
        self._slots = anyio.Semaphore(config.max_inflight)
        self._in_pipeline = 0
        self._waiting = 0
        self._last_seq: int | None = None
        self._ended = False
        self._closed = False
        self._accepted = 0
        self._tickets: deque[Ticket] = deque()
        self._tickets_changed = anyio.Event()
        self._pressure = LevelTracker(
            config.stream_id, config.max_inflight, config.levels, config.on_backpressure
        )
        send, receive = anyio.create_memory_object_stream[Job](config.max_inflight)
        self._jobs_in = send
        self._jobs_out = receive
        self._scope: anyio.CancelScope | None = None
        self._stopped = anyio.Event()
        # Context handed to the stages: the previous fragment's outputs.
        self._prev_transcript: str | None = None
        self._prev_spoken: str | None = None
        #: The language the stream was last heard in (detected per fragment, or the one given).
        self.language: str | None = config.source_language
        self._captions = Captioner(config, stages, self) if config.captions else None
        self._translation = TranslationStep(config, stages, self._call, self._captions)
        # Dubbed speech of the last fragment that runs past its end (see _duration.py).
        self._carry: Carry | None = None
        # The soundtrack under the dub, carried from fragment to fragment (background=).
        self._soundtrack = LiveSoundtrack()
        # How fast this stream's voice speaks, for length budgets (see StreamRates).
        self._rates = StreamRates(stages.voice_rates, config.target_language)
        # The speakers heard so far, and the voice each was given: stable for the stream.
        diarizer = stages.diarizer
        threshold = getattr(diarizer, "match_threshold", DEFAULT_MATCH_THRESHOLD)
        self._speakers = SpeakerTracker(
            float(threshold) if isinstance(threshold, (int, float)) else DEFAULT_MATCH_THRESHOLD
        )
        labels = diarizer is not None and config.speakers is not False
        self._embed = getattr(diarizer, "embed", None) if labels else None
        self._cast = _casting.LiveCast(
            stages.synthesizer.stage, config.target_language, config.voice, config.voices
        )
        self.max_seen_in_pipeline = 0

    # -- public surface ---------------------------------------------------------------------

    @property
    def stream_id(self) -> str:
        return self.config.stream_id

    @property
    def in_flight(self) -> int:
        """Fragments inside the pipeline now (never more than ``max_inflight``)."""
        return self._in_pipeline

    @property
    def accepted(self) -> int:
        """Fragments accepted so far."""
        return self._accepted

    @property
    def ended(self) -> bool:
        return self._ended or self._closed

    async def send(self, fragment: Fragment) -> None:
        """Hand one fragment in; waits while ``max_inflight`` fragments are in the pipeline.

        Raises:
            InvalidAudioError: Audio longer than ``max_fragment_seconds``.
            SequenceError: The sequence number does not increase strictly, or the fragment
                names another stream.
            StreamClosedError: After :meth:`end` or close.
        """
        ticket = await self.submit(fragment)
        self._tickets.append(ticket)
        self._tickets_changed.set()
        if self._captions is not None:
            self._captions.sent(fragment.sequence_number)

    def send_audio(
        self, audio: Any, sample_rate: int = 16_000, *, sequence_number: int | None = None
    ) -> None:
        """Audio of the utterance in progress (appended), for interim captions; it still comes
        as a fragment when it ends. ``sequence_number``: that fragment's, when not last + 1."""
        self._require_captions().feed(audio, sample_rate, sequence_number)

    def events(self) -> AsyncIterator[DubResult | Caption]:
        """Captions as they come and results in input order (a stream opened with ``captions``)."""
        return self._require_captions().events()

    @property
    def caption_status(self) -> CaptionStatus | None:
        """How the stream's captions are doing; ``None`` without captions."""
        return None if self._captions is None else self._captions.status()

    def _require_captions(self) -> Captioner:
        if self._captions is None:
            raise ConfigurationError(f"stream {self.stream_id!r} was opened without captions=")
        return self._captions

    async def end(self) -> None:
        """No more fragments; the results of those sent still arrive."""
        if not self._ended:
            self._ended = True
            if self._captions is not None:
                self._captions.input_ended()
            await self._jobs_in.aclose()
            self._tickets_changed.set()

    async def aclose(self) -> None:
        """Stop now: work in progress is abandoned and unread results are discarded."""
        if self._closed:
            return
        self._closed = True
        self._ended = True
        self._jobs_in.close()
        if self._scope is not None:
            self._scope.cancel()
        for ticket in self._tickets:
            ticket.resolve(None)
        self._tickets_changed.set()
        await self._stopped.wait()

    async def wait_stopped(self) -> None:
        """Wait until every accepted fragment is answered (after :meth:`end`) or closed."""
        await self._stopped.wait()

    def __aiter__(self) -> AsyncIterator[DubResult]:
        return self

    async def __anext__(self) -> DubResult:
        if self._captions is not None:
            self._captions.results_only()  # read this way, captions are not kept
        while not self._tickets:
            if self._ended or self._closed:
                raise StopAsyncIteration
            await self._tickets_changed.wait()
            self._tickets_changed = anyio.Event()
        ticket = self._tickets[0]
        await ticket.done.wait()
        self._tickets.popleft()
        if ticket.result is None:  # closed under us
            raise StopAsyncIteration
        return ticket.result

    def __repr__(self) -> str:
        state = "closed" if self._closed else "ended" if self._ended else "open"
        return (
            f"<Stream {self.stream_id!r} {state}, {self._in_pipeline}/{self.config.max_inflight}"
            f" in flight, {self._accepted} accepted>"
        )

    # -- admission --------------------------------------------------------------------------

    async def submit(self, fragment: Fragment) -> Ticket:
        """Admit a fragment and return its place in the output order (see :meth:`send`)."""
        if self._ended:
            raise StreamClosedError(f"stream {self.stream_id!r} is ended; it accepts no fragments")
        self._check(fragment)
        self._last_seq = fragment.sequence_number
        ticket = Ticket()
        if self.config.overflow == "reject" and (self._in_pipeline >= self.config.max_inflight):
            self._accepted += 1
            self._pressure.update(self._in_pipeline + 1, overflow=True)
            ticket.resolve(_results.rejected(self.config, fragment))
            return ticket
        self._waiting += 1
        self._pressure.update(self._in_pipeline + self._waiting)
        try:
            await self._slots.acquire()
        except BaseException:  # cancelled while waiting: not accepted, no result owed
            self._waiting -= 1
            self._pressure.update(self._in_pipeline + self._waiting)
            raise
        self._waiting -= 1
        if self._ended:
            self._slots.release()
            self._pressure.update(self._in_pipeline + self._waiting)
            raise StreamClosedError(f"stream {self.stream_id!r} ended while the fragment waited")
        self._in_pipeline += 1
        self._accepted += 1
        self.max_seen_in_pipeline = max(self.max_seen_in_pipeline, self._in_pipeline)
        self._pressure.update(self._in_pipeline + self._waiting)
        # The channel holds max_inflight jobs and a slot is held, so this never blocks.
        self._jobs_in.send_nowait(Job(fragment, ticket))
        return ticket

    def _check(self, fragment: Fragment) -> None:
        if not isinstance(fragment, Fragment):
            raise InvalidAudioError(f"send() takes a stsdub.Fragment, got {type(fragment).__name__}")
        if fragment.stream_id is not None and fragment.stream_id != self.stream_id:
            raise SequenceError(
                f"fragment {fragment.fragment_id!r} belongs to stream {fragment.stream_id!r},"
                f" not {self.stream_id!r}"
            )
        if fragment.duration > self.config.max_fragment_seconds:
            raise InvalidAudioError(
                f"fragment {fragment.sequence_number} lasts {fragment.duration:.1f} s; the limit"
                f" is {self.config.max_fragment_seconds:g} s (max_fragment_seconds)"
            )
        if self._last_seq is not None and fragment.sequence_number <= self._last_seq:
            word = "duplicate" if fragment.sequence_number == self._last_seq else "decreasing"
            raise SequenceError(
                f"stream {self.stream_id!r}: {word} sequence number {fragment.sequence_number}"
                f" (last accepted was {self._last_seq}); sequence numbers must increase"
            )

    def _finish(self, job: Job) -> None:
        result = job.result or _results.failed(self.config, job)
        if self.config.background is not None:
            result = attrs.evolve(result, mixed=self._soundtrack.mix(job, result))
        job.ticket.resolve(result)
        self._in_pipeline -= 1
        self._slots.release()
        self._pressure.update(self._in_pipeline + self._waiting)

    # -- the workers ------------------------------------------------------------------------

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run the workers until the input ends and drains, or the stream is closed."""
        try:
            with anyio.CancelScope() as self._scope:
                jobs_1, jobs_1_out = anyio.create_memory_object_stream[Job](self.config.max_inflight)
                jobs_2, jobs_2_out = anyio.create_memory_object_stream[Job](self.config.max_inflight)
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._asr_worker, self._jobs_out, jobs_1)
                    tg.start_soon(self._translation.run, jobs_1_out, jobs_2)
                    tg.start_soon(self._synthesis_worker, jobs_2_out, tg.cancel_scope)
                    tg.start_soon(self._pressure.deliver_forever)
                    if self._captions is not None:
                        tg.start_soon(self._captions.run)
                    task_status.started()
                await self._pressure.flush()
        finally:
            self._closed = self._closed or self._ended
            for ticket in self._tickets:
                ticket.resolve(None)
            self._tickets_changed.set()
            self._stopped.set()

    async def _asr_worker(
        self, jobs: anyio.abc.ObjectReceiveStream[Job], out: anyio.abc.ObjectSendStream[Job]
    ) -> None:
        async with jobs, out:
            async for job in jobs:
                now = anyio.current_time()
                job.timings["queued"] = 1000 * (now - job.accepted_at)
                job.deadline = now + self.config.fragment_timeout
                await guarded(job, self._transcribe(job))
                if self._captions is not None:
                    self._captions.final(job)
                await out.send(job)

    async def _identify(self, job: Job) -> None:
        """Label a fragment without a speaker by matching its embedding to the stream's speakers."""
        if job.speaker is not None or not callable(self._embed):
            return
        started = anyio.current_time()
        try:
            limiter = self._stages.diarizer_limiter
            job.speaker = await self._speakers.identify_audio(
                self._embed, job.fragment.buffer, job.deadline, limiter
            )
        except Exception as exc:  # the dub goes on with the stream's voice
            job.warnings.append(f"speaker: the diarizer's embed failed ({type(exc).__name__}: {exc})")
        job.timings["speaker"] = 1000 * (anyio.current_time() - started)

    async def _separate(self, job: Job) -> None:
        """Split the fragment into voice and background (``background="separate"``).

        A failure is not the fragment's: the ASR hears the fragment as it is, and the mix
        ducks the original instead, with a warning.
        """
        separate = self._stages.separate
        if self.config.background != "separate" or separate is None:
            return
        started = anyio.current_time()
        try:
            with anyio.fail_after(max(job.deadline - started, 0.0)):
                job.separation = await separate(job.fragment.buffer, stream_id=self.stream_id)
        except Exception as exc:
            job.warnings.append(f"separation failed ({type(exc).__name__}: {exc}); the original is ducked")
        job.timings["separation"] = 1000 * (anyio.current_time() - started)

    async def _transcribe(self, job: Job) -> None:
        await self._identify(job)
        await self._separate(job)
        # A fragment that brings its transcript (reviewed, or from subtitles) skips the ASR.
        transcript = job.fragment.transcript
        if transcript is None:
            request = ASRRequest(
                # With the background separated, the ASR hears the voice alone.
                audio=job.separation.voice if job.separation is not None else job.fragment.buffer,
                language=self.config.source_language,
                previous_transcript=self._prev_transcript,
                stream_id=self.stream_id,
                sequence_number=job.fragment.sequence_number,
                fragment_id=job.fragment.fragment_id,
            )
            transcript = await self._call(job, "asr", self._stages.asr, request, Transcript)
            if transcript is None:
                return
            if self.language is not None and doubtful_change(transcript, self.language):
                # An unsure change of language: decoded again in the stream's own.
                again = await self._call(
                    job, "asr", self._stages.asr, attrs.evolve(request, language=self.language), Transcript
                )
                if again is None and job.error is not None and job.error.code is not ErrorCode.TIMEOUT:
                    job.error = None  # a failed second look keeps the first
                transcript = (kept_language(again, self.language) if again else None) or transcript
        if transcript.text.strip() and transcript.language:
            if self.language is not None and not same_language(transcript.language, self.language):
                sure = transcript.language_probability or 1.0
                job.warnings.append(f"language changed: {self.language} → {transcript.language} ({sure:.2f})")
            self.language = transcript.language
        if job.speaker is not None and transcript.segments:
            segments = tuple(attrs.evolve(s, speaker=s.speaker or job.speaker) for s in transcript.segments)
            transcript = attrs.evolve(transcript, segments=segments)
        job.transcript = TranscriptAsset(job.asset_id("transcript"), (job.fragment_asset_id,), transcript)
        if transcript.text.strip():
            self._prev_transcript = transcript.text
        else:
            job.result = _results.silent(self.config, job)

    async def _synthesis_worker(
        self, jobs: anyio.abc.ObjectReceiveStream[Job], scope: anyio.CancelScope
    ) -> None:
        async with jobs:
            async for job in jobs:
                if job.pending:
                    await guarded(job, self._synthesize(job))
                elif self._carry is not None:
                    self._spill_into_silence(job)
                job.timings["total"] = 1000 * (anyio.current_time() - job.accepted_at)
                self._finish(job)
        # Input ended and every job is answered: stop the event delivery task too.
        scope.cancel()

    def _spill_into_silence(self, job: Job) -> None:
        """Play speech the previous fragment ran over with in this one's silence (no speech)."""
        result = job.result
        carry = self._carry
        if (
            carry is None
            or result is None
            or result.audio.kind != "silence"
            or carry.sequence_number + 1 != job.fragment.sequence_number
        ):
            return  # a failed fragment: _synthesize of the next one reports the dropped speech
        rate = _results.output_rate(self.config, job.fragment)
        spilled, self._carry = self._stages.duration.spill(
            carry, _results.target_samples(job.fragment, rate), rate, job.fragment.sequence_number
        )
        warning = (
            f"speech starts {1000 * carry.duration:.0f} ms late: fragment {carry.sequence_number}"
            " ran over its end"
        )
        audio = attrs.evolve(result.audio, audio=spilled, kind="dubbed")
        job.result = attrs.evolve(result, audio=audio, warnings=(*result.warnings, warning))

    async def _synthesize(self, job: Job) -> None:
        assert job.translation is not None
        fragment = job.fragment
        text = job.translation.text
        duration = self._stages.duration
        rate = _results.output_rate(self.config, fragment)
        target = _results.target_samples(fragment, rate)
        # Speech the previous fragment ran over with belongs at the start of the fragment that
        # follows it, and nowhere else: when that one did not reach synthesis, it is dropped.
        carry, self._carry = self._carry, None
        if carry is not None and carry.sequence_number + 1 != fragment.sequence_number:
            job.warnings.append(
                f"dropped {1000 * carry.duration:.0f} ms of speech carried from fragment"
                f" {carry.sequence_number}: fragment {carry.sequence_number + 1} was not dubbed"
            )
            carry = None
        if not text.strip():
            if carry is None:
                job.result = _results.silent(self.config, job)
                return
            spilled, self._carry = duration.spill(carry, target, rate, fragment.sequence_number)
            audio = AudioAsset(job.asset_id("audio"), (job.translation.asset_id,), spilled, "dubbed")
            job.result = _results.result(self.config, job, Status.SUCCESS, audio)
            return
        # Aim at the source's speech, where the ASR says it was; else at the fragment's own time
        # (a file host may append the pause after it, which speech may only borrow from).
        span = speech_span(job.transcript)
        tail_seconds = fragment_tail(fragment)
        aim_seconds = span[1] if span is not None else fragment.duration - tail_seconds
        # Silence after the aim that speech longer than the source's may borrow.
        spare = fragment.duration - span[0] - span[1] if span is not None else tail_seconds
        room_carry = carry if span is None else None
        job.voice = self._cast.voice_for(
            job.speaker, job.fragment.audio, job.fragment.sample_rate, job.warnings
        )
        runner = self._stages.synthesizer
        # A synthesizer that clones each speaker from their own speech is told who speaks and
        # given the source audio; no other synthesizer is sent (or has to carry) either.
        clones = job.speaker is not None and getattr(runner.stage, "clones_speakers", False) is True
        # A synthesizer that can change its speaking rate is asked for the rate that fits in
        # the first call, once this stream has measured how fast its voice speaks: a second
        # synthesis only when that prediction misses.
        supports_speed = getattr(runner.stage, "supports_speed", False) is True
        speed = self._predicted_speed(job, text, aim_seconds, room_carry, spare) if supports_speed else 1.0
        request = SynthesisRequest(
            text=text,
            language=self.config.target_language,
            voice=job.voice,
            target_duration=aim_seconds,
            previous_text=self._prev_spoken,
            stream_id=self.stream_id,
            sequence_number=fragment.sequence_number,
            fragment_id=fragment.fragment_id,
            speaker=job.speaker if clones else None,
            source_audio=AudioBuffer(fragment.audio, fragment.sample_rate) if clones else None,
            speed=speed,
        )
        speech = await self._call(job, "synthesis", runner, request, AudioBuffer)
        if speech is None:
            return
        # What the speech lasts at the voice's own rate (measured, or from the rate asked for).
        natural = speech_seconds(speech) * speed
        chars = len(text.strip())
        self._rates.observe(job.voice, chars, natural)
        # Speech that would need more than a comfortable speed-up: a translator that can keep
        # to a length budget is asked once for a shorter text, which sounds better than any
        # speed-up or stretch.
        long_text: str | None = None
        budget: LengthBudget | None = None
        room = duration.room_for(natural, aim_seconds, room_carry, spare)
        if room > 0 and natural / room > duration.policy.comfortable_speed and self._can_shorten(job):
            rate_now = self._rates.own.estimate() or chars / natural
            budget = LengthBudget(
                max_chars=max(1, math.floor(rate_now * room)),
                seconds=round(room, 3),
                previous=text,
                chars_per_second=round(rate_now, 2),
            )
            shorter = await self._shorten(job, request, budget)
            if shorter is None and job.error is not None:
                return
            if shorter is not None:
                long_text, (text, speech) = text, shorter
                request = attrs.evolve(request, text=text)
                self._rates.observe(job.voice, len(text.strip()), speech_seconds(speech) * speed)
        self._prev_spoken = text
        # A synthesizer that can change its speaking rate is asked once more when the speech
        # still misses: a voice speaking faster sounds better than a recording stretched.
        if supports_speed:
            wanted = duration.speed_for(speech, aim_seconds, room_carry, spare, current=speed)
            if wanted is not None:
                faster = attrs.evolve(request, speed=wanted)
                again = await self._call(job, "synthesis", runner, faster, AudioBuffer)
                if again is not None:
                    speech, speed = again, wanted
                elif job.error is not None and job.error.code is not ErrorCode.TIMEOUT:
                    job.warnings.append(f"synthesis at speed {wanted:.2f} failed ({job.error}); stretched")
                    job.error = None
                else:
                    return

        aim = round(span[1] * rate) if span is not None else None
        offset = round(span[0] * rate) if span is not None else 0
        tail = round(tail_seconds * rate)

        def fit() -> Fitted:
            return duration.fit(
                speech,
                target,
                rate,
                carry=carry,
                speed=speed,
                sequence_number=fragment.sequence_number,
                aim_samples=aim,
                offset=offset,
                tail=tail,
            )

        started = anyio.current_time()
        with anyio.CancelScope(deadline=job.deadline) as scope:
            try:
                if duration.runs_inline(
                    speech, target, rate, carry, aim_samples=aim, offset=offset, tail=tail
                ):
                    fitted = fit()
                else:
                    fitted = await anyio.to_thread.run_sync(
                        fit, limiter=self._stages.duration_limiter, abandon_on_cancel=True
                    )
            except Exception as exc:
                job.error = wrap_exception(exc, "duration")
                return
        job.timings["duration"] = 1000 * (anyio.current_time() - started)
        if scope.cancelled_caught:
            job.error = self._timeout("duration")
            return
        job.warnings.extend(fitted.warnings)
        if fitted.error is not None:
            job.error = fitted.error
            return
        self._carry = fitted.carry
        fit_info = Fit(
            shortened=long_text is not None,
            long_text=long_text,
            budget=budget,
            speed=speed,
            stretch=fitted.tempo,
            borrowed=round(fitted.borrowed, 4),
            start=round(fitted.start, 4),
            seconds=round(fitted.speech_samples / rate, 4),
            aim=round(fitted.aim, 4),
            natural=round(natural, 4),
        )
        audio = AudioAsset(job.asset_id("audio"), (job.translation.asset_id,), fitted.audio, "dubbed")
        job.result = _results.result(
            self.config, job, fitted.status, audio, duration_variance=fitted.variance, fit=fit_info
        )

    def _predicted_speed(
        self, job: Job, text: str, aim_seconds: float, carry: Carry | None, spare: float
    ) -> float:
        """The speaking rate that fits ``text`` into the aim, from this stream's measured rate.

        1.0 (the voice's own rate) until the stream (or, for its first fragments, another
        stream of the Dubber) has heard enough of its voice, when the
        prediction says no change is needed, and when the text would need more than a
        comfortable speed-up: then the first synthesis, at the voice's own rate, decides
        whether a translator that honours a length budget is asked for a shorter text.
        """
        rate = self._rates.predictable(job.voice)
        if rate is None:
            return 1.0
        duration = self._stages.duration
        speed = duration.speed_for(len(text.strip()) / rate, aim_seconds, carry, spare)
        if speed is None or (speed > duration.policy.comfortable_speed and self._can_shorten(job)):
            return 1.0
        return round(speed, 3)

    def _can_shorten(self, job: Job) -> bool:
        """Whether the translator may be asked for a shorter version of this job's text."""
        translator = self._stages.translator
        return (
            job.translation is not None
            and job.translation.translated
            and job.translation_request is not None
            and translator is not None
            and getattr(translator.stage, "supports_length_budget", False) is True
        )

    async def _shorten(
        self, job: Job, synthesis: SynthesisRequest, budget: LengthBudget
    ) -> tuple[str, AudioBuffer] | None:
        """Ask the translator for a text within ``budget`` and speak it.

        Returns the shorter text and its speech, or ``None`` when there is none; then
        ``job.error`` is set only when the fragment's budget ran out (the caller gives up),
        and otherwise a warning says why the long text is kept.
        """
        assert job.translation is not None and job.translation_request is not None
        translator = self._stages.translator
        assert translator is not None
        long_text = job.translation.text
        request = attrs.evolve(job.translation_request, budget=budget)
        shorter = await self._call(job, "translation", translator, request, Translation, timing="shorten")
        if shorter is None:
            return self._optional_failed(job, "shortening the translation")
        text = shorter.text.strip()
        if not text or len(text) >= len(long_text.strip()):
            job.warnings.append(
                f"asked for at most {budget.max_chars} characters ({budget.seconds:.2f} s), the"
                f" translator answered {len(text)} for {len(long_text.strip())}; kept the first"
            )
            return None
        speech = await self._call(
            job, "synthesis", self._stages.synthesizer, attrs.evolve(synthesis, text=text), AudioBuffer
        )
        if speech is None:
            return self._optional_failed(job, "speaking the shortened translation")
        job.warnings.append(
            f"translation shortened to fit {budget.seconds:.2f} s: {len(long_text.strip())} →"
            f" {len(text)} characters (budget {budget.max_chars})"
        )
        job.translation = attrs.evolve(job.translation, translation=attrs.evolve(shorter, text=text))
        return text, speech

    @staticmethod
    def _optional_failed(job: Job, what: str) -> None:
        """An optional step failed: keep going without it, unless the budget is spent."""
        if job.error is not None and job.error.code is not ErrorCode.TIMEOUT:
            job.warnings.append(f"{what} failed ({job.error}); kept the first translation")
            job.error = None

    async def _call(
        self,
        job: Job,
        stage: str,
        runner: StageRunner[Any, Any],
        request: Any,
        kind: type,
        *,
        timing: str | None = None,
    ) -> Any:
        """One stage call inside the fragment's budget, with retries; None when it failed.

        ``timing`` names the entry of ``job.timings`` the time is added to (default ``stage``).
        """
        started = anyio.current_time()
        attempt = 0
        result: Any = None
        with anyio.CancelScope(deadline=job.deadline) as scope:
            while True:
                try:
                    result = await runner.call(request, job.deadline)
                    break
                except StageError as err:
                    delay = self.config.retry_backoff * 2**attempt
                    if (
                        err.retryable
                        and attempt < self.config.retries
                        and anyio.current_time() + delay < job.deadline
                    ):
                        attempt += 1
                        job.warnings.append(f"{stage}: retry {attempt} after {err.code.value}: {err.message}")
                        await anyio.sleep(delay)
                        continue
                    job.error = err.with_stage(stage)
                    break
        key = timing or stage
        job.timings[key] = job.timings.get(key, 0.0) + 1000 * (anyio.current_time() - started)
        if scope.cancelled_caught:
            job.error = self._timeout(stage)
            return None
        if job.error is not None:
            return None
        if not isinstance(result, kind):
            job.error = StageError(
                ErrorCode.INTERNAL_ERROR,
                f"{type(runner.stage).__name__} returned {type(result).__name__}, expected {kind.__name__}",
                stage,
            )
            return None
        return result

    # -- results ----------------------------------------------------------------------------

    def _timeout(self, stage: str) -> StageError:
        return StageError(
            ErrorCode.TIMEOUT,
            f"fragment exceeded fragment_timeout ({self.config.fragment_timeout:g} s) in {stage}",
            stage,
        )
