"""A two-speaker file through dub_file: cut at speaker changes, a voice per speaker, labelled subtitles."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from stsdub import Dubber, Status
from stsdub._media._subtitles import Cue, to_srt
from stsdub._recordings._files import dub_file
from stsdub.testing import FakeASR, FakeDiarizer, FakeSynthesizer, FakeTranslator
from tests.media.media import write_recording
from tests.speakers import conversation

pytest.importorskip("stsdub._builtin.espeak")

POOLS = (("low-a", "low-b"), ("high-a", "high-b"))


@pytest.fixture(scope="module")
def two_speakers(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[tuple[float, float, str]]]:
    # The third speaker change comes after 0.1 s only: no pause that cuts a fragment there.
    samples, rate, turns = conversation(pauses=[0.8, 0.8, 0.1, 0.8, 0.8, 0.5])
    path = write_recording(tmp_path_factory.mktemp("in") / "chat.wav", samples, rate)
    return path, turns


def _dubber(diarizer: object, **kwargs: object) -> Dubber:
    return Dubber(
        FakeASR(),
        FakeTranslator(),
        FakeSynthesizer(voice_pools=POOLS),
        source_language="en",
        target_language="de",
        diarizer=diarizer,
        **kwargs,  # type: ignore[arg-type]
    )


def test_each_speaker_keeps_a_voice_of_their_own(two_speakers, tmp_path: Path) -> None:
    path, turns = two_speakers
    fake = FakeDiarizer(turns=turns)
    dubbed = dub_file(_dubber(fake), path, tmp_path / "chat.de.wav")
    assert len(fake.requests) == 1 and fake.requests[0].audio.sample_rate == 16_000
    results = dubbed.results
    assert all(r.status is Status.SUCCESS for r in results)
    # Lines 3 and 4 share a speech piece; it is cut at the change, so six fragments.
    assert [r.speaker for r in results] == ["S1", "S2", "S1", "S2", "S1", "S2"]
    for (start, end), (t0, t1, _) in zip(dubbed.spans, turns, strict=True):
        assert start <= t0 + 0.35 and end >= t1 - 0.35
    # The male voice (F0 near 100 Hz) is cast a lower voice, the female one a higher.
    voices = {r.speaker: r.voice for r in results}
    assert voices == {"S1": "low-a", "S2": "high-a"}
    assert all(r.voice == voices[r.speaker] for r in results)
    assert all(s.speaker == r.speaker for r in results for s in r.transcript.transcript.segments)
    srt = (tmp_path / "chat.de.de.srt").read_text()
    vtt = (tmp_path / "chat.de.en.vtt").read_text()
    assert srt.count("[S1] ") == 3 and srt.count("[S2] ") == 3
    assert "<v S1>speech 0" in vtt and "<v S2>speech 1" in vtt


def test_a_voice_map_names_a_speaker_s_voice(two_speakers, tmp_path: Path) -> None:
    path, turns = two_speakers
    dubber = _dubber(FakeDiarizer(turns=turns), voices={"S1": "ben"})
    dubbed = dub_file(dubber, path, None, subtitles=())
    assert {(r.speaker, r.voice) for r in dubbed.results} == {("S1", "ben"), ("S2", "high-a")}
    # The map of a dub_file call wins over the Dubber's.
    dubbed = dub_file(dubber, path, None, subtitles=(), voices={"S2": "eve"})
    assert {(r.speaker, r.voice) for r in dubbed.results} == {("S1", "low-a"), ("S2", "eve")}


def test_without_a_diarizer_nothing_changes(two_speakers, tmp_path: Path) -> None:
    path, _ = two_speakers
    dubbed = dub_file(_dubber(None, voice="v"), path, tmp_path / "o.wav", subtitles=("srt",))
    assert len(dubbed.results) == 5  # lines 3 and 4 stay one fragment
    assert {(r.speaker, r.voice) for r in dubbed.results} == {(None, "v")}
    assert "[S" not in (tmp_path / "o.de.srt").read_text()
    assert np.abs(dubbed.audio.samples).max() > 0


def test_a_project_keeps_each_speaker_and_their_voice_across_a_resume(two_speakers, tmp_path: Path) -> None:
    path, turns = two_speakers
    fake = FakeDiarizer(turns=turns)
    dubber = _dubber(fake)
    stopped = dub_file(dubber, path, tmp_path / "chat.de.wav", stop_after="translate")
    project = stopped.project
    assert project is not None and len(fake.requests) == 1
    # Cut at the speaker change inside one speech piece, as without a project; each segment
    # says who speaks and with which voice, and the user may change either.
    assert [s.speaker for s in project.segments] == ["S1", "S2", "S1", "S2", "S1", "S2"]
    assert {s.speaker: s.voice for s in project.segments} == {"S1": "low-a", "S2": "high-a"}
    dubbed = dubber.dub_file(resume=project.with_voice(4, "low-b"))
    assert len(fake.requests) == 1  # the speakers are the project's now: not diarized again
    assert [r.speaker for r in dubbed.results] == ["S1", "S2", "S1", "S2", "S1", "S2"]
    assert [r.voice for r in dubbed.results] == ["low-a", "high-a", "low-a", "high-a", "low-b", "high-a"]
    srt = (tmp_path / "chat.de.de.srt").read_text()
    assert srt.count("[S1] ") == 3 and srt.count("[S2] ") == 3


def test_a_project_from_the_user_s_cues_is_labelled_not_cut(two_speakers, tmp_path: Path) -> None:
    path, turns = two_speakers
    cues = tmp_path / "chat.srt"
    cues.write_text(to_srt(Cue(a, b, f"line {n}") for n, (a, b, _) in enumerate(turns)))
    dubber = _dubber(FakeDiarizer(turns=turns))
    stopped = dub_file(dubber, path, tmp_path / "chat.de.wav", transcript_srt=cues, stop_after="translate")
    assert stopped.project is not None
    assert [s.transcript for s in stopped.project.segments] == [f"line {n}" for n in range(len(turns))]
    assert [s.speaker for s in stopped.project.segments] == [speaker for *_, speaker in turns]
