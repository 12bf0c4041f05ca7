"""Duration matching: speed, rubberband time-stretch, padding, carry, and status."""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Iterator

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import stsdub
from stsdub import AudioBuffer, DurationPolicy, ErrorCode, Status, SynthesisRequest
from stsdub._pipeline._duration import Carry, DurationMatcher, Fitted, find_rubberband, trim_silence
from stsdub.testing import FakeASR, FakeSynthesizer

from .strategies import tone

OUT_RATES = st.sampled_from([16_000, 22_050, 48_000])


def speechlike(seconds: float, rate: int = 16_000, seed: int = 0) -> np.ndarray:
    """Syllables of a harmonic buzz, separated by short gaps, with silence at both ends."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * rate)) / rate
    f0 = 110 + 40 * rng.random()
    buzz = sum(np.sin(2 * np.pi * f0 * k * t + rng.random()) / k for k in range(1, 10))
    syllables = np.clip(np.sin(2 * np.pi * 3.5 * t), 0, None) ** 0.5
    core = (0.4 * buzz * syllables / np.max(np.abs(buzz))).astype(np.float32)
    pad = np.zeros(round(0.1 * rate), np.float32)
    return np.concatenate([pad, core, pad])


def energy(samples: np.ndarray) -> float:
    return float(np.sum(np.square(samples, dtype=np.float64)))


def content(fitted: Fitted) -> np.ndarray:
    """Everything the fit laid down: the fragment's audio and what it carries on."""
    tail = fitted.carry.samples if fitted.carry is not None else np.zeros(0, np.float32)
    return np.concatenate([fitted.audio.samples, tail])


@pytest.fixture
def no_rubberband(monkeypatch: pytest.MonkeyPatch, tmp_path: os.PathLike[str]) -> Iterator[None]:
    monkeypatch.setenv("PATH", str(tmp_path))
    find_rubberband.cache_clear()
    yield
    find_rubberband.cache_clear()


# -- the policy -------------------------------------------------------------------------------


def test_policy_defaults_keep_the_reference_thresholds() -> None:
    policy = DurationPolicy()
    assert (policy.success_max, policy.partial_max, policy.strict) == (0.10, 0.20, False)
    assert policy.status_for(0.10) is Status.SUCCESS
    assert policy.status_for(0.1001) is Status.PARTIAL
    assert policy.status_for(0.5) is Status.PARTIAL
    assert stsdub.DurationPolicy is DurationPolicy


@pytest.mark.parametrize(
    "bad",
    [
        {"success_max": 0.3, "partial_max": 0.2},
        {"min_speed": 1.2},
        {"max_speed": 0.9},
        {"min_stretch": 0.0},
        {"max_stretch": 0.95},
        {"max_carry": -1.0},
        {"max_forced_stretch": 1.1},
        {"success_max": float("nan")},
    ],
)
def test_policy_refuses_contradictions(bad: dict[str, float]) -> None:
    with pytest.raises(stsdub.ConfigurationError):
        DurationPolicy(**bad)


# -- one fragment, without rubberband ----------------------------------------------------------


def test_exact_speech_is_success_with_exact_length() -> None:
    speech = tone(1.0, 16_000)
    fitted = DurationMatcher().fit(AudioBuffer(speech, 16_000), 16_000, 16_000)
    assert fitted.status is Status.SUCCESS and fitted.error is None
    assert fitted.audio.samples.size == 16_000
    assert fitted.variance < 0.001 and fitted.tempo == 1.0 and fitted.carry is None
    assert np.array_equal(fitted.audio.samples[:-1], speech[1:])  # the silent first sample is trimmed


def test_silence_is_trimmed_from_both_ends() -> None:
    speech = tone(0.5, 16_000)
    padded = np.concatenate([np.zeros(4000, np.float32), speech, np.zeros(6000, np.float32)])
    assert np.array_equal(trim_silence(padded), trim_silence(speech))
    fitted = DurationMatcher().fit(AudioBuffer(padded, 16_000), 8_000, 16_000)
    assert fitted.status is Status.SUCCESS and fitted.tempo == 1.0
    assert np.array_equal(fitted.audio.samples[: trim_silence(speech).size], trim_silence(speech))


