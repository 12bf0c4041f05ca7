"""The Dubber: loads the stages once and runs streams of fragments through them."""

from __future__ import annotations

import contextlib
import inspect
import logging
import math
import os
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
import anyio.from_thread
import attrs

from ._core._device import cpu_cores, resolve_device
from ._core._diarization import Diarization, DiarizationRequest
from ._core._languages import same_language
from ._core._separation import Separation, SeparationRequest
from ._core._values import AudioBuffer, DubResult, Fragment
from ._pipeline._backpressure import BackpressureCallback, BackpressureLevels
from ._pipeline._captions import DEFAULT_INTERVAL as DEFAULT_CAPTION_INTERVAL
from ._pipeline._captions import check_captions
from ._pipeline._duration import DurationMatcher, DurationPolicy
from ._pipeline._job import Stages, StreamConfig, Ticket
from ._pipeline._runner import StageRunner
from ._pipeline._stream import Stream
from ._pipeline._translation import DEFAULT_SENTENCE_WAIT, check_sentence_wait
from ._plugins._registry import StageRegistry
from ._speakers._casting import voice_map
from .errors import ConfigurationError, ErrorCode, StageError, StageLoadError, StsdubError

if TYPE_CHECKING:
    from ._recordings._files import DubbedFile

__all__ = ["Dubber"]

log = logging.getLogger("stsdub")

_METHODS = {
    "asr": "transcribe",
    "translator": "translate",
    "synthesizer": "synthesize",
    "separator": "separate",
    "diarizer": "diarize",
}
_STAGE_NAMES = {
    "asr": "asr",
    "translator": "translation",
    "synthesizer": "synthesis",
    "separator": "separation",
    "diarizer": "diarization",
}
# The kinds the fragment pipeline runs; a separator and a diarizer work on whole files, outside
# it (a live stream asks the diarizer for embeddings only).
_PIPELINE_KINDS = ("asr", "translator", "synthesizer")
_FALLBACKS = ("silence", "original")
_OVERFLOWS = ("wait", "reject")
# Per-stream settings open_stream() and dub() accept as overrides.
_OVERRIDABLE = frozenset(
    {
        "source_language",
        "target_language",
        "voice",
        "voices",
        "max_inflight",
        "fragment_timeout",
        "fallback",
        "overflow",
        "output_sample_rate",
        "on_backpressure",
        "background",
        "speakers",
        "captions",
        "caption_interval",
        "sentence_wait",
    }
)
# What a stream's results may carry as ``mixed`` (None: nothing, the dub alone).
_BACKGROUNDS = ("duck", "separate")


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(f"{name} must be a positive int, got {value!r}")
    return value


def _limiter(stage: object | None) -> anyio.CapacityLimiter:
    concurrency = getattr(stage, "concurrency", 1)
    return anyio.CapacityLimiter(concurrency if isinstance(concurrency, int) and concurrency > 0 else 1)


