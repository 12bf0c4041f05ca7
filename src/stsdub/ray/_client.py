"""The host's side: a stage whose method forwards each request to a remote replica.

The client is built around a small :class:`Transport` (``call(payload, timeout) ->
payload``): :class:`~stsdub.ray.ServeTransport` reaches a Ray Serve application,
:class:`LocalTransport` calls a stage in this process through the same wire format.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections.abc import Mapping
from typing import Any, ClassVar, Protocol, runtime_checkable

import anyio
import attrs
import numpy as np

from .._core._diarization import Diarization, DiarizationRequest
from .._core._values import (
    ASRRequest,
    AudioBuffer,
    SynthesisRequest,
    Transcript,
    Translation,
    TranslationRequest,
)
from .._speakers._tracking import DEFAULT_MATCH_THRESHOLD
from ..errors import ConfigurationError, ErrorCode, StageError
from ._replica import CAPABILITIES, EMBED, ReplicaCore
from ._wire import WIRE_VERSION, decode_value, encode_value, error_from_answer

__all__ = [
    "DEFAULT_CONCURRENCY",
    "DEFAULT_TIMEOUT",
    "LocalTransport",
    "RemoteASR",
    "RemoteDiarizer",
    "RemoteStage",
    "RemoteStats",
    "RemoteSynthesizer",
    "RemoteTranslator",
    "Transport",
    "remote_stage",
]

log = logging.getLogger("stsdub.ray")

#: Seconds one remote call may take before it counts as lost (option ``timeout``). Set it to
#: about twice the stage's p99 under load, and below ``fragment_timeout`` so that a lost call
#: leaves time for a retry.
DEFAULT_TIMEOUT = 5.0
#: Calls one host keeps in flight to one application at once (option ``concurrency``); the
#: replicas' own queues (``max_ongoing_requests``, ``max_queued_requests``) bound the rest.
DEFAULT_CONCURRENCY = 16


@runtime_checkable
class Transport(Protocol):
    """How a remote stage reaches its replicas.

    ``call`` sends one request envelope and returns the answer envelope (see
    :mod:`stsdub.ray._wire`). It may raise :class:`~stsdub.StageError` with a retryable code
    for a failure of the hop (replica gone, queue full); it is cancelled when the call's
    timeout passes, and must then make sure that a later answer goes nowhere.
    """

    async def call(self, payload: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Send ``payload``; return the answer. ``timeout`` is for the transport's own use."""
        ...


class LocalTransport:
    """A replica in this process: the wire format and the replica's logic, without Ray.

    For tests and for trying a deployment's configuration on one machine.

    Args:
        kind: ``"asr"``, ``"translator"`` or ``"synthesizer"``.
        stage: The stage instance the "replica" serves.
    """

    def __init__(self, kind: str, stage: object) -> None:
        self.core = ReplicaCore(kind, stage)

    async def call(self, payload: dict[str, Any], timeout: float) -> dict[str, Any]:
        if self.core.batches:
            return (await self.core.handle_batch([payload]))[0]
        return await self.core.handle(payload)


@attrs.define
class RemoteStats:
    """Counters of one remote stage client (for metrics, logs and tests).

    Attributes:
        calls: Calls made (each retry is a call).
        ok: Calls answered with a result.
        failures: Failed calls by error code (the stage's own codes included).
        dropped: Answers that belonged to another call (late or duplicated) and were dropped.
        last_ok: ``time.monotonic()`` when the last result arrived, or ``None``.
    """

    calls: int = 0
    ok: int = 0
    failures: dict[str, int] = attrs.field(factory=dict)
    dropped: int = 0
    last_ok: float | None = None


def _positive(name: str, value: object, kind: type) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else int):
        raise ConfigurationError(f"{name} must be a positive {kind.__name__}, got {value!r}")
    if not 0 < value < math.inf:
        raise ConfigurationError(f"{name} must be a positive {kind.__name__}, got {value!r}")
    return kind(value)


