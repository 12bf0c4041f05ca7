"""Dubbing whole files: decode → segment → dub → assemble → write audio / video and subtitles.

:func:`adub_file` is the async core; :func:`dub_file` is its blocking twin for scripts and
notebooks (it runs the Dubber's event loop in a background thread, so it works where a loop
already runs, as in Jupyter).
"""

from __future__ import annotations

import functools
import html
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.from_thread
import attrs
import numpy as np

from .._core import _audio
from .._core._diarization import Diarization
from .._core._separation import Separation
from .._core._values import AudioBuffer, DubResult, Fragment, Status
from .._media import (
    ANALYSIS_RATE,
    SUBTITLE_FORMATS,
    Cue,
    MediaInfo,
    Piece,
    Segmentation,
    SourceAudio,
    plan,
    plan_output,
    probe,
    read_audio,
    render,
    staged,
    write_audio,
    write_text,
    write_video,
)
from .._media._duck import mix_background, mix_ducked
from .._media._output import OutputPlan
from .._pipeline._job import SHORTENABLE_KEY, TAIL_KEY
from .._speakers import _casting
from ..errors import ConfigurationError, StsdubError
from ._project import DubProject
from ._run import ProjectRun
from ._transcribe import main_language
from ._translate import SentencePlan, Unit, check_units, file_cues, plan_sentences, subtitle_sets

if TYPE_CHECKING:
    from .._core._audio import FloatArray
    from .._dubber import Dubber

__all__ = ["DubbedFile", "FileProgress", "adub_file", "dub_file"]

#: How a file's music and effects are kept under the dub (the ``background`` argument).
BACKGROUND_MODES = ("separate", "duck", "none")
#: Level of the original audio under the dub with ``original="mix"`` (about -12 dB).
DEFAULT_ORIGINAL_LEVEL = 0.25


@attrs.frozen
class FileProgress:
    """Where :func:`dub_file` is: ``phase`` is ``decode``, ``segment``, ``load``, ``dub`` or
    ``write`` (and ``separate``, ``diarize`` with those stages; ``transcribe``, ``translate``
    when translating by sentences, and in a project); ``done`` of ``total`` fragments
    during ``dub`` and ``transcribe`` (sentences during ``translate``; segments in a project)."""

    phase: str
    done: int = 0
    total: int = 0


ProgressCallback = Callable[[FileProgress], object]


