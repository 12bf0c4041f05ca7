"""Writing results: audio files, video remuxing, and staging so that nothing half-written stays.

Every output is first written to a hidden temporary file in its target folder and renamed
into place only when all of them are complete; on any error the temporaries are removed.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import numpy as np

from ._av import import_av
from ._errors import MediaInputError, MediaOutputError
from ._input import _open, pictures

if TYPE_CHECKING:
    from .._core._audio import FloatArray

__all__ = [
    "AUDIO_SUFFIXES",
    "VIDEO_SUFFIXES",
    "OutputPlan",
    "Staging",
    "plan_output",
    "staged",
    "write_audio",
    "write_video",
]

#: Audio-only outputs: suffix → (soundfile format, subtype).
AUDIO_SUFFIXES = {".wav": ("WAV", "PCM_16"), ".flac": ("FLAC", "PCM_16")}
#: Video outputs: suffix → (FFmpeg muxer, default audio codec).
VIDEO_SUFFIXES = {
    ".mp4": ("mp4", "aac"),
    ".m4v": ("mp4", "aac"),
    ".mov": ("mov", "aac"),
    ".mkv": ("matroska", "aac"),
    ".webm": ("webm", "opus"),
}
#: User-facing codec name → FFmpeg encoder.
AUDIO_CODECS = {"aac": "aac", "opus": "libopus"}
ORIGINAL_MODES = ("track", "mix")
# Opus only runs at these rates; the dubbed track is resampled to the nearest one above.
_OPUS_RATES = (8000, 12000, 16000, 24000, 48000)


@attrs.frozen
class OutputPlan:
    """Where and how the dubbed media will be written (checked before any work starts)."""

    path: Path
    #: ``"audio"`` (WAV/FLAC) or ``"video"`` (the input's picture with the dubbed track).
    kind: str
    container: str
    #: Audio codec of a video output (``"aac"`` / ``"opus"``); ``None`` for audio files.
    audio_codec: str | None = None


def plan_output(
    path: Path,
    *,
    input_path: Path,
    has_video: bool,
    audio_codec: str | None = None,
    original: str | None = None,
) -> OutputPlan:
    """Check that ``path`` can be written in a format that fits the input, before dubbing.

    Raises:
        MediaOutputError: Unknown suffix, video output for an input without picture, a codec
            the container cannot carry, a folder that cannot be written, or the input itself.
        MediaInputError: The input's picture cannot be copied (FFmpeg knows no codec for it).
    """
    suffix = path.suffix.lower()
    if original is not None and original not in ORIGINAL_MODES:
        raise MediaOutputError(f"original must be one of {ORIGINAL_MODES} or None, got {original!r}")
    if audio_codec is not None and audio_codec not in AUDIO_CODECS:
        raise MediaOutputError(f"audio codec must be one of {tuple(AUDIO_CODECS)}, got {audio_codec!r}")
    if suffix in AUDIO_SUFFIXES:
        if original == "track":
            raise MediaOutputError(
                f"{path}: an audio file holds one track; keep the original as a second track in a"
                " video container (.mp4, .mkv), or mix it in underneath (original='mix')"
            )
        plan = OutputPlan(path, "audio", AUDIO_SUFFIXES[suffix][0])
    elif suffix in VIDEO_SUFFIXES:
        if not has_video:
            raise MediaOutputError(
                f"{path}: a video output needs a video input, and {input_path.name} holds only audio;"
                f" write {', '.join(AUDIO_SUFFIXES)} instead"
            )
        container, default_codec = VIDEO_SUFFIXES[suffix]
        codec = audio_codec or default_codec
        if suffix == ".webm" and codec != "opus":
            raise MediaOutputError(f"{path}: WebM carries Opus audio only, not {codec}")
        plan = OutputPlan(path, "video", container, codec)
        _check_remux(input_path, plan, keep_original_track=original == "track")
    else:
        known = ", ".join([*AUDIO_SUFFIXES, *VIDEO_SUFFIXES])
        raise MediaOutputError(
            f"{path}: unknown output format {suffix or '(no suffix)'!r}; use one of {known}"
        )
    _check_writable(path, input_path)
    return plan


def _check_remux(input_path: Path, plan: OutputPlan, *, keep_original_track: bool) -> None:
    """Set up the output streams in memory, so a codec the container refuses is found now."""
    av = import_av()
    assert plan.audio_codec is not None
    try:
        with _open(input_path) as source:
            out = av.open(io.BytesIO(), mode="w", format=plan.container)
            try:
                for stream in pictures(input_path, source):
                    out.add_stream_from_template(stream)
                out.add_stream(AUDIO_CODECS[plan.audio_codec], rate=48000, layout="mono")
                if keep_original_track:
                    out.add_stream_from_template(source.streams.audio[0])
            finally:
                out.close()
    except (av.error.FFmpegError, ValueError) as exc:
        raise MediaOutputError(
            f"{plan.path}: {exc}; the picture is copied untouched, so the container must carry its"
            " codec as it is — Matroska (.mkv) carries almost any"
        ) from exc


def _check_writable(path: Path, input_path: Path) -> None:
    if path.exists() and path.is_dir():
        raise MediaOutputError(f"{path}: is a directory; give a file name")
    with contextlib.suppress(OSError):
        if path.exists() and path.samefile(input_path):
            raise MediaOutputError(f"{path}: the output would overwrite the input")
    if path.exists() and not os.access(path, os.W_OK):
        raise MediaOutputError(f"{path}: exists and is not writable")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    except OSError as exc:
        raise MediaOutputError(f"{path}: cannot write there: {exc.strerror or exc}") from exc
    os.close(fd)
    os.unlink(probe)


class Staging:
    """Temporary files next to their targets, renamed into place together by :func:`staged`."""

    def __init__(self) -> None:
        self._pending: list[tuple[Path, Path]] = []

    def path_for(self, target: Path) -> Path:
        """A new hidden temporary file in ``target``'s folder that becomes ``target`` at the end."""
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
        except OSError as exc:
            raise MediaOutputError(f"{target}: cannot write there: {exc.strerror or exc}") from exc
        os.close(fd)
        tmp = Path(name)
        self._pending.append((tmp, target))
        return tmp

    def _commit(self) -> None:
        # Refuse before the first rename, so that one bad target does not leave half a set.
        for _, target in self._pending:
            if target.is_dir():
                raise MediaOutputError(f"{target}: is a directory; cannot write the file there")
        for n, (tmp, target) in enumerate(self._pending):
            try:
                # mkstemp makes owner-only files; give the result the mode a new file would get.
                os.chmod(tmp, target.stat().st_mode & 0o7777 if target.exists() else 0o644)
                os.replace(tmp, target)
            except OSError as exc:
                self._pending = self._pending[n:]
                raise MediaOutputError(f"{target}: cannot write: {exc.strerror or exc}") from exc
        self._pending = []

    def _discard(self) -> None:
        for tmp, _ in self._pending:
            with contextlib.suppress(OSError):
                tmp.unlink()
        self._pending = []