class RemoteStage:
    """A stage served elsewhere: each call is one request to a replica, with its own timeout.

    Use the per-kind classes (:class:`RemoteASR`, :class:`RemoteTranslator`,
    :class:`RemoteSynthesizer`), or a ``ray:`` name: ``Dubber(asr="ray:stsdub-asr")``
    builds a :class:`RemoteASR` for the Serve application ``stsdub-asr``, with
    ``asr_options`` as keyword arguments here.

    What becomes of a failed call (the pipeline retries retryable codes within the
    fragment's budget): no answer within ``timeout`` → ``TIMEOUT``; the replica died or
    is unavailable → ``TEMPORARY_UNAVAILABLE``; the application's queue is full →
    ``RATE_LIMIT_EXCEEDED``; an answer that belongs to another call → ``NETWORK_ERROR``
    (dropped); the stage's own ``StageError`` keeps its code. Each call is awaited once: the
    answer of a call that timed out goes nowhere, so a retry never yields two results.

    Args:
        app_name: The Ray Serve application (``serve.run(app, name=...)``).
        transport: How to reach the replicas instead (then ``app_name`` and ``address`` are
            not used); e.g. :class:`LocalTransport`.
        address: The Ray cluster, for ``ray.init(address=...)`` when Ray is not initialised
            in this process yet (default ``"auto"``: the cluster this machine is a node of).
        timeout: Seconds each call may take; see :data:`DEFAULT_TIMEOUT`.
        concurrency: Calls in flight at once from this host; see :data:`DEFAULT_CONCURRENCY`.
        device: Ignored (the replicas choose their device); accepted because the Dubber
            passes it to every stage factory.

    Attributes:
        stats: A :class:`RemoteStats`.
    """

    kind: ClassVar[str] = ""

    def __init__(
        self,
        app_name: str | None = None,
        *,
        transport: Transport | None = None,
        address: str = "auto",
        timeout: float = DEFAULT_TIMEOUT,
        concurrency: int = DEFAULT_CONCURRENCY,
        device: str | None = None,
    ) -> None:
        if self.kind not in ("asr", "translator", "synthesizer", "diarizer"):
            raise TypeError("use RemoteASR, RemoteTranslator, RemoteSynthesizer or RemoteDiarizer")
        self.timeout: float = _positive("timeout", timeout, float)
        self.concurrency: int = _positive("concurrency", concurrency, int)
        self.stats = RemoteStats()
        if transport is None:
            if not isinstance(app_name, str) or not app_name:
                raise ConfigurationError("a remote stage needs the name of its Ray Serve application")
            from ._serve import ServeTransport

            transport = ServeTransport(app_name, address=address)
        elif not callable(getattr(transport, "call", None)):
            raise ConfigurationError(f"transport must have an async call() method, got {transport!r}")
        self.app_name = app_name
        self.transport: Transport = transport

    def __repr__(self) -> str:
        where = self.app_name or type(self.transport).__name__
        return f"<{type(self).__name__} {where!r}, timeout {self.timeout:g} s>"

    def _fail(self, code: ErrorCode, message: str) -> StageError:
        self.stats.failures[code.value] = self.stats.failures.get(code.value, 0) + 1
        return StageError(code, message)

    async def _call(self, request: Any, method: str | None = None) -> Any:
        self.stats.calls += 1
        call_id = uuid.uuid4().hex
        try:
            envelope = {
                "v": WIRE_VERSION,
                "kind": self.kind,
                "call_id": call_id,
                "request": encode_value(request),
            }
            if method is not None:
                envelope["method"] = method
        except TypeError as exc:  # e.g. request options that are not plain data
            raise self._fail(ErrorCode.INTERNAL_ERROR, f"request cannot be sent: {exc}") from exc
        where = f"remote {self.kind} {self.app_name or type(self.transport).__name__}"
        try:
            # Our own deadline, not Ray's failure detection: a lost request or a stuck replica
            # costs one timeout, then the pipeline retries (on another replica, as routed).
            with anyio.fail_after(self.timeout):
                answer = await self.transport.call(envelope, self.timeout)
        except TimeoutError as exc:
            raise self._fail(ErrorCode.TIMEOUT, f"{where} gave no answer within {self.timeout:g} s") from exc
        except StageError as err:
            raise self._fail(err.code, err.message) from err
        except OSError as exc:
            raise self._fail(ErrorCode.NETWORK_ERROR, f"{where}: {type(exc).__name__}: {exc}") from exc
        if not isinstance(answer, Mapping):
            raise self._fail(
                ErrorCode.INTERNAL_ERROR, f"{where} answered {type(answer).__name__}, not a dict"
            )
        if answer.get("v") != WIRE_VERSION:
            raise self._fail(
                ErrorCode.INTERNAL_ERROR,
                f"{where} speaks wire version {answer.get('v')!r}, this host {WIRE_VERSION}:"
                " run the same stsdub version on hosts and replicas",
            )
        if answer.get("call_id") != call_id:
            # A late or duplicated answer to an earlier call: never taken for this one.
            self.stats.dropped += 1
            raise self._fail(ErrorCode.NETWORK_ERROR, f"{where}: an answer to another call arrived; dropped")
        error = answer.get("error")
        if error is not None:
            failure = error_from_answer(error if isinstance(error, Mapping) else {"message": str(error)})
            raise self._fail(failure.code, failure.message)
        try:
            result = decode_value(answer.get("result"))
        except Exception as exc:
            raise self._fail(ErrorCode.INTERNAL_ERROR, f"{where}: undecodable answer: {exc}") from exc
        self.stats.ok += 1
        self.stats.last_ok = time.monotonic()
        return result

    async def warmup(self) -> None:
        """Ask a replica which capabilities its stage declares, and declare them here.

        A remote synthesizer then ``supports_speed`` when the stage behind it does, and a
        remote translator ``supports_length_budget`` and ``supports_context``, so the pipeline
        asks for another speaking rate or a shorter text, and sends a file's preceding
        sentences, as it would in-process (a request's ``context`` travels as it is). A
        replica that cannot say (an older stsdub, or no answer within ``timeout``) leaves
        them off, with a warning:
        the dub goes on, stretching instead.
        """
        flags = CAPABILITIES[self.kind]
        if not flags and self.kind != "diarizer":
            return
        call_id = uuid.uuid4().hex
        envelope = {"v": WIRE_VERSION, "kind": self.kind, "call_id": call_id, "describe": True}
        where = f"remote {self.kind} {self.app_name or type(self.transport).__name__}"
        try:
            with anyio.fail_after(self.timeout):
                answer = await self.transport.call(envelope, self.timeout)
        except Exception as exc:
            log.warning("%s did not say what its stage supports (%s: %s)", where, type(exc).__name__, exc)
            return
        result = answer.get("result") if isinstance(answer, Mapping) else None
        if (
            not isinstance(answer, Mapping)
            or answer.get("call_id") != call_id
            or not isinstance(result, Mapping)
        ):
            error = answer.get("error") if isinstance(answer, Mapping) else answer
            log.warning("%s did not say what its stage supports: %r", where, error)
            return
        for flag in flags:
            if result.get(flag) is True:
                setattr(self, flag, True)
        self._described(result)

    def _described(self, details: Mapping[str, Any]) -> None:
        """What a kind takes from a describe answer besides the capability flags."""

    async def aclose(self) -> None:
        """Close the transport when it has ``aclose()``; the Ray connection stays up."""
        aclose = getattr(self.transport, "aclose", None)
        if callable(aclose):
            await aclose()