@attrs.frozen(repr=False)
class DubbedFile:
    """The outcome of dubbing one file.

    ``results`` and ``spans`` line up: one :class:`~stsdub.DubResult` per dubbed fragment and
    its ``(start, end)`` in seconds. Pauses between fragments (speech-aware segmentation) are
    not dubbed and have no result.
    """

    input: Path
    #: The written audio or video file; ``None`` when nothing was written.
    output: Path | None
    #: Subtitle files written next to the output (``<stem>.<lang>.srt`` / ``.vtt``).
    subtitles: tuple[Path, ...]
    results: tuple[DubResult, ...]
    spans: tuple[tuple[float, float], ...]
    #: The audio track as written: dubbed speech, with the original under it if mixed.
    audio: AudioBuffer
    #: Input length in seconds.
    duration: float
    source_language: str | None
    target_language: str
    source_cues: tuple[Cue, ...]
    target_cues: tuple[Cue, ...]
    info: MediaInfo
    #: Seconds per phase (``decode``, ``segment``, ``load``, ``dub``, ``write``) and ``total``.
    timings: Mapping[str, float] = attrs.field(factory=dict)
    #: The project of a dub run with one (``project=``, ``stop_after=``, ``resume=``…), as
    #: saved last. After ``stop_after`` nothing is dubbed: ``output`` is ``None``, ``results``
    #: and ``spans`` are empty, and ``subtitles`` are the project's SRT files to review.
    project: DubProject | None = None

    @property
    def counts(self) -> dict[Status, int]:
        """Number of fragments per status."""
        return {s: sum(r.status is s for r in self.results) for s in Status}

    @property
    def ok(self) -> bool:
        """True when no fragment FAILED."""
        return all(r.ok for r in self.results)

    @property
    def real_time_factor(self) -> float:
        """Seconds spent dubbing (models already loaded) per second of input."""
        return self.timings.get("dub", 0.0) / self.duration if self.duration else 0.0

    @property
    def transcript(self) -> str:
        """What was heard, one subtitle cue a line (a sentence, or part of a long one)."""
        return "\n".join(c.text for c in self.source_cues)

    @property
    def translation(self) -> str:
        """What the dub says, one subtitle cue a line, aligned with :attr:`transcript`."""
        return "\n".join(c.text for c in self.target_cues)

    def __repr__(self) -> str:
        counts = self.counts
        return (
            f"DubbedFile({self.input.name} → {self.output.name if self.output else '(not written)'},"
            f" {self.duration:.1f} s, {len(self.results)} fragments: {counts[Status.SUCCESS]} success,"
            f" {counts[Status.PARTIAL]} partial, {counts[Status.FAILED]} failed)"
        )

    def _repr_html_(self) -> str:
        esc = html.escape
        counts = self.counts
        written = str(self.output) if self.output else "(not written)"
        head = (
            f"<p><b>{esc(self.input.name)}</b> → <b>{esc(written)}</b>"
            f" — {self.duration:.1f} s, {esc(self.source_language or '?')} → {esc(self.target_language)};"
            f" {counts[Status.SUCCESS]} success, {counts[Status.PARTIAL]} partial,"
            f" {counts[Status.FAILED]} failed; real-time factor {self.real_time_factor:.2f}</p>"
        )
        rows = []
        for (start, end), r in zip(self.spans, self.results, strict=True):
            heard = r.transcript.text if r.transcript is not None else ""
            said = r.translation.text if r.translation is not None else ""
            note = str(r.error) if r.error is not None else "; ".join(r.warnings)
            rows.append(
                f"<tr><td>{start:.1f}–{end:.1f} s</td><td>{esc(r.status.value.upper())}</td>"
                f"<td>{esc(heard)}</td><td>{esc(said)}</td><td>{esc(note)}</td></tr>"
            )
        table = (
            "<table><tr><th>time</th><th>status</th><th>transcript</th><th>translation</th><th>note</th></tr>"
            + "".join(rows)
            + "</table>"
        )
        files = ""
        if self.subtitles:
            files = "<p>subtitles: " + ", ".join(esc(p.name) for p in self.subtitles) + "</p>"
        return head + self.audio._repr_html_() + files + table


def _is_open(dubber: Dubber) -> bool:
    return dubber._stages is not None


def _setting(dubber: Dubber, overrides: Mapping[str, Any], name: str) -> Any:
    return overrides[name] if name in overrides else dubber._defaults[name]


