from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from stsdub import ConfigurationError
from stsdub._media import Segmentation, plan
from stsdub._media._segment import fixed_windows
from tests.media.media import recording
from tests.speech import SENTENCES


def assert_tiles(pieces, length: int) -> None:
    assert pieces[0].start == 0 and pieces[-1].end == length
    for a, b in itertools.pairwise(pieces):
        assert a.end == b.start and a.length > 0


@given(st.integers(1, 200_000), st.sampled_from([8000, 16000, 44100]), st.floats(0.5, 10))
def test_fixed_windows_tile_the_input(length: int, rate: int, seconds: float) -> None:
    pieces = fixed_windows(length, rate, seconds)
    assert_tiles(pieces, length)
    step = max(1, round(seconds * rate))
    assert all(p.length == step for p in pieces[:-1])


def test_fixed_mode_sends_every_window_and_keeps_a_sliver_as_it_is() -> None:
    rate = 16000
    samples = np.zeros(rate * 12 + 100, np.float32)
    pieces, audio16k = plan(samples, rate, Segmentation(mode="fixed", window_seconds=6))
    assert [p.speech for p in pieces] == [True, True, False]
    assert audio16k.size == samples.size


def test_speech_mode_cuts_at_pauses_and_never_inside_a_sentence() -> None:
    samples, rate, spans = recording(SENTENCES[:5], pauses=[0.8, 2.0, 0.8, 0.8, 1.0])
    pieces, _ = plan(samples, rate, Segmentation())
    assert_tiles(pieces, samples.size)
    speech = [(p.start / rate, p.end / rate) for p in pieces if p.speech]
    # The voiced part of every sentence lies inside one speech piece: no word is cut in two.
    # (A synthesized sentence ends in some near-silence that the detector may leave out.)
    for start, end in spans:
        a, b = round(start * rate), round(end * rate)
        loud = np.flatnonzero(np.abs(samples[a:b]) > 0.05)
        first, last = (a + loud[0]) / rate, (a + loud[-1]) / rate
        assert any(lo <= first and last <= hi for lo, hi in speech), (first, last, speech)
    # Pauses of 0.8 s and more separate the sentences.
    assert len(speech) == len(spans)
    # The long pause is a piece of its own that is not dubbed.
    assert any(not p.speech and p.length / rate > 1.0 for p in pieces)


def test_speech_longer_than_the_maximum_is_cut_at_a_pause() -> None:
    samples, rate, _ = recording(SENTENCES[:6], pauses=0.25)
    pieces, _ = plan(samples, rate, Segmentation(max_seconds=5.0, min_pause_seconds=1.0))
    assert_tiles(pieces, samples.size)
    speech = [(p.start / rate, p.end / rate) for p in pieces if p.speech]
    assert len(speech) > 1
    assert all(b - a <= 5.0 for a, b in speech)


def test_silence_is_not_dubbed() -> None:
    pieces, _ = plan(np.zeros(16000 * 3, np.float32), 16000, Segmentation())
    assert [p.speech for p in pieces] == [False]


@pytest.mark.parametrize(
    "kwargs", [{"mode": "words"}, {"max_seconds": 0}, {"window_seconds": -1}, {"threshold": 1.5}]
)
def test_bad_settings_are_refused(kwargs) -> None:
    with pytest.raises(ConfigurationError):
        Segmentation(**kwargs)