class RemoteASR(RemoteStage):
    """An ASR served by a Ray Serve application (see :class:`RemoteStage`)."""

    kind = "asr"

    async def transcribe(self, request: ASRRequest) -> Transcript:
        """Forward ``request`` to a replica."""
        return await self._call(request)  # type: ignore[no-any-return]


class RemoteTranslator(RemoteStage):
    """A translator served by a Ray Serve application (see :class:`RemoteStage`)."""

    kind = "translator"

    async def translate(self, request: TranslationRequest) -> Translation:
        """Forward ``request`` to a replica."""
        return await self._call(request)  # type: ignore[no-any-return]


class RemoteSynthesizer(RemoteStage):
    """A synthesizer served by a Ray Serve application (see :class:`RemoteStage`).

    The request travels as is: its ``voice`` is a name the replica resolves (or a path on
    storage the replicas share), never a file of the host.
    """

    kind = "synthesizer"

    async def synthesize(self, request: SynthesisRequest) -> AudioBuffer:
        """Forward ``request`` to a replica."""
        return await self._call(request)  # type: ignore[no-any-return]


class RemoteDiarizer(RemoteStage):
    """A diarizer served by a Ray Serve application (see :class:`RemoteStage`).

    ``diarize`` sends the whole recording; ``embed`` (live streams) sends one fragment and
    gets its speaker embedding back. After :meth:`warmup`, ``match_threshold`` is the remote
    stage's own, and ``embed`` fails at once when the stage behind has none (the stream then
    leaves the fragment without a speaker, with a warning).
    """

    kind = "diarizer"

    def __init__(self, app_name: str | None = None, **options: Any) -> None:
        super().__init__(app_name, **options)
        #: Cosine similarity for "the same speaker" (the remote stage's after :meth:`warmup`).
        self.match_threshold = DEFAULT_MATCH_THRESHOLD
        self._embeds = True

    async def diarize(self, request: DiarizationRequest) -> Diarization:
        """Forward ``request`` to a replica."""
        return await self._call(request)  # type: ignore[no-any-return]

    async def embed(self, audio: AudioBuffer) -> np.ndarray:
        """The speaker embedding of ``audio``, from a replica (empty without speech)."""
        if not self._embeds:
            raise StageError(
                ErrorCode.INTERNAL_ERROR, f"the remote diarizer {self.app_name!r} has no embed()"
            )
        return np.asarray(await self._call(audio, method=EMBED), dtype=np.float64)

    def _described(self, details: Mapping[str, Any]) -> None:
        threshold = details.get("match_threshold")
        if isinstance(threshold, float):
            self.match_threshold = threshold
        self._embeds = details.get("embed") is not False