async def adub_file(
    dubber: Dubber,
    input: str | os.PathLike[str] | None = None,
    output: str | os.PathLike[str] | None = None,
    *,
    segmentation: Segmentation | str = "speech",
    subtitles: Sequence[str] = SUBTITLE_FORMATS,
    original: str | None = None,
    original_level: float = DEFAULT_ORIGINAL_LEVEL,
    background: str | None = None,
    sample_rate: int | None = None,
    audio_codec: str | None = None,
    on_progress: ProgressCallback | None = None,
    project: bool | str | os.PathLike[str] | None = None,
    stop_after: str | None = None,
    resume: str | os.PathLike[str] | DubProject | None = None,
    transcript_srt: str | os.PathLike[str] | None = None,
    translation_srt: str | os.PathLike[str] | None = None,
    units: str = "sentences",
    **overrides: Any,
) -> DubbedFile:
    """Dub an audio or video file; the async form of :func:`dub_file` (same arguments)."""
    check_units(units)
    started = time.perf_counter()
    timings: dict[str, float] = {}
    output_path = Path(output) if output is not None else None
    # A project (review, resume, given texts) is read and checked before anything else.
    run_project = await anyio.to_thread.run_sync(
        functools.partial(
            ProjectRun.open,
            dubber,
            Path(input) if input is not None else None,
            output_path,
            project=project,
            resume=resume,
            stop_after=stop_after,
            transcript_srt=transcript_srt,
            translation_srt=translation_srt,
            overrides=overrides,
        )
    )
    if run_project is not None:
        input_path, output_path, overrides = (
            run_project.input_path,
            run_project.output_path,
            run_project.overrides,
        )
    elif input is None:
        raise ConfigurationError("no input file: give one, or resume= a project")
    else:
        input_path = Path(input)
    options = Segmentation(mode=segmentation) if isinstance(segmentation, str) else segmentation
    formats = tuple(dict.fromkeys(subtitles))
    unknown = set(formats) - set(SUBTITLE_FORMATS)
    if unknown:
        raise ConfigurationError(f"unknown subtitle formats {sorted(unknown)}; known: {SUBTITLE_FORMATS}")
    if not 0 <= original_level <= 1:
        raise ConfigurationError(f"original_level must lie between 0 and 1, got {original_level!r}")
    background = _background(dubber, background, original)
    if "output_sample_rate" in overrides:
        raise ConfigurationError("set the rate of the dubbed file with sample_rate=")
    target_language = _setting(dubber, overrides, "target_language")
    if not target_language:
        raise ConfigurationError("no target_language: pass it to the Dubber or to dub_file()")
    if sample_rate is not None:
        _audio.check_sample_rate(sample_rate, what="sample_rate")
    options.check_available()

    def report(phase: str, done: int = 0, total: int = 0) -> None:
        if on_progress is not None:
            on_progress(FileProgress(phase, done, total))

    def mark(phase: str, since: float) -> float:
        now = time.perf_counter()
        timings[phase] = now - since
        return now

    # Everything that can be refused is refused here, before any model loads.
    report("decode")
    t = time.perf_counter()
    info = await anyio.to_thread.run_sync(probe, input_path)
    out_plan = None
    if output_path is not None:
        out_plan = await anyio.to_thread.run_sync(
            functools.partial(
                plan_output,
                output_path,
                input_path=input_path,
                has_video=info.has_video,
                audio_codec=audio_codec,
                original=original,
            )
        )
    elif original == "track":
        raise ConfigurationError("original='track' needs an output file with a video container")
    source = await anyio.to_thread.run_sync(read_audio, input_path)
    out_rate = source.sample_rate if sample_rate is None else sample_rate
    t = mark("decode", t)

    # What the ASR hears: the input, or its voice track when the background is separated.
    heard = source
    parts: Separation | None = None
    speech: list[Piece] = []
    audio16k: FloatArray | None = None
    sentence_units: Sequence[Unit] | None = None

    async def segment() -> None:
        nonlocal speech, audio16k, t
        report("segment")
        if run_project is not None:  # the project's segments, the transcript's cues, or the cut
            speech, audio16k = await anyio.to_thread.run_sync(run_project.speech_pieces, heard, options)
        else:
            pieces, audio16k = await anyio.to_thread.run_sync(plan, heard.samples, heard.sample_rate, options)
            speech = [p for p in pieces if p.speech]
        t = mark("segment", t)

    async def work() -> list[DubResult] | None:
        nonlocal heard, parts, t, speech, sentence_units
        if background == "separate":  # the separator is a model: it runs once the Dubber is open
            report("separate")
            parts = await dubber.separate(AudioBuffer(source.samples, source.sample_rate))
            heard = SourceAudio(source.info, parts.voice.samples, source.sample_rate)
            t = mark("separate", t)
            await segment()
        assert audio16k is not None
        rate = heard.sample_rate
        if run_project is not None:
            if dubber.diarizer is not None and speech and run_project.needs_speakers():
                report("diarize")
                # A project's segments the user brought (cues, an older project) are labelled, not cut.
                speech, labels, cast = await _who_speaks(
                    dubber, overrides, speech, audio16k, rate, input_path.name, cut=run_project.may_cut()
                )
                run_project.set_speakers(speech, labels, cast, rate)
                t = mark("diarize", t)
            made = await run_project.run(dubber, speech, heard, audio16k, out_rate, report, units=units)
            sentence_units = run_project.cue_units()
            return made
        # Who speaks each speech piece, when the Dubber has a diarizer; each gets a voice.
        speakers: list[str | None] = []
        voices = overrides
        if dubber.diarizer is not None and speech:
            report("diarize")
            speech, speakers, cast = await _who_speaks(
                dubber, overrides, speech, audio16k, rate, input_path.name, cut=True
            )
            voices = {**overrides, "voices": cast}
            t = mark("diarize", t)
        made, plan = await _dub(
            dubber, input_path, speech, heard, audio16k, out_rate, voices, report, speakers, units=units
        )
        sentence_units = plan.units if plan is not None else None
        return made

    if background != "separate":
        await segment()
    if not _is_open(dubber):
        report("load")
        async with dubber:
            t = mark("load", t)
            results = await work()
            t = mark("dub", t)
    else:
        timings["load"] = 0.0
        results = await work()
        t = mark("dub", t)

    if results is None:  # stopped after a phase: the project and its subtitles are the outcome
        assert run_project is not None and run_project.project is not None
        timings["total"] = time.perf_counter() - started
        return _stopped(input_path, source, run_project.project, timings)

    report("write")
    track = _assemble(heard, speech, results, out_rate, original, original_level)
    track = await anyio.to_thread.run_sync(
        _soundtrack, track, source, speech, results, out_rate, background, parts.background if parts else None
    )
    source_language = _setting(dubber, overrides, "source_language") or main_language(
        (r.transcript.language if r.transcript else None, p.end - p.start)
        for r, p in zip(results, speech, strict=True)
    )
    source_cues, target_cues = file_cues(speech, source.sample_rate, results, sentence_units)
    written: list[Path] = []
    if output_path is not None and out_plan is not None:
        written = await anyio.to_thread.run_sync(
            functools.partial(
                _write,
                input_path,
                out_plan,
                track,
                out_rate,
                formats,
                source_language,
                target_language,
                source_cues,
                target_cues,
                keep_original_track=original == "track",
            )
        )
    mark("write", t)
    timings["total"] = time.perf_counter() - started
    sr = source.sample_rate
    return DubbedFile(
        input=input_path,
        output=output_path,
        subtitles=tuple(written),
        results=tuple(results),
        spans=tuple((p.start / sr, p.end / sr) for p in speech),
        audio=AudioBuffer(track, out_rate),
        duration=source.duration,
        source_language=source_language,
        target_language=target_language,
        source_cues=tuple(source_cues),
        target_cues=tuple(target_cues),
        info=source.info,
        timings=timings,
        project=run_project.project if run_project is not None else None,
    )


