"""Ducking the original under speech, and the separated background under the dub."""

from __future__ import annotations

import numpy as np
import pytest

from stsdub._media._duck import (
    DEFAULT_ATTACK,
    DEFAULT_DEPTH_DB,
    DEFAULT_RELEASE,
    duck,
    duck_gain,
    max_gain_step_db,
    merge_spans,
    mix_background,
    mix_ducked,
    speech_spans,
    steepest_step_db,
)

RATE = 16_000


def _db(x: np.ndarray) -> float:
    return float(10 * np.log10(np.mean(np.square(x, dtype=np.float64)) + 1e-20))


def _at(seconds: float) -> int:
    return round(seconds * RATE)


def _chords(seconds: float) -> np.ndarray:
    """Music: three major triads, one after another, with soft note edges."""
    t = np.arange(_at(seconds)) / RATE
    out = np.zeros_like(t)
    for i, root in enumerate((220.0, 174.6, 196.0)):
        part = (t >= i * seconds / 3) & (t < (i + 1) * seconds / 3)
        for ratio in (1.0, 1.26, 1.5):
            out[part] += 0.08 * np.sin(2 * np.pi * root * ratio * t[part])
    return out.astype(np.float32)


def _speech(seconds: float, spans: list[tuple[float, float]], pitch: float) -> np.ndarray:
    """A voice: a harmonic buzz at syllable rate, only inside ``spans``."""
    t = np.arange(_at(seconds)) / RATE
    buzz = sum(np.sin(2 * np.pi * pitch * k * t) / k for k in range(1, 8))
    syllables = 0.5 - 0.5 * np.cos(2 * np.pi * 4 * t)
    inside = np.zeros_like(t, dtype=bool)
    for a, b in spans:
        inside |= (t >= a) & (t < b)
    return (0.15 * buzz * syllables * inside).astype(np.float32)


LINES = [(1.0, 3.0), (5.0, 6.5), (8.0, 9.0)]
SECONDS = 10.0


def test_full_level_away_from_speech_and_the_depth_inside() -> None:
    gain = duck_gain(_at(SECONDS), RATE, LINES)
    floor = 10 ** (DEFAULT_DEPTH_DB / 20)
    assert np.all(gain[: _at(1.0 - DEFAULT_ATTACK)] == 1.0)
    assert np.all(gain[_at(3.0 + DEFAULT_RELEASE) : _at(5.0 - DEFAULT_ATTACK)] == 1.0)
    for a, b in LINES:
        assert np.allclose(gain[_at(a) : _at(b)], floor)
    assert gain.dtype == np.float32 and gain.size == _at(SECONDS)


def test_attack_ends_at_the_speech_and_release_starts_after_it() -> None:
    gain = duck_gain(_at(4.0), RATE, [(1.0, 2.0)], attack=0.1, release=0.5)
    attack = gain[_at(0.9) : _at(1.0)]
    release = gain[_at(2.0) : _at(2.5)]
    assert np.all(np.diff(attack) <= 0) and attack[0] < 1.0 and attack[-1] > gain[_at(1.0)]
    assert np.all(np.diff(release) >= 0) and release[0] < 0.11
    assert gain[_at(0.9) - 1] == 1.0 and gain[_at(2.5)] == 1.0
    # Half way through each ramp the gain is half way down in dB.
    assert 20 * np.log10(gain[_at(0.95)]) == pytest.approx(DEFAULT_DEPTH_DB / 2, abs=0.2)
    assert 20 * np.log10(gain[_at(2.25)]) == pytest.approx(DEFAULT_DEPTH_DB / 2, abs=0.2)


@pytest.mark.parametrize(("attack", "release", "depth"), [(0.08, 0.35, -20.0), (0.02, 0.1, -30.0)])
def test_no_clicks_the_gain_step_per_sample_is_bounded(attack: float, release: float, depth: float) -> None:
    gain = duck_gain(_at(SECONDS), RATE, LINES, depth_db=depth, attack=attack, release=release)
    bound = steepest_step_db(depth, min(attack, release), RATE)
    assert max_gain_step_db(gain) <= bound * 1.01


def test_the_default_ramps_change_the_gain_by_hundredths_of_a_db_per_sample() -> None:
    assert max_gain_step_db(duck_gain(_at(SECONDS), RATE, LINES)) < 0.05
    # At 48 kHz, three times finer.
    assert max_gain_step_db(duck_gain(48_000 * 10, 48_000, LINES)) < 0.01


def test_short_gaps_stay_down_and_overlapping_ramps_take_the_lower_gain() -> None:
    gain = duck_gain(_at(4.0), RATE, [(1.0, 1.5), (1.8, 2.2)], hold=0.5)
    assert np.allclose(gain[_at(1.0) : _at(2.2)], 10 ** (DEFAULT_DEPTH_DB / 20))
    apart = duck_gain(_at(4.0), RATE, [(1.0, 1.5), (1.8, 2.2)], hold=0.0, release=0.5, attack=0.1)
    middle = apart[_at(1.5) : _at(1.8)]
    assert np.max(middle) < 1.0  # the release of the first meets the attack of the second
    assert max_gain_step_db(apart) <= steepest_step_db(DEFAULT_DEPTH_DB, 0.1, RATE) * 1.01


