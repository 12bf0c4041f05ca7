"""What the benchmarks share: the speech they dub, where real recordings are, how they report.

Every benchmark script imports this module first (it puts the repository on ``sys.path``, so
``tests.speech`` and ``stsdub`` import from a checkout), then takes its workloads and figures
from here instead of growing its own copies.

- speech: :func:`make_fragments` (6-s fragments of whole sentences, the test voice),
  :func:`espeak_fragments` (short eSpeak NG sentences), :func:`espeak` (any text, any voice);
- real recordings: :data:`REAL_DATA` (``../shared/data/real`` beside the checkout, or
  ``STSDUB_REAL_DATA``), :func:`ami_excerpts`;
- reporting: :func:`machine`, :func:`percentile`, :data:`MEMORY`, :func:`write_json`.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.speech import SENTENCES, speak  # noqa: E402

RATE = 16_000
FRAGMENT_SECONDS = 6.0
FRAGMENT_PAUSE = 0.3
#: Real recordings no one on the project made (see their README): beside the checkout.
REAL_DATA = Path(os.environ.get("STSDUB_REAL_DATA", ROOT.parent / "shared" / "data" / "real"))


def machine() -> str:
    """One line naming the machine: processor, usable cores, Python."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{platform.processor() or platform.machine()}, {cores} cores, Python {platform.python_version()}"


def write_json(path: Path | None, data: Any) -> None:
    """Write a benchmark's figures as JSON (nothing when ``path`` is ``None``)."""
    if path is not None:
        path.write_text(json.dumps(data, indent=1, default=str) + "\n", encoding="utf-8")


def ami_excerpts() -> list[tuple[str, Path]]:
    """The AMI meeting excerpts (``uri``, wav path), sorted; empty when the data is absent."""
    folder = REAL_DATA / "ami"
    return [(p.stem, p) for p in sorted(folder.glob("*.wav"))]


def espeak(text: str, voice: str = "en-us", rate: int = RATE) -> np.ndarray:
    """``text`` spoken by eSpeak NG with ``voice``, as float32 at ``rate``."""
    import soundfile
    import soxr

    if shutil.which("espeak-ng") is None:
        raise SystemExit("this workload needs espeak-ng (apt-get install espeak-ng)")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "speech.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-w", str(path), text], check=True)
        audio, own_rate = soundfile.read(path, dtype="float32")
    return soxr.resample(audio, own_rate, rate).astype(np.float32)


def make_fragments(count: int) -> tuple[list[np.ndarray], list[str]]:
    """``count`` consecutive 6-s fragments at 16 kHz: whole sentences as many as fit, then silence.

    The sentences are taken in turn, one that does not fit waiting for the next fragment, so
    consecutive fragments go on with the text (never repeating the one before, which Whisper,
    prompted with it, would take for already said) and each is mostly speech.
    """
    import soxr

    pause = np.zeros(int(FRAGMENT_PAUSE * RATE), np.float32)
    queue = [SENTENCES[k % len(SENTENCES)] for k in range(3 * count + len(SENTENCES))]
    fragments, references = [], []
    for _ in range(count):
        parts: list[np.ndarray] = []
        said: list[str] = []
        length = 0
        for text in list(queue[:4]):
            audio, rate = speak(text)
            speech = soxr.resample(audio, rate, RATE).astype(np.float32)
            if length + speech.size <= FRAGMENT_SECONDS * RATE:
                parts += [speech, pause]
                said.append(text)
                length += speech.size + pause.size
                queue.remove(text)
        samples = np.zeros(int(FRAGMENT_SECONDS * RATE), np.float32)
        joined = np.concatenate(parts)[: samples.size]
        samples[: joined.size] = np.clip(joined, -1.0, 1.0)
        samples.setflags(write=False)
        fragments.append(samples)
        references.append(" ".join(said))
    return fragments, references


#: Ten everyday sentences, 3-4 s each when eSpeak NG says them.
SHORT_SENTENCES = (
    "The weather will stay warm and sunny for the rest of the week.",
    "Please remember to close the windows before you leave the house.",
    "Our train to the city was delayed by almost twenty minutes today.",
    "She has been working at the hospital for more than ten years.",
    "We should buy some fresh bread and milk on the way home tonight.",
    "The children played football in the park until it got dark.",
    "He forgot his keys at the office and had to go back for them.",
    "The new library opens next Monday with a small concert outside.",
    "I would like to book a table for four people at eight o'clock.",
    "They painted the kitchen yellow and bought a new wooden table.",
)


def espeak_fragments(count: int) -> list[np.ndarray]:
    """The first ``count`` sentences spoken by eSpeak NG (en-us), at 16 kHz, one per fragment."""
    return [espeak(text) for text in SHORT_SENTENCES[:count]]


def percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


class Memory:
    """Resident set now and its high-water mark since the last reset (Linux /proc)."""

    @staticmethod
    def _status(field: str) -> float:
        try:
            with open("/proc/self/status", encoding="ascii") as f:
                for line in f:
                    if line.startswith(field + ":"):
                        return int(line.split()[1]) / 1024  # kB → MiB
        except OSError:
            pass
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    def rss(self) -> float:
        return self._status("VmRSS")

    def peak(self) -> float:
        return self._status("VmHWM")

    def reset_peak(self) -> None:
        with contextlib.suppress(OSError), open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")


MEMORY = Memory()
