"""Malformed media files, and the child process that dubs them for the malformed-input battery.

The parent (``tests/media/test_malformed.py``) makes small valid files of every container
stsdub reads (:func:`make_sources`), derives seeded mutants from them (:func:`make_mutants`)
and hands them to :func:`run_battery`, which dubs them in a child process::

    python -W error -m tests.media.mutants run FOLDER

The child opens one Dubber with the fake stages and dubs every mutant listed in
``FOLDER/manifest.json``. Before each it writes a ``start`` line, after it the outcome, as
JSON lines on stdout. A child that dies (a segfault in FFmpeg) or stops answering (a hang) is
blamed on the mutant it last started; the parent records that and starts a new child for the
rest. To look at one run's files by hand::

    python -m tests.media.mutants make FOLDER [--seed N] [--count N]
    python -W error -m tests.media.mutants run FOLDER
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

#: Environment variables that override the run's seed and mutant count.
SEED_ENV = "STSDUB_MUTANT_SEED"
COUNT_ENV = "STSDUB_MUTANTS"
DEFAULT_SEED = 20_240_611
DEFAULT_COUNT = 1600
#: Seconds one mutant may take before the parent calls it a hang and kills the child.
HANG_SECONDS = 20.0
#: Seconds a fresh child may take to import stsdub and open the Dubber.
STARTUP_SECONDS = 120.0
#: Address space of the child: a mutant that makes us allocate gigabytes shows up as a
#: MemoryError there instead of pushing the shared test machine into swap.
CHILD_MEMORY_BYTES = 6 * 1024**3
#: Marks the child's protocol lines, so that anything a library prints is ignored.
_TAG = "@mutant "
_SECONDS = 1.5
_TITLE = "Tëst — 日本語 title"  # non-ASCII metadata, so that flipped bits make invalid UTF-8


# -- sources ---------------------------------------------------------------------------------


def _tone(rate: int, seconds: float = _SECONDS) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * 330 * t) + 0.1 * np.sin(2 * np.pi * 1250 * t)).astype(np.float32)


def _soundfile(path: Path, rate: int, channels: int) -> None:
    import soundfile

    samples = _tone(rate)
    data = samples if channels == 1 else np.stack([samples, 0.5 * samples], axis=1)
    with soundfile.SoundFile(str(path), "w", rate, channels, "PCM_16") as f:
        f.title = _TITLE
        f.write(data)


def _encode(
    path: Path,
    rate: int,
    audio_codec: str,
    *,
    layout: str = "mono",
    video_codec: str | None = None,
    audio_options: Mapping[str, str] | None = None,
    video_options: Mapping[str, str] | None = None,
    fps: int = 12,
) -> None:
    """A short file with a tone (and a tiny moving-bar picture when ``video_codec`` is set)."""
    import av

    with av.open(str(path), "w") as out:
        out.metadata["title"] = _TITLE
        video = None
        if video_codec is not None:
            video = out.add_stream(video_codec, rate=fps, options=dict(video_options or {}))
            video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        audio = out.add_stream(audio_codec, rate=rate, layout=layout, options=dict(audio_options or {}))
        audio.metadata["title"] = _TITLE
        if video is not None:
            for i in range(round(_SECONDS * fps)):
                img = np.full((48, 64, 3), 40, np.uint8)
                x = (i * 4) % 54
                img[:, x : x + 10] = 255
                frame = av.VideoFrame.from_ndarray(img, format="rgb24")
                frame.pts = i
                frame.time_base = Fraction(1, fps)
                out.mux(video.encode(frame))
            out.mux(video.encode(None))
        samples = _tone(rate)
        planes = samples.reshape(1, -1) if layout == "mono" else np.stack([samples, 0.5 * samples])
        sound = av.AudioFrame.from_ndarray(planes, format="fltp", layout=layout)
        sound.sample_rate = rate
        sound.pts = 0
        out.mux(audio.encode(sound))
        out.mux(audio.encode(None))


# libvpx at its default deadline spends seconds on 18 tiny frames; realtime is enough here.
_VPX = {"deadline": "realtime", "cpu-used": "8"}


@dataclass(frozen=True)
class Source:
    """A kind of valid input file the mutants are made from."""

    name: str
    suffix: str
    make: Callable[[Path], None]
    video: bool = False


SOURCES: tuple[Source, ...] = (
    Source("wav", ".wav", lambda p: _soundfile(p, 16_000, 1)),
    Source("flac", ".flac", lambda p: _soundfile(p, 22_050, 2)),
    Source("mp3", ".mp3", lambda p: _encode(p, 22_050, "libmp3lame")),
    Source("opus", ".ogg", lambda p: _encode(p, 48_000, "libopus")),
    Source("m4a", ".m4a", lambda p: _encode(p, 16_000, "aac")),
    Source("mp4", ".mp4", lambda p: _encode(p, 22_050, "aac", video_codec="mpeg4"), video=True),
    Source(
        "webm-vp8-opus",
        ".webm",
        lambda p: _encode(p, 48_000, "libopus", video_codec="libvpx", video_options=_VPX),
        video=True,
    ),
    Source(
        "webm-vp9-vorbis",
        ".webm",
        # FFmpeg's own Vorbis encoder is "experimental" and only encodes stereo.
        lambda p: _encode(
            p,
            44_100,
            "vorbis",
            layout="stereo",
            audio_options={"strict": "experimental"},
            video_codec="libvpx-vp9",
            video_options=_VPX,
        ),
        video=True,
    ),
)
_BY_NAME = {s.name: s for s in SOURCES}


def make_sources(folder: Path) -> dict[str, bytes]:
    """Write one valid file per :data:`SOURCES` entry into ``folder``; their bytes by name."""
    folder.mkdir(parents=True, exist_ok=True)
    found = {}
    for source in SOURCES:
        path = folder / f"{source.name}{source.suffix}"
        source.make(path)
        found[source.name] = path.read_bytes()
    return found


# -- mutations -------------------------------------------------------------------------------

# Where containers keep their headers, tables and tags: most parsing bugs live there.
_HEAD = 4096
# Values that break size, count and offset fields.
_FIELD_VALUES = (0, 1, 0x7F, 0xFF, 0x7FFF, 0xFFFF, 0x7FFF_FFFF, 0x8000_0000, 0xFFFF_FFFF)

Mutation = Callable[[random.Random, bytes, Sequence[bytes]], tuple[bytes, str]]


def _position(rng: random.Random, size: int) -> int:
    """A byte offset in ``[0, size)``, half of the time inside the header area."""
    limit = min(size, _HEAD) if rng.random() < 0.5 else size
    return rng.randrange(max(1, limit))


def _span(rng: random.Random, size: int) -> tuple[int, int]:
    """``(start, length)``: mostly short runs, sometimes a large part of the file."""
    start = _position(rng, size)
    length = 1 + int((size - start - 1) * rng.random() ** 4)
    return start, length


def _truncate(rng: random.Random, data: bytes, _others: Sequence[bytes]) -> tuple[bytes, str]:
    cut = _position(rng, len(data) - 1) + 1
    return data[:cut], f"kept the first {cut} of {len(data)} bytes"


def _bitflip(rng: random.Random, data: bytes, _others: Sequence[bytes]) -> tuple[bytes, str]:
    out = bytearray(data)
    count = rng.choice((1, 2, 4, 8, 32, 128))
    for _ in range(count):
        out[_position(rng, len(out))] ^= 1 << rng.randrange(8)
    return bytes(out), f"{count} bits flipped"


def _fill(value: int) -> Mutation:
    def fill(rng: random.Random, data: bytes, _others: Sequence[bytes]) -> tuple[bytes, str]:
        start, length = _span(rng, len(data))
        out = data[:start] + bytes([value]) * length + data[start + length :]
        return out, f"bytes {start}..{start + length} set to {value:#04x}"

    return fill


def _fields(rng: random.Random, data: bytes, _others: Sequence[bytes]) -> tuple[bytes, str]:
    out = bytearray(data)
    changed = []
    for _ in range(rng.randint(1, 4)):
        width = rng.choice((2, 4, 8))
        at = _position(rng, max(1, len(out) - width))
        value = rng.choice(_FIELD_VALUES) & ((1 << (8 * width)) - 1)
        out[at : at + width] = value.to_bytes(width, rng.choice(("little", "big")))
        changed.append(f"{width} bytes at {at} = {value:#x}")
    return bytes(out), "; ".join(changed)


def _splice(rng: random.Random, data: bytes, others: Sequence[bytes]) -> tuple[bytes, str]:
    n = rng.randrange(len(others))
    other = others[n]
    a = rng.randrange(1, len(data))
    b = rng.randrange(len(other))
    return data[:a] + other[b:], f"first {a} bytes + source #{n} from byte {b}"


def _random_body(rng: random.Random, data: bytes, _others: Sequence[bytes]) -> tuple[bytes, str]:
    keep = rng.randrange(4, min(len(data), 1024))
    body = rng.randrange(0, 2 * len(data))
    return data[:keep] + rng.randbytes(body), f"first {keep} bytes, then {body} random bytes"


def _insert(rng: random.Random, data: bytes, _others: Sequence[bytes]) -> tuple[bytes, str]:
    at = _position(rng, len(data))
    extra = rng.randbytes(rng.choice((1, 3, 16, 512, 4096)))
    return data[:at] + extra + data[at:], f"{len(extra)} random bytes inserted at {at}"


def _delete(rng: random.Random, data: bytes, _others: Sequence[bytes]) -> tuple[bytes, str]:
    start, length = _span(rng, len(data))
    length = min(length, len(data) - start - 1) or 1
    return data[:start] + data[start + length :], f"bytes {start}..{start + length} removed"


def _duplicate(rng: random.Random, data: bytes, _others: Sequence[bytes]) -> tuple[bytes, str]:
    start, length = _span(rng, len(data))
    at = rng.randrange(len(data))
    chunk = data[start : start + length]
    return data[:at] + chunk + data[at:], f"bytes {start}..{start + length} repeated at {at}"


MUTATIONS: dict[str, Mutation] = {
    "truncate": _truncate,
    "bitflip": _bitflip,
    "zero": _fill(0x00),
    "ones": _fill(0xFF),
    "fields": _fields,
    "splice": _splice,
    "random-body": _random_body,
    "insert": _insert,
    "delete": _delete,
    "duplicate": _duplicate,
}


@dataclass(frozen=True)
class Mutant:
    """One input file of the battery: a source, and what was done to it."""

    index: int
    source: str
    mutation: str
    seed: int
    detail: str
    file: str
    #: Dub to a file too (Matroska when the input still has a picture, else WAV), not only
    #: in memory.
    write: bool = False

    def describe(self) -> str:
        return f"#{self.index} {self.source}/{self.mutation} (seed {self.seed}: {self.detail})"


def run_settings() -> tuple[int, int]:
    """``(seed, count)`` of this run: the defaults, or what the environment asks for."""
    return int(os.environ.get(SEED_ENV, DEFAULT_SEED)), int(os.environ.get(COUNT_ENV, DEFAULT_COUNT))


def _save(
    folder: Path, found: list[Mutant], data: bytes, source: str, mutation: str, seed: int, detail: str
) -> None:
    index = len(found)
    file = f"{index:04d}-{source}-{mutation}{_BY_NAME[source].suffix}"
    (folder / file).write_bytes(data)
    # Every fourth one also writes its result, to cover the remux of a corrupt video.
    found.append(Mutant(index, source, mutation, seed, detail, file, write=index % 4 == 3))


def _manifest(folder: Path, found: list[Mutant]) -> list[Mutant]:
    (folder / "manifest.json").write_text(json.dumps([asdict(m) for m in found]))
    return found


def make_mutants(sources: Mapping[str, bytes], folder: Path, count: int, seed: int) -> list[Mutant]:
    """The untouched sources, then ``count`` mutants spread evenly over sources and mutations.

    Mutant ``i`` depends only on ``(seed, i)`` and the sources, so a failure names what it
    takes to make the same file again. Files and ``manifest.json`` are written to ``folder``.
    """
    folder.mkdir(parents=True, exist_ok=True)
    names = [s.name for s in SOURCES]
    others = [sources[n] for n in names]
    found: list[Mutant] = []
    for name in names:
        _save(folder, found, sources[name], name, "none", seed, "the valid source")
    kinds = list(MUTATIONS)
    for i in range(count):
        name = names[i % len(names)]
        kind = kinds[(i // len(names)) % len(kinds)]
        # A string seed is hashed the same way in every process (unlike hash()).
        rng = random.Random(f"{seed}:{i}")
        data, detail = MUTATIONS[kind](rng, sources[name], others)
        _save(folder, found, data, name, kind, seed, detail)
    return _manifest(folder, found)


#: Not mutations: they make the child segfault or hang, to test the parent's handling.
SELFTEST_CRASH = "selftest-crash"
SELFTEST_HANG = "selftest-hang"


def selftest_mutants(sources: Mapping[str, bytes], folder: Path) -> list[Mutant]:
    """A valid WAV file, a crash, the file again, a hang, the file again."""
    folder.mkdir(parents=True, exist_ok=True)
    found: list[Mutant] = []
    for kind in ("none", SELFTEST_CRASH, "none", SELFTEST_HANG, "none"):
        _save(folder, found, sources["wav"], "wav", kind, 0, kind)
    return _manifest(folder, found)


# -- parent side -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """What happened to one mutant.

    ``kind``: ``dubbed``, ``refused`` (a MediaInputError that names the file), ``unclear``
    (a MediaInputError whose message does not name the file), ``error`` (any other
    exception), ``crash`` (the child died) or ``hang`` (it took over the limit).
    """

    index: int
    kind: str
    type: str = ""
    message: str = ""
    where: str = ""
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.kind in ("dubbed", "refused")


class _Child:
    """One child process and a thread that turns its stdout into a queue of lines."""

    def __init__(self, folder: Path, indices: Sequence[int], log: Path) -> None:
        root = Path(__file__).resolve().parents[2]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
        self._stderr = log.open("ab")
        self.log, self._log_start = log, self._stderr.tell()
        # -W error: the same rule as the test suite's filterwarnings, so a warning is a finding.
        self.process = subprocess.Popen(
            [sys.executable, "-W", "error", "-m", "tests.media.mutants", "run", str(folder)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            cwd=root,
            env=env,
        )
        assert self.process.stdin is not None
        self.process.stdin.write("".join(f"{i}\n" for i in indices).encode())
        self.process.stdin.close()
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            line = raw.decode("utf-8", "replace")
            if line.startswith(_TAG):
                self.lines.put(line[len(_TAG) :])
        self.lines.put(None)

    def next(self, timeout: float) -> dict[str, Any] | None:
        """The next message; ``None`` at the end of output. Raises queue.Empty on timeout."""
        line = self.lines.get(timeout=timeout)
        return None if line is None else json.loads(line)

    def said(self, size: int = 2000) -> str:
        """What this child wrote to stderr: from a fatal error on if there is one, else the end."""
        with contextlib.suppress(OSError), self.log.open("rb") as f:
            f.seek(self._log_start)
            text = f.read().decode("utf-8", "replace")
            fatal = text.find("Fatal Python error")
            return (text[fatal : fatal + size] if fatal >= 0 else text[-size:]).strip()
        return ""

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.kill()
        rc = self.process.wait()
        assert self.process.stdout is not None
        self.process.stdout.close()
        self._stderr.close()
        return rc


def _status(rc: int) -> str:
    if rc < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-rc).name}"
    return f"exit status {rc}"


def run_battery(
    mutants: Sequence[Mutant],
    folder: Path,
    *,
    hang_seconds: float = HANG_SECONDS,
    startup_seconds: float = STARTUP_SECONDS,
) -> dict[int, Outcome]:
    """Dub every mutant in a child process; the outcome of each, by index.

    A child that crashes or hangs is blamed on the mutant it started last and replaced by a
    new one for the rest, so a run always ends with one outcome per mutant.
    """
    outcomes: dict[int, Outcome] = {}
    pending = [m.index for m in mutants]
    log = folder / "child.log"
    log.unlink(missing_ok=True)
    fruitless = 0
    while pending:
        child = _Child(folder, pending, log)
        current: int | None = None
        last: int | None = None
        started = time.monotonic()
        try:
            while True:
                try:
                    message = child.next(hang_seconds if current is not None else startup_seconds)
                except queue.Empty:
                    if current is None:
                        what = "did not start" if last is None else f"stopped answering after #{last}"
                        raise RuntimeError(f"the mutant child {what}: {child.said()}") from None
                    outcomes[current] = Outcome(
                        current, "hang", "hang", f"no answer after {hang_seconds:.0f} s", "", hang_seconds
                    )
                    break
                if message is None:
                    rc = child.stop()
                    if current is not None:
                        outcomes[current] = Outcome(
                            current,
                            "crash",
                            _status(rc),
                            child.said(),
                            seconds=time.monotonic() - started,
                        )
                    elif rc != 0:
                        raise RuntimeError(f"the mutant child ended with {_status(rc)}: {child.said()}")
                    break
                if "start" in message:
                    current = int(message["start"])
                    started = time.monotonic()
                else:
                    outcome = Outcome(**message)
                    outcomes[outcome.index] = outcome
                    current, last = None, outcome.index
        finally:
            child.stop()
        left = [i for i in pending if i not in outcomes]
        # A child that dies before its first mutant would be restarted for ever.
        fruitless = fruitless + 1 if len(left) == len(pending) else 0
        if fruitless >= 3:
            raise RuntimeError(f"the mutant child keeps dying before it starts a mutant: {child.said()}")
        pending = left
    return outcomes


# -- child side ------------------------------------------------------------------------------


def _where(exc: BaseException) -> str:
    """The innermost frames of ``exc``'s traceback, ``file:line function`` each."""
    import traceback

    frames = traceback.extract_tb(exc.__traceback__)[-3:]
    return " < ".join(f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in reversed(frames))