def _stopped(
    input_path: Path, source: SourceAudio, project: DubProject, timings: dict[str, float]
) -> DubbedFile:
    """What a dub that stopped after ``transcribe`` or ``translate`` made: texts, no audio."""
    source_cues = [Cue(s.start, s.end, s.transcript) for s in project.segments if s.transcript]
    target_cues = [Cue(s.start, s.end, s.translation) for s in project.segments if s.translation]
    return DubbedFile(
        input=input_path,
        output=None,
        subtitles=tuple(project.folder / name for name in project.subtitles),
        results=(),
        spans=(),
        audio=AudioBuffer(np.zeros(0, dtype=np.float32), source.sample_rate),
        duration=source.duration,
        source_language=project.source_language,
        target_language=project.target_language,
        source_cues=tuple(source_cues),
        target_cues=tuple(target_cues),
        info=source.info,
        timings=timings,
        project=project,
    )


async def _dub(
    dubber: Dubber,
    input_path: Path,
    speech: list[Piece],
    source: SourceAudio,
    audio16k: FloatArray,
    out_rate: int,
    overrides: Mapping[str, Any],
    report: Callable[[str, int, int], None],
    speakers: Sequence[str | None] = (),
    *,
    units: str = "sentences",
) -> tuple[list[DubResult], SentencePlan | None]:
    rate = source.sample_rate
    stream_id = f"file:{input_path.name}"

    # Whole sentences: every piece heard first, each sentence translated once (_translate.py);
    # the fragments then carry their texts and the stream only speaks them.
    plan: SentencePlan | None = None
    if units == "sentences" and speech:
        spans = []
        for piece in speech:
            a = round(piece.start * ANALYSIS_RATE / rate)
            spans.append((a, max(a + 1, round(piece.end * ANALYSIS_RATE / rate))))
        plan = await plan_sentences(
            dubber,
            audio16k,
            spans,
            speakers=speakers,
            source_language=_setting(dubber, overrides, "source_language"),
            target_language=_setting(dubber, overrides, "target_language"),
            timeout=float(_setting(dubber, overrides, "fragment_timeout")),
            stream_id=stream_id,
            report=report,
        )

    # Each fragment takes along up to max_borrow of the pause after it, marked as its tail:
    # speech that runs long borrows from it before it is sped up (docs/duration-matching.md).
    borrow = round(dubber._duration.policy.max_borrow * rate)

    def fragments() -> Any:
        for n, piece in enumerate(speech):
            following = speech[n + 1].start if n + 1 < len(speech) else source.samples.size
            tail = max(0, min(following - piece.end, borrow))
            a = round(piece.start * ANALYSIS_RATE / rate)
            b = max(a + 1, round((piece.end + tail) * ANALYSIS_RATE / rate))
            metadata: dict[str, Any] = {"start": piece.start / rate, "end": piece.end / rate}
            if tail:
                metadata[TAIL_KEY] = tail / rate
            transcript, translation = plan.given(n) if plan is not None else (None, None)
            if translation:  # the piece's share of its sentences: shortened if it will not fit
                metadata[SHORTENABLE_KEY] = True
            yield Fragment(
                n,
                audio16k[a:b],
                ANALYSIS_RATE,
                stream_id=stream_id,
                timestamp_ms=round(piece.start * 1000 / rate),
                metadata=metadata,
                speaker=speakers[n] if n < len(speakers) else None,
                transcript=transcript,
                translation=translation,
            )

    results: list[DubResult] = []
    report("dub", 0, len(speech))
    async with dubber.dub(fragments(), output_sample_rate=out_rate, **overrides) as stream:
        async for result in stream:
            if plan is not None and plan.silent_share(result.sequence_number):
                note = "its sentence's translation has fewer words than the pieces it spans: silent here"
                result = attrs.evolve(result, warnings=(*result.warnings, note))
            results.append(result)
            report("dub", len(results), len(speech))
    if len(results) != len(speech):  # the Dubber promises one result per fragment
        raise StsdubError(f"expected {len(speech)} results, got {len(results)}")
    return results, plan


