"""The Socket.IO dubbing service: connections, streams, and the HTTP endpoints.

One :class:`DubbingService` owns a :class:`~stsdub.Dubber` (models load once, in the
background, so ``/health`` answers while they load) and one task group per concern:

- per connection, a writer task sends every event to the client in the order the service
  decided them (acks, results and backpressure changes never overtake each other);
- per stream, a session task opens a library stream and runs two loops: the *feeder* hands
  queued fragments to ``stream.send`` one at a time, in order (waiting at ``max_inflight``),
  and the *pump* turns each result into ``fragment:processed``.

``fragment:data`` handlers never wait for the pipeline: they validate, queue and ack at once.
The backpressure level counts what a stream has queued and not yet been answered, as the
reference service does; past the critical threshold further fragments are rejected.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import anyio
import anyio.abc
import socketio
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .. import __version__
from .._core._languages import same_language
from .._core._values import Severity
from .._dubber import Dubber
from .._pipeline._backpressure import BackpressureLevels
from .._pipeline._duration import DurationPolicy
from .._plugins._defaults import check_translator, translator_setup_hint
from ..errors import StsdubError
from ._artifacts import ArtifactStore, ArtifactWriter
from ._metrics import ServiceMetrics
from ._protocol import (
    FragmentData,
    ProtocolError,
    ProtocolErrorCode,
    StreamInit,
    error_payload,
)
from ._session import ACTIONS, Connection, Pressure, Session
from ._settings import ServerSettings

__all__ = ["DubbingService", "ServiceApp", "create_app"]

log = logging.getLogger("stsdub.server")

_NO_PAYLOAD = object()


def _single(args: tuple[object, ...]) -> object:
    """The one argument an event carries; anything else is answered as a bad payload."""
    return args[0] if len(args) == 1 else _NO_PAYLOAD


def _refusal(code: ProtocolErrorCode, message: str) -> socketio.exceptions.ConnectionRefusedError:
    """A connection refusal whose ``connect_error`` carries the code.

    python-socketio turns a single argument into ``{"message": str(arg)}``, which would send
    a dict's repr; the error's fields are set here instead. ``code`` and ``message`` sit at
    the top (what the Python client hands its handler) and again under ``data`` (what the
    JavaScript client exposes, as ``err.data``).
    """
    refusal = socketio.exceptions.ConnectionRefusedError(message)
    body = {"code": code.value, "message": message}
    refusal.error_args = {**body, "data": body}
    return refusal


class DubbingService:
    """The Socket.IO event handlers and the state behind them.

    Args:
        settings: Limits, security and defaults.
        dubber: The pipeline; opened (models loaded) by :meth:`run`.
        on_fatal: Called when the models fail to load (``stsdub serve`` exits then). Without
            it the service stays up: ``/ready`` reports the failure and connections are
            refused with ``NOT_READY``.
    """

    def __init__(
        self,
        settings: ServerSettings,
        dubber: Dubber,
        *,
        on_fatal: Callable[[BaseException], None] | None = None,
    ) -> None:
        self.settings = settings
        self.dubber = dubber
        self.on_fatal = on_fatal
        self.metrics = ServiceMetrics()
        self.levels = BackpressureLevels(
            low=settings.backpressure_low,
            medium=settings.backpressure_medium,
            high=settings.backpressure_high,
        )
        self.levels.resolve(settings.max_inflight)  # refuse impossible thresholds now
        self.artifacts: ArtifactWriter | None = None
        self.ready = False
        self.load_error: str | None = None
        self.connections: dict[str, Connection] = {}
        self.sessions: dict[str, Session] = {}
        self._tg: anyio.abc.TaskGroup | None = None
        self._streams_tg: anyio.abc.TaskGroup | None = None
        origins: str | list[str] | None
        if not settings.cors_origins:
            origins = None  # Engine.IO's default: same origin only
        elif "*" in settings.cors_origins:
            origins = "*"
        else:
            origins = list(settings.cors_origins)
        self.sio = socketio.AsyncServer(
            async_mode="asgi",
            cors_allowed_origins=origins,
            # Room above the payload limit so that an oversize fragment gets an error answer
            # instead of a dropped connection; far beyond it, the transport closes it.
            max_http_buffer_size=2 * settings.max_payload_bytes + 65536,
            logger=False,
            engineio_logger=False,
        )
        self.sio.on("connect", self._on_connect)
        self.sio.on("disconnect", self._on_disconnect)
        self.sio.on("stream:init", self._on_stream_init)
        self.sio.on("stream:pause", self._on_stream_pause)
        self.sio.on("stream:resume", self._on_stream_resume)
        self.sio.on("stream:end", self._on_stream_end)
        self.sio.on("fragment:data", self._on_fragment_data)
        self.sio.on("audio:partial", self._on_audio_partial)

    # -- lifecycle ---------------------------------------------------------------------------

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled: load the models, then host the streams."""
        async with anyio.create_task_group() as tg:
            self._tg = tg
            if self.settings.artifacts_enabled:
                store = await anyio.to_thread.run_sync(
                    lambda: ArtifactStore(
                        self.settings.artifacts_path,
                        retention_hours=self.settings.artifact_retention_hours,
                        max_count=self.settings.artifact_max_count,
                    )
                )
                self.artifacts = ArtifactWriter(store)
                await tg.start(self.artifacts.run)
            task_status.started()
            try:
                log.info("loading models", extra={"event": "startup"})
                async with self.dubber:
                    if self.dubber.device and self.dubber.device.startswith("cuda"):
                        self.metrics.add_gpu(self.dubber.device)
                    if self.dubber.stages.get("translator") is None:
                        log.warning(
                            "no translator: only streams whose source and target languages are the"
                            " same are served; the others are refused with TRANSLATOR_UNAVAILABLE",
                            extra={"event": "startup"},
                        )
                    async with anyio.create_task_group() as streams_tg:
                        self._streams_tg = streams_tg
                        self.ready = True
                        self.metrics.models_ready.set(1)
                        log.info("models loaded; ready", extra={"event": "ready"})
                        await anyio.sleep_forever()
            except Exception as exc:
                self.load_error = f"{type(exc).__name__}: {exc}"
                log.exception("the models failed to load", extra={"event": "startup"})
                if self.on_fatal is not None:
                    self.on_fatal(exc)
            finally:
                self.ready = False
                self._streams_tg = None
                self.metrics.models_ready.set(0)
                if self.artifacts is not None:
                    self.artifacts.close()
            await anyio.sleep_forever()  # keep answering /health until shut down

    def _drop(self, session: Session) -> None:
        if self.sessions.get(session.stream_id) is session:
            del self.sessions[session.stream_id]
            self.metrics.streams_active.set(len(self.sessions))
        session.connection.streams.discard(session.stream_id)

    def _backpressure(self, session: Session, severity: Severity) -> None:
        payload = {
            "stream_id": session.stream_id,
            "severity": severity.value,
            "action": ACTIONS[severity].value,
            "current_inflight": session.outstanding,
            "max_inflight": session.pressure.max_inflight,
        }
        session.connection.send("backpressure", payload)
        self.metrics.backpressure_events.labels(severity=severity.value).inc()
        log.info("backpressure", extra={"event": "backpressure", **payload})

    # -- Socket.IO handlers ------------------------------------------------------------------

    async def _on_connect(self, sid: str, environ: Mapping[str, Any], auth: object = None) -> None:
        token = self.settings.auth_token
        if token is not None:
            offered = None
            if isinstance(auth, Mapping) and isinstance(auth.get("token"), str):
                offered = auth["token"]
            else:
                header = environ.get("HTTP_AUTHORIZATION", "")
                if isinstance(header, str) and header.lower().startswith("bearer "):
                    offered = header[7:].strip()
            if offered is None or not hmac.compare_digest(offered.encode(), token.encode()):
                self.metrics.rejected_connections.inc()
                log.warning(
                    "connection refused: missing or wrong token", extra={"event": "connect", "sid": sid}
                )
                raise _refusal(ProtocolErrorCode.UNAUTHORIZED, "missing or wrong token")
        if not self.ready or self._tg is None:
            # A connection is accepted only once the models are loaded, so that a load failure
            # never drops clients that were already let in.
            self.metrics.rejected_connections.inc()
            log.warning(
                f"connection refused: {self._not_ready_message()}", extra={"event": "connect", "sid": sid}
            )
            raise _refusal(ProtocolErrorCode.NOT_READY, self._not_ready_message())
        connection = Connection(self.sio, sid)
        self.connections[sid] = connection
        self._tg.start_soon(connection.run_writer)
        self.metrics.connections.set(len(self.connections))
        log.info("client connected", extra={"event": "connect", "sid": sid})

    def _not_ready_message(self) -> str:
        if self.load_error is not None:
            return f"the models failed to load ({self.load_error}); see GET /ready"
        return "the models are still loading; retry when GET /ready answers 200"

    async def _on_disconnect(self, sid: str, reason: object = None) -> None:
        connection = self.connections.pop(sid, None)
        if connection is None:
            return
        self.metrics.connections.set(len(self.connections))
        for stream_id in list(connection.streams):
            session = self.sessions.get(stream_id)
            if session is not None:
                session.cancel()
        connection.close()
        log.info("client disconnected", extra={"event": "disconnect", "sid": sid})

    def _refuse(
        self, sid: str, event: str, error: ProtocolError, *, stream_id: str | None = None, **ids: Any
    ) -> dict[str, Any]:
        payload = error_payload(error, stream_id=stream_id, event=event, **ids)
        payload["stage"] = "session"
        self.metrics.observe_refusal(error.code.value, stage="session")
        connection = self.connections.get(sid)
        if connection is not None:
            connection.send("error", payload)
        log.warning(
            f"{event} refused: {error.message}",
            extra={"event": event, "stream_id": stream_id, "code": error.code.value, "sid": sid},
        )
        return payload

    async def _on_stream_init(self, sid: str, *args: object) -> dict[str, Any]:
        payload = _single(args)
        connection = self.connections.get(sid)
        stream_id = FragmentData.peek(payload)[1]
        try:
            if connection is None:
                raise ProtocolError(ProtocolErrorCode.NOT_READY, "not connected")
            init = StreamInit.parse(payload)
            stream_id = init.stream_id
            if not self.ready or self._streams_tg is None:
                raise ProtocolError(ProtocolErrorCode.NOT_READY, self._not_ready_message())
            if init.stream_id in self.sessions:
                raise ProtocolError(
                    ProtocolErrorCode.STREAM_EXISTS, f"stream {init.stream_id!r} is already open"
                )
            if len(self.sessions) >= self.settings.max_concurrent_streams:
                raise ProtocolError(
                    ProtocolErrorCode.STREAM_LIMIT_REACHED,
                    f"{len(self.sessions)} streams are open;"
                    f" the limit is {self.settings.max_concurrent_streams}",
                )
            target = init.target_language or self.settings.target_language
            if target is None:
                raise ProtocolError(
                    ProtocolErrorCode.INVALID_CONFIG, "stream:init.config: missing target_language"
                )
            source = init.source_language or self.settings.source_language
            if self.dubber.stages.get("translator") is None and not same_language(source, target):
                raise ProtocolError(
                    ProtocolErrorCode.TRANSLATOR_UNAVAILABLE,
                    f"stream {init.stream_id!r} dubs {source or 'detected speech'} into {target}, which"
                    " needs a translator, and this service runs without one; only streams with"
                    " source_language equal to target_language (re-voicing) are served."
                    f" {translator_setup_hint(service=True)}",
                )
            max_inflight = min(init.max_inflight or self.settings.max_inflight, self.settings.max_inflight)
            overrides: dict[str, Any] = {
                "target_language": target,
                "max_inflight": max_inflight,
                "fragment_timeout": self.settings.fragment_timeout
                if init.timeout_ms is None
                else init.timeout_ms / 1000,
            }
            if source is not None:
                # Explicit, so that the Dubber decides on the source the check above used.
                overrides["source_language"] = source
            if init.voice is not None:
                overrides["voice"] = init.voice
            if init.fallback is not None:
                overrides["fallback"] = init.fallback
            if init.background is not None:
                overrides["background"] = init.background
            if init.speakers is not None:
                overrides["speakers"] = init.speakers
            if init.captions is not None:
                overrides["captions"] = init.captions
            if init.caption_interval_ms is not None:
                overrides["caption_interval"] = init.caption_interval_ms / 1000
            if init.sentence_wait_ms is not None:
                overrides["sentence_wait"] = init.sentence_wait_ms / 1000
            pressure = Pressure(max_inflight, self.levels, self.settings.critical_threshold(max_inflight))
            session = Session(self, connection, init, overrides, pressure)
            # Reserved before the first await, so that a second init of the id is refused.
            self.sessions[init.stream_id] = session
            connection.streams.add(init.stream_id)
            try:
                await self._streams_tg.start(session.run, self.dubber)
            except StsdubError as exc:
                self._drop(session)
                raise ProtocolError(ProtocolErrorCode.INVALID_CONFIG, str(exc)) from None
        except ProtocolError as err:
            return self._refuse(sid, "stream:init", err, stream_id=stream_id)
        self.metrics.streams_active.set(len(self.sessions))
        ready = {
            "stream_id": init.stream_id,
            "session_id": session.session_id,
            "max_inflight": max_inflight,
            "audio_format": init.audio.to_dict(),
            "output_sample_rate_hz": self.settings.output_sample_rate or init.audio.sample_rate,
            "target_language": target,
            "backpressure": {
                "low": pressure.low,
                "medium": pressure.medium,
                "high": pressure.high,
                "critical": pressure.critical,
            },
            "max_payload_bytes": self.settings.max_payload_bytes,
            "capabilities": {"batch_processing": False, "async_delivery": True, "in_order_delivery": True},
        }
        connection.send("stream:ready", ready)
        log.info(
            "stream ready",
            extra={
                "event": "stream:init",
                "stream_id": init.stream_id,
                "sid": sid,
                "worker_id": init.worker_id,
            },
        )
        return ready

    def _own_session(self, sid: str, payload: object, event: str) -> Session:
        if not isinstance(payload, Mapping):
            raise ProtocolError(ProtocolErrorCode.INVALID_PAYLOAD, f"{event} must be a JSON object")
        stream_id = payload.get("stream_id")
        session = self.sessions.get(stream_id) if isinstance(stream_id, str) else None
        if session is None or session.connection.sid != sid:
            raise ProtocolError(
                ProtocolErrorCode.STREAM_NOT_FOUND,
                f"{event}: no open stream {stream_id!r} on this connection",
            )
        return session

    async def _on_stream_pause(self, sid: str, *args: object) -> dict[str, Any]:
        payload = _single(args)
        return self._set_state(sid, payload, "stream:pause", "paused")

    async def _on_stream_resume(self, sid: str, *args: object) -> dict[str, Any]:
        payload = _single(args)
        return self._set_state(sid, payload, "stream:resume", "active")

    def _set_state(self, sid: str, payload: object, event: str, state: str) -> dict[str, Any]:
        try:
            session = self._own_session(sid, payload, event)
            if session.state not in ("active", "paused"):
                raise ProtocolError(
                    ProtocolErrorCode.STREAM_ENDING,
                    f"{event}: stream {session.stream_id!r} is {session.state}",
                )
        except ProtocolError as err:
            return self._refuse(sid, event, err, stream_id=FragmentData.peek(payload)[1])
        session.state = state
        answer = {"stream_id": session.stream_id, "state": state, "in_flight": session.outstanding}
        session.connection.send("stream:paused" if state == "paused" else "stream:resumed", answer)
        log.info(f"stream {state}", extra={"event": event, "stream_id": session.stream_id})
        return answer

    async def _on_stream_end(self, sid: str, *args: object) -> dict[str, Any]:
        payload = _single(args)
        try:
            session = self._own_session(sid, payload, "stream:end")
            if session.state in ("ending", "closed"):
                raise ProtocolError(
                    ProtocolErrorCode.STREAM_ENDING, f"stream {session.stream_id!r} is already ending"
                )
        except ProtocolError as err:
            return self._refuse(sid, "stream:end", err, stream_id=FragmentData.peek(payload)[1])
        session.end()
        log.info("stream ending", extra={"event": "stream:end", "stream_id": session.stream_id})
        return {"stream_id": session.stream_id, "state": "ending", "in_flight": session.outstanding}

    async def _on_audio_partial(self, sid: str, *args: object) -> dict[str, Any]:
        """Audio of the utterance in progress, for interim captions; answered by its callback
        (and an ``error`` event when refused)."""
        payload = _single(args)
        _, stream_id, seq = FragmentData.peek(payload)
        connection = self.connections.get(sid)
        if connection is None:
            return {"status": "rejected"}
        try:
            session = self.sessions.get(stream_id) if stream_id is not None else None
            stream = session.stream if session is not None and session.connection is connection else None
            if session is None or stream is None or session.state not in ("active", "paused"):
                raise ProtocolError(
                    ProtocolErrorCode.STREAM_NOT_FOUND,
                    f"audio:partial: no running stream {stream_id!r} on this connection",
                )
            if not session.overrides.get("captions"):
                raise ProtocolError(
                    ProtocolErrorCode.INVALID_CONFIG,
                    f"audio:partial: stream {stream_id!r} was opened without config.captions",
                )
            data = dict(payload) if isinstance(payload, Mapping) else payload
            if isinstance(data, dict):
                data.setdefault("fragment_id", f"partial-{seq}")
            parsed = FragmentData.parse(
                data,
                expected=session.audio,
                max_payload_bytes=self.settings.max_payload_bytes,
                max_fragment_seconds=self.settings.max_fragment_seconds,
                what="audio:partial",
            )
            fragment = parsed.fragment
            stream.send_audio(fragment.audio, fragment.sample_rate, sequence_number=fragment.sequence_number)
        except (ProtocolError, StsdubError) as exc:
            err = (
                exc
                if isinstance(exc, ProtocolError)
                else ProtocolError(ProtocolErrorCode.INVALID_PAYLOAD, str(exc))
            )
            self.metrics.observe_refusal(err.code.value)
            connection.send(
                "error", error_payload(err, stream_id=stream_id, sequence_number=seq, event="audio:partial")
            )
            return {
                "stream_id": stream_id,
                "sequence_number": seq,
                "status": "rejected",
                "error": err.to_dict(),
            }
        return {"stream_id": stream_id, "sequence_number": seq, "status": "accepted"}

    async def _on_fragment_data(self, sid: str, *args: object) -> dict[str, Any]:
        payload = _single(args)
        received_at = time.perf_counter()
        fragment_id, stream_id, seq = FragmentData.peek(payload)
        connection = self.connections.get(sid)
        if connection is None:
            return {"status": "rejected"}
        session: Session | None = None
        # Everything up to the queueing below runs without an await, so fragments are
        # checked and queued in the order they arrived.
        try:
            fragment_id, stream_id, seq, _ = FragmentData.header(payload)
            session = self.sessions.get(stream_id)
            if session is None or session.connection is not connection or session.state == "initializing":
                raise ProtocolError(
                    ProtocolErrorCode.STREAM_NOT_FOUND,
                    f"fragment:data: no open stream {stream_id!r} on this connection"
                    " (send stream:init and wait"
                    " for stream:ready)",
                )
            if session.state == "paused":
                raise ProtocolError(
                    ProtocolErrorCode.STREAM_PAUSED, f"stream {stream_id!r} is paused; send stream:resume"
                )
            if session.state != "active":
                raise ProtocolError(
                    ProtocolErrorCode.STREAM_ENDING, f"stream {stream_id!r} is {session.state}"
                )
            if session.last_seq is not None and seq <= session.last_seq:
                word = "duplicate" if seq == session.last_seq else "out-of-order"
                raise ProtocolError(
                    ProtocolErrorCode.SEQUENCE_ERROR,
                    f"{word} sequence_number {seq} on stream {stream_id!r}; the last accepted was"
                    f" {session.last_seq} and sequence numbers must increase",
                )
            parsed = FragmentData.parse(
                payload,
                expected=session.audio,
                max_payload_bytes=self.settings.max_payload_bytes,
                max_fragment_seconds=self.settings.max_fragment_seconds,
            )
            if session.outstanding >= session.pressure.critical:
                session.counts["rejected"] += 1
                changed = session.pressure.update(session.outstanding + 1, overflow=True)
                if changed is not None:
                    self._backpressure(session, changed)
                raise ProtocolError(
                    ProtocolErrorCode.BACKPRESSURE_REJECTED,
                    f"stream {stream_id!r} has {session.outstanding} fragments waiting (critical threshold"
                    f" {session.pressure.critical}); slow down",
                )
            changed = session.accept(parsed.fragment, received_at)
        except ProtocolError as err:
            self.metrics.observe_refusal(err.code.value)
            ack = {
                "fragment_id": fragment_id,
                "stream_id": stream_id,
                "sequence_number": seq,
                "status": "rejected",
                "error": err.to_dict(),
            }
            connection.send("fragment:ack", ack)
            log.warning(
                f"fragment refused: {err.message}",
                extra={
                    "event": "fragment:data",
                    "stream_id": stream_id,
                    "fragment_id": fragment_id,
                    "sequence_number": seq,
                    "code": err.code.value,
                },
            )
            return ack
        ack = {
            "fragment_id": fragment_id,
            "stream_id": stream_id,
            "sequence_number": seq,
            "status": "queued",
            "in_flight": session.outstanding,
        }
        connection.send("fragment:ack", ack)
        if changed is not None:
            self._backpressure(session, changed)
        return ack

    # -- HTTP --------------------------------------------------------------------------------

    async def health(self, request: Request) -> Response:
        return JSONResponse(
            {
                "status": "healthy",
                "version": __version__,
                "models_loaded": self.ready,
                "streams": len(self.sessions),
                "connections": len(self.connections),
            }
        )

    async def readiness(self, request: Request) -> Response:
        if self.ready:
            return JSONResponse({"status": "ready", "models_loaded": True, "device": self.dubber.device})
        if self.load_error is not None:
            return JSONResponse(
                {"status": "failed", "models_loaded": False, "error": self.load_error}, status_code=503
            )
        return JSONResponse({"status": "loading", "models_loaded": False}, status_code=503)

    async def metrics_endpoint(self, request: Request) -> Response:
        body = await anyio.to_thread.run_sync(self.metrics.render)
        return Response(body, media_type=CONTENT_TYPE_LATEST)


