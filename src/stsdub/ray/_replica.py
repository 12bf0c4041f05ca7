"""The replica's side without Ray: build a stage as the Dubber does, answer wire envelopes.

A Serve replica (:mod:`stsdub.ray._serve`) is a thin shell around :class:`ReplicaCore`, and
:class:`~stsdub.ray.LocalTransport` calls one in-process, so that everything but the Ray hop
is tested without a cluster.
"""

from __future__ import annotations

import concurrent.futures
import inspect
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import anyio
import anyio.to_thread

from .._core._device import resolve_device
from .._core._diarization import DiarizationRequest
from .._core._spec import STAGE_KINDS
from .._core._values import ASRRequest, AudioBuffer, SynthesisRequest, TranslationRequest
from .._plugins._registry import StageRegistry
from ..errors import ConfigurationError, ErrorCode, StageError, StageLoadError, StsdubError
from ._wire import WIRE_VERSION, decode_value, encode_value, error_answer

__all__ = ["CAPABILITIES", "EMBED", "METHODS", "ReplicaCore", "active_calls", "is_describe"]

log = logging.getLogger("stsdub.ray")

#: The protocol method of each stage kind.
METHODS = {"asr": "transcribe", "translator": "translate", "synthesizer": "synthesize", "diarizer": "diarize"}
_REQUESTS: dict[str, type] = {
    "asr": ASRRequest,
    "translator": TranslationRequest,
    "synthesizer": SynthesisRequest,
    "diarizer": DiarizationRequest,
}
#: A diarizer's second method (live streams): an envelope with ``"method": "embed"`` carries
#: an AudioBuffer and is answered with the embedding.
EMBED = "embed"

#: The capability flags a stage of each kind may declare, which the pipeline reads (a flag
#: is on only when the stage sets it to ``True``). A host asks a replica for them with a
#: describe envelope, so a remote stage declares what the stage behind it does.
CAPABILITIES: dict[str, tuple[str, ...]] = {
    "asr": (),
    "translator": ("supports_length_budget", "supports_context"),
    "synthesizer": ("supports_speed",),
    "diarizer": (),
}


def is_describe(payload: object) -> bool:
    """Whether ``payload`` asks for the stage's capabilities instead of carrying a request."""
    return isinstance(payload, Mapping) and payload.get("describe") is True


# Requests being answered in this process; a replica is one process, so this is the
# replica's load (read by tests through Ray's __ray_call__ to find a busy replica).
_active = 0


def active_calls() -> int:
    """Requests this process is answering now."""
    return _active


def _is_async(fn: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - async callable objects
    )


def _run_blocking(fn: Callable[[], Any]) -> None:
    """Run a sync or async callable to completion from synchronous code.

    An async one gets its own event loop in a helper thread: a replica's ``__init__`` may
    run where an event loop is already running, and anyio.run() would refuse that thread.
    """
    if _is_async(fn):
        with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="stsdub-init") as pool:
            pool.submit(anyio.run, fn).result()
    else:
        fn()


def _failure(exc: BaseException) -> tuple[ErrorCode, str]:
    if isinstance(exc, StageError):
        return exc.code, exc.message
    return ErrorCode.INTERNAL_ERROR, f"{type(exc).__name__}: {exc}"