#: A speech piece is cut at a speaker change only where both sides keep at least this many
#: seconds: a diarizer places a change to within about half its window step (0.4 s for
#: ``resemblyzer``), so a shorter sliver at a piece's edge is far more often the end of the
#: previous speaker's line, misplaced, than a turn of its own.
_MIN_TURN_PIECE = 1.0


def _split_at_turns(
    speech: list[Piece], diarization: Diarization, rate: int
) -> tuple[list[Piece], list[str | None]]:
    """Speech pieces cut wherever the speaker changes inside one, and the speaker of each
    (the one who speaks longest in it).

    A piece nobody's turn overlaps (the diarizer heard no speech there) takes the speaker of
    the nearest turn, so that it still speaks with a speaker's voice.
    """
    pieces: list[Piece] = []
    speakers: list[str | None] = []
    shortest = round(_MIN_TURN_PIECE * rate)
    for piece in speech:
        cuts = [piece.start]
        for at in diarization.changes(piece.start / rate, piece.end / rate):
            sample = round(at * rate)
            if sample - cuts[-1] >= shortest and piece.end - sample >= shortest:
                cuts.append(sample)
        for a, b in zip(cuts, [*cuts[1:], piece.end], strict=True):
            pieces.append(attrs.evolve(piece, start=a, end=b))
            speakers.append(
                diarization.speaker_between(a / rate, b / rate) or _nearest(diarization, a / rate)
            )
    return pieces, speakers