class ServiceApp:
    """The ASGI application: Socket.IO at ``/socket.io/``, plus ``/health``, ``/ready``, ``/metrics``.

    Attributes:
        service: The :class:`DubbingService` behind it (state, metrics registry).
    """

    def __init__(self, service: DubbingService) -> None:
        self.service = service
        settings = service.settings
        middleware = []
        if settings.cors_origins:
            middleware.append(
                Middleware(CORSMiddleware, allow_origins=list(settings.cors_origins), allow_methods=["GET"])
            )

        @contextlib.asynccontextmanager
        async def lifespan(app: Starlette) -> AsyncIterator[None]:
            async with anyio.create_task_group() as tg:
                await tg.start(service.run)
                yield
                tg.cancel_scope.cancel()

        self.http = Starlette(
            routes=[
                Route("/health", service.health, methods=["GET"]),
                Route("/ready", service.readiness, methods=["GET"]),
                Route("/metrics", service.metrics_endpoint, methods=["GET"]),
            ],
            middleware=middleware,
            lifespan=lifespan,
        )
        self._asgi = socketio.ASGIApp(service.sio, other_asgi_app=self.http)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self._asgi(scope, receive, send)


def build_dubber(settings: ServerSettings) -> Dubber:
    """The Dubber the settings describe (stages by registered name).

    Raises:
        ConfigurationError: A translator that cannot load as configured (``deepl`` without a
            key, ``ctranslate2`` without a model), before any model loads.
    """
    translator = settings.chosen_translator()
    if translator is not None:
        check_translator(translator, settings.translator_options)
    return Dubber(
        asr=settings.asr,
        translator=translator,
        synthesizer=settings.synthesizer,
        source_language=settings.source_language,
        target_language=settings.target_language,
        voice=settings.voice,
        device=settings.device,
        asr_options=settings.asr_options,
        translator_options=settings.translator_options if translator is not None else None,
        synthesizer_options=settings.synthesizer_options,
        separator=settings.separator,
        separator_options=settings.separator_options if settings.separator is not None else None,
        diarizer=settings.diarizer,
        diarizer_options=settings.diarizer_options if settings.diarizer is not None else None,
        max_inflight=settings.max_inflight,
        fragment_timeout=settings.fragment_timeout,
        fallback=settings.fallback,
        output_sample_rate=settings.output_sample_rate,
        max_fragment_seconds=settings.max_fragment_seconds,
        duration=DurationPolicy(
            success_max=settings.duration_success_max,
            partial_max=settings.duration_partial_max,
            strict=settings.duration_strict,
        ),
    )


def create_app(
    settings: ServerSettings | None = None,
    *,
    dubber: Dubber | None = None,
    on_fatal: Callable[[BaseException], None] | None = None,
) -> ServiceApp:
    """Build the service's ASGI application.

    Args:
        settings: Defaults to :meth:`ServerSettings.from_env`.
        dubber: A Dubber to serve (not yet opened; the application opens it at startup and
            closes it at shutdown). Default: built from ``settings``.
        on_fatal: Called with the exception when the models fail to load.
    """
    settings = settings or ServerSettings.from_env()
    return ServiceApp(DubbingService(settings, dubber or build_dubber(settings), on_fatal=on_fatal))