def fake_dubber() -> Any:
    """A Dubber with the fake stages, English to German."""
    from stsdub import Dubber, DurationPolicy
    from stsdub.testing import FakeASR, FakeSynthesizer, FakeTranslator

    return Dubber(
        FakeASR(),
        FakeTranslator(),
        FakeSynthesizer(),
        source_language="en",
        target_language="de",
        device="cpu",
        # The fake synthesizer speaks exactly as long as asked: nothing to stretch.
        duration=DurationPolicy(time_stretch=False),
    )


def _dub(dubber: Any, folder: Path, mutant: Mutant) -> Outcome:
    from stsdub import MediaInputError
    from stsdub._media import probe

    if mutant.mutation == SELFTEST_CRASH:
        os.kill(os.getpid(), signal.SIGSEGV)
    if mutant.mutation == SELFTEST_HANG:
        time.sleep(3600)
    path = folder / mutant.file
    output = None
    if mutant.write:
        # A mutant may have lost its picture, and a video output for an audio-only input is
        # rightly refused (MediaOutputError); ask for what the input can give.
        try:
            video = probe(path).has_video
        except Exception:  # dub_file meets the same problem first, and it is reported from there
            video = False
        output = folder / "out" / f"{mutant.index:04d}{'.mkv' if video else '.wav'}"
    started = time.monotonic()
    try:
        dubbed = dubber.dub_file(path, output, segmentation="fixed", subtitles=("srt",))
    except MediaInputError as exc:
        message = str(exc)
        # A message must say which file is wrong: the CLI dubs many files in one run.
        kind = "refused" if message.strip() and path.name in message else "unclear"
        return Outcome(
            mutant.index, kind, type(exc).__name__, message, _where(exc), time.monotonic() - started
        )
    except Exception as exc:
        message = str(exc)
        return Outcome(
            mutant.index, "error", type(exc).__name__, message, _where(exc), time.monotonic() - started
        )
    finally:
        if output is not None:
            for made in output.parent.glob(f"{output.stem}*"):
                made.unlink()
    seconds = time.monotonic() - started
    audio = dubbed.audio.samples
    if not (dubbed.duration > 0 and audio.size and np.all(np.isfinite(audio))):
        return Outcome(mutant.index, "error", "BadResult", f"dubbed to {dubbed!r}", "", seconds)
    return Outcome(mutant.index, "dubbed", seconds=seconds)


