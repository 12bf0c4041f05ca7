"""In-memory inputs of every wrong kind: each builds a valid value or raises the documented error.

Fragments, audio buffers and the PCM16 / base64 helpers take what callers and the server hand
them. Whatever that is (wrong dtypes and shapes, NaN, odd byte counts, broken base64, absurd
sample rates, values of the wrong type), the outcome is a valid object or an
InvalidAudioError / InvalidFragmentError with a message, never another exception.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import stsdub
from stsdub._core._audio import MAX_SAMPLE_RATE

from .strategies import (
    ANY_AUDIO,
    ANY_BASE64,
    ANY_CHANNELS,
    ANY_PCM,
    ANY_RATES,
    JUNK,
    NUMPY_INTS,
    RATES,
    audio,
)


# 4000 examples in all, each cheap; no deadline, because a loaded CI machine makes the
# first examples (imports, soxr) slow now and then.
def examples(count: int) -> settings:
    return settings(max_examples=count, deadline=None, suppress_health_check=[HealthCheck.too_slow])


SEQUENCE_NUMBERS = st.one_of(st.integers(0, 10), st.integers(), NUMPY_INTS, st.floats(), JUNK)
IDS = st.one_of(st.text(max_size=6), JUNK)
FRAGMENT_OPTIONS = st.fixed_dictionaries(
    {},
    optional={
        "fragment_id": IDS,
        "stream_id": IDS,
        "timestamp_ms": st.one_of(st.integers(), NUMPY_INTS, JUNK),
        "metadata": st.one_of(st.dictionaries(st.text(max_size=3), st.integers(), max_size=2), JUNK),
    },
)


def outcome(call: Callable[[], Any], error: type[Exception] = stsdub.InvalidAudioError) -> Any:
    """``call()``'s value, or None when it raised ``error`` with a message; anything else propagates."""
    try:
        return call()
    except error as exc:
        assert str(exc).strip(), f"{type(exc).__name__} without a message"
        return None


def check_audio(samples: object, *, allow_empty: bool) -> None:
    assert isinstance(samples, np.ndarray) and samples.dtype == np.float32 and samples.ndim == 1
    assert samples.size or allow_empty
    plain = np.asarray(samples)
    assert np.all(np.isfinite(plain)) and (not plain.size or np.max(np.abs(plain)) <= 1.0 + 1e-4)


def check_rate(rate: object) -> None:
    assert type(rate) is int and 1 <= rate <= MAX_SAMPLE_RATE


def check_fragment(fragment: stsdub.Fragment) -> None:
    seq = fragment.sequence_number
    assert isinstance(seq, (int, np.integer)) and not isinstance(seq, bool) and seq >= 0
    check_audio(fragment.audio, allow_empty=False)
    check_rate(fragment.sample_rate)
    assert isinstance(fragment.fragment_id, str) and fragment.fragment_id
    assert fragment.stream_id is None or (isinstance(fragment.stream_id, str) and fragment.stream_id)
    ts = fragment.timestamp_ms
    assert ts is None or (isinstance(ts, (int, np.integer)) and not isinstance(ts, bool))
    assert isinstance(fragment.metadata, Mapping)
    assert fragment.duration > 0 and repr(fragment)
    assert fragment.buffer.sample_rate == fragment.sample_rate


def check_buffer(buffer: stsdub.AudioBuffer) -> None:
    check_audio(buffer.samples, allow_empty=True)
    check_rate(buffer.sample_rate)
    assert buffer.duration >= 0 and repr(buffer)


@examples(1000)
@given(SEQUENCE_NUMBERS, ANY_AUDIO, ANY_RATES, FRAGMENT_OPTIONS)
def test_fragment_is_valid_or_refused(seq: object, samples: object, rate: object, options: dict) -> None:
    fragment = outcome(lambda: stsdub.Fragment(seq, samples, rate, **options), stsdub.InvalidFragmentError)
    if fragment is not None:
        check_fragment(fragment)


