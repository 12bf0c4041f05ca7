"""SRT and WebVTT subtitles timed to the dubbed fragments."""

from __future__ import annotations

from collections.abc import Iterable

import attrs

__all__ = ["SUBTITLE_FORMATS", "Cue", "render", "to_srt", "to_vtt"]

SUBTITLE_FORMATS = ("srt", "vtt")


@attrs.frozen
class Cue:
    """One subtitle: seconds from the start of the recording, and its text."""

    start: float
    end: float
    text: str


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


def to_srt(cues: Iterable[Cue]) -> str:
    """SubRip text: numbered cues with ``HH:MM:SS,mmm`` times."""
    blocks = [
        f"{n}\n{_clock(c.start, ',')} --> {_clock(c.end, ',')}\n{_clean(c.text)}\n"
        for n, c in enumerate(cues, 1)
    ]
    return "\n".join(blocks)


def to_vtt(cues: Iterable[Cue]) -> str:
    """WebVTT text with ``HH:MM:SS.mmm`` times."""
    blocks = [f"{_clock(c.start, '.')} --> {_clock(c.end, '.')}\n{_clean(c.text)}\n" for c in cues]
    return "WEBVTT\n\n" + "\n".join(blocks)


def render(cues: Iterable[Cue], fmt: str) -> str:
    """Subtitles in ``fmt`` (``"srt"`` or ``"vtt"``)."""
    if fmt == "srt":
        return to_srt(cues)
    if fmt == "vtt":
        return to_vtt(cues)
    raise ValueError(f"unknown subtitle format {fmt!r}; known: {SUBTITLE_FORMATS}")
