"""A project being dubbed: transcribe, translate, synthesize what changed, save as it goes.

:class:`ProjectRun` drives one file's project through its phases (see :mod:`._project` for
the file itself): it reuses what a previous run left where the inputs are unchanged, keeps
the project file up to date while it works, and stops after a phase when asked.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import attrs
import numpy as np

from .._core import _audio
from .._core._languages import same_language
from .._core._values import (
    ASRRequest,
    AudioAsset,
    AudioBuffer,
    DubResult,
    Fragment,
    Segment,
    Status,
    Transcript,
    TranscriptAsset,
    Translation,
    TranslationAsset,
    TranslationRequest,
)
from .._media import ANALYSIS_RATE, Cue, Piece, plan, probe
from .._media._subtitles import to_srt
from .._pipeline._sentences import Sentence, sentences, tokens_of
from ..errors import ConfigurationError, ProjectError, StageError
from ._calls import call_stage as _call
from ._project import (
    _PHASES,
    _SAVE_INTERVAL,
    STOP_AFTER,
    TRANSCRIPT_SRT,
    TRANSLATION_SRT,
    DubProject,
    InputFingerprint,
    ProjectSegment,
    _atomic_write,
    _sha256_file,
    _sha256_text,
    _stage_name,
    _stored_path,
    _words,
    assign_cues,
    assign_grouped,
    audio_key,
    check_texts,
    grouped_cues,
    project_folder,
    read_cached_audio,
    read_srt,
    sentence_groups,
    write_cached_audio,
)
from ._transcribe import main_language, settle_languages
from ._translate import Unit, piece_translations, translate_units

if TYPE_CHECKING:
    from .._core._audio import FloatArray
    from .._dubber import Dubber
    from .._media import Segmentation, SourceAudio


__all__ = ["ProjectRun"]


@attrs.define(eq=False)
class ProjectRun:
    """A file dub in project mode: opened before any model loads, driven by ``adub_file``."""

    folder: Path
    input_path: Path
    output_path: Path | None
    stop_after: str | None
    fingerprint: InputFingerprint
    #: The project resumed (edits applied), or ``None`` for a new one.
    resumed: DubProject | None
    transcript_cues: list[Cue] | None
    translation_cues: list[Cue] | None
    translation_name: str
    overrides: dict[str, Any]
    segments: list[ProjectSegment] = attrs.field(factory=list)
    project: DubProject | None = None
    #: The Dubber's ``max_fragment_seconds``: longer transcript cues are refused up front.
    max_seconds: float = float("inf")
    _phase: str = "segment"
    _saved_at: float = 0.0
    synthesized: int = 0
    #: The sentences this run translated (for the subtitles); ``None`` when it translated none.
    units: list[Unit] | None = None

    # -- opening ----------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        dubber: Dubber,
        input: Path | None,
        output: Path | None,
        *,
        project: bool | str | os.PathLike[str] | None,
        resume: str | os.PathLike[str] | DubProject | None,
        stop_after: str | None,
        transcript_srt: str | os.PathLike[str] | None,
        translation_srt: str | os.PathLike[str] | None,
        overrides: Mapping[str, Any],
    ) -> ProjectRun | None:
        """Check the project options and read what they name; ``None`` when none is set.

        Blocking (it hashes the input); run it in a worker thread.
        """
        if stop_after is not None and stop_after not in STOP_AFTER:
            raise ConfigurationError(f"stop_after must be one of {STOP_AFTER}, got {stop_after!r}")
        if (
            project is None
            and resume is None
            and stop_after is None
            and transcript_srt is None
            and translation_srt is None
        ):
            return None
        overrides = dict(overrides)
        resumed: DubProject | None = None
        if resume is not None:
            if transcript_srt is not None:
                raise ConfigurationError(
                    "transcript_srt starts a new project; it cannot be given with resume"
                )
            if isinstance(resume, DubProject):
                resumed = resume
                resumed.save()  # the edits made in Python are what the run resumes from
            else:
                resumed = DubProject.load(resume)
            folder = resumed.folder
            input_path = input if input is not None else resumed.input_path
            if output is None:
                output = resumed.output_path
            target = overrides.get("target_language", dubber._defaults["target_language"])
            if "target_language" in overrides and not same_language(target, resumed.target_language):
                raise ProjectError(
                    f"{resumed.path} dubs into {resumed.target_language}; it cannot be resumed into {target}"
                )
            overrides["target_language"] = resumed.target_language
            if resumed.source_language is not None:
                overrides.setdefault("source_language", resumed.source_language)
        else:
            if input is None:
                raise ConfigurationError("no input file: give one, or resume a project")
            input_path = input
            if isinstance(project, (str, os.PathLike)):
                folder = Path(project)
            elif output is not None:
                folder = project_folder(output)
            else:
                raise ConfigurationError(
                    "a project lives beside the output: give an output file (or project=FOLDER)"
                )
        if not input_path.is_file():
            probe(input_path)  # says what is wrong with it, as a plain dub would
        fingerprint = InputFingerprint.of(input_path)
        if resumed is not None and not resumed.input.matches(fingerprint):
            raise ProjectError(
                f"{resumed.path} was made from another input ({resumed.input.path}, {resumed.input.size}"
                f" bytes) than {input_path} ({fingerprint.size} bytes): the fingerprints differ"
            )
        transcript_cues = read_srt(Path(transcript_srt)) if transcript_srt is not None else None
        translation_cues = read_srt(Path(translation_srt)) if translation_srt is not None else None
        run = cls(
            folder=folder,
            input_path=input_path,
            output_path=output,
            stop_after=stop_after,
            fingerprint=fingerprint,
            resumed=resumed,
            transcript_cues=transcript_cues,
            translation_cues=translation_cues,
            translation_name=str(translation_srt),
            overrides=overrides,
            max_seconds=dubber.max_fragment_seconds,
        )
        if resumed is not None:
            run.segments = list(resumed.segments)
            run._phase = resumed.phase
            run._apply_edited_subtitles(resumed)
        return run

    def _apply_edited_subtitles(self, project: DubProject) -> None:
        """Read back the SRT files beside the project that were edited since they were written."""
        edited: dict[str, dict[int, str]] = {}
        for name in (TRANSCRIPT_SRT, TRANSLATION_SRT):
            path = self.folder / name
            if not path.is_file() or project.subtitles.get(name) == _sha256_file(path):
                continue
            edited[name] = assign_grouped(read_srt(path), self.segments, _FIELDS[name], str(path))
        for name, field in ((TRANSCRIPT_SRT, "transcript"), (TRANSLATION_SRT, "translation")):
            if name not in edited:
                continue
            texts = edited[name]
            for n, s in enumerate(self.segments):
                before = getattr(s, field) or ""
                after = texts.get(s.index, "")
                if after == _words(before):
                    continue
                if before.strip() and not after:
                    raise ProjectError(
                        f"{self.folder / name}: segment {s.index} ({s.start:.2f}-{s.end:.2f} s) has no"
                        f" text any more (it was {before[:40]!r}); edits may not leave a segment empty"
                    )
                if field == "transcript":
                    # A new transcript needs a new translation (of its whole sentence), unless
                    # that was edited too.
                    given = edited.get(TRANSLATION_SRT, {}).get(s.index)
                    for m, other in enumerate(self.segments):
                        if given is None and s.sentence is not None and other.sentence == s.sentence:
                            self.segments[m] = attrs.evolve(other, translation=None, status="transcribed")
                    self.segments[n] = attrs.evolve(
                        self.segments[n], transcript=after, translation=given, status="transcribed"
                    )
                else:
                    self.segments[n] = attrs.evolve(s, translation=after, status="translated")

    # -- segments ---------------------------------------------------------------------------

    def speech_pieces(self, source: SourceAudio, options: Segmentation) -> tuple[list[Piece], FloatArray]:
        """The pieces to dub: the project's segments, the transcript's cues, or the VAD's cut."""
        rate = source.sample_rate
        if self.segments:
            audio16k = _audio.resample(source.samples, rate, ANALYSIS_RATE)
            return [self._piece(s.start, s.end, rate, source) for s in self.segments], audio16k
        if self.transcript_cues is not None:
            audio16k = _audio.resample(source.samples, rate, ANALYSIS_RATE)
            pieces: list[Piece] = []
            for cue in self.transcript_cues:
                if cue.start >= source.duration:
                    raise ProjectError(
                        f"the transcript cue at {cue.start:.3f} s starts after the input ends"
                        f" ({source.duration:.3f} s)"
                    )
                if cue.end - cue.start > self.max_seconds:
                    raise ProjectError(
                        f"the transcript cue at {cue.start:.3f} s lasts {cue.end - cue.start:.1f} s; the"
                        f" Dubber takes at most {self.max_seconds:g} s (max_fragment_seconds)"
                    )
                pieces.append(self._piece(cue.start, cue.end, rate, source))
            self.segments = [
                ProjectSegment(
                    n, _ms(p.start / rate), _ms(p.end / rate), transcript=_words(c.text), status="transcribed"
                )
                for n, (p, c) in enumerate(zip(pieces, self.transcript_cues, strict=True))
            ]
            return pieces, audio16k
        pieces, audio16k = plan(source.samples, rate, options)
        speech = [p for p in pieces if p.speech]
        self.segments = [
            ProjectSegment(n, _ms(p.start / rate), _ms(p.end / rate)) for n, p in enumerate(speech)
        ]
        return speech, audio16k

    def needs_speakers(self) -> bool:
        """Whether the segments are still to be labelled with speakers (none has one yet)."""
        return not any(s.speaker for s in self.segments)

    def may_cut(self) -> bool:
        """Whether speaker changes may cut segments: only those of a new project's own cut."""
        return (
            self.resumed is None
            and self.transcript_cues is None
            and all(s.transcript is None for s in self.segments)
        )

    def set_speakers(
        self, speech: list[Piece], speakers: Sequence[str | None], voices: Mapping[str, str], rate: int
    ) -> None:
        """Label the segments with their speakers and those speakers' voices.

        ``speech`` is the segments' pieces, cut at speaker changes where :meth:`may_cut`
        allowed it (the segments are then made again from them); a voice the user set on a
        segment is kept.
        """
        if len(speech) != len(self.segments):
            self.segments = [
                ProjectSegment(n, _ms(p.start / rate), _ms(p.end / rate)) for n, p in enumerate(speech)
            ]
        self.segments = [
            attrs.evolve(
                s,
                speaker=speaker,
                voice=s.voice if s.voice is not None else (voices.get(speaker) if speaker else None),
            )
            for s, speaker in zip(self.segments, speakers, strict=True)
        ]

    @staticmethod
    def _piece(start: float, end: float, rate: int, source: SourceAudio) -> Piece:
        a = min(source.samples.size, max(0, round(start * rate)))
        b = min(source.samples.size, round(end * rate))
        return Piece(a, max(a + 1, b))

    # -- saving -----------------------------------------------------------------------------

    def snapshot(self, dubber: Dubber) -> DubProject:
        known = self.project or self.resumed  # the subtitle hashes saved last
        options = {
            "asr": _stage_name(dubber._choices["asr"]),
            "translator": _stage_name(dubber._choices["translator"]),
            "synthesizer": _stage_name(dubber._choices["synthesizer"]),
            "asr_options": dict(dubber._options["asr"]),
            "translator_options": dict(dubber._options["translator"]),
            "synthesizer_options": dict(dubber._options["synthesizer"]),
            "voice": self._setting(dubber, "voice"),
        }
        return DubProject(
            folder=self.folder,
            input=attrs.evolve(self.fingerprint, path=_stored_path(self.input_path, self.folder)),
            output=None if self.output_path is None else _stored_path(self.output_path, self.folder),
            source_language=self._source_language(dubber),
            target_language=str(self._setting(dubber, "target_language")),
            options=options,
            segments=tuple(self.segments),
            phase=self._phase,
            subtitles=dict(known.subtitles) if known is not None else {},
        )

    def _setting(self, dubber: Dubber, name: str) -> Any:
        return self.overrides[name] if name in self.overrides else dubber._defaults[name]

    def _source_language(self, dubber: Dubber) -> str | None:
        found = self._setting(dubber, "source_language")
        if found is None:
            # Detected: the language most of the speech is in (each segment keeps its own).
            found = main_language((s.language if s.transcript else None, s.duration) for s in self.segments)
        if found is None and self.project is not None:
            found = self.project.source_language
        return found  # type: ignore[no-any-return]

    def save(self, dubber: Dubber, *, subtitles: bool = False) -> DubProject:
        project = self.snapshot(dubber)
        if self.project is not None and project.source_language is None:
            project = attrs.evolve(project, source_language=self.project.source_language)
        if subtitles:
            written = dict(project.subtitles)
            self.folder.mkdir(parents=True, exist_ok=True)
            for name, field in _FIELDS.items():
                cues = grouped_cues(self.segments, field)
                if field == "translation" and self._phase not in ("translate", "dub"):
                    continue
                text = to_srt(cues)
                _atomic_write(self.folder / name, text)
                written[name] = _sha256_text(text)
            project = attrs.evolve(project, subtitles=written)
        project.save()
        self.project = project
        self._saved_at = time.monotonic()
        return project

    async def _save_soon(self, dubber: Dubber) -> None:
        if time.monotonic() - self._saved_at >= _SAVE_INTERVAL:
            await anyio.to_thread.run_sync(lambda: self.save(dubber))

    # -- phases -----------------------------------------------------------------------------

    async def run(
        self,
        dubber: Dubber,
        speech: list[Piece],
        source: SourceAudio,
        audio16k: FloatArray,
        out_rate: int,
        report: Callable[[str, int, int], None],
        *,
        units: str = "sentences",
    ) -> list[DubResult] | None:
        """Run the phases still to do; the results, or ``None`` when it stopped after a phase.

        ``units="sentences"`` translates the segments still to translate sentence by sentence
        (joined across consecutive segments), ``"fragments"`` each segment alone.
        """
        if self.translation_cues is not None:
            texts = assign_cues(self.translation_cues, self.segments, self.translation_name)
            self.segments = [attrs.evolve(s, translation=texts.get(s.index, "")) for s in self.segments]
        await anyio.to_thread.run_sync(lambda: self.save(dubber))
        await self._transcribe(dubber, audio16k, report)
        self._phase = _later(self._phase, "transcribe")
        if self.stop_after == "transcribe":
            await anyio.to_thread.run_sync(lambda: self.save(dubber, subtitles=True))
            return None
        check_texts(self.segments)
        if units == "sentences":
            await self._translate_sentences(dubber, report)
        await self._translate(dubber, report)
        self._phase = _later(self._phase, "translate")
        check_texts(self.segments)
        if self.stop_after == "translate":
            await anyio.to_thread.run_sync(lambda: self.save(dubber, subtitles=True))
            return None
        await anyio.to_thread.run_sync(lambda: self.save(dubber, subtitles=True))
        results = await self._dub(dubber, speech, source, audio16k, out_rate, report)
        self._phase = "dub"
        await anyio.to_thread.run_sync(lambda: self.save(dubber))
        return results

    def _stream_id(self) -> str:
        return f"file:{self.input_path.name}"

    async def _transcribe(
        self, dubber: Dubber, audio16k: FloatArray, report: Callable[[str, int, int], None]
    ) -> None:
        stages, _ = dubber._require_open()
        todo = [s for s in self.segments if s.transcript is None]
        # None: each piece's language is detected (and kept on the segment), so a recording
        # that changes language is translated piece by piece from what was spoken.
        language = self._setting(dubber, "source_language")
        previous: str | None = None
        heard: list[tuple[ProjectSegment, ASRRequest, Transcript | StageError]] = []
        report("transcribe", 0, len(todo))
        for done, s in enumerate(todo, 1):
            a = round(s.start * ANALYSIS_RATE)
            b = max(a + 1, round(s.end * ANALYSIS_RATE))
            request = ASRRequest(
                audio=AudioBuffer(audio16k[a:b], ANALYSIS_RATE),
                language=language,
                previous_transcript=previous,
                stream_id=self._stream_id(),
                sequence_number=s.index,
                fragment_id=f"segment-{s.index}",
            )
            outcome = await _call(dubber, stages.asr, request, "asr", Transcript, self._timeout(dubber))
            heard.append((s, request, outcome))
            self._heard(s, outcome)
            if isinstance(outcome, Transcript) and outcome.text.strip():
                previous = outcome.text.strip()
            report("transcribe", done, len(todo))
            await self._save_soon(dubber)
        if language is None and heard:
            # Pieces detected, unsure, in another language than the recording's: heard again.
            outcomes = [o for _, _, o in heard]
            await settle_languages(dubber, [r for _, r, _ in heard], outcomes, self._timeout(dubber))
            for (s, _, before), after in zip(heard, outcomes, strict=True):
                if after is not before:
                    self._heard(s, after)

    def _heard(self, s: ProjectSegment, outcome: Transcript | StageError) -> None:
        """The segment as transcribed (or failed)."""
        if isinstance(outcome, StageError):
            self.segments[s.index] = attrs.evolve(s, status="failed", error=str(outcome))
            return
        speech = None
        if outcome.segments:
            speech = (_ms(outcome.segments[0].start), _ms(outcome.segments[-1].end))
        self.segments[s.index] = attrs.evolve(
            s,
            transcript=outcome.text.strip(),
            speech=speech,
            status="transcribed",
            error=None,
            language=outcome.language,
            language_probability=outcome.language_probability,
        )

    def cue_units(self) -> list[Unit]:
        """The sentences for the output's subtitles: those this run translated, else each group
        of segments translated together earlier (one unit, its translations joined)."""
        if self.units is not None:
            return self.units
        found = []
        for group in sentence_groups(self.segments):
            if len(group) > 1 and all(s.transcript and s.translation for s in group):
                (unit,) = self._sentences(group, None, join=True)
                found.append(Unit(unit, Translation(" ".join(s.translation or "" for s in group))))
        return found

    def _sentences(
        self, todo: list[ProjectSegment], language: str | None, *, join: bool = False
    ) -> list[Sentence]:
        """The sentences of the segments in ``todo``, joined only across consecutive ones.

        A segment keeps no word times, so its words are spread over where the ASR heard speech.
        """
        runs: list[list[ProjectSegment]] = []
        for s in todo:
            if runs and runs[-1][-1].index + 1 == s.index:
                runs[-1].append(s)
            else:
                runs.append([s])
        found: list[Sentence] = []
        for run in runs:
            tokens = []
            for s in run:
                assert s.transcript is not None
                words = (Segment(s.speech[0], s.speech[1], s.transcript),) if s.speech is not None else ()
                heard = Transcript(s.transcript, language, words)
                tokens += tokens_of(s.index, heard, s.start, s.duration, s.speaker)
            found += [Sentence(tuple(tokens))] if join else sentences(tokens)
        return found

    async def _translate_sentences(self, dubber: Dubber, report: Callable[[str, int, int], None]) -> None:
        """Translate the segments still to translate by whole sentences, each once.

        A segment whose sentence failed is marked failed; one the split left without words
        (a translation shorter than the segments it spans) is translated alone afterwards.
        """
        stages, _ = dubber._require_open()
        source = self._setting(dubber, "source_language")
        target = str(self._setting(dubber, "target_language"))
        todo = [s for s in self.segments if s.transcript and s.translation is None]
        if not todo or stages.translator is None or same_language(source, target):
            return
        # Each language spoken is translated from that language (sentences never span a change).
        by_language: dict[str | None, list[ProjectSegment]] = {}
        for s in todo:
            by_language.setdefault(source or s.language, []).append(s)
        units: list[Unit] = []
        for language, members in by_language.items():
            if same_language(language, target):
                for s in members:
                    assert s.transcript is not None
                    self.segments[s.index] = attrs.evolve(s, translation=s.transcript, status="translated")
                continue
            units += await translate_units(
                dubber,
                self._sentences(members, language),
                source_language=language,
                target_language=target,
                timeout=self._timeout(dubber),
                stream_id=self._stream_id(),
                report=report,
            )
        todo = [s for s in todo if self.segments[s.index].translation is None]
        self.units = units
        shares = piece_translations(units, len(self.segments))
        # Segments translated together (sentences across them) are shown and edited together:
        # each is numbered by the first segment of its chain of sentences.
        group = {s.index: s.index for s in todo}
        for unit in units:
            first = min(group[p] for p in unit.sentence.pieces)
            for p in unit.sentence.pieces:
                group[p] = first
        errors = {
            p: u.translation
            for u in units
            if isinstance(u.translation, StageError)
            for p in u.sentence.pieces
        }
        for s in todo:
            share = shares[s.index]
            if share is None and s.index in errors:
                self.segments[s.index] = attrs.evolve(s, status="failed", error=str(errors[s.index]))
            elif share:
                together = group[s.index] if sum(g == group[s.index] for g in group.values()) > 1 else None
                self.segments[s.index] = attrs.evolve(
                    s, translation=share, status="translated", error=None, sentence=together
                )
        await self._save_soon(dubber)

    async def _translate(self, dubber: Dubber, report: Callable[[str, int, int], None]) -> None:
        stages, _ = dubber._require_open()
        todo = [s for s in self.segments if s.transcript and s.translation is None]
        source = self._setting(dubber, "source_language")
        target = str(self._setting(dubber, "target_language"))
        previous: tuple[str, str] | None = None
        report("translate", 0, len(todo))
        for done, s in enumerate(todo, 1):
            assert s.transcript is not None
            spoken = source or s.language
            if same_language(spoken, target):
                outcome: Translation | StageError = Translation(s.transcript)
            elif stages.translator is None:
                outcome = StageError(
                    "UNSUPPORTED_LANGUAGE", f"no translator is configured to reach {target}", "translation"
                )
            else:
                request = TranslationRequest(
                    text=s.transcript,
                    source_language=spoken,
                    target_language=target,
                    previous_text=previous[0] if previous else None,
                    previous_translation=previous[1] if previous else None,
                    stream_id=self._stream_id(),
                    sequence_number=s.index,
                    fragment_id=f"segment-{s.index}",
                )
                outcome = await _call(
                    dubber, stages.translator, request, "translation", Translation, self._timeout(dubber)
                )
            if isinstance(outcome, StageError):
                self.segments[s.index] = attrs.evolve(s, status="failed", error=str(outcome))
            else:
                previous = (s.transcript, outcome.text)
                self.segments[s.index] = attrs.evolve(
                    s, translation=outcome.text.strip(), status="translated", error=None
                )
            report("translate", done, len(todo))
            await self._save_soon(dubber)

    def _timeout(self, dubber: Dubber) -> float:
        return float(self._setting(dubber, "fragment_timeout"))

    def _key(self, dubber: Dubber, s: ProjectSegment) -> str:
        return audio_key(
            s,
            s.translation or "",
            s.voice if s.voice is not None else self._setting(dubber, "voice"),
            str(self._setting(dubber, "target_language")),
            _stage_name(dubber._choices["synthesizer"]) or "",
            dubber._options["synthesizer"],
        )

    async def _dub(
        self,
        dubber: Dubber,
        speech: list[Piece],
        source: SourceAudio,
        audio16k: FloatArray,
        out_rate: int,
        report: Callable[[str, int, int], None],
    ) -> list[DubResult]:
        assert self.project is not None
        rate = source.sample_rate
        language = self.project.source_language
        results: dict[int, DubResult] = {}
        todo: list[ProjectSegment] = []
        for s in self.segments:
            if s.transcript == "" and not s.translation:
                results[s.index] = self._silent(s, speech[s.index], rate, out_rate, language)
                continue
            if s.transcript is not None and s.translation:
                key = self._key(dubber, s)
                cached = self.project.audio_path(key)
                samples = await anyio.to_thread.run_sync(read_cached_audio, cached, out_rate)
                if samples is not None:
                    status = Status.PARTIAL if s.status == "partial" else Status.SUCCESS
                    results[s.index] = self._cached(s, samples, out_rate, status, language)
                    if s.audio_key != key or s.status not in ("success", "partial"):
                        self.segments[s.index] = attrs.evolve(
                            s, audio_key=key, status=status.value, error=None
                        )
                    continue
            todo.append(s)
        total = len(self.segments)
        report("dub", len(results), total)
        overrides = {k: v for k, v in self.overrides.items() if k != "voice"}
        groups: dict[str | None, list[ProjectSegment]] = {}
        for s in todo:
            groups.setdefault(s.voice, []).append(s)
        for voice, group in groups.items():
            voice_override: dict[str, Any] = {"voice": voice} if voice is not None else {}
            if "voice" in self.overrides and voice is None:
                voice_override = {"voice": self.overrides["voice"]}
            if voice is not None and any(s.speaker for s in group):
                # The segment's voice is its speaker's here, whatever the stream would cast.
                chosen = dict(overrides.get("voices") or {})
                voice_override["voices"] = {**chosen, **{s.speaker: voice for s in group if s.speaker}}
            fragments = [self._fragment(s, speech[s.index], rate, audio16k, language) for s in group]
            async with dubber.dub(
                fragments, output_sample_rate=out_rate, **{**overrides, **voice_override}
            ) as stream:
                async for result in stream:
                    index = result.sequence_number
                    results[index] = result
                    await self._finished(dubber, self.segments[index], result)
                    report("dub", len(results), total)
        return [results[s.index] for s in self.segments]

    def _fragment(
        self, s: ProjectSegment, piece: Piece, rate: int, audio16k: FloatArray, language: str | None
    ) -> Fragment:
        a = round(piece.start * ANALYSIS_RATE / rate)
        b = max(a + 1, round(piece.end * ANALYSIS_RATE / rate))
        transcript = None
        if s.transcript is not None:
            segments = (Segment(s.speech[0], s.speech[1], s.transcript),) if s.speech is not None else ()
            transcript = Transcript(s.transcript, s.language or language, segments, s.language_probability)
        return Fragment(
            s.index,
            audio16k[a:b],
            ANALYSIS_RATE,
            stream_id=self._stream_id(),
            timestamp_ms=round(piece.start * 1000 / rate),
            metadata={"start": piece.start / rate, "end": piece.end / rate, "segment": s.index},
            transcript=transcript,
            translation=s.translation if s.translation is not None else None,
            speaker=s.speaker,
        )

    async def _finished(self, dubber: Dubber, s: ProjectSegment, result: DubResult) -> None:
        """Keep what a finished fragment made: its texts, and its audio in the cache."""
        changes: dict[str, Any] = {}
        if s.transcript is None and result.transcript is not None:
            changes["transcript"] = result.transcript.text.strip()
        if s.translation is None and result.translation is not None:
            changes["translation"] = result.translation.text.strip()
        s = attrs.evolve(s, **changes)
        if result.ok and result.audio.kind == "dubbed":
            key = self._key(dubber, s)
            assert self.project is not None
            path = self.project.audio_path(key)
            await anyio.to_thread.run_sync(
                write_cached_audio, path, result.audio.samples, result.audio.sample_rate
            )
            self.synthesized += 1
            s = attrs.evolve(s, audio_key=key, status=result.status.value, error=None)
        elif result.ok:
            s = attrs.evolve(s, status=result.status.value, error=None)
        else:
            s = attrs.evolve(s, status="failed", error=str(result.error))
        self.segments[s.index] = s
        await self._save_soon(dubber)

    def _assets(
        self, s: ProjectSegment, language: str | None, fid: str
    ) -> tuple[TranscriptAsset, TranslationAsset]:
        segments = (Segment(s.speech[0], s.speech[1], s.transcript or ""),) if s.speech is not None else ()
        transcript = TranscriptAsset(
            f"transcript-{fid}-{s.index}",
            (f"fragment:{fid}",),
            Transcript(s.transcript or "", s.language or language, segments, s.language_probability),
        )
        translation = TranslationAsset(
            f"translation-{fid}-{s.index}",
            (transcript.asset_id,),
            Translation(s.translation or ""),
            s.transcript or "",
            s.translation != s.transcript,
        )
        return transcript, translation

    def _cached(
        self, s: ProjectSegment, samples: FloatArray, rate: int, status: Status, language: str | None
    ) -> DubResult:
        fid = f"segment-{s.index}"
        transcript, translation = self._assets(s, language, fid)
        audio = AudioAsset(
            f"audio-{fid}-{s.index}", (translation.asset_id,), AudioBuffer(samples, rate), "dubbed"
        )
        return DubResult(
            sequence_number=s.index,
            fragment_id=fid,
            stream_id=self._stream_id(),
            status=status,
            audio=audio,
            transcript=transcript,
            translation=translation,
            metadata={"start": s.start, "end": s.end, "segment": s.index, "cached": True},
        )

    def _silent(
        self, s: ProjectSegment, piece: Piece, rate: int, out_rate: int, language: str | None
    ) -> DubResult:
        fid = f"segment-{s.index}"
        transcript, _ = self._assets(s, language, fid)
        n = round(piece.length * out_rate / rate)
        audio = AudioAsset(
            f"audio-{fid}-{s.index}",
            (transcript.asset_id,),
            AudioBuffer(np.zeros(n, np.float32), out_rate),
            "silence",
        )
        return DubResult(
            sequence_number=s.index,
            fragment_id=fid,
            stream_id=self._stream_id(),
            status=Status.SUCCESS,
            audio=audio,
            transcript=transcript,
            metadata={"start": s.start, "end": s.end, "segment": s.index},
        )


_FIELDS = {TRANSCRIPT_SRT: "transcript", TRANSLATION_SRT: "translation"}


def _ms(seconds: float) -> float:
    # Times are kept to the millisecond, as subtitles have them, so cues match segments exactly.
    return round(seconds, 3)


def _later(phase: str, other: str) -> str:
    return max(phase, other, key=_PHASES.index)