def _nearest(diarization: Diarization, seconds: float) -> str | None:
    if not diarization.turns:
        return None
    return min(diarization.turns, key=lambda t: max(t[0] - seconds, seconds - t[1], 0.0))[2]


async def _who_speaks(
    dubber: Dubber,
    overrides: Mapping[str, Any],
    speech: list[Piece],
    audio16k: FloatArray,
    rate: int,
    name: str,
    *,
    cut: bool,
) -> tuple[list[Piece], list[str | None], dict[str, str]]:
    """Diarize the file once: the speech pieces (cut at speaker changes when ``cut``), the
    speaker of each, and each speaker's voice."""
    diarization = await dubber.diarize(AudioBuffer(audio16k, ANALYSIS_RATE), stream_id=name)
    if cut:
        speech, speakers = _split_at_turns(speech, diarization, rate)
    else:
        speakers = [
            diarization.speaker_between(p.start / rate, p.end / rate) or _nearest(diarization, p.start / rate)
            for p in speech
        ]
    cast = await anyio.to_thread.run_sync(_cast_voices, dubber, overrides, speech, speakers, audio16k, rate)
    return speech, speakers, cast


def _cast_voices(
    dubber: Dubber,
    overrides: Mapping[str, Any],
    speech: list[Piece],
    speakers: list[str | None],
    audio16k: FloatArray,
    rate: int,
) -> dict[str, str]:
    """The voice of every speaker of a file: the user's, else one cast by the speaker's pitch.

    The pitch is the median F0 of all of a speaker's speech in the file (not of their first
    line), so a speaker's voice is chosen once, from the most evidence, for the whole file.
    """
    chosen = _casting.voice_map(_setting(dubber, overrides, "voices")) or {}
    voice = _setting(dubber, overrides, "voice")
    lower, higher = _casting.speaker_voices(
        dubber.stages.get("synthesizer"), _setting(dubber, overrides, "target_language"), voice
    )
    cast = _casting.VoiceCast(lower, higher, chosen, voice)
    for speaker in dict.fromkeys(s for s in speakers if s is not None):
        own = [
            audio16k[round(p.start * ANALYSIS_RATE / rate) : round(p.end * ANALYSIS_RATE / rate)]
            for p, s in zip(speech, speakers, strict=True)
            if s == speaker
        ]
        cast.voice_for(speaker, _casting.median_f0(np.concatenate(own), ANALYSIS_RATE))
    return {s: v for s, v in cast.voices.items() if v is not None}


def _background(dubber: Dubber, background: str | None, original: str | None) -> str:
    """The soundtrack mode: as asked, else ``separate`` with a separator, else ``duck``."""
    if background is None:
        if original == "mix":  # a voice-over: the original stays under the dub as it is
            return "none"
        return "separate" if dubber._choices.get("separator") is not None else "duck"
    if background not in BACKGROUND_MODES:
        raise ConfigurationError(f"background must be one of {BACKGROUND_MODES}, got {background!r}")
    if background != "none" and original == "mix":
        raise ConfigurationError(
            f"background={background!r} and original='mix' both put the original under the dub;"
            " choose one (background='none' for a plain mix)"
        )
    if background == "separate" and dubber._choices.get("separator") is None:
        raise ConfigurationError(
            "background='separate' needs a separator: Dubber(separator='demucs')"
            " (pip install 'stsdub[separate]'), or background='duck' without a model"
        )
    return background