def test_without_time_stretch_speech_is_padded_and_carried_untouched(no_rubberband: None) -> None:
    matcher = DurationMatcher(DurationPolicy(time_stretch=False))
    speech = speechlike(1.0)
    trimmed = trim_silence(speech)
    fitted = matcher.fit(AudioBuffer(speech, 16_000), trimmed.size - 3000, 16_000, sequence_number=4)
    assert fitted.audio.samples.size == trimmed.size - 3000
    assert fitted.carry is not None and fitted.carry.sequence_number == 4
    assert np.array_equal(content(fitted), trimmed)
    follow = matcher.fit(AudioBuffer(speech, 16_000), 20_000, 16_000, carry=fitted.carry)
    assert np.array_equal(follow.audio.samples[:3000], fitted.carry.samples)
    assert np.array_equal(follow.audio.samples[3000 : 3000 + trimmed.size], trimmed)
    assert any("late" in w for w in follow.warnings)


def test_without_time_stretch_overflow_beyond_the_bound_is_cut_quietly(no_rubberband: None) -> None:
    policy = DurationPolicy(time_stretch=False, max_carry=0.2)
    speech = trim_silence(speechlike(2.0))
    fitted = DurationMatcher(policy).fit(AudioBuffer(speech, 16_000), 16_000, 16_000)
    assert fitted.audio.samples.size == 16_000
    assert fitted.carry is None or fitted.carry.duration <= 0.2
    assert any("cut" in w for w in fitted.warnings)
    # Cut in a pause near the bound (1.2 s), not anywhere: what is kept is the speech's start,
    # untouched but for a 5 ms fade.
    laid = content(fitted)
    assert 16_000 + 3200 - 0.3 * 16_000 <= laid.size <= 16_000 + 3200
    assert np.array_equal(laid[:-80], speech[: laid.size - 80])
    assert energy(speech[laid.size - 80 : laid.size]) < 0.01 * energy(speech[: laid.size]) / (laid.size / 80)
    assert fitted.status is Status.PARTIAL  # 2 s of speech for 1 s


def test_silent_speech_is_a_synthesis_failure() -> None:
    fitted = DurationMatcher().fit(AudioBuffer(np.zeros(8000, np.float32), 16_000), 8000, 16_000)
    assert fitted.status is Status.FAILED
    assert fitted.error is not None and fitted.error.code is ErrorCode.SYNTHESIS_FAILED


@pytest.mark.parametrize(
    ("natural", "target", "expected"),
    [
        (1.0, 1.0, None),
        (1.0, 0.98, None),
        (1.15, 1.0, 1.15),
        (1.2, 1.0, 1.2),
        (3.0, 1.0, 1.2),  # max_speed: the rest is stretched
        (1.0, 2.0, 0.8),
        (1.0, 1.25, 0.8),
    ],
)
def test_speed_asked_of_the_synthesizer(natural: float, target: float, expected: float | None) -> None:
    speech = AudioBuffer(tone(natural, 16_000), 16_000)
    speed = DurationMatcher().speed_for(speech, target)
    assert speed == (None if expected is None else pytest.approx(expected, rel=1e-3))


def test_speed_counts_the_carried_speech() -> None:
    speech = AudioBuffer(tone(1.0, 16_000), 16_000)
    carry = Carry(np.full(3200, 0.1, np.float32), 16_000, 0)
    assert DurationMatcher().speed_for(speech, 1.2, carry) is None  # 1 s of room left: fits
    assert DurationMatcher().speed_for(speech, 1.1, carry) == pytest.approx(1 / 0.9, rel=1e-3)


# -- rubberband ---------------------------------------------------------------------------------


def test_a_missing_rubberband_is_a_clear_error_at_dubber_construction(no_rubberband: None) -> None:
    with pytest.raises(stsdub.StageLoadError) as err:
        stsdub.Dubber(FakeASR(), None, FakeSynthesizer(), source_language="en", target_language="en")
    assert "apt-get install rubberband-cli" in str(err.value) and "brew install rubberband" in str(err.value)
    # Only padding and carrying needs no rubberband.
    stsdub.Dubber(
        FakeASR(),
        None,
        FakeSynthesizer(),
        source_language="en",
        target_language="en",
        duration=DurationPolicy(time_stretch=False),
    )


