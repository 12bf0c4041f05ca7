"""Dubbing projects: review the transcript and translation before the voices, resume after a stop.

A project is a folder next to the output, ``<output stem>.stsdub/``, holding ``project.json``
(the input's fingerprint, the options, and per segment its times, texts, voice, status and the
cache key of its dubbed audio), the subtitles of the transcript and the translation written at
each stop (``transcript.srt``, ``translation.srt``), and ``audio/<key>.flac``: the dubbed audio
of every finished segment, content-addressed, so a resumed run synthesizes only segments whose
text, voice, timing or synthesizer changed. See ``docs/projects.md``.

File dubbing in project mode runs in phases, each of which saves the project: ``segment``
(times), ``transcribe`` (the ASR alone), ``translate`` (the translator alone) and ``dub``
(synthesis and duration matching through the Dubber's pipeline, with fragments that carry
their transcript and translation, so the ASR and translator are not called again).
"""

from __future__ import annotations

import hashlib
import html
import itertools
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import attrs
import numpy as np

from . import _audio
from ._languages import same_language
from ._media import ANALYSIS_RATE, Cue, Piece, plan, probe
from ._media._subtitles import parse_srt, to_srt
from ._model import (
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
from ._pipeline._runner import wrap_exception
from .errors import ConfigurationError, ProjectError, StageError, StsdubError

if TYPE_CHECKING:
    from ._audio import FloatArray
    from ._dubber import Dubber
    from ._media import Segmentation, SourceAudio
    from ._pipeline._runner import StageRunner

__all__ = ["FORMAT_VERSION", "STOP_AFTER", "DubProject", "InputFingerprint", "ProjectSegment"]

#: The version of ``project.json`` this stsdub writes; it reads this one and older ones.
FORMAT_VERSION = 1
#: Phases a file dub may stop after (``stop_after=`` / ``--stop-after``).
STOP_AFTER = ("transcribe", "translate")
PROJECT_FILE = "project.json"
TRANSCRIPT_SRT = "transcript.srt"
TRANSLATION_SRT = "translation.srt"
AUDIO_FOLDER = "audio"
#: Segment statuses; ``success`` and ``partial`` mean the dubbed audio is in the cache.
SEGMENT_STATUSES = ("pending", "transcribed", "translated", "success", "partial", "failed")
_PHASES = ("segment", "transcribe", "translate", "dub")
#: The project is saved at most this often while fragments finish (and at every phase's end).
_SAVE_INTERVAL = 1.0


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _jsonable(value: Any) -> Any:
    """``value`` as plain JSON values (options may hold paths and such)."""
    return json.loads(json.dumps(value, default=str, sort_keys=True))


@attrs.frozen
class InputFingerprint:
    """Which input a project belongs to: its path as given, its size and a SHA-256 of its bytes.

    Resuming compares size and hash (not the path or the modification time), so a moved or
    copied input still matches and an edited one does not.
    """

    path: str
    size: int
    sha256: str

    @classmethod
    def of(cls, path: Path) -> InputFingerprint:
        """Fingerprint the file at ``path``."""
        return cls(str(path), path.stat().st_size, _sha256_file(path))

    def matches(self, other: InputFingerprint) -> bool:
        return (self.size, self.sha256) == (other.size, other.sha256)


@attrs.frozen
class ProjectSegment:
    """One stretch of the input that is dubbed, as the project keeps it.

    ``transcript`` / ``translation`` are ``None`` until made (set one back to ``None`` to have it
    made again); an empty transcript means no speech there (the segment stays silent).
    """

    index: int
    #: Seconds from the start of the input.
    start: float
    end: float
    transcript: str | None = None
    translation: str | None = None
    #: Speaker label (``"S1"``), when the Dubber has a diarizer (or the user wrote one).
    speaker: str | None = None
    #: Voice of this segment; ``None``: the Dubber's (or the stream's) voice.
    voice: str | None = None
    #: Where the ASR heard speech, seconds from the segment's start; aims the dubbed speech.
    speech: tuple[float, float] | None = None
    #: Cache key of the segment's dubbed audio (``audio/<key>.flac``) once it is dubbed.
    audio_key: str | None = None
    status: str = "pending"
    #: Why the last attempt failed (status ``failed``).
    error: str | None = None

    @property
    def duration(self) -> float:
        return self.end - self.start

    def to_dict(self) -> dict[str, Any]:
        data = attrs.asdict(self)
        data["speech"] = list(self.speech) if self.speech is not None else None
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str) -> ProjectSegment:
        try:
            speech = data.get("speech")
            segment = cls(
                index=int(data["index"]),
                start=float(data["start"]),
                end=float(data["end"]),
                transcript=_opt_str(data.get("transcript"), "transcript"),
                translation=_opt_str(data.get("translation"), "translation"),
                speaker=_opt_str(data.get("speaker"), "speaker"),
                voice=_opt_str(data.get("voice"), "voice"),
                speech=(float(speech[0]), float(speech[1])) if speech is not None else None,
                audio_key=_opt_str(data.get("audio_key"), "audio_key"),
                status=str(data.get("status", "pending")),
                error=_opt_str(data.get("error"), "error"),
            )
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise ProjectError(f"{where}: {type(exc).__name__}: {exc}") from exc
        if segment.status not in SEGMENT_STATUSES:
            raise ProjectError(f"{where}: unknown status {segment.status!r}; known: {SEGMENT_STATUSES}")
        if not 0 <= segment.start < segment.end:
            raise ProjectError(f"{where}: start {segment.start} and end {segment.end} make no segment")
        return segment