def _soundtrack(
    track: FloatArray,
    source: SourceAudio,
    speech: list[Piece],
    results: list[DubResult],
    out_rate: int,
    background: str,
    separated: AudioBuffer | None,
) -> FloatArray:
    """The dubbed track with the input's music and effects under it (docs/stages/separators.md)."""
    rate = source.sample_rate
    if background == "separate":
        assert separated is not None
        under = _audio.fit_length(_audio.resample(separated.samples, rate, out_rate), track.size)
        return mix_background(track, under)
    if background == "duck":
        original = _audio.fit_length(_audio.resample(source.samples, rate, out_rate), track.size)
        for piece, result in zip(speech, results, strict=True):
            if result.audio.kind == "original":  # already there at full level: not twice
                original[round(piece.start * out_rate / rate) : round(piece.end * out_rate / rate)] = 0.0
        spans = [(p.start / rate, p.end / rate) for p in speech]
        return mix_ducked(track, original, out_rate, speech=spans)
    return track


def _assemble(
    source: SourceAudio,
    speech: list[Piece],
    results: list[DubResult],
    out_rate: int,
    original: str | None,
    level: float,
) -> FloatArray:
    """The dubbed timeline, exactly as long as the input; pauses stay silent."""
    rate = source.sample_rate

    def at(i: int) -> int:
        return round(i * out_rate / rate)

    track = np.zeros(at(source.samples.size), dtype=np.float32)
    for piece, result in zip(speech, results, strict=True):
        # A fragment may reach into the pause after it (its tail, see _dub).
        end = min(piece.end + round(float(result.metadata.get(TAIL_KEY, 0.0)) * rate), source.samples.size)
        a, b = at(piece.start), at(end)
        if result.audio.kind == "original":
            # The fallback at full quality, not the 16 kHz copy the pipeline saw.
            audio = _audio.resample(source.samples[piece.start : end], rate, out_rate)
            if original == "mix":
                audio = audio * np.float32(1 - level)  # the mix below adds the rest
        else:
            audio = result.audio.samples
        track[a:b] = _audio.fit_length(audio, b - a)
    if original == "mix" and level > 0:
        under = _audio.fit_length(_audio.resample(source.samples, rate, out_rate), track.size)
        track = np.clip(track + np.float32(level) * under, -1.0, 1.0).astype(np.float32)
    return track


def _write(
    input_path: Path,
    out_plan: OutputPlan,
    track: FloatArray,
    rate: int,
    formats: tuple[str, ...],
    source_language: str | None,
    target_language: str,
    source_cues: list[Cue],
    target_cues: list[Cue],
    *,
    keep_original_track: bool,
) -> list[Path]:
    output = out_plan.path
    sets = subtitle_sets(source_cues, target_cues, source_language, target_language)
    subtitle_paths = [output.with_name(f"{output.stem}.{lang}.{fmt}") for lang in sets for fmt in formats]
    with staged() as staging:
        tmp = staging.path_for(output)
        if out_plan.kind == "audio":
            write_audio(tmp, track, rate, out_plan.container)
        else:
            write_video(
                input_path,
                tmp,
                out_plan,
                track,
                rate,
                keep_original_track=keep_original_track,
                language=target_language,
            )
        paths = iter(subtitle_paths)
        for cues in sets.values():
            for fmt in formats:
                write_text(staging.path_for(next(paths)), render(cues, fmt))
    return subtitle_paths