def test_rubberband_is_found() -> None:
    path, version = find_rubberband()
    assert os.path.basename(path) == "rubberband" and version


def test_stretch_within_the_clamps_is_success() -> None:
    speech = speechlike(1.5)
    natural = trim_silence(speech).size
    target = round(natural / 1.2)
    fitted = DurationMatcher().fit(AudioBuffer(speech, 16_000), target, 16_000)
    assert fitted.tempo == pytest.approx(natural / target)
    assert fitted.status is Status.SUCCESS and fitted.variance < 0.01
    assert fitted.audio.samples.size == target
    assert abs(fitted.speech_samples - target) <= 2 and fitted.carry is None


def _expected_variance(
    policy: DurationPolicy, natural: float, room: float, carry: float, target: float
) -> float:
    tempo = (
        min(max(natural / room, policy.min_stretch), policy.max_stretch) if room > 0 else policy.max_stretch
    )
    if abs(tempo - 1) <= policy.stretch_tolerance:
        tempo = 1.0
    return abs(carry + natural / tempo - target) / target


@pytest.mark.slow
@settings(max_examples=14, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seconds=st.floats(0.6, 2.0),
    ratio=st.floats(0.5, 2.0),
    in_rate=st.sampled_from([16_000, 22_050, 24_000]),
    out_rate=OUT_RATES,
    strict=st.booleans(),
    seed=st.integers(0, 1000),
)
def test_fit_properties(
    seconds: float, ratio: float, in_rate: int, out_rate: int, strict: bool, seed: int
) -> None:
    """Targets 0.5× to 2× the speech: exact length, status by the thresholds, no speech cut."""
    policy = DurationPolicy(strict=strict)
    speech = speechlike(seconds, in_rate, seed)
    trimmed = trim_silence(speech)
    natural = trimmed.size * out_rate / in_rate
    target = round(natural * ratio)
    fitted = DurationMatcher(policy).fit(AudioBuffer(speech, in_rate), target, out_rate)

    assert fitted.audio.sample_rate == out_rate
    assert fitted.audio.samples.size == target
    expected = _expected_variance(policy, natural, target, 0, target)
    assert fitted.variance == pytest.approx(expected, rel=0.02, abs=1e-3)
    if fitted.variance <= policy.success_max:
        assert fitted.status is Status.SUCCESS and fitted.error is None
    elif fitted.variance <= policy.partial_max or not strict:
        assert fitted.status is Status.PARTIAL and fitted.error is None
        assert fitted.variance <= policy.partial_max or fitted.warnings
    else:
        assert fitted.status is Status.FAILED
        assert fitted.error is not None and fitted.error.code is ErrorCode.DURATION_MISMATCH_EXCEEDED
        return
    # Nothing cut: all the (stretched) speech is in the output or in the carry ...
    laid = content(fitted)
    assert laid.size >= fitted.speech_samples and not np.any(laid[fitted.speech_samples :])  # padding
    assert fitted.speech_samples >= natural / fitted.tempo - 0.002 * out_rate
    # ... with its energy (rubberband's phase vocoder keeps most of it; a cut word would not).
    assert 0.5 < energy(laid) / (energy(trimmed) * out_rate / in_rate / fitted.tempo) < 1.3
    # The drift is bounded.
    assert fitted.carry is None or fitted.carry.duration <= policy.max_carry + 1e-9
    assert fitted.tempo <= policy.max_forced_stretch
    # Speech the clamps can fit is fitted, not padded or carried (bar a difference too small
    # to be worth stretching for).
    if policy.min_stretch * 1.01 <= 1 / ratio <= policy.max_stretch * 0.99:
        assert fitted.status is Status.SUCCESS
        assert fitted.carry is None or fitted.carry.samples.size <= policy.stretch_tolerance * target + 1