def test_spans_at_the_edges_of_the_audio() -> None:
    gain = duck_gain(_at(1.0), RATE, [(-0.5, 0.2), (0.9, 3.0)])
    assert np.allclose(gain[: _at(0.2)], 0.1)
    assert np.allclose(gain[_at(0.9) :], 0.1)
    assert duck_gain(0, RATE, [(0.0, 1.0)]).size == 0


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="depth_db"):
        duck_gain(10, RATE, [], depth_db=6.0)
    with pytest.raises(ValueError, match="attack"):
        duck_gain(10, RATE, [], attack=-1.0)


def test_merge_spans() -> None:
    assert merge_spans([(3.0, 4.0), (1.0, 2.0), (1.5, 2.5), (5.0, 5.0)]) == [(1.0, 2.5), (3.0, 4.0)]
    assert merge_spans([(1.0, 2.0), (2.2, 3.0)], gap=0.3) == [(1.0, 3.0)]


def test_speech_spans_of_a_dub_track() -> None:
    dub = np.zeros(_at(SECONDS), np.float32)
    dub += _speech(SECONDS, [(1.2, 2.8), (5.1, 6.3)], pitch=180.0)
    found = speech_spans(dub, RATE)
    assert len(found) == 2
    for (a, b), (fa, fb) in zip([(1.2, 2.8), (5.1, 6.3)], found, strict=True):
        # The buzz fades in and out at syllable rate: its quiet edges may fall under the threshold.
        assert a - 0.03 <= fa <= a + 0.15 and b - 0.15 <= fb <= b + 0.03
    assert speech_spans(np.zeros(100, np.float32), RATE) == []


def test_music_survives_between_lines_and_the_original_voice_drops() -> None:
    """The soundtrack properties: music within 1 dB between lines, original voice >= 18 dB down."""
    music = _chords(SECONDS)
    voice = _speech(SECONDS, LINES, pitch=120.0)
    dub = _speech(SECONDS, [(a + 0.1, b - 0.1) for a, b in LINES], pitch=200.0)
    with_voice = mix_ducked(dub, music + voice, RATE, speech=LINES)
    without_voice = mix_ducked(dub, music, RATE, speech=LINES)
    # Ducking is linear in the original: the difference is the original voice as it is heard.
    heard_voice = with_voice - without_voice
    heard_music = without_voice - dub
    for a, b in LINES:
        assert _db(voice[_at(a) : _at(b)]) - _db(heard_voice[_at(a) : _at(b)]) >= 18.0
    gaps = [(0.0, 1.0), (3.0, 5.0), (6.5, 8.0), (9.0, 10.0)]
    for a, b in gaps:
        # The middle of each gap, clear of the ramps, is the music untouched...
        inner = slice(_at(a + DEFAULT_RELEASE), _at(b - DEFAULT_ATTACK))
        assert abs(_db(heard_music[inner]) - _db(music[inner])) <= 1.0
        assert np.allclose(heard_music[inner], music[inner], atol=1e-6)
    # ...and the music in the long gaps, ramps included, is within 1 dB.
    for a, b in [(3.0, 5.0), (6.5, 8.0)]:
        whole = slice(_at(a), _at(b))
        assert abs(_db(heard_music[whole]) - _db(music[whole])) <= 1.0


def test_dub_spans_duck_even_where_the_original_was_not_marked() -> None:
    music = _chords(4.0)
    dub = _speech(4.0, [(1.0, 2.0)], pitch=200.0)
    out = mix_ducked(dub, music, RATE)  # spans found from the dub
    under = out - dub
    inside = slice(_at(1.1), _at(1.9))
    assert _db(music[inside]) - _db(under[inside]) == pytest.approx(20.0, abs=0.5)
    given = mix_ducked(dub, music, RATE, dub_spans=[])  # told nobody speaks: nothing ducked
    assert np.allclose(given - dub, music, atol=1e-6)


def test_duck_applies_the_gain() -> None:
    x = np.full(_at(2.0), 0.5, np.float32)
    out = duck(x, RATE, [(0.5, 1.0)])
    assert np.allclose(out, 0.5 * duck_gain(x.size, RATE, [(0.5, 1.0)]))
    assert out.dtype == np.float32


def test_mix_background_keeps_its_level_and_the_dub_length() -> None:
    dub = _speech(3.0, [(0.5, 2.5)], pitch=200.0)
    background = _chords(3.5)
    mixed = mix_background(dub, background)
    assert mixed.size == dub.size and mixed.dtype == np.float32
    assert np.allclose(mixed, dub + background[: dub.size], atol=1e-6)
    quieter = mix_background(dub, background, level_db=-6.0)
    assert np.allclose(quieter - dub, background[: dub.size] * 10 ** (-6 / 20), atol=1e-6)
    short = mix_background(dub, background[: _at(1.0)])
    assert np.allclose(short[_at(1.0) :], dub[_at(1.0) :])
    loud = mix_background(np.full(10, 0.9, np.float32), np.full(10, 0.9, np.float32))
    assert np.max(loud) <= 1.0
