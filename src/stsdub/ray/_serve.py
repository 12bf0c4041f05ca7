"""Everything that imports Ray: the Serve deployment, ``stage_app``, the handle transport.

Imported only when used (``stsdub.ray`` loads it lazily), so ``import stsdub`` never imports
Ray and a host without the ``ray`` extra gets an install hint instead of an ImportError.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Mapping
from typing import Any

import anyio
import anyio.to_thread

from .._core._spec import STAGE_KINDS
from ..errors import ConfigurationError, ErrorCode, PluginError, StageError, StageLoadError

try:
    # Not a bare "import ray": binding the name through submodules keeps isort's grouping
    # the same whether or not it mistakes the tests' "ray" folder for first-party code.
    import ray.exceptions
    import ray.serve
    import ray.serve.exceptions
except ImportError as exc:  # pragma: no cover - exercised where the extra is missing
    raise PluginError(
        f"stsdub.ray needs Ray Serve, which is not installed: pip install 'stsdub[ray]' ({exc})"
    ) from exc

from ._replica import ReplicaCore

__all__ = ["ServeTransport", "StageDeployment", "connect", "deploy", "map_ray_error", "stage_app"]

log = logging.getLogger("stsdub.ray")

# Replicas refuse more than this per replica at once; the rest waits in the caller's queue.
DEFAULT_MAX_ONGOING = 8
# Requests one handle may queue before Serve refuses more (BackPressureError). Generous: a
# fresh handle queues everything until it has learned where the replicas are.
DEFAULT_MAX_QUEUED = 64


def connect(address: str | None = "auto") -> None:
    """Connect this process to the Ray cluster at ``address``, unless Ray is initialised.

    Raises:
        StageLoadError: The cluster cannot be reached (or refuses this process's token).
    """
    if ray.is_initialized():
        return
    try:
        # Replicas' logs stay on the cluster: a service host does not echo them.
        ray.init(address=address, log_to_driver=False)
    except Exception as exc:
        raise StageLoadError(
            f"cannot connect to the Ray cluster at {address!r}: {type(exc).__name__}: {exc}"
            " (is this machine a node of the cluster, and does it hold the cluster's token?)"
        ) from exc


def _classes(*names: str, module: Any = ray.exceptions) -> tuple[type[BaseException], ...]:
    # getattr: some of these exist only in newer Ray versions.
    return tuple(c for c in (getattr(module, n, None) for n in names) if isinstance(c, type))


_REJECTED = _classes("BackPressureError", module=ray.serve.exceptions)
_UNAVAILABLE = _classes(
    "ReplicaUnavailableError", "DeploymentUnavailableError", module=ray.serve.exceptions
) + _classes(
    "RayActorError",  # ActorDiedError, ActorUnavailableError
    "TaskCancelledError",  # RequestCancelledError: Serve gave up on the request
    "WorkerCrashedError",
    "NodeDiedError",
    "OutOfMemoryError",
    "ObjectLostError",
    "ObjectFetchTimedOutError",
)
_TIMEOUTS = (*_classes("GetTimeoutError"), TimeoutError)
_TASK_ERROR = _classes("RayTaskError")


def map_ray_error(exc: BaseException) -> StageError:
    """The StageError a failed Serve call stands for.

    A rejected request (queue full) is ``RATE_LIMIT_EXCEEDED``; a dead or unavailable
    replica, node or deployment is ``TEMPORARY_UNAVAILABLE``; Ray's own timeout is
    ``TIMEOUT``; an error raised by the replica's code outside the stage (a bug, not
    worth retrying) is ``INTERNAL_ERROR``; any other Ray failure is ``NETWORK_ERROR``.
    """
    name = type(exc).__name__
    if isinstance(exc, _REJECTED):
        return StageError(ErrorCode.RATE_LIMIT_EXCEEDED, f"the application's queue is full: {exc}")
    if isinstance(exc, _UNAVAILABLE):
        return StageError(ErrorCode.TEMPORARY_UNAVAILABLE, f"replica unavailable ({name}): {exc}")
    if isinstance(exc, _TIMEOUTS):
        return StageError(ErrorCode.TIMEOUT, f"{name}: {exc}")
    if isinstance(exc, _TASK_ERROR):
        return StageError(ErrorCode.INTERNAL_ERROR, f"the replica failed ({name}): {exc}")
    if isinstance(exc, (ray.exceptions.RayError, OSError)):
        return StageError(ErrorCode.NETWORK_ERROR, f"{name}: {exc}")
    return StageError(ErrorCode.INTERNAL_ERROR, f"{name}: {exc}")


def _on_asyncio() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


class ServeTransport:
    """Calls a Ray Serve application through its handle (``serve.get_app_handle``).

    Args:
        app_name: The application's name.
        address: The cluster, when this process has not initialised Ray yet.

    Raises:
        StageLoadError: The cluster cannot be reached or has no such application.
    """

    def __init__(self, app_name: str, *, address: str | None = "auto") -> None:
        connect(address)
        try:
            self.handle = ray.serve.get_app_handle(app_name)
        except Exception as exc:
            raise StageLoadError(
                f"no Ray Serve application {app_name!r} on the cluster ({type(exc).__name__}: {exc});"
                f" deploy one with `stsdub ray deploy KIND NAME --app-name {app_name}`"
            ) from exc
        self.app_name = app_name

    async def call(self, payload: dict[str, Any], timeout: float) -> dict[str, Any]:
        response = self.handle.remote(payload)
        try:
            if _on_asyncio():
                answer = await response
            else:  # trio: wait in a worker thread (the handle's futures are asyncio's)
                answer = await anyio.to_thread.run_sync(
                    lambda: response.result(timeout_s=timeout), abandon_on_cancel=True
                )
        except BaseException as exc:
            # Timed out or cancelled here, or failed there: tell Serve to stop working on it.
            # The response object is dropped, so its answer, if it still comes, goes nowhere.
            response.cancel()  # type: ignore[no-untyped-call]
            if isinstance(exc, anyio.get_cancelled_exc_class()) or not isinstance(exc, Exception):
                raise
            raise map_ray_error(exc) from exc
        if not isinstance(answer, dict):
            raise StageError(ErrorCode.INTERNAL_ERROR, f"{self.app_name} answered {type(answer).__name__}")
        return answer


class StageDeployment:
    """A Serve replica: one stage instance, built and warmed up before it takes traffic.

    Requests are wire envelopes (:mod:`stsdub.ray._wire`); when the stage has a ``*_batch``
    method, requests arriving together are batched through ``@serve.batch``.
    """

    def __init__(
        self,
        kind: str,
        name: str,
        options: Mapping[str, Any],
        device: str,
        max_batch_size: int,
        batch_wait_s: float,
    ) -> None:
        if device == "auto" and ray.get_gpu_ids():
            # Ray gave this replica a GPU (and set CUDA_VISIBLE_DEVICES to it); "auto" alone
            # would only see it through a library already imported.
            device = "cuda"
        # Serve marks the replica ready when __init__ returns: load and warm up first.
        self.core = ReplicaCore.build(kind, name, options, device=device)
        batched: Any = self._batched  # serve.batch's wrapper carries its setters
        batched.set_max_batch_size(max_batch_size)
        batched.set_batch_wait_timeout_s(batch_wait_s)

    async def __call__(self, payload: dict[str, Any]) -> dict[str, Any]:
        if self.core.batches:
            return await self._batched(payload)  # type: ignore[no-any-return]
        return await self.core.handle(payload)

    @ray.serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)  # type: ignore[misc]
    async def _batched(self, payloads: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return await self.core.handle_batch(payloads)

    def __del__(self) -> None:
        core = getattr(self, "core", None)
        if core is not None:
            core.close()


def _deployment_name(kind: str, name: str) -> str:
    return "stsdub-" + re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{kind}-{name}")


def _check_count(what: str, value: object, *, zero: bool = False) -> None:
    low = 0 if zero else 1
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigurationError(f"{what} must be an int >= {low}, got {value!r}")


def _check_number(what: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < float("inf"):
        raise ConfigurationError(f"{what} must be a number >= 0, got {value!r}")
    return float(value)


def stage_app(
    kind: str,
    name: str,
    *,
    options: Mapping[str, Any] | None = None,
    device: str = "auto",
    num_replicas: int | None = None,
    autoscaling: Mapping[str, Any] | None = None,
    num_gpus: float = 0,
    num_cpus: float | None = None,
    max_batch_size: int = 8,
    batch_wait_s: float = 0.01,
    max_ongoing_requests: int | None = None,
    max_queued_requests: int = DEFAULT_MAX_QUEUED,
    ray_actor_options: Mapping[str, Any] | None = None,
) -> Any:
    """A Ray Serve application serving the stage ``kind`` / ``name`` (a registered plugin).

    Run it with ``serve.run(app, name="stsdub-asr", route_prefix=None)`` and use it from any
    host as ``Dubber(asr="ray:stsdub-asr")``. Each replica builds the stage through the
    plugin registry, as the Dubber does (``factory(device=..., **options)``), so the plugin
    and its extra must be installed where replicas run; it calls ``warmup()`` before taking
    traffic and batches requests through ``@serve.batch`` when the stage has a ``*_batch``
    method.

    Args:
        kind: ``"asr"``, ``"translator"`` or ``"synthesizer"``.
        name: The registered stage, e.g. ``"faster-whisper"``.
        options: The stage's options (plain data; they travel to the replicas).
        device: The replicas' device, resolved on each replica (``"auto"``: CUDA when a GPU
            is assigned to it).
        num_replicas: A fixed number of replicas (default 1); not with ``autoscaling``.
        autoscaling: Serve's ``autoscaling_config`` (``min_replicas``, ``max_replicas``,
            ``target_ongoing_requests``…) instead of a fixed number.
        num_gpus: GPUs per replica (fractions share a GPU).
        num_cpus: CPUs per replica (Serve's default, 1, when ``None``).
        max_batch_size: Largest batch handed to a ``*_batch`` method.
        batch_wait_s: How long a replica waits to fill a batch.
        max_ongoing_requests: Requests one replica works on or holds at once (default
            ``max(8, max_batch_size)``); further ones wait in the caller's queue.
        max_queued_requests: Requests a caller's handle may queue before Serve refuses new
            ones (the host sees ``RATE_LIMIT_EXCEEDED`` and retries within the budget).
        ray_actor_options: More of Serve's ``ray_actor_options`` (``runtime_env``,
            ``resources``…).

    Returns:
        The bound application (``serve.Application``).

    Raises:
        ConfigurationError: A bad argument.
    """
    if kind not in STAGE_KINDS:
        raise ConfigurationError(f"kind must be one of {STAGE_KINDS}, got {kind!r}")
    if not isinstance(name, str) or not name or name.startswith("ray:"):
        raise ConfigurationError(f"name must be a registered local stage, got {name!r}")
    if num_replicas is not None and autoscaling is not None:
        raise ConfigurationError("give num_replicas or autoscaling, not both")
    if num_replicas is not None:
        _check_count("num_replicas", num_replicas)
    _check_count("max_batch_size", max_batch_size)
    _check_count("max_queued_requests", max_queued_requests)
    if max_ongoing_requests is None:
        max_ongoing_requests = max(DEFAULT_MAX_ONGOING, max_batch_size)
    _check_count("max_ongoing_requests", max_ongoing_requests)
    actor_options = dict(ray_actor_options or {})
    actor_options["num_gpus"] = _check_number("num_gpus", num_gpus)
    if num_cpus is not None:
        actor_options["num_cpus"] = _check_number("num_cpus", num_cpus)
    settings: dict[str, Any] = {
        "name": _deployment_name(kind, name),
        "ray_actor_options": actor_options,
        "max_ongoing_requests": max_ongoing_requests,
        "max_queued_requests": max_queued_requests,
    }
    if autoscaling is not None:
        settings["autoscaling_config"] = dict(autoscaling)
    else:
        settings["num_replicas"] = num_replicas or 1
    deployment: Any = ray.serve.deployment(StageDeployment)
    deployment = deployment.options(**settings)
    return deployment.bind(
        kind, name, dict(options or {}), device, max_batch_size, _check_number("batch_wait_s", batch_wait_s)
    )


def deploy(kind: str, name: str, *, app_name: str, address: str | None = "auto", **app_options: Any) -> None:
    """Deploy :func:`stage_app` as the Serve application ``app_name`` and wait until it is ready.

    Starts Serve without its HTTP proxy when it is not running (stages are reached through
    handles only); a running Serve is used as it is.

    Raises:
        ConfigurationError: A bad argument.
        StageLoadError: The cluster cannot be reached, or the replicas failed to start.
    """
    app = stage_app(kind, name, **app_options)
    connect(address)
    try:
        ray.serve.start(proxy_location="Disabled")
        ray.serve.run(app, name=app_name, route_prefix=None)
    except Exception as exc:
        raise StageLoadError(
            f"deploying {kind} {name!r} as {app_name!r} failed: {type(exc).__name__}: {exc}"
        ) from exc