_CLASSES: dict[str, type[RemoteStage]] = {
    "asr": RemoteASR,
    "translator": RemoteTranslator,
    "synthesizer": RemoteSynthesizer,
    "diarizer": RemoteDiarizer,
}
_OPTIONS = frozenset({"transport", "address", "timeout", "concurrency"})


def remote_stage(kind: str, app_name: str, *, device: str | None = None, **options: Any) -> RemoteStage:
    """The remote stage of ``kind`` for the Serve application ``app_name``.

    This is the factory behind ``ray:`` names: ``Dubber(asr="ray:stsdub-asr",
    asr_options={"timeout": 3.0})`` calls ``remote_stage("asr", "stsdub-asr", device=...,
    timeout=3.0)``.

    Raises:
        ConfigurationError: Unknown kind or option.
        PluginError: Ray Serve is not installed (``pip install 'stsdub[ray]'``).
        StageLoadError: The application cannot be found or the cluster cannot be reached.
    """
    cls = _CLASSES.get(kind)
    if cls is None:
        raise ConfigurationError(f"kind must be one of {sorted(_CLASSES)}, got {kind!r}")
    unknown = set(options) - _OPTIONS
    if unknown:
        raise ConfigurationError(
            f"unknown option(s) {sorted(unknown)} for the remote {kind} {app_name!r};"
            f" a ray: stage takes {sorted(_OPTIONS)} (the stage's own options go to stage_app)"
        )
    return cls(app_name, device=device, **options)
