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
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import numpy as np

from .._core import _audio
from .._media import Cue
from .._media._subtitles import parse_srt
from ..errors import ProjectError

if TYPE_CHECKING:
    from .._core._audio import FloatArray

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
    #: Segments with the same number were translated together, as whole sentences across
    #: them (the index of the first): the subtitle files show them as one cue, and an edit of
    #: that cue is split back over them. ``None``: translated alone.
    sentence: int | None = None
    status: str = "pending"
    #: Why the last attempt failed (status ``failed``).
    error: str | None = None
    #: The language the ASR heard here (``None``: not transcribed, or not said), and how sure
    #: it was (0-1; ``None`` when the language was given rather than detected).
    language: str | None = None
    language_probability: float | None = None

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
                sentence=None if data.get("sentence") is None else int(data["sentence"]),
                status=str(data.get("status", "pending")),
                error=_opt_str(data.get("error"), "error"),
                language=_opt_str(data.get("language"), "language"),
                language_probability=(
                    None if data.get("language_probability") is None else float(data["language_probability"])
                ),
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
        """A copy with segment ``index``'s transcript replaced; its translation is made again
        (with those of the segments translated together with it: the whole sentence)."""
        segments = _with_text(self.segments, index, transcript=text, translation=None, status="transcribed")
        group = segments[index].sentence
        if group is not None:
            segments = tuple(
                attrs.evolve(s, translation=None, status="transcribed") if s.sentence == group else s
                for s in segments
            )
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


def sentence_groups(segments: Sequence[ProjectSegment]) -> list[list[ProjectSegment]]:
    """The segments in runs that were translated together (the same ``sentence``), in order."""
    groups: list[list[ProjectSegment]] = []
    for s in segments:
        last = groups[-1][-1] if groups else None
        if last is not None and s.sentence is not None and s.sentence == last.sentence:
            groups[-1].append(s)
        else:
            groups.append([s])
    return groups


def grouped_cues(segments: Sequence[ProjectSegment], field: str) -> list[Cue]:
    """One cue per group of segments translated together, with the texts of ``field`` joined."""
    cues = []
    for group in sentence_groups(segments):
        text = " ".join(t for t in (getattr(s, field) for s in group) if t)
        if text:
            cues.append(Cue(group[0].start, group[-1].end, text))
    return cues


def _shares(group: Sequence[ProjectSegment]) -> list[float]:
    """How much of an edited sentence each of its segments says: the seconds the ASR heard
    speech in each (as a dub shares a sentence's translation out), else their transcripts'
    characters."""
    heard = [s.speech[1] - s.speech[0] for s in group if s.speech is not None]
    if len(heard) == len(group) and sum(heard) > 0:
        return heard
    return [float(len(s.transcript or "")) for s in group]


def assign_grouped(
    cues: Sequence[Cue], segments: Sequence[ProjectSegment], field: str, name: str
) -> dict[int, str]:
    """Text per segment index from cues of groups (:func:`grouped_cues`): a group's edited text
    is split back over its segments in proportion to their transcripts."""
    from .._pipeline._sentences import split_text

    groups = sentence_groups(segments)
    spans = [ProjectSegment(k, g[0].start, g[-1].end) for k, g in enumerate(groups)]
    texts = assign_cues(cues, spans, name)
    out: dict[int, str] = {}
    for k, group in enumerate(groups):
        if k not in texts:
            continue
        before = " ".join(t for t in (getattr(s, field) for s in group) if t)
        if len(group) == 1 or _words(before) == texts[k]:
            parts = [texts[k]] if len(group) == 1 else [_words(getattr(s, field) or "") for s in group]
        else:
            parts = split_text(texts[k], _shares(group))
        out.update({s.index: part for s, part in zip(group, parts, strict=True) if part})
    return out


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


def write_cached_audio(path: Path, samples: FloatArray, rate: int) -> None:
    """A dubbed segment's audio into the project's cache (FLAC, written whole or not at all)."""
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


def read_cached_audio(path: Path, rate: int) -> FloatArray | None:
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
