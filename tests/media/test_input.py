from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from stsdub import StsdubError
from stsdub._media import MediaInputError, NoAudioStreamError, probe, read_audio
from tests.media.media import make_clip, write_recording


def tone(seconds: float, rate: int, freq: float = 440.0) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return (0.4 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.mark.parametrize(
    ("suffix", "rate", "channels"), [(".wav", 16000, 1), (".flac", 44100, 2), (".ogg", 48000, 2)]
)
def test_decodes_to_mono_float_at_the_files_own_rate(
    tmp_path: Path, suffix: str, rate: int, channels: int
) -> None:
    samples = tone(1.5, rate)
    path = write_recording(tmp_path / f"in{suffix}", samples, rate, channels=channels)
    source = read_audio(path)
    assert source.sample_rate == rate
    assert source.samples.dtype == np.float32 and source.samples.ndim == 1
    assert source.samples.size == pytest.approx(samples.size, abs=rate * 0.01)
    # A stereo file with the same signal in both channels mixes down to (nearly) that signal.
    n = min(source.samples.size, samples.size)
    corr = np.corrcoef(source.samples[:n], samples[:n])[0, 1]
    assert corr > 0.99
    assert not source.info.has_video


def test_video_input_reports_its_picture_and_decodes_its_audio(tmp_path: Path) -> None:
    samples = tone(2.0, 22050)
    make_clip(tmp_path / "clip.mp4", samples, 22050)
    info = probe(tmp_path / "clip.mp4")
    assert info.video_codecs == ("mpeg4",) and info.audio_codec == "aac"
    source = read_audio(tmp_path / "clip.mp4")
    assert source.duration == pytest.approx(2.0, rel=0.05)


def test_missing_empty_and_directory_inputs(tmp_path: Path) -> None:
    with pytest.raises(MediaInputError, match="no such file"):
        read_audio(tmp_path / "nope.wav")
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(MediaInputError, match="empty"):
        read_audio(tmp_path / "empty.wav")
    with pytest.raises(MediaInputError, match="directory"):
        read_audio(tmp_path)


def test_garbage_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "noise.mp3"
    path.write_bytes(np.random.default_rng(0).bytes(20_000))
    with pytest.raises(MediaInputError, match="corrupt"):
        read_audio(path)


@pytest.mark.parametrize("suffix", [".wav", ".flac", ".m4a"])
def test_truncated_files_are_refused(tmp_path: Path, suffix: str) -> None:
    whole = tmp_path / f"whole{suffix}"
    if suffix == ".m4a":
        import av

        with av.open(str(whole), "w") as out:
            stream = out.add_stream("aac", rate=16000, layout="mono")
            frame = av.AudioFrame.from_ndarray(tone(4.0, 16000).reshape(1, -1), format="flt", layout="mono")
            frame.sample_rate = 16000
            out.mux(stream.encode(frame))
            out.mux(stream.encode(None))
    else:
        write_recording(whole, tone(4.0, 16000), 16000)
    assert read_audio(whole).duration == pytest.approx(4.0, rel=0.05)
    data = whole.read_bytes()
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(MediaInputError, match=r"truncated|corrupt"):
        read_audio(cut)


def test_a_file_without_audio_says_so(tmp_path: Path) -> None:
    make_clip(tmp_path / "silent_film.mp4", None, 16000, seconds=1.0)
    with pytest.raises(NoAudioStreamError, match="no audio stream") as info:
        read_audio(tmp_path / "silent_film.mp4")
    assert isinstance(info.value, StsdubError)
    assert "video" in str(info.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_input(tmp_path: Path) -> None:
    path = write_recording(tmp_path / "x.wav", tone(0.5, 16000), 16000)
    path.chmod(0)
    with pytest.raises(MediaInputError, match="permission"):
        read_audio(path)
