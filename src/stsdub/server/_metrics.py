"""Prometheus metrics of the service, under the reference service's names.

Every application gets its own ``CollectorRegistry``, so several can live in one process
(tests, embedding) without clashing over the global one.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from .._core._values import DubResult

__all__ = ["GpuCollector", "ServiceMetrics"]

log = logging.getLogger("stsdub.server")

# Fragments take from tens of milliseconds (no speech) to the whole timeout (8 s default).
_FRAGMENT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 15.0, 30.0)
_STAGE_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 15.0)
# Library timing keys → the stage histograms that record them.
_STAGE_TIMINGS = {"asr": "asr", "translation": "translation", "synthesis": "tts", "duration": "duration"}


class ServiceMetrics:
    """The metrics one service instance updates, in its own registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.fragment_seconds = Histogram(
            "sts_fragment_processing_seconds",
            "Time from receiving a fragment to sending its result",
            ("status", "stream_id"),
            buckets=_FRAGMENT_BUCKETS,
            registry=r,
        )
        self.stage_seconds = {
            "asr": Histogram(
                "sts_asr_duration_seconds", "ASR stage latency", buckets=_STAGE_BUCKETS, registry=r
            ),
            "translation": Histogram(
                "sts_translation_duration_seconds",
                "Translation stage latency",
                buckets=_STAGE_BUCKETS,
                registry=r,
            ),
            "tts": Histogram(
                "sts_tts_duration_seconds",
                "Speech synthesis stage latency",
                buckets=_STAGE_BUCKETS,
                registry=r,
            ),
            "duration": Histogram(
                "sts_duration_matching_seconds",
                "Duration matching (time-stretching) latency",
                buckets=_STAGE_BUCKETS,
                registry=r,
            ),
        }
        self.in_flight = Gauge(
            "sts_fragments_in_flight", "Fragments received and not yet answered, all streams", registry=r
        )
        self.errors = Counter(
            "sts_fragment_errors",
            "Fragments failed or refused, by stage and code",
            ("stage", "error_code"),
            registry=r,
        )
        self.fragments = Counter("sts_fragments", "Fragments answered, by status", ("status",), registry=r)
        self.streams_active = Gauge("sts_streams_active", "Streams open now", registry=r)
        self.backpressure_events = Counter(
            "sts_backpressure_events",
            "Backpressure level changes sent, by severity",
            ("severity",),
            registry=r,
        )
        self.connections = Gauge("sts_connections", "Socket.IO connections open now", registry=r)
        self.rejected_connections = Counter(
            "sts_connections_rejected",
            "Connections refused (token missing or wrong, or the models not loaded)",
            registry=r,
        )
        self.models_ready = Gauge("sts_models_ready", "1 once the models are loaded", registry=r)

    def observe_result(self, result: DubResult, seconds: float) -> None:
        """Record one answered fragment."""
        status = result.status.value
        self.fragment_seconds.labels(status=status, stream_id=result.stream_id).observe(seconds)
        self.fragments.labels(status=status).inc()
        for key, name in _STAGE_TIMINGS.items():
            ms = result.timings.get(key)
            if ms is not None:
                self.stage_seconds[name].observe(ms / 1000)
        if result.error is not None:
            self.errors.labels(
                stage=result.error.stage or "pipeline", error_code=result.error.code.value
            ).inc()

    def observe_refusal(self, code: str, stage: str = "ingest") -> None:
        """Record a request refused before it reached the pipeline."""
        self.errors.labels(stage=stage, error_code=code).inc()

    def add_gpu(self, device: str) -> None:
        """Report GPU memory and utilization of ``device`` (``"cuda"`` or ``"cuda:N"``)."""
        self.registry.register(GpuCollector(device))

    def render(self) -> bytes:
        """The registry in the Prometheus text format."""
        return generate_latest(self.registry)


class GpuCollector(Collector):
    """Reads GPU memory and utilization at scrape time.

    NVML (``pip install nvidia-ml-py``) gives both; without it, memory comes from
    ``torch.cuda.mem_get_info`` when torch is already loaded, and utilization is left out.
    """

    def __init__(self, device: str) -> None:
        _, _, index = device.partition(":")
        self.device = device
        self.index = int(index) if index.isdigit() else 0
        self._nvml: Any = None
        self._handle: Any = None
        self._warned = False

    def describe(self) -> list[Any]:
        # Describing nothing keeps registration from scraping the GPU.
        return []

    def _nvml_handle(self) -> Any:
        if self._handle is not None:
            return self._handle
        import pynvml  # type: ignore[import-not-found]

        pynvml.nvmlInit()
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").strip()
        ids = [v.strip() for v in visible.split(",") if v.strip()] if visible else []
        # NVML counts physical GPUs; CUDA numbers only the visible ones.
        if ids and self.index < len(ids):
            physical = ids[self.index]
            if physical.isdigit():
                handle = pynvml.nvmlDeviceGetHandleByIndex(int(physical))
            else:
                handle = pynvml.nvmlDeviceGetHandleByUUID(physical)
        else:
            handle = pynvml.nvmlDeviceGetHandleByIndex(self.index)
        self._nvml, self._handle = pynvml, handle
        return handle

    def _read(self) -> tuple[float | None, float | None]:
        try:
            handle = self._nvml_handle()
            memory = float(self._nvml.nvmlDeviceGetMemoryInfo(handle).used)
            utilization = float(self._nvml.nvmlDeviceGetUtilizationRates(handle).gpu)
            return memory, utilization
        except Exception as exc:  # NVML missing or failing: fall back to torch for memory
            if not self._warned:
                self._warned = True
                log.warning(
                    "GPU utilization unavailable (%s: %s); install nvidia-ml-py", type(exc).__name__, exc
                )
        torch = sys.modules.get("torch")
        if torch is not None:
            try:
                free, total = torch.cuda.mem_get_info(self.index)
                return float(total - free), None
            except Exception:
                return None, None
        return None, None

    def collect(self) -> Iterator[GaugeMetricFamily]:
        memory, utilization = self._read()
        if memory is not None:
            family = GaugeMetricFamily("sts_gpu_memory_used_bytes", "GPU memory in use", labels=("device",))
            family.add_metric((self.device,), memory)
            yield family
        if utilization is not None:
            family = GaugeMetricFamily(
                "sts_gpu_utilization_percent", "GPU utilization (0-100)", labels=("device",)
            )
            family.add_metric((self.device,), utilization)
            yield family