def _positive_float(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        raise ConfigurationError(f"{name} must be a positive number of seconds, got {value!r}")
    return float(value)


class Dubber:
    """Dubs fragments of speech: ASR → translation → synthesis → duration matching.

    Models load once, at ``async with`` (or ``with``), and every stream shares them.

    Args:
        asr: A registered ASR name (see ``stsdub plugins``) or an object with ``transcribe``.
        translator: A translator name or object; ``None`` when every stream keeps its
            language (re-voicing).
        synthesizer: A synthesizer name or object.
        source_language: Language of the speech; ``None`` lets the ASR detect it.
        target_language: Language to dub into (a stream may override it).
        voice: Voice for the synthesizer (a stream may override it).
        voices: ``{speaker: voice}``: the voice of each speaker label (``"S1"``, see
            ``diarizer``); speakers not in it get distinct voices the synthesizer offers,
            matched to their pitch (a stream may override it).
        device: ``"auto"`` (CUDA when available), ``"cuda"``, ``"cuda:N"`` or ``"cpu"``.
        asr_options, translator_options, synthesizer_options: Keyword arguments for the
            stage factories, e.g. ``asr_options={"model": "small"}``.
        separator: A separator name (``"demucs"``) or an object with ``separate``, loaded
            with the other stages and used by :meth:`separate` (file dubs with
            ``background="separate"``); ``None``: no separator. Not part of the fragment
            pipeline.
        separator_options: Keyword arguments for the separator's factory, e.g.
            ``{"model": "htdemucs_ft"}``.
        diarizer: A diarizer name (``"campplus"``, ``"resemblyzer"``) or an object with ``diarize``, loaded
            with the other stages: a file dub cuts fragments at speaker changes and gives
            each speaker a voice of their own; a live stream labels each fragment by its
            speaker (when the diarizer has ``embed``). ``None``: one voice for everybody.
        diarizer_options: Keyword arguments for the diarizer's factory, e.g.
            ``{"num_speakers": 2}``.
        max_inflight: Fragments per stream inside the pipeline at once.
        fragment_timeout: Seconds one fragment may take through all stages.
        fallback: Audio of a FAILED fragment: ``"silence"`` or ``"original"``.
        on_backpressure: Called with a :class:`~stsdub.BackpressureEvent` whenever a stream's
            level changes; may be ``async``.
        overflow: ``"wait"``: ``send`` waits at ``max_inflight``. ``"reject"``: an overflowing
            fragment is answered at once with FAILED / ``BACKPRESSURE_REJECTED``.
        backpressure_levels: Thresholds of the levels; see :class:`~stsdub.BackpressureLevels`.
        output_sample_rate: Rate of the dubbed audio; ``None`` keeps each fragment's rate.
        max_fragment_seconds: Longer fragments are refused at ``send``.
        retries: Extra attempts after a retryable error, within the fragment's budget.
        retry_backoff: Seconds before the first retry; doubles each time.
        duration: How strictly dubbed speech must fit; see :class:`~stsdub.DurationPolicy`.
        registry: Where stage names are looked up (default: every installed plugin).
    """

    def __init__(
        self,
        asr: str | object = "faster-whisper",
        translator: str | object | None = "deepl",
        synthesizer: str | object = "piper",
        *,
        source_language: str | None = None,
        target_language: str | None = None,
        voice: str | None = None,
        voices: Mapping[str, str] | None = None,
        device: str = "auto",
        asr_options: Mapping[str, Any] | None = None,
        translator_options: Mapping[str, Any] | None = None,
        synthesizer_options: Mapping[str, Any] | None = None,
        separator: str | object | None = None,
        separator_options: Mapping[str, Any] | None = None,
        diarizer: str | object | None = None,
        diarizer_options: Mapping[str, Any] | None = None,
        max_inflight: int = 3,
        fragment_timeout: float = 8.0,
        fallback: str = "silence",
        on_backpressure: BackpressureCallback | None = None,
        overflow: str = "wait",
        backpressure_levels: BackpressureLevels | None = None,
        output_sample_rate: int | None = None,
        max_fragment_seconds: float = 30.0,
        retries: int = 2,
        retry_backoff: float = 0.05,
        duration: DurationPolicy | None = None,
        registry: StageRegistry | None = None,
    ) -> None:
        self._choices = {
            "asr": asr,
            "translator": translator,
            "synthesizer": synthesizer,
            "separator": separator,
            "diarizer": diarizer,
        }
        self._options = {
            "asr": dict(asr_options or {}),
            "translator": dict(translator_options or {}),
            "synthesizer": dict(synthesizer_options or {}),
            "separator": dict(separator_options or {}),
            "diarizer": dict(diarizer_options or {}),
        }
        for kind in ("asr", "synthesizer"):
            if self._choices[kind] is None:
                raise ConfigurationError(f"a Dubber needs an {kind}")
        self._device_choice = device
        if device != "auto":
            resolve_device(device)  # a misspelt device fails here, not at `async with`
        self._registry = registry
        self._defaults = self._stream_settings(
            source_language=source_language,
            target_language=target_language,
            voice=voice,
            voices=voices,
            max_inflight=max_inflight,
            fragment_timeout=fragment_timeout,
            fallback=fallback,
            overflow=overflow,
            output_sample_rate=output_sample_rate,
            on_backpressure=on_backpressure,
            # A stream's own options only (open_stream / dub): files choose theirs in dub_file.
            background=None,
            speakers=None,
            captions=None,
            caption_interval=DEFAULT_CAPTION_INTERVAL,
            sentence_wait=DEFAULT_SENTENCE_WAIT,
        )
        self._max_fragment_seconds = _positive_float("max_fragment_seconds", max_fragment_seconds)
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ConfigurationError(f"retries must be an int >= 0, got {retries!r}")
        self._retries = retries
        self._retry_backoff = _positive_float("retry_backoff", retry_backoff)
        self._levels = backpressure_levels or BackpressureLevels()
        self._levels.resolve(max_inflight)  # fail now, not at the first stream
        self._duration = DurationMatcher(duration)
        self.device: str | None = None
        self.stages: dict[str, object | None] = {}
        self._built: list[object] = []
        self._stages: Stages | None = None
        self._tg: anyio.abc.TaskGroup | None = None
        self._exit_stack: contextlib.AsyncExitStack | None = None
        self._streams: dict[str, Stream] = {}
        self._portal: anyio.from_thread.BlockingPortal | None = None
        self._sync_cm: contextlib.ExitStack | None = None
        self._separator_limiter = anyio.CapacityLimiter(1)
        self._diarizer_limiter = anyio.CapacityLimiter(1)

    @property
    def max_fragment_seconds(self) -> float:
        """Fragments longer than this are refused at ``send``."""
        return self._max_fragment_seconds

    # -- settings ---------------------------------------------------------------------------

    @staticmethod
    def _stream_settings(**settings: Any) -> dict[str, Any]:
        _positive_int("max_inflight", settings["max_inflight"])
        _positive_float("fragment_timeout", settings["fragment_timeout"])
        if settings["fallback"] not in _FALLBACKS:
            raise ConfigurationError(f"fallback must be one of {_FALLBACKS}, got {settings['fallback']!r}")
        if settings["overflow"] not in _OVERFLOWS:
            raise ConfigurationError(f"overflow must be one of {_OVERFLOWS}, got {settings['overflow']!r}")
        if settings["output_sample_rate"] is not None:
            _positive_int("output_sample_rate", settings["output_sample_rate"])
        settings["voices"] = voice_map(settings["voices"])
        if settings["background"] is not None and settings["background"] not in _BACKGROUNDS:
            raise ConfigurationError(
                f"background must be one of {_BACKGROUNDS} or None, got {settings['background']!r}"
            )
        if settings["speakers"] not in (None, True, False):
            raise ConfigurationError(f"speakers must be True, False or None, got {settings['speakers']!r}")
        check_captions(settings["captions"], settings["caption_interval"])
        settings["sentence_wait"] = check_sentence_wait(settings["sentence_wait"])
        callback = settings["on_backpressure"]
        if callback is not None and not callable(callback):
            raise ConfigurationError("on_backpressure must be callable")
        return settings

    def _config(self, stream_id: str, overrides: Mapping[str, Any]) -> StreamConfig:
        unknown = set(overrides) - _OVERRIDABLE
        if unknown:
            raise ConfigurationError(
                f"unknown stream options {sorted(unknown)}; a stream can override {sorted(_OVERRIDABLE)}"
            )
        if not isinstance(stream_id, str) or not stream_id:
            raise ConfigurationError(f"stream_id must be a non-empty str, got {stream_id!r}")
        settings = self._stream_settings(**{**self._defaults, **overrides})
        target = settings["target_language"]
        source = settings["source_language"]
        if not target:
            raise ConfigurationError(
                "no target_language: pass it to Dubber(...) or to the stream (it may equal the"
                " source language to re-voice without translating)"
            )
        if self._stages is not None and settings["background"] == "separate" and self.separator is None:
            raise ConfigurationError(
                f"stream {stream_id!r} asks for background='separate', and this Dubber has no"
                " separator: pass separator='demucs' (or use background='duck')"
            )
        if (
            settings["speakers"]
            and self._stages is not None
            and not callable(getattr(self.diarizer, "embed", None))
        ):
            raise ConfigurationError(
                f"stream {stream_id!r} asks for speakers, and this Dubber has no diarizer that"
                " labels live fragments: pass diarizer='campplus'"
            )
        if self._stages is not None and self._stages.translator is None and not same_language(source, target):
            raise ConfigurationError(
                f"stream {stream_id!r} dubs {source or 'detected speech'} into {target}, which"
                " needs a translator, and this Dubber has translator=None"
            )
        return StreamConfig(
            stream_id=stream_id,
            max_fragment_seconds=self._max_fragment_seconds,
            retries=self._retries,
            retry_backoff=self._retry_backoff,
            levels=self._levels,
            **settings,
        )

    # -- lifecycle --------------------------------------------------------------------------

    async def __aenter__(self) -> Dubber:
        if self._stages is not None:
            raise StsdubError("this Dubber is already open")
        self.device = resolve_device(self._device_choice)
        registry = self._registry
        if registry is None and any(isinstance(c, str) for c in self._choices.values()):
            registry = StageRegistry.from_plugin_manager()
        async with contextlib.AsyncExitStack() as stack:
            stack.push_async_callback(self._close_stages)
            for kind, choice in self._choices.items():
                self.stages[kind] = None if choice is None else await self._load(kind, choice, registry)
            runners: dict[str, StageRunner[Any, Any] | None] = {
                kind: None if stage is None else StageRunner(stage, _METHODS[kind], _STAGE_NAMES[kind])
                for kind, stage in self.stages.items()
                if kind in _PIPELINE_KINDS
            }
            # A model object is rarely safe to share between threads: calls queue here.
            self._separator_limiter = _limiter(self.stages.get("separator"))
            self._diarizer_limiter = _limiter(self.stages.get("diarizer"))
            self._stages = Stages(
                asr=runners["asr"],  # type: ignore[arg-type]
                translator=runners["translator"],  # type: ignore[arg-type]
                synthesizer=runners["synthesizer"],  # type: ignore[arg-type]
                duration=self._duration,
                # rubberband runs as a process per stretch: one per core keeps the CPU busy.
                duration_limiter=anyio.CapacityLimiter(cpu_cores()),
                diarizer=self.stages.get("diarizer"),
                diarizer_limiter=self._diarizer_limiter,
                separate=self.separate if self.stages.get("separator") is not None else None,
            )
            self._tg = await stack.enter_async_context(anyio.create_task_group())
            stack.callback(self._tg.cancel_scope.cancel)  # runs first on exit: stop every stream
            for runner in runners.values():
                if runner is not None and runner.batches:
                    for _ in range(runner.concurrency):
                        self._tg.start_soon(runner.run_batches)
            self._exit_stack = stack.pop_all()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        stack, self._exit_stack = self._exit_stack, None
        try:
            if stack is not None:
                await stack.aclose()
        finally:
            self._stages = None
            self._tg = None
            self._streams.clear()

    async def aclose(self) -> None:
        """Close the Dubber (same as leaving ``async with``)."""
        await self.__aexit__(None, None, None)

    async def _load(self, kind: str, choice: object, registry: StageRegistry | None) -> object:
        method = _METHODS[kind]
        options = self._options[kind]
        if isinstance(choice, str):
            assert registry is not None
            spec = registry.get(kind, choice)
            factory = spec.load_factory()
            label = f"{kind} {choice!r}"
            try:
                stage = await anyio.to_thread.run_sync(lambda: factory(device=self.device, **options))
            except StsdubError:
                raise
            except Exception as exc:
                raise StageLoadError(f"{label} failed to load: {type(exc).__name__}: {exc}") from exc
            self._built.append(stage)
        else:
            if options:
                raise ConfigurationError(f"{kind}_options only apply when {kind} is given by name")
            stage, label = choice, f"{kind} {type(choice).__name__}"
        if not callable(getattr(stage, method, None)):
            raise ConfigurationError(f"{label} has no {method}() method; see stsdub.stages")
        warmup = getattr(stage, "warmup", None)
        if callable(warmup):
            try:
                if inspect.iscoroutinefunction(warmup):
                    await warmup()
                else:
                    await anyio.to_thread.run_sync(warmup)
            except Exception as exc:
                raise StageLoadError(f"{label} failed to warm up: {type(exc).__name__}: {exc}") from exc
        return stage

    async def _close_stages(self) -> None:
        built, self._built = self._built, []
        for stage in reversed(built):
            aclose = getattr(stage, "aclose", None)
            close = getattr(stage, "close", None)
            try:
                if callable(aclose):
                    await aclose()
                elif callable(close):
                    await anyio.to_thread.run_sync(close, abandon_on_cancel=True)
            except Exception:
                log.exception("closing %s failed", type(stage).__name__)
        self.stages = {}

    def _require_open(self) -> tuple[Stages, anyio.abc.TaskGroup]:
        if self._stages is None or self._tg is None:
            raise StsdubError("the Dubber is not open: use `async with dubber:` (or `with dubber:`) first")
        return self._stages, self._tg

    # -- soundtrack -------------------------------------------------------------------------

    @property
    def separator(self) -> object | None:
        """The loaded separator stage, or ``None`` (no ``separator=``, or the Dubber is closed)."""
        return self.stages.get("separator")

    async def separate(self, audio: AudioBuffer, *, stream_id: str = "default", **options: Any) -> Separation:
        """Split ``audio`` into voice and background with the Dubber's separator.

        A blocking separator runs in a worker thread; calls queue up to the stage's
        ``concurrency`` (default 1). Keyword ``options`` reach the stage as
        ``SeparationRequest.options``.

        Raises:
            StsdubError: The Dubber is not open.
            ConfigurationError: It was built without ``separator=``.
            StageError: The separator failed (any other exception is wrapped as
                ``INTERNAL_ERROR``), or returned tracks that are not aligned with ``audio``.
        """
        self._require_open()
        stage = self.separator
        if stage is None:
            raise ConfigurationError("this Dubber has no separator: pass separator='demucs' (or an object)")
        request = SeparationRequest(audio=audio, stream_id=stream_id, options=options)
        result = await self._call_file_stage("separator", stage, request, self._separator_limiter)
        if not isinstance(result, Separation) or not result.aligned_with(audio):
            got = (
                type(result).__name__
                if not isinstance(result, Separation)
                else "tracks of another rate or length"
            )
            raise StageError(
                ErrorCode.INTERNAL_ERROR,
                f"{type(stage).__name__}.separate() returned {got};"
                " expected a Separation aligned with its input",
                "separation",
            )
        return result

    @staticmethod
    async def _call_file_stage(
        kind: str, stage: object, request: object, limiter: anyio.CapacityLimiter
    ) -> object:
        """Call a file-level stage's method, queued on ``limiter``, errors as ``StageError``."""
        name = _STAGE_NAMES[kind]
        fn = getattr(stage, _METHODS[kind])
        try:
            if inspect.iscoroutinefunction(fn):
                async with limiter:
                    return await fn(request)
            return await anyio.to_thread.run_sync(fn, request, limiter=limiter)
        except StageError as exc:
            raise exc.with_stage(name) from exc.__cause__
        except Exception as exc:
            raise StageError(ErrorCode.INTERNAL_ERROR, f"{type(exc).__name__}: {exc}", name) from exc

    # -- speakers ---------------------------------------------------------------------------

    @property
    def diarizer(self) -> object | None:
        """The loaded diarizer stage, or ``None`` (no ``diarizer=``, or the Dubber is closed)."""
        return self.stages.get("diarizer")

    async def diarize(
        self,
        audio: AudioBuffer,
        *,
        num_speakers: int | None = None,
        stream_id: str = "default",
        **options: Any,
    ) -> Diarization:
        """Who speaks when in ``audio``, with the Dubber's diarizer.

        A blocking diarizer runs in a worker thread; calls queue up to the stage's
        ``concurrency`` (default 1). Keyword ``options`` reach the stage as
        ``DiarizationRequest.options``.

        Args:
            audio: The recording.
            num_speakers: How many speakers there are, when known; else estimated.
            stream_id: What the audio belongs to, for the stage's logs.

        Raises:
            StsdubError: The Dubber is not open.
            ConfigurationError: It was built without ``diarizer=``, or ``num_speakers`` is
                not a positive int.
            StageError: The diarizer failed (any other exception is wrapped as
                ``INTERNAL_ERROR``), or returned something other than a Diarization.
        """
        self._require_open()
        stage = self.diarizer
        if stage is None:
            raise ConfigurationError("this Dubber has no diarizer: pass diarizer='campplus' (or an object)")
        request = DiarizationRequest(
            audio=audio, num_speakers=num_speakers, stream_id=stream_id, options=options
        )
        result = await self._call_file_stage("diarizer", stage, request, self._diarizer_limiter)
        if not isinstance(result, Diarization):
            raise StageError(
                ErrorCode.INTERNAL_ERROR,
                f"{type(stage).__name__}.diarize() returned {type(result).__name__}; expected a Diarization",
                "diarization",
            )
        for note in result.notes:
            log.warning("diarizer %s on %s: %s", type(stage).__name__, stream_id, note)
        return result

    # -- streams ----------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def open_stream(self, stream_id: str, **overrides: Any) -> AsyncIterator[Stream]:
        """Open a stream; leaving the block closes it (unread results are discarded).

        Keyword overrides: ``source_language``, ``target_language``, ``voice``, ``voices``,
        ``max_inflight``, ``fragment_timeout``, ``fallback``, ``overflow``,
        ``output_sample_rate``, ``on_backpressure``, and ``background``: ``"duck"`` or
        ``"separate"`` makes every result carry ``mixed``, the fragment's soundtrack with the
        dub over it (see :attr:`DubResult.mixed <stsdub.DubResult.mixed>`); default ``None``;
        ``speakers``: ``None`` (default) labels each fragment's speaker when the Dubber
        has a diarizer with ``embed``, ``False`` never does, ``True`` requires it; and
        ``captions``: ``"final"`` makes the stream yield a :class:`~stsdub.Caption` for each
        fragment's transcript and translation before its result, ``"interim"`` also captions
        the utterance in progress from :meth:`Stream.send_audio <stsdub.Stream.send_audio>`
        (at most one pass every ``caption_interval`` seconds, default 0.5); see
        docs/captions.md; ``sentence_wait``: seconds a fragment that ends mid-sentence may
        wait for the fragments that finish its sentence, which is then translated once and
        split back over them (default 0: each fragment is translated as soon as it is heard).
        """
        stream = await self._start_stream(stream_id, overrides)
        try:
            yield stream
        finally:
            with anyio.CancelScope(shield=True):
                await stream.aclose()
                self._streams.pop(stream_id, None)

    async def _start_stream(
        self, stream_id: str, overrides: Mapping[str, Any], *, named: bool = True
    ) -> Stream:
        """Start a stream's workers in the Dubber's task group.

        ``named`` streams (open_stream) own their id while open; the streams of a ``dub()``
        call are private to it, so two calls may use the same ids.
        """
        stages, tg = self._require_open()
        config = self._config(stream_id, overrides)
        if named and stream_id in self._streams:
            raise ConfigurationError(f"stream {stream_id!r} is already open")
        stream = Stream(config, stages)
        if named:
            self._streams[stream_id] = stream
        await tg.start(stream.run)
        return stream

    def dub(self, fragments: Iterable[Fragment] | AsyncIterable[Fragment], **overrides: Any) -> DubIterator:
        """Dub fragments; yields one DubResult per fragment, in input order.

        Fragments with different ``stream_id`` values go to separate streams (each with its
        own order, context and ``max_inflight``); ``None`` means the stream ``"default"``.
        Keyword overrides are those of :meth:`open_stream` (``background="duck"`` included),
        for every stream of the call. Use ``async with dubber.dub(...) as results:`` to stop
        early deterministically.
        """
        self._require_open()
        return DubIterator(self, fragments, overrides)

    # -- synchronous use (scripts, notebooks) -----------------------------------------------

    def __enter__(self) -> Dubber:
        stack = contextlib.ExitStack()
        portal = stack.enter_context(anyio.from_thread.start_blocking_portal())
        try:
            stack.enter_context(portal.wrap_async_context_manager(self))
        except BaseException:
            stack.close()
            raise
        self._portal, self._sync_cm = portal, stack
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        stack, self._sync_cm, self._portal = self._sync_cm, None, None
        if stack is not None:
            stack.close()

    def dub_sync(
        self, fragments: Iterable[Fragment] | AsyncIterable[Fragment], **overrides: Any
    ) -> list[DubResult]:
        """Dub fragments and return the results as a list; no ``await`` needed.

        Works in scripts and where an event loop already runs (Jupyter): the work runs on an
        event loop in a background thread. Inside ``with dubber:`` the loaded models are
        reused; otherwise they are loaded for this call and closed after it.
        """

        async def collect() -> list[DubResult]:
            async with self.dub(fragments, **overrides) as results:
                return [result async for result in results]

        if self._portal is not None:
            return self._portal.call(collect)
        if self._stages is not None:
            raise StsdubError(
                "dub_sync() on a Dubber opened with `async with` would block its event loop;"
                " use `async for result in dubber.dub(...)` there"
            )
        with self:
            assert self._portal is not None
            return self._portal.call(collect)

    def dub_file(
        self,
        input: str | os.PathLike[str] | None = None,
        output: str | os.PathLike[str] | None = None,
        **options: Any,
    ) -> DubbedFile:
        """Dub an audio or video file; blocking and notebook-safe.

        See :func:`stsdub._recordings._files.dub_file`.

        Options: ``segmentation`` (``"speech"`` or ``"fixed"`` or a :class:`~stsdub.Segmentation`),
        ``subtitles``, ``original`` (``"mix"`` / ``"track"``), ``original_level``,
        ``sample_rate``, ``audio_codec``, ``on_progress``, and any stream override.

        Review and resume (see ``docs/projects.md``): ``project=True`` keeps a project beside
        the output; ``stop_after="transcribe" | "translate"`` saves it and stops for review;
        ``resume=FOLDER_OR_DUBPROJECT`` continues one (``input`` and ``output`` default to the
        project's); ``transcript_srt=`` / ``translation_srt=`` bring your own text.
        """
        from ._recordings import _files

        return _files.dub_file(self, input, output, **options)

    async def adub_file(
        self,
        input: str | os.PathLike[str] | None = None,
        output: str | os.PathLike[str] | None = None,
        **options: Any,
    ) -> DubbedFile:
        """The async form of :meth:`dub_file`, for use under ``async with dubber:``."""
        from ._recordings import _files

        return await _files.adub_file(self, input, output, **options)

    def __repr__(self) -> str:
        names = {
            k: (v if isinstance(v, str) or v is None else type(v).__name__) for k, v in self._choices.items()
        }
        state = "open" if self._stages is not None else "closed"
        return f"<Dubber {names['asr']} → {names['translator']} → {names['synthesizer']}, {state}>"


@attrs.define(eq=False)
class DubIterator:
    """Results of :meth:`Dubber.dub`, in input order; an async iterator and context manager."""

    _dubber: Dubber
    _fragments: Iterable[Fragment] | AsyncIterable[Fragment]
    _overrides: Mapping[str, Any]
    _streams: dict[str, Stream] = attrs.field(factory=dict)
    _tickets: anyio.abc.ObjectReceiveStream[Ticket | BaseException] | None = None
    _scope: anyio.CancelScope | None = None
    _done: anyio.Event = attrs.field(factory=anyio.Event)
    _finished: bool = False

    def __aiter__(self) -> DubIterator:
        return self

    async def __aenter__(self) -> DubIterator:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def _start(self) -> None:
        _, tg = self._dubber._require_open()
        max_inflight = self._overrides.get("max_inflight", self._dubber._defaults["max_inflight"])
        # Fragments run ahead of the reader by at most max_inflight results.
        send, self._tickets = anyio.create_memory_object_stream[Ticket | BaseException](max_inflight)
        tg.start_soon(self._feed, send)

    async def _feed(self, tickets: anyio.abc.ObjectSendStream[Ticket | BaseException]) -> None:
        try:
            with anyio.CancelScope() as self._scope:
                async with tickets:
                    try:
                        async for fragment in _aiter(self._fragments):
                            stream_id = fragment.stream_id if isinstance(fragment, Fragment) else None
                            stream = await self._stream(stream_id or "default")
                            await tickets.send(await stream.submit(fragment))
                    except Exception as exc:  # bad input: raised to the reader in its place
                        await tickets.send(exc)
                    # Let the accepted fragments finish before the streams are closed below.
                    for stream in self._streams.values():
                        await stream.end()
                    for stream in self._streams.values():
                        await stream.wait_stopped()
        finally:
            with anyio.CancelScope(shield=True):
                for stream in self._streams.values():
                    await stream.aclose()
            self._done.set()

    async def _stream(self, stream_id: str) -> Stream:
        stream = self._streams.get(stream_id)
        if stream is None:
            stream = await self._dubber._start_stream(stream_id, self._overrides, named=False)
            self._streams[stream_id] = stream
        return stream

    async def __anext__(self) -> DubResult:
        if self._finished:
            raise StopAsyncIteration
        if self._tickets is None:
            await self._start()
        assert self._tickets is not None
        try:
            item = await self._tickets.receive()
        except anyio.EndOfStream:
            await self.aclose()
            raise StopAsyncIteration from None
        if isinstance(item, BaseException):
            await self.aclose()
            raise item
        await item.done.wait()
        if item.result is None:
            await self.aclose()
            raise StopAsyncIteration
        return item.result

    async def aclose(self) -> None:
        """Stop: fragments not yet answered are abandoned."""
        if self._finished:
            return
        self._finished = True
        if self._tickets is None:
            return
        if self._scope is not None:
            self._scope.cancel()
        with anyio.CancelScope(shield=True):
            await self._done.wait()
            await self._tickets.aclose()


async def _aiter(fragments: Iterable[Fragment] | AsyncIterable[Fragment]) -> AsyncIterator[Fragment]:
    if isinstance(fragments, AsyncIterable):
        async for fragment in fragments:
            yield fragment
    else:
        for fragment in fragments:
            yield fragment
