"""The end-to-end benchmark runs: ``benchmarks/bench_e2e.py --quick`` on the real stages.

It loads the bundled Whisper tiny.en and the packaged Piper voice and dubs two fragments per
contestant, so it is marked ``model``. Figures are not checked (timings belong to the
benchmark); what is checked is that both contestants did the same, complete work.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.model
@pytest.mark.timeout(360)  # it loads two sets of models in a subprocess
def test_bench_e2e_quick_runs_and_reports(tmp_path: Path) -> None:
    pytest.importorskip("faster_whisper")
    pytest.importorskip("piper")
    pytest.importorskip("deepl")
    pytest.importorskip("pyrubberband")
    plot = tmp_path / "plot.png"
    command = [sys.executable, "benchmarks/bench_e2e.py", "--quick", "--json", str(tmp_path / "out.json")]
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        pass
    else:
        command += ["--plot", str(plot)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]

    results = json.loads((tmp_path / "out.json").read_text(encoding="utf-8"))
    rows = results["backlog"]["1"]
    assert set(rows) == {"plain", "stsdub", "stsdub+speed"}
    for name, (run,) in rows.items():
        assert run["fragments"] == 2 and run["failed"] == 0, (name, run)
        assert run["per_min"] > 0 and run["rtf"] > 0
        # Real speech, really transcribed, by both contestants.
        assert run["wer"] < 0.25, (name, run["wer"])
        assert {"asr", "translation", "synthesis", "duration"} <= set(run), name
    assert "one stream within 5 %" in done.stdout
    assert "| 1 | stsdub |" in done.stdout
    if "--plot" in command:
        assert plot.stat().st_size > 10_000
