"""Decoding any audio or video file to mono float32 with PyAV."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import numpy as np

from ._av import import_av
from ._errors import MediaInputError, NoAudioStreamError

if TYPE_CHECKING:
    from .._core._audio import FloatArray

__all__ = ["MediaInfo", "SourceAudio", "pictures", "probe", "read_audio"]

# A decoded stream shorter than its container says by more than this is called truncated.
# Generous on purpose: compressed formats only estimate their length in the header.
_TRUNCATION_TOLERANCE = 0.05
_TRUNCATION_MIN_SECONDS = 0.5


@attrs.frozen
class MediaInfo:
    """What an input file holds, found without decoding it."""

    path: Path
    format_name: str
    #: Seconds, as the container declares them (``None`` when it does not say).
    duration: float | None
    audio_codec: str
    sample_rate: int
    channels: int
    #: Codec names of the picture streams (cover art excluded); empty for audio files.
    video_codecs: tuple[str, ...]

    @property
    def has_video(self) -> bool:
        return bool(self.video_codecs)


@attrs.frozen(repr=False)
class SourceAudio:
    """The decoded audio of an input file: mono float32 at its own sample rate."""

    info: MediaInfo
    samples: FloatArray = attrs.field(eq=attrs.cmp_using(eq=np.array_equal))
    sample_rate: int

    @property
    def duration(self) -> float:
        return self.samples.size / self.sample_rate

    def __repr__(self) -> str:
        return f"SourceAudio({self.info.path.name}, {self.duration:.2f} s at {self.sample_rate} Hz)"


def _open(path: Path) -> Any:
    av = import_av()
    if not path.exists():
        raise MediaInputError(f"{path}: no such file")
    if path.is_dir():
        raise MediaInputError(f"{path}: is a directory, not a media file")
    if not os.access(path, os.R_OK):
        raise MediaInputError(f"{path}: not readable (permission denied)")
    if path.stat().st_size == 0:
        raise MediaInputError(f"{path}: the file is empty")
    try:
        # Tags are free text that any tool writes in any encoding, and a corrupt file holds
        # random bytes there. PyAV decodes them as strict UTF-8 while opening, so one bad
        # byte in a title raised UnicodeDecodeError; the tags are never used for dubbing.
        return av.open(str(path), mode="r", metadata_errors="replace")
    except av.error.FFmpegError as exc:
        raise MediaInputError(f"{path}: not a media file PyAV can read, or it is corrupt ({exc})") from exc
    except OSError as exc:
        raise MediaInputError(f"{path}: cannot open: {exc}") from exc


def _is_picture(stream: Any) -> bool:
    import av

    # Cover art in music files is a one-frame "video" stream; it is not a picture to keep.
    return not (stream.disposition & av.stream.Disposition.attached_pic)


def _info(path: Path, container: Any) -> MediaInfo:
    audio = container.streams.audio
    if not audio:
        kinds = sorted({s.type for s in container.streams}) or ["no streams at all"]
        raise NoAudioStreamError(f"{path}: no audio stream to dub (the file holds {', '.join(kinds)})")
    stream = audio[0]
    ctx = stream.codec_context
    # PyAV leaves codec_context None when FFmpeg has no decoder for the stream's codec id,
    # which is what a corrupt header declares as often as a codec missing from the build.
    if ctx is None:
        raise MediaInputError(
            f"{path}: FFmpeg knows no decoder for its audio stream (a corrupt file, or a codec"
            " this FFmpeg build lacks)"
        )
    rate = int(ctx.sample_rate or 0)
    if rate <= 0:
        raise MediaInputError(f"{path}: the audio stream declares no sample rate; the file is corrupt")
    duration = None
    if stream.duration is not None and stream.time_base is not None:
        duration = float(stream.duration * stream.time_base)
    elif container.duration is not None:
        duration = container.duration / 1_000_000
    return MediaInfo(
        path=path,
        format_name=str(container.format.name),
        duration=duration,
        audio_codec=str(ctx.name),
        sample_rate=rate,
        channels=int(ctx.channels or 1),
        video_codecs=tuple(_codec_name(s) for s in container.streams.video if _is_picture(s)),
    )


def _codec_name(stream: Any) -> str:
    # No codec context: FFmpeg has no decoder for the codec id (see _info); only a video
    # output needs one, and it says so (pictures()).
    return "unknown" if stream.codec_context is None else str(stream.codec_context.name)


def pictures(path: Path, container: Any) -> list[Any]:
    """The picture streams of an open input (cover art excluded), to be copied untouched.

    Raises:
        MediaInputError: FFmpeg knows no codec for one of them, so PyAV cannot copy it.
    """
    found = [s for s in container.streams.video if _is_picture(s)]
    for stream in found:
        if stream.codec_context is None:
            raise MediaInputError(
                f"{path}: FFmpeg knows no codec for its picture stream #{stream.index}, so it"
                " cannot be copied (a corrupt file, or a codec this FFmpeg build lacks); write an"
                " audio file (.wav, .flac) instead"
            )
    return found


def _check_wav_length(path: Path) -> None:
    """Refuse a RIFF/WAVE file whose data chunk is shorter than its header says.

    FFmpeg reads such a file up to its end without complaint, so a cut-off download would be
    dubbed as if it were whole.
    """
    with path.open("rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return  # RF64 / W64 and friends: leave them to FFmpeg
        while True:
            chunk = f.read(8)
            if len(chunk) < 8:
                return
            size = int.from_bytes(chunk[4:8], "little")
            if chunk[:4] == b"data":
                # 0 and 0xFFFFFFFF mark a file written as a stream, whose length was never known.
                if size in (0, 0xFFFFFFFF):
                    return
                available = path.stat().st_size - f.tell()
                if available < size:
                    raise MediaInputError(
                        f"{path}: the file is truncated: its header promises {size} bytes of audio"
                        f" but only {available} are there"
                    )
                return
            f.seek(size + (size & 1), 1)


def probe(path: str | os.PathLike[str]) -> MediaInfo:
    """Open ``path`` and describe its streams, without decoding.

    Raises:
        MediaInputError: The file is missing, unreadable, empty or not a media file.
        NoAudioStreamError: The file holds no audio stream.
    """
    path = Path(path)
    with _open(path) as container:
        return _info(path, container)


def read_audio(path: str | os.PathLike[str]) -> SourceAudio:
    """Decode the first audio stream of ``path`` to mono float32 at its own sample rate.

    Channels are mixed down by FFmpeg's resampler; the result is clipped to [-1, 1].

    Raises:
        MediaInputError: The file is missing, unreadable, empty, corrupt, truncated, or its
            audio stream decodes to nothing.
        NoAudioStreamError: The file holds no audio stream.
    """
    av = import_av()
    path = Path(path)
    with _open(path) as container:
        info = _info(path, container)
        stream = container.streams.audio[0]
        resampler: Any = None
        setup: tuple[object, ...] = ()
        chunks: list[np.ndarray] = []
        try:
            for frame in container.decode(stream):
                # A stream may change its sample format, layout or rate midway (recordings
                # joined together, or a corrupt frame header). PyAV's resampler refuses such a
                # frame with ValueError, so flush it and start a new one for the new setup.
                now = (frame.format.name, frame.layout.name, frame.sample_rate)
                if now != setup:
                    if resampler is not None:
                        chunks.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(None))
                    resampler = av.AudioResampler(format="flt", layout="mono", rate=info.sample_rate)
                    setup = now
                chunks.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(frame))
            if resampler is not None:
                chunks.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(None))
        except av.error.FFmpegError as exc:
            done = sum(c.size for c in chunks) / info.sample_rate
            raise MediaInputError(
                f"{path}: the audio is corrupt or truncated after {done:.2f} s ({exc})"
            ) from exc
    samples = np.concatenate(chunks).astype(np.float32, copy=False) if chunks else np.zeros(0, np.float32)
    if samples.size == 0:
        raise MediaInputError(f"{path}: the audio stream holds no samples (empty or truncated file)")
    if not np.all(np.isfinite(samples)):
        raise MediaInputError(f"{path}: the audio decodes to NaN or infinite samples; the file is corrupt")
    decoded = samples.size / info.sample_rate
    if info.format_name == "wav":
        _check_wav_length(path)
    if info.duration is not None:
        missing = info.duration - decoded
        if missing > max(_TRUNCATION_MIN_SECONDS, _TRUNCATION_TOLERANCE * info.duration):
            raise MediaInputError(
                f"{path}: the file is truncated: it declares {info.duration:.2f} s of audio but only"
                f" {decoded:.2f} s could be decoded"
            )
    return SourceAudio(info, np.clip(samples, -1.0, 1.0), info.sample_rate)