def _opt_str(value: object, name: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise TypeError(f"{name} must be a string or null, got {type(value).__name__}")


def _with_text(segments: Sequence[ProjectSegment], index: int, **changes: Any) -> tuple[ProjectSegment, ...]:
    if not 0 <= index < len(segments):
        raise ProjectError(f"no segment {index}; the project has {len(segments)} (0-{len(segments) - 1})")
    return tuple(attrs.evolve(s, **changes) if s.index == index else s for s in segments)


@attrs.frozen(repr=False)
class DubProject:
    """A file dub that can be reviewed, edited and resumed: what ``project.json`` holds.

    Get one from a dub that stopped (``DubbedFile.project``) or with :meth:`load`; change texts
    with :meth:`with_transcript`, :meth:`with_translation`, :meth:`with_voice` (each returns a new
    value), then resume with ``dubber.dub_file(resume=project)`` (which saves it first) or
    :meth:`save` it and run ``stsdub dub --resume FOLDER``.
    """

    #: The project folder (``<output stem>.stsdub``); ``project.json`` and ``audio/`` live there.
    folder: Path = attrs.field(eq=False)
    input: InputFingerprint
    #: The output file, relative to the folder when it was given that way.
    output: str | None
    source_language: str | None
    target_language: str
    #: Stages and settings of the run that made it (names, stage options, voice).
    options: Mapping[str, Any]
    segments: tuple[ProjectSegment, ...]
    #: The last phase that finished: ``segment``, ``transcribe``, ``translate`` or ``dub``.
    phase: str = "segment"
    #: sha256 of each subtitle file in the folder as stsdub last wrote it (edits differ).
    subtitles: Mapping[str, str] = attrs.field(factory=dict)
    format_version: int = FORMAT_VERSION

    # -- files ------------------------------------------------------------------------------

    @property
    def path(self) -> Path:
        """The ``project.json`` file."""
        return self.folder / PROJECT_FILE

    @property
    def input_path(self) -> Path:
        return self._resolve(self.input.path)

    @property
    def output_path(self) -> Path | None:
        return None if self.output is None else self._resolve(self.output)

    def _resolve(self, stored: str) -> Path:
        path = Path(stored)
        # normpath, not resolve(): "<folder>/../talk.wav" reads as the path the user gave.
        return path if path.is_absolute() else Path(os.path.normpath(self.folder / path))

    def audio_path(self, key: str) -> Path:
        """Where the dubbed audio with cache key ``key`` is kept."""
        return self.folder / AUDIO_FOLDER / f"{key}.flac"

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> DubProject:
        """Read a project from its folder or its ``project.json``.

        Raises:
            ProjectError: Missing, not JSON of the documented shape, or written by a newer
                stsdub (``format_version``).
        """
        path = Path(path)
        file = path / PROJECT_FILE if path.is_dir() else path
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ProjectError(f"{file}: no such project file") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ProjectError(f"{file}: not a readable project file: {exc}") from exc
        return cls.from_dict(data, file.parent, where=str(file))

    @classmethod
    def from_dict(cls, data: Any, folder: Path, *, where: str = PROJECT_FILE) -> DubProject:
        """Build a project from the JSON object of ``project.json``."""
        if not isinstance(data, dict):
            raise ProjectError(f"{where}: expected a JSON object, got {type(data).__name__}")
        version = data.get("format_version")
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise ProjectError(f"{where}: format_version must be a positive integer, got {version!r}")
        if version > FORMAT_VERSION:
            raise ProjectError(
                f"{where}: format_version {version} is newer than this stsdub reads ({FORMAT_VERSION});"
                " upgrade stsdub to resume it"
            )
        try:
            raw_input = data["input"]
            fingerprint = InputFingerprint(
                str(raw_input["path"]), int(raw_input["size"]), str(raw_input["sha256"])
            )
            segments = tuple(
                ProjectSegment.from_dict(s, f"{where}: segment {n}") for n, s in enumerate(data["segments"])
            )
            project = cls(
                folder=folder,
                input=fingerprint,
                output=_opt_str(data.get("output"), "output"),
                source_language=_opt_str(data.get("source_language"), "source_language"),
                target_language=str(data["target_language"]),
                options=dict(data.get("options") or {}),
                segments=segments,
                phase=str(data.get("phase", "segment")),
                subtitles={str(k): str(v) for k, v in (data.get("subtitles") or {}).items()},
                format_version=version,
            )
        except ProjectError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ProjectError(f"{where}: {type(exc).__name__}: {exc}") from exc
        if [s.index for s in segments] != list(range(len(segments))):
            raise ProjectError(f"{where}: segment indexes must run 0, 1, 2… in order")
        for a, b in itertools.pairwise(segments):
            if b.start < a.end - 0.001:
                raise ProjectError(f"{where}: segments {a.index} and {b.index} overlap")
        if project.phase not in _PHASES:
            raise ProjectError(f"{where}: unknown phase {project.phase!r}; known: {_PHASES}")
        return project

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of ``project.json``."""
        return {
            "format_version": FORMAT_VERSION,
            "input": attrs.asdict(self.input),
            "output": self.output,
            "source_language": self.source_language,
            "target_language": self.target_language,
            "options": _jsonable(dict(self.options)),
            "phase": self.phase,
            "subtitles": dict(self.subtitles),
            "segments": [s.to_dict() for s in self.segments],
        }

    def save(self) -> Path:
        """Write ``project.json`` atomically (a temporary file renamed into place)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        _atomic_write(self.path, json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n")
        return self.path

    # -- editing ----------------------------------------------------------------------------

    def with_transcript(self, index: int, text: str) -> DubProject:
        """A copy with segment ``index``'s transcript replaced; its translation is made again."""
        segments = _with_text(self.segments, index, transcript=text, translation=None, status="transcribed")
        return attrs.evolve(self, segments=segments)

    def with_translation(self, index: int, text: str) -> DubProject:
        """A copy with segment ``index``'s translation (what the dub says) replaced."""
        return attrs.evolve(
            self, segments=_with_text(self.segments, index, translation=text, status="translated")
        )

    def with_voice(self, index: int, voice: str | None) -> DubProject:
        """A copy with segment ``index`` spoken by ``voice`` (``None``: the Dubber's)."""
        return attrs.evolve(self, segments=_with_text(self.segments, index, voice=voice))

    # -- reading ----------------------------------------------------------------------------

    @property
    def transcript(self) -> str:
        """What was heard, one line per segment with words."""
        return "\n".join(s.transcript for s in self.segments if s.transcript)

    @property
    def translation(self) -> str:
        """What the dub says, one line per segment with words."""
        return "\n".join(s.translation for s in self.segments if s.translation)

    def counts(self) -> dict[str, int]:
        """Segments per status."""
        return {status: sum(s.status == status for s in self.segments) for status in SEGMENT_STATUSES}

    def __repr__(self) -> str:
        done = {k: v for k, v in self.counts().items() if v}
        return (
            f"DubProject({Path(self.input.path).name},"
            f" {self.source_language or '?'} → {self.target_language},"
            f" after {self.phase}, {len(self.segments)} segments {done})"
        )

    def _repr_html_(self) -> str:
        esc = html.escape
        rows = "".join(
            f"<tr><td>{s.index}</td><td>{s.start:.1f}–{s.end:.1f} s</td><td>{esc(s.status)}</td>"
            f"<td>{esc(s.transcript or '')}</td><td>{esc(s.translation or '')}</td></tr>"
            for s in self.segments
        )
        return (
            f"<p><b>{esc(Path(self.input.path).name)}</b> — project after <b>{esc(self.phase)}</b>"
            f" ({esc(str(self.path))})</p><table><tr><th>#</th><th>time</th><th>status</th>"
            f"<th>transcript</th><th>translation</th></tr>{rows}</table>"
        )


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def audio_key(
    segment: ProjectSegment,
    text: str,
    voice: str | None,
    language: str,
    synthesizer: str,
    synthesizer_options: Mapping[str, Any],
) -> str:
    """The content address of a segment's dubbed audio.

    Everything that shapes the speech is in it: the text, voice, language, synthesizer and its
    options, and the time it must fit (the segment's length and where the speech was).
    """
    speech = [round(x, 3) for x in segment.speech] if segment.speech is not None else None
    blob = json.dumps(
        [
            text,
            voice,
            language,
            synthesizer,
            _jsonable(dict(synthesizer_options)),
            round(segment.duration, 3),
            speech,
        ],
        sort_keys=True,
        ensure_ascii=False,
    )
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:32]


def _words(text: str) -> str:
    return " ".join(text.split())


def read_srt(path: Path) -> list[Cue]:
    """The cues of an SRT file, as ProjectErrors where it cannot be used."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ProjectError(f"{path}: no such subtitle file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ProjectError(f"{path}: cannot read it as UTF-8 text: {exc}") from exc
    cues = parse_srt(text, name=str(path))
    if not cues:
        raise ProjectError(f"{path}: no subtitle cues in it")
    return cues


def assign_cues(cues: Sequence[Cue], segments: Sequence[ProjectSegment], name: str) -> dict[int, str]:
    """Text per segment index: each cue goes to the segment it overlaps most (texts joined)."""
    texts: dict[int, list[str]] = {}
    for cue in cues:
        best, overlap = None, 0.0
        for s in segments:
            o = min(cue.end, s.end) - max(cue.start, s.start)
            if o > overlap:
                best, overlap = s.index, o
        if best is None:
            raise ProjectError(
                f"{name}: the cue at {cue.start:.3f}-{cue.end:.3f} s ({cue.text[:40]!r}) overlaps no segment"
            )
        if cue.text.strip():
            texts.setdefault(best, []).append(_words(cue.text))
    return {index: " ".join(parts) for index, parts in texts.items()}


def check_texts(segments: Iterable[ProjectSegment]) -> None:
    """Refuse segments whose texts say there is speech but leave nothing to say (or the reverse)."""
    for s in segments:
        where = f"segment {s.index} ({s.start:.2f}-{s.end:.2f} s)"
        if (
            s.transcript is not None
            and s.transcript.strip()
            and s.translation is not None
            and not s.translation.strip()
        ):
            raise ProjectError(
                f"{where}: the transcript has words ({s.transcript[:40]!r}) but the translation is"
                " empty; give it text, or set it to null to have it translated again"
            )
        if s.transcript is not None and not s.transcript.strip() and s.translation and s.translation.strip():
            raise ProjectError(
                f"{where}: the translation has words ({s.translation[:40]!r}) but the transcript is"
                " empty (no speech there); give the transcript text too"
            )


def _stage_name(choice: object) -> str | None:
    if choice is None or isinstance(choice, str):
        return choice
    return type(choice).__name__


def project_folder(output: Path) -> Path:
    """The project folder of an output file: ``<stem>.stsdub`` beside it."""
    return output.with_name(f"{output.stem}.stsdub")


def _stored_path(path: Path, folder: Path) -> str:
    """A path as the project keeps it: relative to its folder where it can be, so both move."""
    try:
        return os.path.relpath(path.resolve(), folder.resolve())
    except ValueError:  # another drive (Windows)
        return str(path.resolve())


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
            edited[name] = assign_cues(read_srt(path), self.segments, str(path))
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
                    # A new transcript needs a new translation, unless that was edited too.
                    given = edited.get(TRANSLATION_SRT, {}).get(s.index)
                    self.segments[n] = attrs.evolve(
                        s, transcript=after, translation=given, status="transcribed"
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
            for name, field in ((TRANSCRIPT_SRT, "transcript"), (TRANSLATION_SRT, "translation")):
                cues = [Cue(s.start, s.end, getattr(s, field)) for s in self.segments if getattr(s, field)]
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
    ) -> list[DubResult] | None:
        """Run the phases still to do; the results, or ``None`` when it stopped after a phase."""
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
        language = self._setting(dubber, "source_language")
        previous: str | None = None
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
            if isinstance(outcome, StageError):
                self.segments[s.index] = attrs.evolve(s, status="failed", error=str(outcome))
            else:
                text = outcome.text.strip()
                speech = None
                if outcome.segments:
                    speech = (_ms(outcome.segments[0].start), _ms(outcome.segments[-1].end))
                if text:
                    previous = text
                if outcome.language and language is None and "source_language" not in self.overrides:
                    self.overrides["source_language"] = outcome.language
                    language = outcome.language
                self.segments[s.index] = attrs.evolve(
                    s, transcript=text, speech=speech, status="transcribed", error=None
                )
            report("transcribe", done, len(todo))
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
            if same_language(source, target):
                outcome: Translation | StageError = Translation(s.transcript)
            elif stages.translator is None:
                outcome = StageError(
                    "UNSUPPORTED_LANGUAGE", f"no translator is configured to reach {target}", "translation"
                )
            else:
                request = TranslationRequest(
                    text=s.transcript,
                    source_language=source,
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
                samples = await anyio.to_thread.run_sync(_read_audio, cached, out_rate)
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
            transcript = Transcript(s.transcript, language, segments)
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
            await anyio.to_thread.run_sync(_write_audio, path, result.audio.samples, result.audio.sample_rate)
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
            Transcript(s.transcript or "", language, segments),
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


def _ms(seconds: float) -> float:
    # Times are kept to the millisecond, as subtitles have them, so cues match segments exactly.
    return round(seconds, 3)


def _later(phase: str, other: str) -> str:
    return max(phase, other, key=_PHASES.index)


async def _call(
    dubber: Dubber, runner: StageRunner[Any, Any], request: Any, stage: str, kind: type, timeout: float
) -> Any:
    """One stage call with the Dubber's retries inside ``timeout``; a StageError when it failed."""
    deadline = anyio.current_time() + timeout
    attempt = 0
    with anyio.CancelScope(deadline=deadline) as scope:
        while True:
            try:
                result = await runner.call(request, deadline)
            except StageError as err:
                delay = dubber._retry_backoff * 2**attempt
                if err.retryable and attempt < dubber._retries and anyio.current_time() + delay < deadline:
                    attempt += 1
                    await anyio.sleep(delay)
                    continue
                return err.with_stage(stage)
            except Exception as exc:
                return wrap_exception(exc, stage)
            if not isinstance(result, kind):
                return StageError(
                    "INTERNAL_ERROR", f"{type(runner.stage).__name__} returned {type(result).__name__}", stage
                )
            return result
    if scope.cancelled_caught:
        return StageError("TIMEOUT", f"{stage} took longer than fragment_timeout ({timeout:g} s)", stage)
    raise StsdubError(f"{stage}: no outcome")  # pragma: no cover - the loop always returns


def _write_audio(path: Path, samples: FloatArray, rate: int) -> None:
    import soundfile

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".part")
    os.close(fd)
    try:
        soundfile.write(tmp, samples, rate, format="FLAC", subtype="PCM_24")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read_audio(path: Path, rate: int) -> FloatArray | None:
    """Cached audio at ``rate``; ``None`` when there is none (or it is unreadable: dub again)."""
    import soundfile

    if not path.is_file():
        return None
    try:
        data, found = soundfile.read(str(path), dtype="float32", always_2d=False)
    except Exception:
        return None
    samples = np.clip(np.asarray(data, dtype=np.float32).reshape(-1), -1.0, 1.0)
    if found != rate:
        samples = _audio.resample(samples, int(found), rate)
    return samples.astype(np.float32, copy=False)