class ReplicaCore:
    """One stage instance answering wire envelopes (see :mod:`stsdub.ray._wire`).

    Sync stage methods run in worker threads, async ones are awaited; either way at most the
    stage's ``concurrency`` calls (default 1) run at once. Failures become error answers,
    never exceptions: a stage's ``StageError`` keeps its code, anything else is
    ``INTERNAL_ERROR``.

    Args:
        kind: ``"asr"``, ``"translator"``, ``"synthesizer"`` or ``"diarizer"``.
        stage: The stage instance.
        label: How the stage is named in messages.
    """

    def __init__(self, kind: str, stage: object, *, label: str | None = None) -> None:
        if kind not in METHODS:
            raise ConfigurationError(f"kind must be one of {STAGE_KINDS}, got {kind!r}")
        method = METHODS[kind]
        fn = getattr(stage, method, None)
        self.label = label or f"{kind} {type(stage).__name__}"
        if not callable(fn):
            raise ConfigurationError(f"{self.label} has no {method}() method; see stsdub.stages")
        self.kind = kind
        self.stage = stage
        self._fn: Callable[[Any], Any] = fn
        batch_fn = getattr(stage, f"{method}_batch", None)
        self._batch_fn: Callable[[list[Any]], Any] | None = batch_fn if callable(batch_fn) else None
        concurrency = getattr(stage, "concurrency", 1)
        self.concurrency = concurrency if isinstance(concurrency, int) and concurrency > 0 else 1
        self._limiter: anyio.CapacityLimiter | None = None

    @classmethod
    def build(
        cls,
        kind: str,
        name: str,
        options: Mapping[str, Any] | None = None,
        *,
        device: str = "auto",
        registry: StageRegistry | None = None,
        warmup: bool = True,
    ) -> ReplicaCore:
        """Build the stage registered as ``name`` (``factory(device=..., **options)``) and warm it up.

        Raises:
            PluginError: No such stage here, or its extra is not installed on this machine.
            StageLoadError: The factory or the warm-up failed.
        """
        if name.startswith("ray:"):
            raise ConfigurationError(f"a replica cannot serve the remote stage {name!r}; name a local stage")
        registry = registry or StageRegistry.from_plugin_manager()
        spec = registry.get(kind, name)
        factory = spec.load_factory()
        label = f"{kind} {name!r}"
        resolved = resolve_device(device)
        try:
            stage = factory(device=resolved, **dict(options or {}))
        except StsdubError:
            raise
        except Exception as exc:
            raise StageLoadError(f"{label} failed to load: {type(exc).__name__}: {exc}") from exc
        core = cls(kind, stage, label=label)
        if warmup:
            core.warmup()
        return core

    @property
    def batches(self) -> bool:
        """Whether the stage has a ``*_batch`` method (the Serve replica then batches)."""
        return self._batch_fn is not None

    def warmup(self) -> None:
        """Call the stage's ``warmup()`` once, so the first request does not pay for it."""
        warmup = getattr(self.stage, "warmup", None)
        if not callable(warmup):
            return
        try:
            _run_blocking(warmup)
        except Exception as exc:
            raise StageLoadError(f"{self.label} failed to warm up: {type(exc).__name__}: {exc}") from exc

    def close(self) -> None:
        """Call the stage's ``aclose()`` or ``close()``; failures are logged, not raised."""
        aclose = getattr(self.stage, "aclose", None)
        close = getattr(self.stage, "close", None)
        try:
            if callable(aclose):
                _run_blocking(aclose)
            elif callable(close):
                close()
        except Exception:
            log.exception("closing %s failed", self.label)

    async def _invoke(self, fn: Callable[[Any], Any], arg: Any) -> Any:
        if self._limiter is None:  # made on first use: inside the replica's event loop
            self._limiter = anyio.CapacityLimiter(self.concurrency)
        if _is_async(fn):
            async with self._limiter:
                return await fn(arg)
        # Not abandoned on cancel: the slot stays taken until the model call returns, so a
        # model that is not thread-safe never runs twice at once.
        return await anyio.to_thread.run_sync(fn, arg, limiter=self._limiter)

    def _open(self, payload: object) -> tuple[str, Any]:
        """(call_id, request) of an envelope; raises StageError when it cannot be used."""
        if not isinstance(payload, Mapping):
            raise StageError(
                ErrorCode.INTERNAL_ERROR, f"expected a request envelope, got {type(payload).__name__}"
            )
        call_id = payload.get("call_id")
        if not isinstance(call_id, str):
            raise StageError(ErrorCode.INTERNAL_ERROR, "request envelope without a call_id")
        if payload.get("v") != WIRE_VERSION:
            raise StageError(
                ErrorCode.INTERNAL_ERROR,
                f"wire version {payload.get('v')!r} from the host, {WIRE_VERSION} here:"
                " run the same stsdub version on hosts and replicas",
            )
        if payload.get("kind") != self.kind:
            raise StageError(
                ErrorCode.INTERNAL_ERROR,
                f"a {payload.get('kind')} request reached {self.label}: check the application name",
            )
        try:
            request = decode_value(payload.get("request"))
        except Exception as exc:
            raise StageError(
                ErrorCode.INTERNAL_ERROR, f"undecodable request: {type(exc).__name__}: {exc}"
            ) from exc
        expected = AudioBuffer if self._embeds(payload) else _REQUESTS[self.kind]
        if not isinstance(request, expected):
            raise StageError(
                ErrorCode.INTERNAL_ERROR,
                f"expected a {expected.__name__}, got {type(request).__name__}",
            )
        return call_id, request

    def _embeds(self, payload: Mapping[str, Any]) -> bool:
        """Whether ``payload`` asks a diarizer for an embedding instead of turns."""
        return self.kind == "diarizer" and payload.get("method") == EMBED

    @property
    def capabilities(self) -> dict[str, bool]:
        """The stage's capability flags of :data:`CAPABILITIES` (``True`` only when declared)."""
        return {flag: getattr(self.stage, flag, False) is True for flag in CAPABILITIES[self.kind]}

    def _details(self) -> dict[str, Any]:
        """What a describe answer says: the capability flags, and a diarizer's ``embed`` and
        ``match_threshold``."""
        details: dict[str, Any] = dict(self.capabilities)
        if self.kind == "diarizer":
            details["embed"] = callable(getattr(self.stage, EMBED, None))
            threshold = getattr(self.stage, "match_threshold", None)
            if isinstance(threshold, (int, float)) and not isinstance(threshold, bool):
                details["match_threshold"] = float(threshold)
        return details

    def _describe(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        call_id = payload.get("call_id")
        call_id = call_id if isinstance(call_id, str) else ""
        if payload.get("v") != WIRE_VERSION or payload.get("kind") != self.kind:
            return error_answer(
                call_id,
                ErrorCode.INTERNAL_ERROR,
                f"cannot describe {self.label} to a {payload.get('kind')} client of wire version"
                f" {payload.get('v')!r} (here {WIRE_VERSION})",
            )
        return {"v": WIRE_VERSION, "call_id": call_id, "result": self._details()}

    @staticmethod
    def _answer(call_id: str, result: Any) -> dict[str, Any]:
        if isinstance(result, BaseException):
            return error_answer(call_id, *_failure(result))
        try:
            encoded = encode_value(result)
        except Exception as exc:
            return error_answer(call_id, *_failure(exc))
        return {"v": WIRE_VERSION, "call_id": call_id, "result": encoded}

    async def handle(self, payload: object) -> dict[str, Any]:
        """Answer one envelope with the stage's single method."""
        global _active
        if is_describe(payload):
            return self._describe(payload)  # type: ignore[arg-type]
        call_id = payload.get("call_id") if isinstance(payload, Mapping) else None
        try:
            call_id, request = self._open(payload)
        except StageError as err:
            return error_answer(call_id if isinstance(call_id, str) else "", err.code, err.message)
        fn = self._fn
        if self._embeds(payload):  # type: ignore[arg-type]
            embed = getattr(self.stage, EMBED, None)
            if not callable(embed):
                return error_answer(call_id, ErrorCode.INTERNAL_ERROR, f"{self.label} has no embed()")
            fn = embed
        _active += 1
        try:
            result = await self._invoke(fn, request)
        except anyio.get_cancelled_exc_class():
            raise
        except Exception as exc:
            result = exc
        finally:
            _active -= 1
        return self._answer(call_id, result)

    async def handle_batch(self, payloads: Sequence[object]) -> list[dict[str, Any]]:
        """Answer envelopes with one call of the stage's batch method (the single one without)."""
        global _active
        if self._batch_fn is None:
            return [await self.handle(p) for p in payloads]
        answers: list[dict[str, Any] | None] = [None] * len(payloads)
        opened: list[tuple[int, str, Any]] = []
        for i, payload in enumerate(payloads):
            if is_describe(payload):
                answers[i] = self._describe(payload)  # type: ignore[arg-type]
                continue
            call_id = payload.get("call_id") if isinstance(payload, Mapping) else None
            try:
                opened.append((i, *self._open(payload)))
            except StageError as err:
                answers[i] = error_answer(call_id if isinstance(call_id, str) else "", err.code, err.message)
        if opened:
            _active += len(opened)
            try:
                results: Sequence[Any] = list(await self._invoke(self._batch_fn, [r for _, _, r in opened]))
                if len(results) != len(opened):
                    results = [
                        StageError(
                            ErrorCode.INTERNAL_ERROR,
                            f"{self.label} batch method returned {len(results)} results for {len(opened)}",
                        )
                    ] * len(opened)
            except anyio.get_cancelled_exc_class():
                raise
            except Exception as exc:
                results = [exc] * len(opened)
            finally:
                _active -= len(opened)
            for (i, call_id, _), result in zip(opened, results, strict=True):
                answers[i] = self._answer(call_id, result)
        # Every slot is filled above: an error answer or the batch's answer, in order.
        return [
            a if a is not None else error_answer("", ErrorCode.INTERNAL_ERROR, "no answer") for a in answers
        ]
