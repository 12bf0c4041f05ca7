"""Shared Hypothesis strategies."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

import stsdub

RATES = st.sampled_from([8_000, 16_000, 22_050, 44_100, 48_000])

# Explicit bounds: the default float strategy would give NaN and infinities.
SAMPLE = st.floats(min_value=-1.0, max_value=1.0, allow_nan=False, allow_infinity=False, width=32)


@st.composite
def audio(draw: st.DrawFn, min_size: int = 1, max_size: int = 400) -> np.ndarray:
    """Short float32 mono audio in [-1, 1]."""
    values = draw(st.lists(SAMPLE, min_size=min_size, max_size=max_size))
    return np.asarray(values, dtype=np.float32)


def tone(seconds: float, rate: int = 16_000, level: float = 0.3) -> np.ndarray:
    """A 220 Hz tone, loud enough for the fake ASR to hear speech."""
    t = np.arange(round(seconds * rate), dtype=np.float32) / rate
    return (level * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def fragments(
    count: int,
    *,
    seconds: float = 0.05,
    rate: int = 16_000,
    stream_id: str | None = None,
    silent: frozenset[int] = frozenset(),
) -> list[stsdub.Fragment]:
    """``count`` fragments numbered 0..count-1; those in ``silent`` carry silence."""
    loud = tone(seconds, rate)
    quiet = np.zeros_like(loud)
    return [
        stsdub.Fragment(i, quiet if i in silent else loud, rate, stream_id=stream_id) for i in range(count)
    ]


@st.composite
def stage_plan(draw: st.DrawFn, count: int) -> dict[str, object]:
    """Latencies (s), failures and hangs for one fake stage over ``count`` fragments."""
    latencies = draw(
        st.lists(st.sampled_from([0.0, 0.0, 0.001, 0.003, 0.008]), min_size=count, max_size=count)
    )
    codes = st.sampled_from(list(stsdub.ErrorCode))
    fail = draw(st.dictionaries(st.integers(0, max(count - 1, 0)), codes, max_size=max(1, count // 3)))
    hang = draw(st.sets(st.integers(0, max(count - 1, 0)), max_size=1))
    return {
        "latency": (lambda r, lat=latencies: lat[r.sequence_number % len(lat)]),
        "fail": fail,
        "hang": hang,
        "hang_seconds": 0.4,
    }