@examples(800)
@given(ANY_PCM, ANY_RATES, ANY_CHANNELS, FRAGMENT_OPTIONS)
def test_pcm16_input_is_valid_or_refused(data: object, rate: object, channels: object, options: dict) -> None:
    samples = outcome(lambda: stsdub.pcm16_to_float(data, channels=channels))  # type: ignore[arg-type]
    if samples is not None:
        check_audio(samples, allow_empty=False)
        nbytes = memoryview(data).nbytes  # type: ignore[arg-type]
        assert samples.size * 2 * int(channels) == nbytes  # type: ignore[call-overload]
    buffer = outcome(lambda: stsdub.AudioBuffer.from_pcm16(data, rate, channels=channels))  # type: ignore[arg-type]
    if buffer is not None:
        check_buffer(buffer)
    fragment = outcome(
        lambda: stsdub.Fragment.from_pcm16(1, data, rate, channels=channels, **options),  # type: ignore[arg-type]
        stsdub.InvalidFragmentError,
    )
    if fragment is not None:
        check_fragment(fragment)


@examples(800)
@given(ANY_BASE64, ANY_RATES, ANY_CHANNELS, FRAGMENT_OPTIONS)
def test_base64_input_is_valid_or_refused(
    data: object, rate: object, channels: object, options: dict
) -> None:
    samples = outcome(lambda: stsdub.base64_to_float(data, channels=channels))  # type: ignore[arg-type]
    if samples is not None:
        check_audio(samples, allow_empty=False)
        assert samples.size * 2 * int(channels) == len(base64.b64decode(data))  # type: ignore[arg-type,call-overload]
    buffer = outcome(lambda: stsdub.AudioBuffer.from_base64(data, rate, channels=channels))  # type: ignore[arg-type]
    if buffer is not None:
        check_buffer(buffer)
    fragment = outcome(
        lambda: stsdub.Fragment.from_base64(0, data, rate, channels=channels, **options),  # type: ignore[arg-type]
        stsdub.InvalidFragmentError,
    )
    if fragment is not None:
        check_fragment(fragment)


@examples(600)
@given(ANY_AUDIO, ANY_RATES)
def test_audio_buffer_is_valid_or_refused(samples: object, rate: object) -> None:
    buffer = outcome(lambda: stsdub.AudioBuffer(samples, rate))  # type: ignore[arg-type]
    if buffer is not None:
        check_buffer(buffer)


@examples(400)
@given(ANY_AUDIO, ANY_CHANNELS)
def test_encoding_to_pcm16_and_base64_is_exact_or_refused(samples: object, channels: object) -> None:
    data = outcome(lambda: stsdub.float_to_pcm16(samples, channels=channels))  # type: ignore[arg-type]
    if data is not None:
        assert isinstance(data, bytes) and len(data) == 2 * int(channels) * samples.size  # type: ignore[attr-defined,call-overload]
    text = outcome(lambda: stsdub.float_to_base64(samples, channels=channels))  # type: ignore[arg-type]
    if text is not None:
        assert base64.b64decode(text, validate=True) == data


# Durations within reach of memory: silence of 1e300 s fails to allocate, as it should.
SECONDS = st.one_of(
    st.floats(-10, 60),
    st.sampled_from([math.nan, math.inf, -math.inf]),
    st.integers(-10, 60),
    NUMPY_INTS.filter(lambda n: n <= 60),
    st.none(),
    st.text(max_size=4),
    st.binary(max_size=4),
    st.booleans(),
    st.complex_numbers(),
    st.builds(object),
)


@examples(400)
@given(audio(max_size=64), RATES, SECONDS, ANY_RATES)
def test_buffer_helpers_are_valid_or_refused(
    samples: np.ndarray, rate: int, seconds: object, other_rate: object
) -> None:
    silence = outcome(lambda: stsdub.AudioBuffer.silence(seconds, other_rate))  # type: ignore[arg-type]
    if silence is not None:
        check_buffer(silence)
        assert not np.any(silence.samples)
    buffer = stsdub.AudioBuffer(samples, rate)
    resampled = outcome(lambda: buffer.resampled(other_rate))  # type: ignore[arg-type]
    if resampled is not None:
        check_buffer(resampled)
        assert resampled.sample_rate == other_rate
    channels = outcome(lambda: buffer.to_pcm16(channels=other_rate))  # type: ignore[arg-type]
    if channels is not None:
        assert len(channels) == 2 * samples.size * int(other_rate)  # type: ignore[call-overload]
