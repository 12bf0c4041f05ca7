"""An in-process transport that misbehaves on schedule, as a network and a cluster may."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import anyio

from stsdub import ErrorCode, StageError
from stsdub.ray import LocalTransport

#: What one call does: answer; never answer; answer only after the timeout; answer with an
#: answer that belongs to another call; run the stage twice; refuse as a dead replica or a
#: full queue would.
ACTIONS = ("ok", "drop", "late", "stale", "twice", "unavailable", "reject")
#: The actions after which a call yields its own result.
GOOD = frozenset({"ok", "twice"})

Schedule = Callable[[str, int, int], str]


class FaultyTransport:
    """Wraps a :class:`LocalTransport`; ``schedule(stream_id, sequence_number, attempt)`` says
    what each call does.

    Late and duplicated answers are kept in ``mailbox`` and handed out by later ``"stale"``
    calls, as a transport that mixed up answers would.
    """

    def __init__(self, kind: str, stage: object, schedule: Schedule | None = None) -> None:
        self.inner = LocalTransport(kind, stage)
        self.schedule: Schedule = schedule or (lambda *_: "ok")
        self.attempts: dict[tuple[str, int], int] = {}
        self.actions: list[str] = []
        self.mailbox: list[dict[str, Any]] = []

    async def call(self, payload: dict[str, Any], timeout: float) -> dict[str, Any]:
        if payload.get("describe") is True:  # the client's start-up question: always answered
            return await self.inner.call(payload, timeout)
        request = payload["request"]
        key = (request["stream_id"], request["sequence_number"])
        attempt = self.attempts.get(key, 0)
        self.attempts[key] = attempt + 1
        action = self.schedule(*key, attempt)
        self.actions.append(action)
        if action == "unavailable":
            raise StageError(ErrorCode.TEMPORARY_UNAVAILABLE, "replica died")
        if action == "reject":
            raise StageError(ErrorCode.RATE_LIMIT_EXCEEDED, "queue full")
        if action == "drop":
            await anyio.sleep_forever()
        if action == "stale":
            if self.mailbox:
                return self.mailbox.pop(0)
            answer = await self.inner.call(payload, timeout)
            return {**answer, "call_id": uuid.uuid4().hex}
        answer = await self.inner.call(payload, timeout)
        if action == "late":
            # The answer exists, but only after the caller gave up: it may turn up later.
            self.mailbox.append(answer)
            await anyio.sleep(timeout * 10)
        if action == "twice":
            self.mailbox.append(await self.inner.call(payload, timeout))
        return answer
