"""A live stream's soundtrack: each result's dub over its fragment's background (``mixed``)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from .._core import _audio
from .._core._values import AudioAsset, AudioBuffer, DubResult
from .._media._duck import DEFAULT_ATTACK, duck_gain, mix_background, speech_spans

if TYPE_CHECKING:
    from .._core._audio import FloatArray
    from ._job import Job

__all__ = ["LiveSoundtrack", "join_gain"]


class LiveSoundtrack:
    """The soundtrack of one stream, fragment after fragment (``background="duck"|"separate"``)."""

    def __init__(self) -> None:
        # The soundtrack's gain where the last mixed fragment ended (background="duck").
        self._duck_gain = 1.0

    def mix(self, job: Job, result: DubResult) -> AudioAsset:
        """The fragment's soundtrack with the result's dub over it (``DubResult.mixed``).

        ``"separate"``: the separated background at its own level under the dub. ``"duck"``
        (and where separation failed): the original, lowered wherever the source's speech
        was (its segments; the whole fragment when the ASR could not say) or the dub speaks; the gain
        joins the previous fragment's without a jump (see :func:`join_gain`).
        """
        fragment = job.fragment
        audio = result.audio
        rate, size = audio.sample_rate, audio.samples.size
        # Fallback audio is not a dub: the soundtrack alone, ducked where the speech was.
        dub = audio.samples if audio.kind == "dubbed" else np.zeros(size, np.float32)
        separation = job.separation
        if separation is not None:
            background = separation.background
            under = _audio.resample(background.samples, background.sample_rate, rate)
            mixed = mix_background(dub, _audio.fit_length(under, size))
            self._duck_gain = 1.0
        else:
            original = _audio.fit_length(_audio.resample(fragment.audio, fragment.sample_rate, rate), size)
            transcript = job.transcript.transcript if job.transcript is not None else None
            if transcript is not None and transcript.segments:
                speech = [(seg.start, seg.end) for seg in transcript.segments]
            elif transcript is not None and not transcript.text.strip():
                speech = []  # the ASR heard nobody
            else:
                speech = [(0.0, size / rate)]  # unknown: the original voice may be anywhere
            gain = duck_gain(size, rate, [*speech, *speech_spans(dub, rate)])
            gain = join_gain(gain, self._duck_gain, rate)
            self._duck_gain = float(gain[-1]) if gain.size else self._duck_gain
            mixed = np.clip(dub + original * gain, -1.0, 1.0).astype(np.float32)
        return AudioAsset(
            job.asset_id("mixed"), (audio.asset_id, job.fragment_asset_id), AudioBuffer(mixed, rate), "mixed"
        )


def join_gain(gain: FloatArray, previous: float, sample_rate: int) -> FloatArray:
    """``gain`` starting from ``previous`` (the last gain of the fragment before), without a jump.

    Each live fragment's ducking is computed on its own; where the gain it wants at its
    start differs from where the previous fragment left it, the two are joined over the
    attack time by a raised cosine in dB (a fall or a rise of at most 20 dB in 80 ms, as
    within a file).
    """
    if gain.size == 0 or math.isclose(float(gain[0]), previous, rel_tol=1e-4):
        return gain
    n = min(gain.size, max(1, round(DEFAULT_ATTACK * sample_rate)))
    own = 20 * np.log10(np.maximum(gain[:n].astype(np.float64), 1e-6))
    start = 20 * math.log10(max(previous, 1e-6))
    weight = 0.5 - 0.5 * np.cos(np.pi * (np.arange(n, dtype=np.float64) + 0.5) / n)
    joined: FloatArray = gain.copy()
    joined[:n] = (10 ** ((start + (own - start) * weight) / 20)).astype(np.float32)
    return joined
