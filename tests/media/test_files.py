"""dub_file with the fake stages: timeline, subtitles, failures, mixing, notebook display."""

from __future__ import annotations

from pathlib import Path

import anyio
import numpy as np
import pytest
import soundfile

from stsdub import AudioBuffer, Dubber, ErrorCode, Separation, SeparationRequest, Status, StsdubError
from stsdub._media import MediaInputError, MediaOutputError, Segmentation
from stsdub._recordings._files import DubbedFile, FileProgress, adub_file, dub_file
from stsdub.testing import FakeASR, FakeSynthesizer, FakeTranslator
from tests.media.media import recording, write_recording
from tests.speech import SENTENCES


@pytest.fixture(scope="module")
def speech_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray, int]:
    samples, rate, _ = recording(SENTENCES[:4], pauses=[0.8, 2.5, 0.8, 0.6])
    path = write_recording(tmp_path_factory.mktemp("in") / "talk.flac", samples, rate)
    return path, samples, rate


def fake_dubber(**kwargs) -> Dubber:
    kwargs.setdefault("source_language", "en")
    kwargs.setdefault("target_language", "de")
    asr = kwargs.pop("asr", FakeASR())
    synthesizer = kwargs.pop("synthesizer", FakeSynthesizer())
    return Dubber(asr, kwargs.pop("translator", FakeTranslator()), synthesizer, **kwargs)


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_dubbed_audio_keeps_the_input_timeline_and_subtitles_follow_fragments(
    speech_file, tmp_path: Path
) -> None:
    path, samples, rate = speech_file
    events: list[FileProgress] = []
    dubbed = dub_file(
        fake_dubber(), path, tmp_path / "talk.de.flac", on_progress=events.append, units="fragments"
    )
    assert isinstance(dubbed, DubbedFile)
    data, out_rate = soundfile.read(str(tmp_path / "talk.de.flac"), dtype="float32")
    assert out_rate == rate and data.size == samples.size
    assert len(dubbed.results) == 4 and all(r.status is Status.SUCCESS for r in dubbed.results)
    # The long pause is not dubbed: silent in the output (the fake synthesizer makes tones).
    (a, b), (c, _) = dubbed.spans[1], dubbed.spans[2]
    assert b < c and not np.any(data[round(b * rate) + 1 : round(c * rate) - 1])
    assert np.abs(data[round(a * rate) : round(b * rate)]).max() > 0.05
    assert listing(tmp_path) == [
        "talk.de.de.srt",
        "talk.de.de.vtt",
        "talk.de.en.srt",
        "talk.de.en.vtt",
        "talk.de.flac",
    ]
    srt = (tmp_path / "talk.de.de.srt").read_text()
    assert srt.count(" --> ") == 4 and "[de] speech 0" in srt
    vtt = (tmp_path / "talk.de.en.vtt").read_text()
    assert vtt.startswith("WEBVTT") and vtt.count(" --> ") == 4
    assert [c.start for c in dubbed.source_cues] == [s for s, _ in dubbed.spans]
    phases = [e.phase for e in events]
    assert phases[:3] == ["decode", "segment", "load"] and phases[-1] == "write"
    assert [e.done for e in events if e.phase == "dub"] == [0, 1, 2, 3, 4]


def test_fixed_windows_cover_everything(speech_file, tmp_path: Path) -> None:
    path, samples, rate = speech_file
    dubbed = dub_file(fake_dubber(), path, tmp_path / "out.wav", segmentation="fixed", subtitles=())
    step = 6 * rate
    windows = [min(step, samples.size - start) for start in range(0, samples.size, step)]
    assert len(dubbed.results) == sum(w >= 0.1 * rate for w in windows)
    assert [b - a for a, b in dubbed.spans][:2] == [6.0, 6.0]
    assert listing(tmp_path) == ["out.wav"]
    assert soundfile.info(str(tmp_path / "out.wav")).frames == samples.size