@contextlib.contextmanager
def staged() -> Iterator[Staging]:
    """Write to :meth:`Staging.path_for` paths; they replace their targets when the block ends
    without error, and are deleted otherwise."""
    staging = Staging()
    try:
        yield staging
        staging._commit()
    finally:
        staging._discard()


def write_audio(path: Path, samples: FloatArray, sample_rate: int, container: str) -> None:
    """Write mono 16-bit WAV or FLAC."""
    import soundfile

    try:
        soundfile.write(str(path), samples, sample_rate, format=container, subtype="PCM_16")
    except (soundfile.LibsndfileError, OSError, RuntimeError) as exc:
        raise MediaOutputError(f"cannot write {container} audio: {exc}") from exc


def write_text(path: Path, text: str) -> None:
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise MediaOutputError(f"cannot write {path}: {exc.strerror or exc}") from exc


def opus_rate(rate: int) -> int:
    """The lowest rate Opus runs at that keeps ``rate``'s bandwidth."""
    return next((r for r in _OPUS_RATES if r >= rate), _OPUS_RATES[-1])


def _encode(stream: Any, samples: FloatArray, rate: int) -> Iterator[Any]:
    """Packets of ``samples`` encoded by ``stream`` (PyAV cuts them to the codec's frame size)."""
    av = import_av()
    chunk = rate  # one second per frame handed to PyAV
    for start in range(0, samples.size, chunk):
        piece = np.ascontiguousarray(samples[start : start + chunk]).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(piece, format="flt", layout="mono")
        frame.sample_rate = rate
        frame.pts = start
        frame.time_base = Fraction(1, rate)
        yield from stream.encode(frame)
    yield from stream.encode(None)