def dub_file(
    dubber: Dubber,
    input: str | os.PathLike[str] | None = None,
    output: str | os.PathLike[str] | None = None,
    **options: Any,
) -> DubbedFile:
    """Dub an audio or video file and write the result; blocking, notebook-safe.

    The input may be any audio or video file FFmpeg reads. It is cut into fragments (at the
    pauses between speech by default), dubbed, and put back on the input's timeline, so the
    output is exactly as long as the input. A video output (``.mp4``, ``.mkv``, ``.mov``,
    ``.webm``) keeps the input's picture untouched and gets the dubbed track; an audio output
    is WAV or FLAC. Subtitles of the transcript and the translation are written next to the
    output as ``<stem>.<lang>.srt`` / ``.vtt``. Files appear only when everything is written.

    Inside ``with dubber:`` the loaded models are reused; otherwise they are loaded for this
    call and closed after it. Under ``async with dubber:`` use ``await adub_file(...)``.

    Args:
        dubber: The Dubber to dub with; its languages, voice and stages apply.
        input: Audio or video file.
        output: Where to write; ``None`` dubs in memory only (see ``DubbedFile.audio``).
        segmentation: ``"speech"`` (cut at pauses; the default), ``"fixed"`` (6 s windows),
            or a :class:`Segmentation` with custom lengths.
        subtitles: Subtitle formats to write (``"srt"``, ``"vtt"``); ``()`` for none.
        original: ``None``; ``"track"``: keep the original audio as a second track (video
            outputs); ``"mix"``: mix it under the dub at ``original_level`` (keeps music and
            effects, and the original voices, softly).
        original_level: Gain of the original under the dub, 0-1.
        background: How the input's music and effects stay under the dub: ``"separate"``
            (the Dubber's separator splits voice from background; the background goes under
            the dub at its own level, and the ASR hears the voice alone), ``"duck"`` (the
            original at full level where nobody speaks, about 20 dB lower wherever the
            original or the dub speaks) or ``"none"`` (the dub alone). Default:
            ``"separate"`` when the Dubber has a separator, else ``"duck"``; ``"none"`` with
            ``original="mix"``.
        sample_rate: Rate of the dubbed audio; default the input's.
        audio_codec: ``"aac"`` or ``"opus"`` for video outputs; default from the container.
        on_progress: Called with a :class:`FileProgress` as the work advances.
        project: Keep a project (see ``docs/projects.md``): ``True`` for ``<output
            stem>.stsdub/`` beside the output, or a folder. It holds the segments, their texts
            and their dubbed audio, so the dub can be reviewed and resumed.
        stop_after: ``"transcribe"`` or ``"translate"``: save the project and its subtitles
            (``transcript.srt``, ``translation.srt``) after that phase and stop, for review.
            Implies ``project=True``.
        resume: A project folder, its ``project.json``, or a :class:`DubProject` value (saved
            first): continue it with its edits. ``input`` and ``output`` default to the
            project's; only segments whose text, voice or timing changed are synthesized again.
        transcript_srt: An SRT file whose cues are the segments and their transcript (the ASR
            is not called). Implies ``project=True``.
        translation_srt: An SRT file with the translation (the translator is not called); its
            cues are matched to the segments by time. Implies ``project=True``.
        units: What is translated at a time. ``"sentences"`` (the default): every fragment is
            transcribed first, the words are joined into sentences across the pauses, and
            each sentence is translated once, with the speaker's preceding sentences as
            context (translators with ``supports_context``), then split back over its
            fragments; subtitles show one sentence per cue. ``"fragments"``: each fragment
            alone, as a live stream does.
        **overrides: Stream settings for this file: ``source_language``, ``target_language``,
            ``voice``, ``fragment_timeout``, ``fallback``, ``max_inflight``…

    Returns:
        A :class:`DubbedFile` with every fragment's result, the audio and the files written.

    Raises:
        MediaInputError: The input is missing, corrupt, truncated, empty or has no audio.
        MediaOutputError: The output cannot be written or does not fit the input.
        ProjectError: A project or subtitle file that cannot be used: from another input, of a
            newer format, with cues that do not parse or overlap, or edits that leave a segment
            empty.
        StsdubError: Any other problem (configuration, models that fail to load).
    """
    call = functools.partial(adub_file, dubber, input, output, **options)
    portal = dubber._portal
    if portal is not None:
        return portal.call(call)
    if _is_open(dubber):
        raise StsdubError(
            "dub_file() on a Dubber opened with `async with` would block its event loop;"
            " use `await stsdub.adub_file(dubber, ...)` there"
        )
    with anyio.from_thread.start_blocking_portal() as portal:
        return portal.call(call)
