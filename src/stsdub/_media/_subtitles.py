"""SRT and WebVTT subtitles timed to the dubbed fragments."""

from __future__ import annotations

import re
from collections.abc import Iterable

import attrs

from ..errors import ProjectError

__all__ = ["SUBTITLE_FORMATS", "Cue", "parse_srt", "render", "to_srt", "to_vtt"]

SUBTITLE_FORMATS = ("srt", "vtt")


@attrs.frozen
class Cue:
    """One subtitle: seconds from the start of the recording, its text, and who says it."""

    start: float
    end: float
    text: str
    #: The speaker's label (``"S1"``): SRT writes ``[S1] text``, WebVTT a ``<v S1>`` voice span.
    speaker: str | None = None
    #: The language the text is in, where known (not written into the file: a file dub writes
    #: one source-subtitle file per language heard).
    language: str | None = attrs.field(default=None, kw_only=True)


def _clock(seconds: float, sep: str) -> str:
    ms = max(0, round(seconds * 1000))
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    secs, ms = divmod(ms, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{sep}{ms:03d}"


def _clean(text: str) -> str:
    # A blank line ends a cue in both formats, and "-->" would read as a timing line.
    lines = [line.strip() for line in text.replace("-->", "→").splitlines()]
    return "\n".join(line for line in lines if line)


def _speaker(label: str) -> str:
    # Characters that would close the voice tag or the bracket around the label are replaced.
    return re.sub(r"[\s<>\[\]&]+", "_", label.strip())


def to_srt(cues: Iterable[Cue]) -> str:
    """SubRip text: numbered cues with ``HH:MM:SS,mmm`` times; ``[S1]`` before a speaker's text."""
    blocks = [
        f"{n}\n{_clock(c.start, ',')} --> {_clock(c.end, ',')}\n"
        f"{f'[{_speaker(c.speaker)}] ' if c.speaker else ''}{_clean(c.text)}\n"
        for n, c in enumerate(cues, 1)
    ]
    return "\n".join(blocks)


def to_vtt(cues: Iterable[Cue]) -> str:
    """WebVTT text with ``HH:MM:SS.mmm`` times; a speaker's text in a ``<v S1>`` voice span."""
    blocks = [
        f"{_clock(c.start, '.')} --> {_clock(c.end, '.')}\n"
        f"{f'<v {_speaker(c.speaker)}>' if c.speaker else ''}{_clean(c.text)}\n"
        for c in cues
    ]
    return "WEBVTT\n\n" + "\n".join(blocks)


def render(cues: Iterable[Cue], fmt: str) -> str:
    """Subtitles in ``fmt`` (``"srt"`` or ``"vtt"``)."""
    if fmt == "srt":
        return to_srt(cues)
    if fmt == "vtt":
        return to_vtt(cues)
    raise ValueError(f"unknown subtitle format {fmt!r}; known: {SUBTITLE_FORMATS}")


_TIMING = re.compile(
    r"^\s*(\d+):(\d{1,2}):(\d{1,2})[,.](\d{1,3})\s*-->\s*(\d+):(\d{1,2}):(\d{1,2})[,.](\d{1,3})"
)


def _seconds(h: str, m: str, s: str, ms: str) -> float:
    return int(h) * 3600 + int(m) * 60 + int(s) + int(ms.ljust(3, "0")) / 1000


def parse_srt(text: str, *, name: str = "SRT") -> list[Cue]:
    """Cues of SubRip text, in order.

    Lenient where editors differ (a missing cue number, ``.`` for ``,``, a byte-order mark,
    CRLF line ends), strict where a cue would be misread: every block needs a timing line that
    parses, an end after its start, and cues may not overlap (each starts at or after the end
    of the one before; a millisecond of slack absorbs rounding).

    Raises:
        ProjectError: A block without a valid timing line, an end not after its start, or
            overlapping cues; the message names ``name`` and the line.
    """
    lines = text.lstrip("\ufeff").replace("\r\n", "\n").replace("\r", "\n").split("\n")
    cues: list[Cue] = []
    block: list[tuple[int, str]] = []
    for number, line in enumerate([*lines, ""], 1):
        if line.strip():
            block.append((number, line))
            continue
        if not block:
            continue
        at, timing = block[0]
        body = block[1:]
        if not _TIMING.match(timing) and len(block) > 1:
            at, timing = block[1]  # the usual case: a cue number first
            body = block[2:]
        match = _TIMING.match(timing)
        if match is None:
            raise ProjectError(
                f"{name}, line {at}: expected a timing line like"
                f" '00:00:01,000 --> 00:00:02,500', got {timing.strip()!r}"
            )
        start = _seconds(*match.groups()[:4])
        end = _seconds(*match.groups()[4:])
        if end <= start:
            raise ProjectError(
                f"{name}, line {at}: the cue ends ({end:.3f} s) before it starts ({start:.3f} s)"
            )
        if cues and start < cues[-1].end - 0.001:
            raise ProjectError(
                f"{name}, line {at}: the cue at {start:.3f} s overlaps the one before"
                f" (which ends at {cues[-1].end:.3f} s); cues must not overlap"
            )
        cues.append(Cue(start, end, "\n".join(line.strip() for _, line in body).strip()))
        block = []
    return cues
