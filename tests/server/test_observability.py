"""/metrics, JSON logs and artifacts reflect the traffic."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import anyio
import pytest
import soundfile
from prometheus_client.parser import text_string_to_metric_families

from stsdub.server import ServerSettings
from stsdub.server._logging import JsonFormatter

from .conftest import RATE, TOKEN, fakes, fragment, serve

pytestmark = pytest.mark.anyio


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_metrics_reflect_the_traffic() -> None:
    stages = fakes(latency=0.2, fail={2: "INVALID_TEXT"})
    async with serve(None, **stages) as running:
        client = await running.client()
        await client.open_stream("m1")
        for seq in range(5):
            await client.emit("fragment:data", fragment("m1", seq))
        await client.wait_count("fragment:ack", 5, "m1")
        _, text = await running.get("/metrics")
        during = _samples(text)
        assert during[("sts_fragments_in_flight", ())] == 5  # nothing answered yet (0.6 s each)
        assert during[("sts_streams_active", ())] == 1
        assert during[("sts_models_ready", ())] == 1

        processed = await client.wait_count("fragment:processed", 5, "m1")
        failed = processed[2]
        assert failed["status"] == "failed"
        assert failed["error"] == {
            "code": "INVALID_TEXT",
            "message": "fake translator failure for fragment 2",
            "stage": "translation",
            "retryable": False,
        }
        assert failed["dubbed_audio"]["kind"] == "silence"
        await client.emit("fragment:data", {"bad": "payload"})
        await client.wait_count("fragment:ack", 6)

        _, text = await running.get("/metrics")
        after = _samples(text)
        hist = "sts_fragment_processing_seconds_count"
        assert after[(hist, (("status", "success"), ("stream_id", "m1")))] == 4
        assert after[(hist, (("status", "failed"), ("stream_id", "m1")))] == 1
        assert after[("sts_asr_duration_seconds_count", ())] == 5
        assert after[("sts_translation_duration_seconds_count", ())] == 5
        assert after[("sts_tts_duration_seconds_count", ())] == 4
        assert after[("sts_tts_duration_seconds_sum", ())] >= 4 * 0.2
        assert (
            after[("sts_fragment_errors_total", (("error_code", "INVALID_TEXT"), ("stage", "translation")))]
            == 1
        )
        assert (
            after[("sts_fragment_errors_total", (("error_code", "INVALID_PAYLOAD"), ("stage", "ingest")))]
            == 1
        )
        assert after[("sts_fragments_total", (("status", "success"),))] == 4
        assert after[("sts_fragments_in_flight", ())] == 0
        assert after[("sts_connections", ())] == 1
        # Processing time covers the three stages of 0.2 s each.
        assert (
            after[("sts_fragment_processing_seconds_sum", (("status", "success"), ("stream_id", "m1")))]
            >= 4 * 0.6
        )
        # No GPU here: the GPU gauges are not reported at all.
        assert not any(name.startswith("sts_gpu_") for name, _ in after)


async def test_two_apps_keep_separate_registries() -> None:
    async with serve() as first, serve() as second:
        client = await first.client()
        await client.open_stream("only-first")
        await client.emit("fragment:data", fragment("only-first", 0))
        await client.wait_count("fragment:processed", 1)
        _, text_first = await first.get("/metrics")
        _, text_second = await second.get("/metrics")
        assert _samples(text_first)[("sts_fragments_total", (("status", "success"),))] == 1
        assert ("sts_fragments_total", (("status", "success"),)) not in _samples(text_second)


async def test_results_are_logged_as_json_with_ids_and_timings(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="stsdub.server")
    async with serve() as running:
        client = await running.client()
        await client.open_stream("logged")
        await client.emit("fragment:data", fragment("logged", 7))
        await client.wait_count("fragment:processed", 1)
    records = [r for r in caplog.records if r.getMessage() == "fragment processed"]
    assert len(records) == 1
    line = json.loads(JsonFormatter().format(records[0]))
    assert line["level"] == "INFO" and line["timestamp"].endswith("Z")
    assert (
        line["stream_id"] == "logged" and line["fragment_id"] == "logged-f7" and line["sequence_number"] == 7
    )
    assert line["status"] == "success" and line["processing_time_ms"] >= 0
    assert {"asr_ms", "translation_ms", "tts_ms"} <= set(line["stage_timings"])


async def test_artifacts_are_written_and_pruned_by_count_and_age(tmp_path: Path) -> None:
    stale = tmp_path / "old-stream" / "00000000-old"
    stale.mkdir(parents=True)
    (stale / "result.json").write_text("{}")
    two_days_ago = time.time() - 48 * 3600
    os.utime(stale, (two_days_ago, two_days_ago))
    settings = ServerSettings(
        auth_token=TOKEN,
        target_language="es",
        artifacts_enabled=True,
        artifacts_path=tmp_path,
        artifact_max_count=3,
        artifact_retention_hours=24,
    )
    async with serve(settings) as running:
        assert not stale.exists()  # older than the retention: removed at startup
        client = await running.client()
        await client.open_stream("art")
        for seq in range(5):
            await client.emit("fragment:data", fragment("art", seq))
        await client.wait_count("fragment:processed", 5)
        writer = running.app.service.artifacts
        assert writer is not None
        with anyio.fail_after(10):
            while writer.written < 5:  # noqa: ASYNC110 - polls the writer from outside
                await anyio.sleep(0.01)
    folders = sorted(p.name for p in (tmp_path / "art").iterdir())
    assert folders == [f"{seq:08d}-art-f{seq}" for seq in (2, 3, 4)]
    folder = tmp_path / "art" / folders[-1]
    assert json.loads((folder / "transcript.json").read_text())["text"] == "speech 4"
    translation = json.loads((folder / "translation.json").read_text())
    assert translation["text"] == "[es] speech 4" and translation["source_text"] == "speech 4"
    result = json.loads((folder / "result.json").read_text())
    assert result["status"] == "success" and result["sequence_number"] == 4
    audio, rate = soundfile.read(str(folder / "final.wav"))
    assert rate == RATE and len(audio) == RATE // 4
