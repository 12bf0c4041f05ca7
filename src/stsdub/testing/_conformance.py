"""A conformance check for third-party stages; plain Python, no test framework needed."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import anyio
import anyio.from_thread
import attrs
import numpy as np

from .._core._diarization import Diarization, DiarizationRequest
from .._core._separation import Separation, SeparationRequest
from .._core._spec import STAGE_KINDS
from .._core._values import (
    ASRRequest,
    AudioBuffer,
    SynthesisRequest,
    Transcript,
    Translation,
    TranslationRequest,
)
from .._plugins._registry import StageRegistry
from ..errors import StageError

__all__ = ["ConformanceError", "ConformanceReport", "check_plugin", "check_stage"]

_METHODS = {
    "asr": "transcribe",
    "translator": "translate",
    "synthesizer": "synthesize",
    "separator": "separate",
    "diarizer": "diarize",
}


class ConformanceError(AssertionError):
    """A stage does not keep the contract; ``report.problems`` says how."""

    def __init__(self, report: ConformanceReport) -> None:
        self.report = report
        lines = "\n".join(f"  - {p}" for p in report.problems)
        super().__init__(f"{report.stage} does not conform to the {report.kind} contract:\n{lines}")


@attrs.define
class ConformanceReport:
    kind: str
    stage: str
    passed: list[str] = attrs.field(factory=list)
    problems: list[str] = attrs.field(factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _speechlike(seconds: float, rate: int) -> AudioBuffer:
    """A voiced-sounding test signal: a harmonic buzz with a syllable-rate envelope."""
    t = np.arange(round(seconds * rate), dtype=np.float64) / rate
    buzz = sum(np.sin(2 * np.pi * 140 * k * t) / k for k in range(1, 12))
    envelope = 0.5 * (1 - np.cos(2 * np.pi * 4 * t))
    samples = 0.3 * buzz * envelope / np.max(np.abs(buzz))
    return AudioBuffer(samples.astype(np.float32), rate)


def _aligned_with(audio: AudioBuffer) -> Callable[[Separation], str | None]:
    def check(separation: Separation) -> str | None:
        if not separation.aligned_with(audio):
            return (
                f"tracks of {separation.voice.samples.size} samples at {separation.sample_rate} Hz"
                f" for input of {audio.samples.size} samples at {audio.sample_rate} Hz; both must"
                " keep the input's rate and length"
            )
        return None

    return check


def _within(audio: AudioBuffer) -> Callable[[Diarization], str | None]:
    def check(diarization: Diarization) -> str | None:
        # A little slack: a diarizer working in frames may round the last turn's end up.
        late = [t for t in diarization.turns if t[1] > audio.duration + 0.05]
        if late:
            return f"turn {late[0]!r} ends after the {audio.duration:.2f} s recording"
        return None

    return check


def _embedding_problem(embedding: object) -> str | None:
    if not isinstance(embedding, np.ndarray) or embedding.ndim != 1:
        return f"embed() must return a 1-D numpy array, got {type(embedding).__name__}"
    if embedding.size and not np.all(np.isfinite(embedding)):
        return "embed() returned non-finite values"
    return None


def _detect_kind(stage: object) -> str:
    found = [kind for kind, method in _METHODS.items() if callable(getattr(stage, method, None))]
    if len(found) != 1:
        raise TypeError(
            f"cannot tell the kind of {type(stage).__name__}: pass kind={'|'.join(map(repr, _METHODS))}"
        )
    return found[0]


async def _call(fn: Callable[[Any], Any], arg: Any) -> Any:
    if inspect.iscoroutinefunction(fn):
        return await fn(arg)
    return await anyio.to_thread.run_sync(fn, arg)


async def _check(stage: object, kind: str, report: ConformanceReport) -> None:
    method = _METHODS[kind]
    fn = getattr(stage, method, None)
    if not callable(fn):
        report.problems.append(f"has no callable {method}()")
        return

    async def expect(label: str, request: Any, expected: type, validate: Callable[[Any], str | None]) -> Any:
        try:
            result = await _call(fn, request)
        except StageError as exc:
            report.problems.append(f"{label}: raised {exc!r} for a valid request")
            return None
        except Exception as exc:
            report.problems.append(
                f"{label}: raised {type(exc).__name__} ({exc}); stages must raise stsdub.StageError"
            )
            return None
        if not isinstance(result, expected):
            report.problems.append(f"{label}: returned {type(result).__name__}, expected {expected.__name__}")
            return None
        problem = validate(result)
        if problem:
            report.problems.append(f"{label}: {problem}")
        else:
            report.passed.append(label)
        return result

    concurrency = getattr(stage, "concurrency", 1)
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        report.problems.append(f"concurrency must be a positive int, got {concurrency!r}")

    if kind == "asr":

        def text_ok(t: Transcript) -> str | None:
            return None if isinstance(t.text, str) else "Transcript.text is not a str"

        requests = [
            ASRRequest(audio=_speechlike(2.0, 16_000), language=None, sequence_number=0),
            ASRRequest(audio=_speechlike(1.5, 44_100), language="en", sequence_number=1),
            ASRRequest(audio=AudioBuffer.silence(1.0, 16_000), language="en", sequence_number=2),
        ]
        labels = ["speech at 16 kHz", "speech at 44.1 kHz", "silence"]
        for label, request in zip(labels, requests, strict=True):
            await expect(f"transcribe({label})", request, Transcript, text_ok)
        batch_requests: list[Any] = requests
    elif kind == "translator":

        def translated(t: Translation) -> str | None:
            if not isinstance(t.text, str) or not t.text.strip():
                return "Translation.text is empty for non-empty input"
            return None

        t_request = TranslationRequest(
            text="Hello, welcome to the game.", source_language="en", target_language="de"
        )
        await expect("translate(en→de)", t_request, Translation, translated)
        follow = attrs.evolve(t_request, sequence_number=1, previous_text="Good evening.")
        await expect("translate(with context)", follow, Translation, translated)
        batch_requests = [t_request, follow]
        if getattr(stage, "supports_context", False) is True:
            preceding = (("Good evening.", "Guten Abend."), ("A big match.", "Ein großes Spiel."))
            sentences = attrs.evolve(t_request, sequence_number=2, context=preceding)
            await expect("translate(with preceding sentences)", sentences, Translation, translated)
            batch_requests.append(sentences)
    elif kind == "separator":
        sep_requests = [
            SeparationRequest(audio=_speechlike(2.0, 16_000)),
            SeparationRequest(audio=_speechlike(1.5, 44_100), sequence_number=1),
            SeparationRequest(audio=AudioBuffer.silence(1.0, 16_000), sequence_number=2),
        ]
        labels = ["speech at 16 kHz", "speech at 44.1 kHz", "silence"]
        for label, sep_request in zip(labels, sep_requests, strict=True):
            await expect(f"separate({label})", sep_request, Separation, _aligned_with(sep_request.audio))
        batch_requests = sep_requests
    elif kind == "diarizer":
        d_requests = [
            DiarizationRequest(audio=_speechlike(3.0, 16_000)),
            DiarizationRequest(audio=_speechlike(2.0, 44_100), sequence_number=1, num_speakers=1),
            DiarizationRequest(audio=AudioBuffer.silence(1.0, 16_000), sequence_number=2),
        ]
        labels = ["speech at 16 kHz", "speech at 44.1 kHz, one speaker", "silence"]
        for label, d_request in zip(labels, d_requests, strict=True):
            await expect(f"diarize({label})", d_request, Diarization, _within(d_request.audio))
        embed = getattr(stage, "embed", None)
        if embed is not None:
            try:
                embedding = await _call(embed, _speechlike(1.5, 16_000))
            except Exception as exc:
                report.problems.append(f"embed(speech) raised {type(exc).__name__}: {exc}")
            else:
                problem = _embedding_problem(embedding)
                if problem is None and embedding.size == 0:
                    problem = "embed() returned an empty embedding for speech"
                (report.problems if problem else report.passed).append(problem or "embed(speech)")
        batch_requests = d_requests
    else:

        def audio_ok(a: AudioBuffer) -> str | None:
            if a.samples.size == 0:
                return "returned empty audio for non-empty text"
            if float(np.max(np.abs(a.samples))) == 0.0:
                return "returned digital silence for non-empty text"
            return None

        s_request = SynthesisRequest(text="Hello, welcome to the game.", language="en", target_duration=2.0)
        await expect("synthesize(text)", s_request, AudioBuffer, audio_ok)
        slow = attrs.evolve(s_request, sequence_number=1, speed=0.9, target_duration=None)
        await expect("synthesize(speed, no target)", slow, AudioBuffer, audio_ok)
        batch_requests = [s_request, slow]

    batch = getattr(stage, f"{method}_batch", None)
    if callable(batch):
        try:
            results = await _call(batch, list(batch_requests))
        except Exception as exc:
            report.problems.append(f"{method}_batch raised {type(exc).__name__}: {exc}")
        else:
            if not isinstance(results, (list, tuple)) or len(results) != len(batch_requests):
                report.problems.append(f"{method}_batch must return one result per request, in order")
            else:
                report.passed.append(f"{method}_batch")


def check_stage(stage: object, kind: str | None = None) -> ConformanceReport:
    """Check that ``stage`` keeps the stage contract of its kind; raise if it does not.

    Calls the stage with valid requests (speech-like audio at several rates and silence for an
    ASR; a sentence with and without context for a translator; a sentence with a target
    duration and a speed for a synthesizer; speech-like audio at two rates and silence for a
    separator, whose tracks must keep the input's rate and length; speech at two rates and
    silence for a diarizer, whose turns must lie inside the recording, and its ``embed`` when
    it has one), its batch method when it has one, and checks
    the types and values it returns. Works in plain scripts and under any event loop.

    Raises:
        ConformanceError: With every problem found.
    """
    kind = kind or _detect_kind(stage)
    if kind not in STAGE_KINDS:
        raise ValueError(f"kind must be one of {STAGE_KINDS}, got {kind!r}")
    report = ConformanceReport(kind, type(stage).__name__)
    with anyio.from_thread.start_blocking_portal() as portal:
        portal.call(_check, stage, kind, report)
    if not report.ok:
        raise ConformanceError(report)
    return report


def check_plugin(kind: str, name: str, *, device: str = "cpu", **options: Any) -> ConformanceReport:
    """Build the registered stage ``name`` as a Dubber would, then :func:`check_stage` it."""
    spec = StageRegistry.from_plugin_manager().get(kind, name)
    stage = spec.load_factory()(device=device, **options)
    try:
        return check_stage(stage, kind)
    finally:
        close = getattr(stage, "close", None)
        if callable(close):
            close()