def _send(message: Mapping[str, Any]) -> None:
    # Flushed at once: after a crash, the parent must know which mutant was being dubbed.
    sys.stdout.write(_TAG + json.dumps(message) + "\n")
    sys.stdout.flush()


def _limit_memory() -> None:
    try:
        import resource
    except ImportError:  # not on Windows
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = CHILD_MEMORY_BYTES if hard == resource.RLIM_INFINITY else min(CHILD_MEMORY_BYTES, hard)
    if soft == resource.RLIM_INFINITY or soft > limit:
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def _child(folder: Path, indices: Iterator[int]) -> None:
    import faulthandler

    faulthandler.enable()  # a segfault leaves a traceback in the log the parent shows
    _limit_memory()
    manifest = {m["index"]: Mutant(**m) for m in json.loads((folder / "manifest.json").read_text())}
    (folder / "out").mkdir(exist_ok=True)
    with fake_dubber() as dubber:
        for index in indices:
            _send({"start": index})
            _send(asdict(_dub(dubber, folder, manifest[index])))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.media.mutants", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    make = commands.add_parser("make", help="write the sources and mutants of one run")
    make.add_argument("folder", type=Path)
    make.add_argument("--seed", type=int, default=None)
    make.add_argument("--count", type=int, default=None)
    run = commands.add_parser("run", help="dub the mutants whose indices come on stdin (all if none)")
    run.add_argument("folder", type=Path)
    args = parser.parse_args(argv)
    if args.command == "make":
        seed, count = run_settings()
        sources = make_sources(args.folder / "sources")
        made = make_mutants(
            sources,
            args.folder,
            count if args.count is None else args.count,
            seed if args.seed is None else args.seed,
        )
        print(f"{len(made)} files in {args.folder}")
        return
    lines = [] if sys.stdin.isatty() else sys.stdin.read().split()
    if not lines:
        lines = [str(m["index"]) for m in json.loads((args.folder / "manifest.json").read_text())]
    _child(args.folder, (int(i) for i in lines))


if __name__ == "__main__":
    main()
