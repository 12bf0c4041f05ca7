"""The soundtrack under the dub: ducking the original, or laying a separated background under it.

Pure functions on float32 mono arrays; times are in seconds.

Ducking lowers the original wherever someone speaks (its own speech, or the dub) and leaves it
at full level everywhere else, so music and effects between lines survive while the original
voice drops under the dubbed one. The gain moves along a raised-cosine curve in decibels: it
starts falling ``attack`` seconds *before* the speech (the whole file is known, so the original
voice is already down when the dub starts) and rises over ``release`` seconds after it. The
curve's steepest step is ``pi / 2 * |depth_db| / (attack * rate)`` dB per sample, so the gain
never jumps: no clicks. Gaps shorter than ``hold`` stay down, so the music does not pump up
and down between the words of one sentence.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from .._core._audio import fit_length

if TYPE_CHECKING:
    from .._core._audio import FloatArray

__all__ = [
    "DEFAULT_ATTACK",
    "DEFAULT_DEPTH_DB",
    "DEFAULT_HOLD",
    "DEFAULT_RELEASE",
    "Span",
    "duck",
    "duck_gain",
    "max_gain_step_db",
    "merge_spans",
    "mix_background",
    "mix_ducked",
    "speech_spans",
    "steepest_step_db",
]

Span = tuple[float, float]

#: How far the original goes down under speech (about a quarter of its loudness).
DEFAULT_DEPTH_DB = -20.0
#: Seconds the gain takes to fall, ending where the speech starts.
DEFAULT_ATTACK = 0.08
#: Seconds the gain takes to come back after the speech ends.
DEFAULT_RELEASE = 0.35
#: Gaps between spans shorter than this stay ducked.
DEFAULT_HOLD = 0.5


def merge_spans(spans: Iterable[Span], *, gap: float = 0.0) -> list[Span]:
    """Sort spans and join those that overlap or are less than ``gap`` seconds apart."""
    merged: list[list[float]] = []
    for start, end in sorted((float(a), float(b)) for a, b in spans if b > a):
        if merged and (start <= merged[-1][1] or start - merged[-1][1] < gap):
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [(a, b) for a, b in merged]


def speech_spans(
    samples: FloatArray,
    sample_rate: int,
    *,
    threshold_db: float = -45.0,
    frame: float = 0.02,
    min_gap: float = 0.25,
) -> list[Span]:
    """Where ``samples`` are not silent: frames louder than ``threshold_db`` dBFS (RMS), joined.

    Meant for a dub track, which is digital silence (or close) wherever nothing is said.

    Args:
        samples: Mono audio.
        sample_rate: Its rate.
        threshold_db: Frame RMS, in dB relative to full scale, above which a frame is speech.
        frame: Frame length in seconds.
        min_gap: Spans closer than this are joined.
    """
    hop = max(1, round(frame * sample_rate))
    count = samples.size // hop
    if count == 0:
        return []
    frames = samples[: count * hop].astype(np.float64).reshape(count, hop)
    rms = np.sqrt(np.mean(frames * frames, axis=1))
    loud = rms > 10 ** (threshold_db / 20)
    # Edges of the runs of loud frames: +1 where a run starts, -1 after it ends.
    edges = np.diff(np.concatenate(([0], loud.astype(np.int8), [0])))
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1)
    spans = [
        (s * hop / sample_rate, min(e * hop, samples.size) / sample_rate)
        for s, e in zip(starts, ends, strict=True)
    ]
    return merge_spans(spans, gap=min_gap)


def duck_gain(
    length: int,
    sample_rate: int,
    spans: Iterable[Span],
    *,
    depth_db: float = DEFAULT_DEPTH_DB,
    attack: float = DEFAULT_ATTACK,
    release: float = DEFAULT_RELEASE,
    hold: float = DEFAULT_HOLD,
) -> FloatArray:
    """The gain (linear, float32, ``length`` samples) that ducks audio under ``spans``.

    1.0 away from every span; ``10 ** (depth_db / 20)`` inside one (and inside gaps shorter
    than ``hold``); a raised cosine in dB over the ``attack`` seconds before each span and the
    ``release`` seconds after it. Where ramps of neighbouring spans meet, the lower gain wins.

    Raises:
        ValueError: ``depth_db`` is positive, or ``attack`` / ``release`` are negative.
    """
    if depth_db > 0:
        raise ValueError(f"depth_db must be <= 0 (a cut), got {depth_db!r}")
    if attack < 0 or release < 0 or hold < 0:
        raise ValueError("attack, release and hold must be >= 0 seconds")
    gain = np.ones(length, dtype=np.float32)
    floor = np.float32(10 ** (depth_db / 20))
    attack_n = round(attack * sample_rate)
    release_n = round(release * sample_rate)

    def ramp(n: int) -> FloatArray:
        """Gain falling from 1 to the floor over n samples (raised cosine in dB)."""
        x = (np.arange(n, dtype=np.float64) + 0.5) / n
        shape = 0.5 - 0.5 * np.cos(np.pi * x)
        return (10 ** (depth_db * shape / 20)).astype(np.float32)

    down, up = ramp(attack_n), ramp(release_n)[::-1]
    for start_s, end_s in merge_spans(spans, gap=hold):
        start = max(0, min(length, round(start_s * sample_rate)))
        end = max(0, min(length, round(end_s * sample_rate)))
        if end <= start:
            continue
        gain[start:end] = floor
        a = max(0, start - attack_n)
        if start > a:
            np.minimum(gain[a:start], down[attack_n - (start - a) :], out=gain[a:start])
        b = min(length, end + release_n)
        if b > end:
            np.minimum(gain[end:b], up[: b - end], out=gain[end:b])
    return gain


def duck(
    original: FloatArray,
    sample_rate: int,
    spans: Iterable[Span],
    *,
    depth_db: float = DEFAULT_DEPTH_DB,
    attack: float = DEFAULT_ATTACK,
    release: float = DEFAULT_RELEASE,
    hold: float = DEFAULT_HOLD,
) -> FloatArray:
    """``original`` lowered by :func:`duck_gain` under ``spans``."""
    gain = duck_gain(
        original.size, sample_rate, spans, depth_db=depth_db, attack=attack, release=release, hold=hold
    )
    out: FloatArray = (original * gain).astype(np.float32, copy=False)
    return out


def mix_ducked(
    dub: FloatArray,
    original: FloatArray,
    sample_rate: int,
    *,
    speech: Sequence[Span] = (),
    dub_spans: Sequence[Span] | None = None,
    depth_db: float = DEFAULT_DEPTH_DB,
    attack: float = DEFAULT_ATTACK,
    release: float = DEFAULT_RELEASE,
    hold: float = DEFAULT_HOLD,
) -> FloatArray:
    """The dub over the original, the original ducked wherever either of them speaks.

    Args:
        dub: The dubbed track (silence between lines), at ``sample_rate``.
        original: The original audio at the same rate; cut or padded to the dub's length.
        sample_rate: Rate of both.
        speech: Where the original has speech (the segmentation's spans).
        dub_spans: Where the dub speaks; ``None`` finds it from the dub's samples
            (:func:`speech_spans`).
        depth_db, attack, release, hold: As :func:`duck_gain`.

    Returns:
        ``clip(dub + duck(original), -1, 1)``, as long as ``dub``.
    """
    spans = list(speech) + list(speech_spans(dub, sample_rate) if dub_spans is None else dub_spans)
    under = duck(
        fit_length(original, dub.size),
        sample_rate,
        spans,
        depth_db=depth_db,
        attack=attack,
        release=release,
        hold=hold,
    )
    return _clip(dub + under)


def mix_background(dub: FloatArray, background: FloatArray, *, level_db: float = 0.0) -> FloatArray:
    """The dub over a separated background (``background="separate"``), both at one rate.

    The background keeps its original level (``level_db`` = 0): the voice was taken out of it,
    so nothing competes with the dub. It is cut or padded to the dub's length.

    Returns:
        ``clip(dub + background * 10 ** (level_db / 20), -1, 1)``.
    """
    under = fit_length(background, dub.size)
    if level_db != 0.0:
        under = under * np.float32(10 ** (level_db / 20))
    return _clip(dub + under)


def max_gain_step_db(gain: FloatArray) -> float:
    """The largest change between neighbouring samples of a gain curve, in dB (0 for flat)."""
    if gain.size < 2:
        return 0.0
    db = 20 * np.log10(np.maximum(gain.astype(np.float64), 1e-12))
    return float(np.max(np.abs(np.diff(db))))


def _clip(x: FloatArray) -> FloatArray:
    out: FloatArray = np.clip(x, -1.0, 1.0).astype(np.float32, copy=False)
    return out


def steepest_step_db(depth_db: float, seconds: float, sample_rate: int) -> float:
    """The largest per-sample gain change (dB) a ramp of ``seconds`` makes by design."""
    # The slope of depth * (1 - cos(pi x)) / 2 peaks at depth * pi / 2 per ramp length.
    n = max(1, round(seconds * sample_rate))
    return abs(depth_db) * math.pi / 2 / n
