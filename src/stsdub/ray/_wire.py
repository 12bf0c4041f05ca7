"""What crosses the wire between a host and a replica: plain dicts, lists, str, numbers and
int16 arrays — never pickles of stsdub's own classes.

A host and its replicas may run different stsdub versions while a cluster is upgraded, and a
pickled attrs class breaks as soon as one side adds a field. So requests and results are
turned into tagged plain data here, and rebuilt on the other side from the fields the
receiver knows:

- an :class:`~stsdub.AudioBuffer` becomes ``{"__audio__": int16 ndarray, "rate": int}``
  (PCM16, half the bytes of float32; the precision of the reference protocol's audio);
- any other attrs value of :mod:`stsdub._core._values` (a request, ``Transcript``, ``Segment``,
  ``Word``, ``Translation``…) or :mod:`stsdub._core._diarization` (``DiarizationRequest``,
  ``Diarization``) becomes ``{"__value__": "ClassName", field: value, ...}``;
- a 1-D float array (a diarizer's speaker embedding) becomes a list of floats;
  a field the receiver does not know is dropped (an older replica ignores a newer field);
- tuples and lists become lists, and come back as tuples (our values hold tuples);
- a request's ``options`` mapping is copied as is: it must hold plain data.

Only class names exported by those two modules are rebuilt, so a payload cannot make the
receiver build anything else.

An envelope carries the version, the stage kind and a per-call id::

    request:  {"v": 1, "kind": "asr", "call_id": "…", "request": {...}}
    answer:   {"v": 1, "call_id": "…", "result": {...}}
           or {"v": 1, "call_id": "…", "error": {"code": "TIMEOUT", "message": "…"}}
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs
import numpy as np

from .._core import _audio, _diarization, _values
from ..errors import ErrorCode, StageError

__all__ = [
    "WIRE_VERSION",
    "decode_value",
    "encode_value",
    "error_answer",
    "error_from_answer",
]

#: Bumped when the envelope changes incompatibly; both sides refuse another version.
WIRE_VERSION = 1

_AUDIO = "__audio__"
_VALUE = "__value__"
# Fields copied verbatim (user data for the stage, not values of ours).
_RAW_FIELDS = frozenset({"options"})


def _audio_out(buffer: _values.AudioBuffer) -> dict[str, Any]:
    if buffer.samples.size == 0:
        pcm = np.zeros(0, dtype="<i2")
    else:
        pcm = np.frombuffer(_audio.float_to_pcm16(buffer.samples), dtype="<i2")
    return {_AUDIO: pcm, "rate": buffer.sample_rate}


def _audio_in(data: Mapping[str, Any]) -> _values.AudioBuffer:
    pcm = np.ascontiguousarray(data[_AUDIO], dtype="<i2")
    if pcm.ndim != 1:
        raise ValueError(f"audio must be 1-D PCM16, got shape {pcm.shape}")
    if pcm.size == 0:
        return _values.AudioBuffer(np.zeros(0, dtype=np.float32), int(data["rate"]))
    return _values.AudioBuffer(_audio.pcm16_to_float(pcm.tobytes()), int(data["rate"]))


def encode_value(value: Any) -> Any:
    """``value`` as plain data (see the module docstring)."""
    if isinstance(value, _values.AudioBuffer):
        return _audio_out(value)
    if attrs.has(type(value)):
        out: dict[str, Any] = {_VALUE: type(value).__name__}
        for field in attrs.fields(type(value)):
            item = getattr(value, field.name)
            out[field.name] = dict(item) if field.name in _RAW_FIELDS else encode_value(item)
        return out
    if isinstance(value, (list, tuple)):
        return [encode_value(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): encode_value(v) for k, v in value.items()}
    if isinstance(value, np.ndarray) and value.ndim == 1 and value.dtype.kind == "f":
        return value.astype(float).tolist()  # a speaker embedding
    if isinstance(value, np.generic):  # a NumPy scalar a stage returned as a float
        return value.item()
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise TypeError(f"cannot send a {type(value).__name__} to a remote stage")


def _value_class(name: object) -> type:
    cls = None
    for module in (_values, _diarization):
        if isinstance(name, str) and name in module.__all__:
            cls = getattr(module, name, None)
    if cls is None or not attrs.has(cls):
        raise ValueError(f"unknown value type {name!r}")
    return cls  # type: ignore[no-any-return]


def decode_value(data: Any) -> Any:
    """The value :func:`encode_value` made ``data`` from."""
    if isinstance(data, Mapping):
        if _AUDIO in data:
            return _audio_in(data)
        if _VALUE in data:
            cls = _value_class(data[_VALUE])
            known = {f.name: f.alias or f.name for f in attrs.fields(cls) if f.init}
            kwargs = {
                known[name]: (dict(item) if name in _RAW_FIELDS else decode_value(item))
                for name, item in data.items()
                if name in known
            }
            return cls(**kwargs)
        return {k: decode_value(v) for k, v in data.items()}
    if isinstance(data, list):
        return tuple(decode_value(v) for v in data)
    return data


def error_answer(call_id: str, code: ErrorCode, message: str) -> dict[str, Any]:
    """An answer that reports a failure."""
    return {"v": WIRE_VERSION, "call_id": call_id, "error": {"code": code.value, "message": message}}


def error_from_answer(error: Mapping[str, Any]) -> StageError:
    """The StageError an error answer stands for (an unknown code becomes INTERNAL_ERROR)."""
    message = str(error.get("message", ""))
    try:
        code = ErrorCode(error.get("code"))
    except ValueError:
        code = ErrorCode.INTERNAL_ERROR
        message = f"{error.get('code')}: {message}"
    return StageError(code, message)