@pytest.mark.slow
@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    plan=st.lists(st.tuples(st.floats(0.4, 1.5), st.floats(0.5, 2.0)), min_size=3, max_size=6),
    max_carry=st.sampled_from([0.0, 0.2, 0.5]),
)
def test_carry_across_a_stream_stays_bounded(plan: list[tuple[float, float]], max_carry: float) -> None:
    """Fragment after fragment: the carry never exceeds max_carry and no speech is lost."""
    rate = 16_000
    matcher = DurationMatcher(DurationPolicy(max_carry=max_carry))
    carry: Carry | None = None
    outputs: list[np.ndarray] = []
    spans: list[tuple[int, int]] = []  # where each fragment's speech lies on the stream's timeline
    offset = 0
    for seq, (seconds, ratio) in enumerate(plan):
        speech = speechlike(seconds, rate, seq)
        target = round(trim_silence(speech).size * ratio)
        fitted = matcher.fit(AudioBuffer(speech, rate), target, rate, carry=carry, sequence_number=seq)
        assert fitted.audio.samples.size == target
        late = carry.samples.size if carry is not None else 0
        if carry is not None:  # the carried speech opens this fragment, sample for sample
            assert np.array_equal(fitted.audio.samples[:late], carry.samples[:target])
        assert fitted.carry is None or (
            fitted.carry.duration <= max_carry + 1e-9 and fitted.carry.sequence_number == seq
        )
        spans.append((offset + late, offset + late + fitted.speech_samples))
        outputs.append(fitted.audio.samples)
        offset += target
        carry = fitted.carry
    timeline = np.concatenate([*outputs, carry.samples if carry is not None else np.zeros(0, np.float32)])
    # Speech follows speech without overlap, the timeline ends with the last speech, and
    # everything between the speech is the silence it was padded with.
    assert all(prev[1] <= nxt[0] for prev, nxt in itertools.pairwise(spans))
    assert spans[-1][1] <= timeline.size
    padding = np.ones(timeline.size, bool)
    for start, stop in spans:
        padding[start:stop] = False
        assert energy(timeline[start:stop]) > 0
    assert not np.any(timeline[padding])


@pytest.mark.slow
@pytest.mark.model
def test_stretched_piper_speech_stays_intelligible() -> None:
    from .speech import SENTENCES, speak, transcribe, wer

    texts = list(SENTENCES[:4])
    heard = []
    for i, text in enumerate(texts):
        samples, rate = speak(text)
        natural = trim_silence(samples).size / rate
        factor = 1.25 if i % 2 else 0.85  # faster, slower
        fitted = DurationMatcher().fit(AudioBuffer(samples, rate), round(natural / factor * 16_000), 16_000)
        assert fitted.status is Status.SUCCESS
        heard.append(transcribe(fitted.audio.samples, 16_000))
    assert wer(texts, heard) <= 0.25, heard


# -- in the pipeline ----------------------------------------------------------------------------


class SpeedTone:
    """A test synthesizer that honours ``speed``: a tone of ``seconds / speed``."""

    supports_speed = True

    def __init__(self, seconds: float, rate: int = 16_000) -> None:
        self.seconds = seconds
        self.rate = rate
        self.speeds: list[float] = []
        self._lock = threading.Lock()

    def synthesize(self, request: SynthesisRequest) -> AudioBuffer:
        with self._lock:
            self.speeds.append(request.speed)
        return AudioBuffer(tone(self.seconds / request.speed, self.rate), self.rate)


async def _dub(synthesizer: object, seconds: list[float], **options: object) -> list[stsdub.DubResult]:
    fragments = [stsdub.Fragment(i, tone(s, 16_000), 16_000) for i, s in enumerate(seconds)]
    async with stsdub.Dubber(
        FakeASR(),
        None,
        synthesizer,
        source_language="en",
        target_language="en",
        fragment_timeout=20.0,
        **options,  # type: ignore[arg-type]
    ) as dubber:
        return [r async for r in dubber.dub(fragments)]


