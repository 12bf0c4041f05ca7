"""A per-segment report of how dubbed speech was fitted to its time.

:func:`write_timing_report` writes JSON (one entry per result: its place in the input, where
the dubbed speech starts and how long it lasts, the speaking rate, the stretch, whether the
translation was shortened, the time borrowed from the following silence) and a summary;
:func:`fit_summary` gives the summary alone, for a line at the end of a run.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .._core._values import DubResult

__all__ = ["RUSHED_TEMPO", "fit_summary", "timing_rows", "write_timing_report"]

#: Overall tempo (speaking rate × stretch) above which dubbed speech counts as rushed.
RUSHED_TEMPO = 1.15


def _place(result: DubResult, span: tuple[float, float] | None) -> tuple[float | None, float | None]:
    if span is not None:
        return span
    meta = result.metadata
    start, end = meta.get("start"), meta.get("end")
    if isinstance(start, (int, float)) and isinstance(end, (int, float)):
        return float(start), float(end)
    if result.timestamp_ms is not None:
        start = result.timestamp_ms / 1000
        return start, start + result.audio.duration
    return None, None


def timing_rows(
    results: Iterable[DubResult], spans: Sequence[tuple[float, float]] | None = None
) -> list[dict[str, Any]]:
    """One JSON-ready dict per result (see :func:`write_timing_report`)."""
    rows = []
    for i, result in enumerate(results):
        start, end = _place(result, spans[i] if spans is not None and i < len(spans) else None)
        fit = result.fit
        row: dict[str, Any] = {
            "sequence_number": result.sequence_number,
            "stream_id": result.stream_id,
            "status": result.status.value,
            "start": start,
            "end": end,
            "text": result.translation.text if result.translation is not None else None,
        }
        if result.transcript is not None:
            # What was heard: detected per segment (probability 0-1), or given (probability None).
            row["language"] = result.transcript.language
            row["language_probability"] = result.transcript.transcript.language_probability
        if fit is not None:
            offset = start or 0.0
            row.update(
                speech_start=round(offset + fit.start, 3),
                speech_end=round(offset + fit.start + fit.seconds, 3),
                aim=fit.aim,
                natural=fit.natural,
                speed=round(fit.speed, 3),
                stretch=round(fit.stretch, 3),
                tempo=round(fit.sped_up, 3),
                shortened=fit.shortened,
                long_text=fit.long_text,
                budget_chars=fit.budget.max_chars if fit.budget is not None else None,
                borrowed=fit.borrowed,
            )
        row["variance"] = None if result.duration_variance is None else round(result.duration_variance, 4)
        row["warnings"] = list(result.warnings)
        if result.error is not None:
            row["error"] = {"code": result.error.code.value, "message": result.error.message}
        rows.append(row)
    return rows


def fit_summary(results: Iterable[DubResult]) -> dict[str, Any]:
    """How the dubbed fragments were fitted: counts, and the mean and worst tempo."""
    fits = [r.fit for r in results if r.fit is not None]
    tempos = [f.sped_up for f in fits]
    return {
        "dubbed": len(fits),
        "shortened": sum(f.shortened for f in fits),
        "sped_up": sum(f.speed > 1.0 for f in fits),
        "stretched": sum(f.stretch != 1.0 for f in fits),
        "rushed": sum(t > RUSHED_TEMPO for t in tempos),
        "borrowed": sum(f.borrowed > 0 for f in fits),
        "borrowed_seconds": round(sum(f.borrowed for f in fits), 3),
        "mean_tempo": round(sum(tempos) / len(tempos), 4) if tempos else None,
        "max_tempo": round(max(tempos), 4) if tempos else None,
    }


def write_timing_report(
    path: str | os.PathLike[str],
    results: Iterable[DubResult] | Any,
    spans: Sequence[tuple[float, float]] | None = None,
) -> Path:
    """Write the timing of every result as JSON to ``path``; returns the path.

    Args:
        path: Where to write.
        results: :class:`~stsdub.DubResult` objects, or a :class:`~stsdub.DubbedFile` (its
            results and spans are used).
        spans: ``(start, end)`` in seconds of each result in its input; default: the
            ``start``/``end`` metadata file dubbing sets, else the fragment's timestamp.

    The file holds ``{"segments": [...], "summary": {...}}``. Each segment has
    ``sequence_number``, ``status``, ``start``/``end`` (the fragment in the input),
    ``speech_start``/``speech_end`` (the dubbed speech), ``aim`` and ``natural`` (seconds of
    source speech and of the first synthesis), ``speed``, ``stretch``, ``tempo`` (their
    product), ``shortened`` (with ``long_text`` and ``budget_chars``), ``borrowed``
    (seconds), ``variance``, ``warnings``, ``language`` and ``language_probability`` (what
    the speech recognizer heard; the probability is ``None`` where the language was given)
    and, for a failure, ``error``.
    """
    if spans is None and hasattr(results, "spans") and hasattr(results, "results"):
        spans = results.spans
    items: list[DubResult] = list(results.results if hasattr(results, "results") else results)
    report: Mapping[str, Any] = {"segments": timing_rows(items, spans), "summary": fit_summary(items)}
    out = Path(path)
    out.write_text(json.dumps(report, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    return out