def test_revoicing_writes_one_set_of_subtitles(speech_file, tmp_path: Path) -> None:
    path, _, _ = speech_file
    dubber = fake_dubber(translator=None, target_language="en")
    dubbed = dub_file(dubber, path, tmp_path / "same.wav", subtitles=("srt",))
    assert listing(tmp_path) == ["same.en.srt", "same.wav"]
    assert dubbed.translation == dubbed.transcript


def test_models_are_reused_inside_with(speech_file, tmp_path: Path) -> None:
    path, _, _ = speech_file
    asr = FakeASR()
    dubber = fake_dubber(asr=asr)
    with dubber:
        first = dub_file(dubber, path, tmp_path / "a.wav", sample_rate=16000)
        second = dub_file(dubber, path, None)
    assert first.audio.sample_rate == 16000 and second.output is None
    assert len(asr.requests) == 2 * len(first.results)
    assert first.timings["load"] == 0.0


def test_failures_are_reported_and_fall_back(speech_file, tmp_path: Path) -> None:
    path, samples, rate = speech_file
    synth = FakeSynthesizer(fail={1: ErrorCode.SYNTHESIS_FAILED})
    dubbed = dub_file(
        fake_dubber(synthesizer=synth, fallback="original"), path, tmp_path / "f.wav", units="fragments"
    )
    assert dubbed.counts == {Status.SUCCESS: 3, Status.PARTIAL: 0, Status.FAILED: 1}
    assert not dubbed.ok
    data, _ = soundfile.read(str(tmp_path / "f.wav"), dtype="float32")
    a, b = (round(t * rate) for t in dubbed.spans[1])
    # The failed fragment carries the original at its own rate, not the 16 kHz copy.
    assert np.abs(data[a:b] - samples[a:b]).max() < 1e-3
    # Its translation was made before synthesis failed, so it is still subtitled.
    assert len(dubbed.source_cues) == 4 and dubbed.target_cues[1].text == "[de] speech 1"


def test_original_mixed_underneath(speech_file, tmp_path: Path) -> None:
    path, samples, _ = speech_file
    plain = dub_file(fake_dubber(), path, None, background="none")
    mixed = dub_file(fake_dubber(), path, None, original="mix", original_level=0.5)
    difference = mixed.audio.samples - plain.audio.samples
    inside = np.abs(plain.audio.samples) < 0.5  # away from clipping
    assert np.allclose(difference[inside], 0.5 * samples[inside], atol=2e-3)