def write_video(
    input_path: Path,
    path: Path,
    plan: OutputPlan,
    samples: FloatArray,
    sample_rate: int,
    *,
    keep_original_track: bool = False,
    language: str | None = None,
) -> None:
    """Copy the picture of ``input_path`` untouched and add ``samples`` as the audio track.

    Video packets are remuxed as they are (no decoding, no re-encoding); the dubbed track is
    encoded with ``plan.audio_codec``. With ``keep_original_track`` the input's first audio
    stream is copied untouched as a second, non-default track.

    Raises:
        MediaInputError: The input cannot be read, or a packet to copy is corrupt (its
            timestamps go backwards, say).
        MediaOutputError: The container refuses the streams, or writing fails.
    """
    av = import_av()
    assert plan.audio_codec is not None
    codec = AUDIO_CODECS[plan.audio_codec]
    if plan.audio_codec == "opus" and sample_rate not in _OPUS_RATES:
        from .._core._audio import resample

        rate = opus_rate(sample_rate)
        samples = resample(samples, sample_rate, rate)
        sample_rate = rate
    try:
        with (
            _open(input_path) as source,
            av.open(str(path), mode="w", format=plan.container) as out,
        ):
            copied = pictures(input_path, source)
            streams = {s.index: out.add_stream_from_template(s) for s in copied}
            dubbed = out.add_stream(codec, rate=sample_rate, layout="mono")
            if language:
                dubbed.metadata["title"] = f"dubbed ({language})"
            original = source.streams.audio[0] if keep_original_track else None
            if original is not None:
                streams[original.index] = out.add_stream_from_template(original)
                streams[original.index].metadata["title"] = "original"
                copied.append(original)
            # The header now, not at the first packet: what the container refuses shows up
            # here, and any later refusal of a copied packet is the input's fault.
            out.start_encoding()
            packets = _encode(dubbed, samples, sample_rate)
            pending = next(packets, None)
            # Interleave by time, so players and muxers never wait on one stream.
            for packet in _demux(input_path, source, copied):
                if packet.dts is None:
                    continue  # the demuxer's end-of-stream marker
                now = packet.dts * packet.time_base
                while (
                    pending is not None and pending.pts is not None and pending.pts * pending.time_base <= now
                ):
                    out.mux(pending)
                    pending = next(packets, None)
                packet.stream = streams[packet.stream.index]
                try:
                    out.mux(packet)
                except av.error.FFmpegError as exc:
                    # Copied as read: a corrupt file's timestamps that go backwards, mostly.
                    raise MediaInputError(
                        f"{input_path}: its {packet.stream.type} cannot be copied: the packet at"
                        f" {float(now):.2f} s is corrupt ({exc})"
                    ) from exc
            while pending is not None:
                out.mux(pending)
                pending = next(packets, None)
    except (av.error.FFmpegError, ValueError) as exc:
        # plan.path, not path: path is the hidden temporary file the output is staged in.
        raise MediaOutputError(
            f"{plan.path}: cannot write {plan.container} with the picture copied untouched and"
            f" {plan.audio_codec} audio ({exc}); a Matroska output (.mkv) carries almost any codec"
        ) from exc


def _demux(input_path: Path, source: Any, streams: list[Any]) -> Iterator[Any]:
    """The packets of ``streams``; a read error is the input's (MediaInputError)."""
    av = import_av()
    packets = source.demux(*streams)
    while True:
        try:
            packet = next(packets)
        except StopIteration:
            return
        except av.error.FFmpegError as exc:
            raise MediaInputError(
                f"{input_path}: cannot read the streams to copy: the file is corrupt ({exc})"
            ) from exc
        yield packet
