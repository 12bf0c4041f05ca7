"""Shared Hypothesis strategies."""

from __future__ import annotations

import base64

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

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


# -- malformed inputs: what a caller may pass by mistake ------------------------------------------

#: Values of the wrong kind for any argument.
JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.complex_numbers(),
    st.text(max_size=8),
    st.binary(max_size=8),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.builds(object),
)

#: NumPy integers of every width, for arguments that take an int.
NUMPY_INTS = st.one_of(
    hnp.from_dtype(np.dtype(t)).map(np.dtype(t).type)
    for t in ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")
)

#: Sample rates: valid ones, zero, negative, huge, NumPy integers, floats and junk.
ANY_RATES = st.one_of(RATES, st.integers(-1_000, 1_000_000), st.integers(), NUMPY_INTS, st.floats(), JUNK)

#: Channel counts, valid or not.
ANY_CHANNELS = st.one_of(st.integers(1, 4), st.integers(-3, 8), st.integers(), NUMPY_INTS, st.floats(), JUNK)


@st.composite
def any_arrays(draw: st.DrawFn) -> np.ndarray:
    """Arrays of any dtype and shape, including 0-d, empty, strided and read-only ones."""
    dtype = draw(
        st.one_of(
            st.just(np.dtype(np.float32)),
            st.just(np.dtype(">f4")),  # float32, but big-endian
            hnp.floating_dtypes(),
            hnp.integer_dtypes(),
            hnp.complex_number_dtypes(),
            hnp.boolean_dtypes(),
            hnp.byte_string_dtypes(max_len=3),
            st.just(np.dtype(object)),
        )
    )
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=3))
    array = draw(hnp.arrays(dtype, shape))
    if array.ndim and draw(st.booleans()):
        array = array[::2]  # a strided view
    if draw(st.booleans()):
        array.flags.writeable = False
    return array


@st.composite
def float32_audio(draw: st.DrawFn, max_size: int = 64) -> np.ndarray:
    """1-D float32 arrays with any values: NaN, infinities, out of [-1, 1], subnormals."""
    values = draw(hnp.arrays(np.float32, st.integers(0, max_size), elements=st.floats(width=32)))
    if draw(st.booleans()):
        # A masked array must not hide NaN or out-of-range values from validation.
        mask = draw(hnp.arrays(np.bool_, values.shape))
        return np.ma.masked_array(values, mask=mask)
    return values


#: Anything passed as audio samples.
ANY_AUDIO = st.one_of(audio(), float32_audio(), any_arrays(), st.lists(SAMPLE, max_size=4), JUNK)


@st.composite
def buffers(draw: st.DrawFn) -> object:
    """Byte-like PCM data: bytes, bytearrays and memoryviews of any item size and layout."""
    array = draw(any_arrays().filter(lambda a: a.dtype != object))
    kind = draw(st.sampled_from(["bytes", "bytearray", "memoryview", "strided"]))
    if kind == "strided" and array.ndim:
        return memoryview(np.ascontiguousarray(array)[::2])
    raw = np.ascontiguousarray(array)
    if kind == "memoryview":
        return memoryview(raw)
    return bytearray(raw.tobytes()) if kind == "bytearray" else raw.tobytes()


#: Anything passed as PCM16 data.
ANY_PCM = st.one_of(st.binary(max_size=64), buffers(), st.text(max_size=8), JUNK)

_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="


@st.composite
def base64_text(draw: st.DrawFn) -> object:
    """Base64 of PCM16, intact or damaged (bad characters, padding or length), str or bytes."""
    text = base64.b64encode(draw(st.binary(max_size=48))).decode("ascii")
    damage = draw(st.sampled_from(["none", "insert", "cut", "replace"]))
    if damage != "none" and text:
        at = draw(st.integers(0, len(text)))
        junk = draw(st.text(alphabet=st.sampled_from(f"{_B64}-_ *\n\0é€"), min_size=1, max_size=3))
        if damage == "insert":
            text = text[:at] + junk + text[at:]
        elif damage == "cut":
            text = text[:at]
        else:
            text = text[:at] + junk + text[at + len(junk) :]
    if draw(st.booleans()):
        return text.encode("utf-8")
    return text


#: Anything passed as base64 audio.
ANY_BASE64 = st.one_of(base64_text(), st.text(max_size=12), st.binary(max_size=12), JUNK)
