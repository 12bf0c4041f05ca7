"""Optional debug artifacts: what each fragment was heard as, translated to, and dubbed into.

Each answered fragment gets a folder ``<root>/<stream>/<sequence>-<fragment>/`` holding
``transcript.json``, ``translation.json``, ``result.json`` and ``final.wav`` (the dubbed audio
after duration matching, exactly as sent to the client). The synthesizer's raw output before
time-stretching is not part of a result, so it is not written.

Old folders are removed by age and by count, when the store opens and at each write.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import shutil
import time
from collections import deque
from pathlib import Path
from typing import Any

import anyio
import anyio.abc

from .._core._values import DubResult

__all__ = ["ArtifactStore", "ArtifactWriter"]

log = logging.getLogger("stsdub.server")

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def _safe(name: str) -> str:
    """A file-name-safe version of a client-chosen identifier."""
    return _UNSAFE.sub("_", name)[:100] or "_"


class ArtifactStore:
    """Writes artifact folders and prunes them (blocking; call from a worker thread)."""

    def __init__(self, root: Path, *, retention_hours: float, max_count: int) -> None:
        self.root = Path(root)
        self.retention_seconds = retention_hours * 3600
        self.max_count = max_count
        self.root.mkdir(parents=True, exist_ok=True)
        found = [
            p for stream in self.root.iterdir() if stream.is_dir() for p in stream.iterdir() if p.is_dir()
        ]
        found.sort(key=lambda p: p.stat().st_mtime)
        self._folders: deque[tuple[float, Path]] = deque((p.stat().st_mtime, p) for p in found)
        self.prune()

    def __len__(self) -> int:
        return len(self._folders)

    def save(self, result: DubResult, processed: dict[str, Any]) -> Path:
        """Write one result's artifacts and prune; returns its folder."""
        folder = (
            self.root / _safe(result.stream_id) / f"{result.sequence_number:08d}-{_safe(result.fragment_id)}"
        )
        folder.mkdir(parents=True, exist_ok=True)
        if result.transcript is not None:
            transcript = result.transcript
            self._json(
                folder / "transcript.json",
                {
                    "asset_id": transcript.asset_id,
                    "parent_asset_ids": list(transcript.parent_asset_ids),
                    "text": transcript.text,
                    "language": transcript.language,
                    "segments": [
                        {"start": s.start, "end": s.end, "text": s.text}
                        for s in transcript.transcript.segments
                    ],
                },
            )
        if result.translation is not None:
            translation = result.translation
            self._json(
                folder / "translation.json",
                {
                    "asset_id": translation.asset_id,
                    "parent_asset_ids": list(translation.parent_asset_ids),
                    "source_text": translation.source_text,
                    "text": translation.text,
                    "translated": translation.translated,
                },
            )
        summary = {k: v for k, v in processed.items() if k != "dubbed_audio"}
        summary["audio"] = {
            "asset_id": result.audio.asset_id,
            "parent_asset_ids": list(result.audio.parent_asset_ids),
            "kind": result.audio.kind,
            "sample_rate_hz": result.audio.sample_rate,
        }
        self._json(folder / "result.json", summary)
        (folder / "final.wav").write_bytes(result.audio.audio.to_wav())
        self._folders.append((time.time(), folder))
        self.prune()
        return folder

    def prune(self) -> None:
        """Remove folders older than the retention, then the oldest beyond the count."""
        oldest_allowed = time.time() - self.retention_seconds
        while self._folders and (len(self._folders) > self.max_count or self._folders[0][0] < oldest_allowed):
            _, folder = self._folders.popleft()
            shutil.rmtree(folder, ignore_errors=True)
            with contextlib.suppress(OSError):  # the stream's folder goes once empty
                folder.parent.rmdir()

    @staticmethod
    def _json(path: Path, data: Any) -> None:
        path.write_text(json.dumps(data, ensure_ascii=False, indent=2, default=str), encoding="utf-8")


class ArtifactWriter:
    """Feeds an :class:`ArtifactStore` from a background task, never slowing the dubbing.

    When the disk falls behind, artifacts beyond ``queue_size`` waiting are dropped (and
    logged): they are a debugging aid, and the results must not wait for them.
    """

    def __init__(self, store: ArtifactStore, queue_size: int = 64) -> None:
        self.store = store
        self._send, self._receive = anyio.create_memory_object_stream[tuple[DubResult, dict[str, Any]]](
            queue_size
        )
        self.dropped = 0
        self.written = 0

    def submit(self, result: DubResult, processed: dict[str, Any]) -> None:
        try:
            self._send.send_nowait((result, processed))
        except anyio.WouldBlock:
            self.dropped += 1
            log.warning(
                "artifact writer is behind; artifacts of fragment dropped",
                extra={"stream_id": result.stream_id, "fragment_id": result.fragment_id},
            )
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            pass

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        async with self._receive:
            async for result, processed in self._receive:
                try:
                    await anyio.to_thread.run_sync(self.store.save, result, processed)
                    self.written += 1
                except OSError:
                    log.exception("writing artifacts failed", extra={"fragment_id": result.fragment_id})

    def close(self) -> None:
        self._send.close()