def test_by_default_the_original_is_ducked_under_the_dub(speech_file) -> None:
    path, samples, rate = speech_file
    plain = dub_file(fake_dubber(), path, None, background="none")
    ducked = dub_file(fake_dubber(), path, None)
    under = ducked.audio.samples - plain.audio.samples  # what the soundtrack added
    # The long pause between sentences 2 and 3, away from the envelope's ramps.
    gap = slice(round((ducked.spans[1][1] + 0.8) * rate), round((ducked.spans[2][0] - 0.4) * rate))
    assert np.allclose(ducked.audio.samples[gap], samples[gap], atol=1e-4)  # full level between
    a, b = (round(t * rate) for t in ducked.spans[2])
    middle = slice(a + (b - a) // 4, b - (b - a) // 4)
    level = 20 * np.log10(np.sqrt(np.mean(under[middle] ** 2)) / np.sqrt(np.mean(samples[middle] ** 2)))
    assert level <= -18.0  # the original voice far under the dubbed speech


class HalfVoiceSeparator:
    """A separator with a known answer: the voice is the input at half level, the background
    a 110 Hz hum, so what the ASR hears and what goes under the dub can both be checked."""

    def separate(self, request: SeparationRequest) -> Separation:
        audio = request.audio
        t = np.arange(audio.samples.size, dtype=np.float32) / audio.sample_rate
        hum = (0.05 * np.sin(2 * np.pi * 110 * t)).astype(np.float32)
        return Separation(
            voice=AudioBuffer(0.5 * audio.samples, audio.sample_rate),
            background=AudioBuffer(hum, audio.sample_rate),
        )


def test_separated_background_goes_under_the_dub_and_the_asr_hears_the_voice(speech_file) -> None:
    path, _, rate = speech_file
    plain_asr, asr = FakeASR(), FakeASR()
    # Fixed windows: finding speech depends on the level, and the voice is at half level.
    plain = dub_file(fake_dubber(asr=plain_asr), path, None, background="none", segmentation="fixed")
    dubbed = dub_file(fake_dubber(asr=asr, separator=HalfVoiceSeparator()), path, None, segmentation="fixed")
    assert dubbed.spans == plain.spans
    for heard, original in zip(asr.requests, plain_asr.requests, strict=True):
        unclipped = np.abs(original.audio.samples) < 0.9
        half = 0.5 * original.audio.samples[unclipped]
        assert np.allclose(heard.audio.samples[unclipped], half, atol=5e-3)
    t = np.arange(dubbed.audio.samples.size, dtype=np.float32) / rate
    hum = 0.05 * np.sin(2 * np.pi * 110 * t)
    inside = np.abs(plain.audio.samples) < 0.9  # away from clipping
    assert np.allclose((dubbed.audio.samples - plain.audio.samples)[inside], hum[inside], atol=1e-3)


def test_background_options_that_cannot_work_are_refused(speech_file) -> None:
    path, _, _ = speech_file
    with pytest.raises(StsdubError, match="needs a separator"):
        dub_file(fake_dubber(), path, None, background="separate")
    with pytest.raises(StsdubError, match="choose one"):
        dub_file(fake_dubber(), path, None, background="duck", original="mix")
    with pytest.raises(StsdubError, match="background must be one of"):
        dub_file(fake_dubber(), path, None, background="music")


def test_html_shows_audio_transcript_and_translation(speech_file) -> None:
    path, _, _ = speech_file
    dubbed = dub_file(fake_dubber(), path, None)
    page = dubbed._repr_html_()
    assert "<audio" in page and "speech 2" in page and "[de] speech" in page
    assert "talk.flac" in repr(dubbed)


@pytest.mark.anyio
async def test_async_form_under_async_with(speech_file, tmp_path: Path) -> None:
    path, _, _ = speech_file
    async with fake_dubber() as dubber:
        dubbed = await adub_file(dubber, path, tmp_path / "x.wav")
        with pytest.raises(StsdubError, match="event loop"):
            dub_file(dubber, path, None)
    assert len(dubbed.results) == 4


def test_bad_input_and_output_leave_nothing_behind(speech_file, tmp_path: Path) -> None:
    path, _, _ = speech_file
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF" + bytes(range(256)) * 10)
    asr = FakeASR()
    with pytest.raises(MediaInputError):
        dub_file(fake_dubber(asr=asr), corrupt, tmp_path / "o.wav")
    assert asr.requests == []
    with pytest.raises(MediaOutputError, match="unknown output format"):
        dub_file(fake_dubber(), path, tmp_path / "o.xyz")
    with pytest.raises(MediaOutputError, match="video input"):
        dub_file(fake_dubber(), path, tmp_path / "o.mp4")
    with pytest.raises(MediaOutputError, match="second track"):
        dub_file(fake_dubber(), path, tmp_path / "o.wav", original="track")
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a folder")
    with pytest.raises(MediaOutputError, match="cannot write"):
        dub_file(fake_dubber(), path, blocker / "o.wav")
    # A subtitle target that cannot be replaced: the whole set is abandoned, temporaries too.
    (tmp_path / "o.de.srt").mkdir()
    with pytest.raises(MediaOutputError, match="directory"):
        dub_file(fake_dubber(), path, tmp_path / "o.wav")
    assert listing(tmp_path) == ["corrupt.wav", "file", "o.de.srt"]


def test_segmentation_options_are_honoured(speech_file) -> None:
    path, _, _ = speech_file
    dubbed = dub_file(fake_dubber(), path, None, segmentation=Segmentation(min_pause_seconds=2.0))
    # Only the 2.5 s pause is long enough now.
    assert len(dubbed.results) == 2


def test_a_rate_the_file_cannot_have_is_refused(speech_file) -> None:
    path, _, _ = speech_file
    with pytest.raises(StsdubError, match="sample_rate"):
        anyio.run(lambda: adub_file(fake_dubber(), path, None, sample_rate=0))