@pytest.mark.anyio
async def test_pipeline_asks_a_speed_capable_synthesizer_first() -> None:
    synthesizer = SpeedTone(1.15)
    (result,) = await _dub(synthesizer, [1.0])
    assert synthesizer.speeds[0] == 1.0
    assert synthesizer.speeds[1] == pytest.approx(1.15, rel=0.01)
    assert result.status is Status.SUCCESS and result.duration_variance < 0.02
    assert result.audio.samples.size == 16_000


@pytest.mark.anyio
async def test_pipeline_asks_for_the_predicted_speed_once_it_has_heard_the_voice() -> None:
    # The same text length and voice each time: after the first fragment the stream knows
    # the voice's characters per second, so the first call asks for the right speed.
    synthesizer = SpeedTone(1.15)
    results = await _dub(synthesizer, [1.0, 1.0, 1.0, 1.0])
    assert synthesizer.speeds[:2] == [1.0, pytest.approx(1.15, rel=0.01)]
    assert synthesizer.speeds[2:] == [pytest.approx(1.15, rel=0.01)] * 3  # one call each
    for result in results:
        assert result.status is Status.SUCCESS and result.duration_variance < 0.02
        assert result.fit is not None and result.fit.speed == pytest.approx(1.15, rel=0.01)
        assert result.fit.natural == pytest.approx(1.15, rel=0.01)  # at the voice's own rate


@pytest.mark.anyio
async def test_a_new_stream_predicts_from_what_the_dubber_s_other_streams_heard() -> None:
    synthesizer = SpeedTone(1.15)
    async with stsdub.Dubber(
        FakeASR(), None, synthesizer, source_language="en", target_language="en", fragment_timeout=20.0
    ) as dubber:
        first = [r async for r in dubber.dub([stsdub.Fragment(0, tone(1.0, 16_000), 16_000)])]
        assert synthesizer.speeds == [1.0, pytest.approx(1.15, rel=0.01)]
        # Another stream, the same voice: its first fragment is said at the right speed at once.
        async with dubber.open_stream("later") as stream:
            await stream.send(stsdub.Fragment(0, tone(1.0, 16_000), 16_000))
            await stream.end()
            later = [r async for r in stream]
        # Another voice has not been heard: said at its own rate first, as a new stream.
        other = [r async for r in dubber.dub([stsdub.Fragment(0, tone(1.0, 16_000), 16_000)], voice="b")]
    assert synthesizer.speeds[2:] == [pytest.approx(1.15, rel=0.01), 1.0, pytest.approx(1.15, rel=0.01)]
    assert all(r[0].status is Status.SUCCESS for r in (first, later, other))


@pytest.mark.anyio
async def test_a_missed_prediction_is_asked_again_from_the_speed_it_was_said_at() -> None:
    # A voice that speaks this fragment's text more slowly than the stream has measured:
    # the predicted speed is not enough, and the second call corrects from it.
    class Slower(SpeedTone):
        def synthesize(self, request: SynthesisRequest) -> AudioBuffer:
            slow = 1.6 if request.sequence_number == 2 else 1.0
            with self._lock:
                self.speeds.append(request.speed)
            return AudioBuffer(tone(slow * self.seconds / request.speed, self.rate), self.rate)

    synthesizer = Slower(1.2)
    results = await _dub(synthesizer, [1.0, 1.0, 1.0], duration=DurationPolicy(max_speed=2.5))
    # Fragment 0: 1.0 then 1.2; fragment 1: 1.2 at once; fragment 2: 1.2, then 1.2 × 1.6.
    assert synthesizer.speeds == pytest.approx([1.0, 1.2, 1.2, 1.2, 1.92], rel=0.01)
    assert results[2].fit is not None and results[2].fit.speed == pytest.approx(1.92, rel=0.01)
    assert all(r.status is Status.SUCCESS for r in results)


@pytest.mark.anyio
async def test_pipeline_clamps_the_speed_and_stretches_the_rest() -> None:
    synthesizer = SpeedTone(1.8)
    (result,) = await _dub(synthesizer, [1.0], duration=DurationPolicy(max_speed=1.2))
    assert synthesizer.speeds == [1.0, 1.2]  # ×1.8 wanted, clamped
    # 1.5 s left for 1 s; rubberband's ×1.3 leaves 1.15 s: 15 % off, the rest carried.
    assert result.status is Status.PARTIAL
    assert result.duration_variance == pytest.approx(1.5 / 1.3 - 1, abs=0.01)
    assert result.audio.samples.size == 16_000
    assert any("carried into the next fragment" in w for w in result.warnings)


