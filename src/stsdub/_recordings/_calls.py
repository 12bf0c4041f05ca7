"""One stage call outside a stream, with the Dubber's retries inside a time budget."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anyio

from .._pipeline._runner import wrap_exception
from ..errors import StageError, StsdubError

if TYPE_CHECKING:
    from .._dubber import Dubber
    from .._pipeline._runner import StageRunner

__all__ = ["call_stage"]


async def call_stage(
    dubber: Dubber, runner: StageRunner[Any, Any], request: Any, stage: str, kind: type, timeout: float
) -> Any:
    """One stage call with the Dubber's retries inside ``timeout``; a StageError when it failed."""
    deadline = anyio.current_time() + timeout
    attempt = 0
    with anyio.CancelScope(deadline=deadline) as scope:
        while True:
            try:
                result = await runner.call(request, deadline)
            except StageError as err:
                delay = dubber._retry_backoff * 2**attempt
                if err.retryable and attempt < dubber._retries and anyio.current_time() + delay < deadline:
                    attempt += 1
                    await anyio.sleep(delay)
                    continue
                return err.with_stage(stage)
            except Exception as exc:
                return wrap_exception(exc, stage)
            if not isinstance(result, kind):
                return StageError(
                    "INTERNAL_ERROR", f"{type(runner.stage).__name__} returned {type(result).__name__}", stage
                )
            return result
    if scope.cancelled_caught:
        return StageError("TIMEOUT", f"{stage} took longer than fragment_timeout ({timeout:g} s)", stage)
    raise StsdubError(f"{stage}: no outcome")  # pragma: no cover - the loop always returns
