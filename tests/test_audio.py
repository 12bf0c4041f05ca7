"""Audio values and conversions."""

from __future__ import annotations

import base64

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import stsdub

from .strategies import RATES, audio


@given(audio(), st.integers(1, 4))
def test_pcm16_round_trip_is_within_one_step(samples: np.ndarray, channels: int) -> None:
    data = stsdub.float_to_pcm16(samples, channels=channels)
    assert len(data) == 2 * channels * samples.size
    back = stsdub.pcm16_to_float(data, channels=channels)
    assert back.dtype == np.float32 and back.shape == samples.shape
    np.testing.assert_allclose(back, samples, atol=1.5 / 32768)


@given(audio(), RATES)
def test_base64_round_trip(samples: np.ndarray, rate: int) -> None:
    buffer = stsdub.AudioBuffer(samples, rate)
    again = stsdub.AudioBuffer.from_base64(buffer.to_base64(), rate)
    np.testing.assert_allclose(again.samples, samples, atol=1.5 / 32768)
    fragment = stsdub.Fragment.from_base64(3, buffer.to_base64(channels=2), rate, channels=2, stream_id="x")
    assert fragment.sequence_number == 3 and fragment.stream_id == "x"
    np.testing.assert_allclose(fragment.audio, samples, atol=1.5 / 32768)


def test_pcm16_decoding_is_strict() -> None:
    with pytest.raises(stsdub.InvalidAudioError, match="not a whole number"):
        stsdub.pcm16_to_float(b"\x00\x01\x02")
    with pytest.raises(stsdub.InvalidAudioError, match="not a whole number of 2-channel"):
        stsdub.pcm16_to_float(b"\x00\x01\x02\x03\x04\x05", channels=2)
    with pytest.raises(stsdub.InvalidAudioError, match="empty"):
        stsdub.pcm16_to_float(b"")
    with pytest.raises(stsdub.InvalidAudioError, match="must be bytes"):
        stsdub.pcm16_to_float("abcd")  # type: ignore[arg-type]
    with pytest.raises(stsdub.InvalidAudioError, match="channels"):
        stsdub.pcm16_to_float(b"\x00\x00", channels=0)


def test_base64_decoding_is_strict() -> None:
    with pytest.raises(stsdub.InvalidAudioError, match="not valid base64"):
        stsdub.base64_to_float("AAA*AAAA")
    with pytest.raises(stsdub.InvalidAudioError, match="not valid base64"):
        stsdub.base64_to_float("AAAAA")  # bad padding
    assert stsdub.base64_to_float(base64.b64encode(b"\x00\x40")).tolist() == [0.5]


def test_pcm16_counts_the_bytes_of_any_memoryview() -> None:
    data = np.array([16384, -16384], dtype="<i2")
    assert stsdub.pcm16_to_float(memoryview(data)).tolist() == [0.5, -0.5]
    # One 4-byte item is two samples (len() of that view is 1), a strided view its items in order.
    assert stsdub.pcm16_to_float(memoryview(data.view("<i4"))).tolist() == [0.5, -0.5]
    assert stsdub.pcm16_to_float(memoryview(np.tile(data, 2))[::2]).tolist() == [0.5, 0.5]


def test_wrong_kinds_of_audio_input_are_invalid_audio() -> None:
    ok = np.zeros(2, np.float32)
    masked = np.ma.masked_array(np.array([np.nan, 0.1], np.float32), mask=[True, False])
    calls = [
        lambda: stsdub.base64_to_float(None),  # type: ignore[arg-type]
        lambda: stsdub.base64_to_float(1234),  # type: ignore[arg-type]
        lambda: stsdub.float_to_pcm16(ok, channels="2"),  # type: ignore[arg-type]
        lambda: stsdub.float_to_pcm16(ok, channels=0),
        lambda: stsdub.float_to_pcm16(ok, channels=10**12),
        lambda: stsdub.pcm16_to_float(b"\x00\x00" * 65, channels=65),
        lambda: stsdub.AudioBuffer.silence(float("nan"), 16_000),
        lambda: stsdub.AudioBuffer.silence(-1, 16_000),
        lambda: stsdub.AudioBuffer.silence("1", 16_000),  # type: ignore[arg-type]
        lambda: stsdub.AudioBuffer(ok, 16_000).resampled(0),
        lambda: stsdub.Fragment(0, masked, 16_000),  # NaN under the mask is still NaN
    ]
    for call in calls:
        with pytest.raises(stsdub.InvalidAudioError):
            call()
    assert stsdub.AudioBuffer.silence(np.int8(2), 8_000).samples.size == 16_000


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("fragment_id", 5),
        ("fragment_id", ""),
        ("stream_id", 3),
        ("stream_id", ""),
        ("timestamp_ms", "10"),
        ("timestamp_ms", True),
        ("metadata", [("a", 1)]),
    ],
)
def test_fragment_fields_are_checked(field: str, value: object) -> None:
    with pytest.raises(stsdub.InvalidFragmentError, match=field):
        stsdub.Fragment(0, np.zeros(4, np.float32), 16_000, **{field: value})


def test_stereo_is_mixed_to_mono() -> None:
    left_right = np.array([16384, -16384, 8192, 8192], dtype="<i2").tobytes()
    assert stsdub.pcm16_to_float(left_right, channels=2).tolist() == [0.0, 0.25]


def test_resampling_and_duration() -> None:
    buffer = stsdub.AudioBuffer(np.zeros(16_000, dtype=np.float32), 16_000)
    assert buffer.duration == 1.0
    up = buffer.resampled(48_000)
    assert up.sample_rate == 48_000 and up.samples.size == 48_000 and up.samples.dtype == np.float32
    assert buffer.resampled(16_000) is buffer
    assert stsdub.AudioBuffer.silence(0.5, 8_000).samples.size == 4_000


def test_buffers_compare_by_value_and_wav_encodes() -> None:
    a = stsdub.AudioBuffer(np.array([0.0, 0.5], dtype=np.float32), 8_000)
    b = stsdub.AudioBuffer(np.array([0.0, 0.5], dtype=np.float32), 8_000)
    assert a == b and a != stsdub.AudioBuffer(np.array([0.0, 0.4], dtype=np.float32), 8_000)
    assert a.to_wav()[:4] == b"RIFF"
    assert "<audio controls" in a._repr_html_()


def test_stage_error_retryability_follows_the_code() -> None:
    retryable = {c for c in stsdub.ErrorCode if stsdub.StageError(c, "x").retryable}
    assert {c.value for c in retryable} == {
        "TIMEOUT",
        "RATE_LIMIT_EXCEEDED",
        "NETWORK_ERROR",
        "TEMPORARY_UNAVAILABLE",
    }
    err = stsdub.StageError("QUOTA_EXCEEDED", "out of characters", "translation")
    assert err.to_dict() == {
        "code": "QUOTA_EXCEEDED",
        "message": "out of characters",
        "stage": "translation",
        "retryable": False,
    }
    assert str(err) == "QUOTA_EXCEEDED in translation: out of characters"
    with pytest.raises(ValueError):
        stsdub.StageError("NOT_A_CODE", "x")