@pytest.mark.anyio
async def test_pipeline_stretches_for_a_synthesizer_without_speed() -> None:
    results = await _dub(FakeSynthesizer(duration_ratio=1.2), [0.8, 1.0], output_sample_rate=48_000)
    for result, seconds in zip(results, [0.8, 1.0], strict=True):
        assert result.status is Status.SUCCESS
        assert result.audio.sample_rate == 48_000
        assert result.audio.samples.size == round(seconds * 48_000)
        assert result.duration_variance is not None and result.duration_variance < 0.02


@pytest.mark.anyio
async def test_pipeline_carries_overflow_into_the_next_fragment() -> None:
    # 1.6× too long with stretching clamped at 1.3: 0.23 s runs over, within max_carry.
    results = await _dub(FakeSynthesizer(duration_ratio=1.6), [1.0, 1.0, 1.0])
    assert all(r.audio.samples.size == 16_000 for r in results)
    assert any("carried into the next fragment" in w for w in results[0].warnings)
    assert any("late" in w for w in results[1].warnings)
    # The first fragment's tail opens the second: it starts loud, not with silence.
    assert np.max(np.abs(results[1].audio.samples[:800])) > 0.1


@pytest.mark.anyio
async def test_pipeline_strict_mismatch_fails_with_fallback() -> None:
    (result,) = await _dub(
        FakeSynthesizer(duration_ratio=3.0), [1.0], duration=DurationPolicy(strict=True), fallback="original"
    )
    assert result.status is Status.FAILED
    assert result.error is not None and result.error.code is ErrorCode.DURATION_MISMATCH_EXCEEDED
    assert result.audio.kind == "original" and result.audio.samples.size == 16_000


@pytest.mark.anyio
async def test_pipeline_plays_the_carry_in_the_next_fragment_without_speech() -> None:
    fragments = [
        stsdub.Fragment(0, tone(1.0), 16_000),
        stsdub.Fragment(1, np.zeros(16_000, np.float32), 16_000),
        stsdub.Fragment(2, tone(1.0), 16_000),
    ]
    async with stsdub.Dubber(
        FakeASR(), None, FakeSynthesizer(duration_ratio=1.6), source_language="en", target_language="en"
    ) as dubber:
        results = [r async for r in dubber.dub(fragments)]
    assert results[0].warnings and results[1].audio.kind == "dubbed"
    assert any("late" in w and "fragment 0" in w for w in results[1].warnings)
    assert np.any(results[1].audio.samples) and not np.any(results[1].audio.samples[8_000:])
    assert not any("dropped" in w for w in results[2].warnings)
    assert results[2].status is Status.PARTIAL  # its own 1.6 s, carried over again
    assert all(r.audio.samples.size == 16_000 for r in results)


@pytest.mark.anyio
class EmptyForOne:
    """A translator whose translation of fragment 1 comes out empty."""

    def translate(self, request: stsdub.TranslationRequest) -> stsdub.Translation:
        return stsdub.Translation("" if request.sequence_number == 1 else request.text)


@pytest.mark.anyio
async def test_pipeline_plays_the_carry_in_a_fragment_with_nothing_to_say() -> None:
    fragments = [stsdub.Fragment(i, tone(1.0), 16_000) for i in range(3)]
    async with stsdub.Dubber(
        FakeASR(),
        EmptyForOne(),
        FakeSynthesizer(duration_ratio=1.6),
        source_language="en",
        target_language="de",
    ) as dubber:
        results = [r async for r in dubber.dub(fragments)]
    assert all(r.audio.samples.size == 16_000 for r in results)
    assert results[1].status is Status.SUCCESS
    spilled = results[1].audio.samples
    assert np.max(np.abs(spilled[:800])) > 0.1 and not np.any(spilled[8000:])  # carried, then silence
    assert not any("dropped" in w for w in results[2].warnings)
