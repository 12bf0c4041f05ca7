"""Media files the tests make: speech recordings with pauses, and video clips made with PyAV."""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np
import soundfile

from tests.speech import speak


def recording(sentences: Sequence[str], pauses: Sequence[float] | float = 1.0, lead: float = 0.5):
    """Piper speech of ``sentences`` with pauses; (samples, rate, [(start, end) s of each sentence])."""
    if isinstance(pauses, (int, float)):
        pauses = [float(pauses)] * len(sentences)
    rate = speak(sentences[0])[1]
    parts = [np.zeros(round(lead * rate), np.float32)]
    spans = []
    pos = parts[0].size
    for sentence, pause in zip(sentences, pauses, strict=True):
        audio, _ = speak(sentence)
        spans.append((pos / rate, (pos + audio.size) / rate))
        parts += [audio, np.zeros(round(pause * rate), np.float32)]
        pos += audio.size + parts[-1].size
    return np.concatenate(parts), rate, spans


def write_recording(path: Path, samples: np.ndarray, rate: int, *, channels: int = 1) -> Path:
    data = samples if channels == 1 else np.repeat(samples[:, None], channels, axis=1)
    soundfile.write(str(path), data, rate)
    return path


def make_clip(
    path: Path,
    samples: np.ndarray | None,
    rate: int,
    *,
    codec: str = "mpeg4",
    fps: int = 25,
    seconds: float | None = None,
    audio_codec: str = "aac",
) -> int:
    """A test-pattern video (moving bar) with ``samples`` as its audio; returns its frame count."""
    import av

    seconds = seconds if seconds is not None else samples.size / rate  # type: ignore[union-attr]
    frames = round(seconds * fps)
    with av.open(str(path), "w") as out:
        video = out.add_stream(codec, rate=fps)
        video.width, video.height, video.pix_fmt = 160, 96, "yuv420p"
        audio = out.add_stream(audio_codec, rate=rate, layout="mono") if samples is not None else None
        for i in range(frames):
            img = np.full((96, 160, 3), 40, np.uint8)
            x = (i * 4) % 150
            img[:, x : x + 10] = 255
            img[..., 1] = (i * 7) % 256
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = i
            frame.time_base = Fraction(1, fps)
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        if audio is not None and samples is not None:
            frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="flt", layout="mono")
            frame.sample_rate = rate
            frame.pts = 0
            out.mux(audio.encode(frame))
            out.mux(audio.encode(None))
    return frames


def streams(path: Path) -> list[tuple[str, str]]:
    """(type, codec) of every stream."""
    import av

    with av.open(str(path)) as c:
        return [(s.type, s.codec_context.name) for s in c.streams]


def video_packets(path: Path) -> list[bytes]:
    """The payload of every video packet, in order."""
    import av

    with av.open(str(path)) as c:
        return [bytes(p) for p in c.demux(video=0) if p.size]


def decoded_frames(path: Path) -> int:
    import av

    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


def audio_seconds(path: Path, index: int = 0) -> float:
    """Length of audio stream ``index`` by decoding it."""
    import av

    with av.open(str(path)) as c:
        stream = c.streams.audio[index]
        n = sum(f.samples for f in c.decode(stream))
        return n / stream.codec_context.sample_rate


def video_seconds(path: Path) -> float:
    import av

    with av.open(str(path)) as c:
        s = c.streams.video[0]
        return float(s.duration * s.time_base) if s.duration else c.duration / 1e6
