"""Video in, video out: the picture is remuxed untouched, the dubbed track is added."""

from __future__ import annotations

from pathlib import Path

import pytest

from stsdub import Dubber
from stsdub._media import MediaOutputError
from stsdub._recordings._files import dub_file
from stsdub.testing import FakeASR, FakeSynthesizer, FakeTranslator
from tests.media.media import (
    audio_seconds,
    decoded_frames,
    make_clip,
    recording,
    streams,
    video_packets,
    video_seconds,
)
from tests.speech import SENTENCES


@pytest.fixture(scope="module", params=["mpeg4", "libx264"])
def clip(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int, str]:
    samples, rate, _ = recording(SENTENCES[:3], pauses=1.0)
    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    frames = make_clip(path, samples, rate, codec=request.param)
    return path, frames, "h264" if request.param == "libx264" else request.param


def dubber() -> Dubber:
    return Dubber(FakeASR(), FakeTranslator(), FakeSynthesizer(), source_language="en", target_language="de")


@pytest.mark.parametrize("suffix", [".mp4", ".mkv", ".mov"])
def test_picture_is_copied_untouched_and_the_dub_added(clip, tmp_path: Path, suffix: str) -> None:
    path, frames, codec = clip
    out = tmp_path / f"dubbed{suffix}"
    dubbed = dub_file(dubber(), path, out)
    assert dubbed.output == out and len(dubbed.results) == 3
    assert streams(out) == [("video", codec), ("audio", "aac")]
    assert decoded_frames(out) == decoded_frames(path) == frames
    # No re-encode: the compressed pictures are byte for byte the input's.
    assert video_packets(out) == video_packets(path)
    assert audio_seconds(out) == pytest.approx(audio_seconds(path), rel=0.02)
    assert audio_seconds(out) == pytest.approx(video_seconds(out), rel=0.02)
    assert video_seconds(out) == pytest.approx(video_seconds(path), rel=0.02)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [out.name, *(f"dubbed.{lang}.{fmt}" for lang in ("de", "en") for fmt in ("srt", "vtt"))]
    )


def test_original_kept_as_a_second_track(clip, tmp_path: Path) -> None:
    path, frames, codec = clip
    out = tmp_path / "two.mkv"
    dub_file(dubber(), path, out, original="track", audio_codec="opus", subtitles=())
    assert streams(out) == [("video", codec), ("audio", "opus"), ("audio", "aac")]
    assert audio_seconds(out, 0) == pytest.approx(audio_seconds(out, 1), rel=0.02)
    assert decoded_frames(out) == frames


def test_a_container_that_cannot_carry_the_picture_is_refused_before_dubbing(clip, tmp_path: Path) -> None:
    path, _, _ = clip
    asr = FakeASR()
    with pytest.raises(MediaOutputError, match="mkv"):
        dub_file(
            Dubber(asr, FakeTranslator(), FakeSynthesizer(), source_language="en", target_language="de"),
            path,
            tmp_path / "out.webm",
        )
    assert asr.requests == [] and list(tmp_path.iterdir()) == []


def test_audio_only_output_from_a_video(clip, tmp_path: Path) -> None:
    path, _, _ = clip
    dubbed = dub_file(dubber(), path, tmp_path / "speech.flac", subtitles=())
    assert streams(tmp_path / "speech.flac") == [("audio", "flac")]
    assert dubbed.audio.duration == pytest.approx(audio_seconds(path), abs=1e-3)
