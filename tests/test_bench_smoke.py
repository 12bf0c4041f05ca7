"""The benchmarks run: ``bench_e2e.py --quick`` on the real stages, ``bench_soak.py --smoke``.

The end-to-end one loads the bundled Whisper tiny.en and the packaged Piper voice and dubs two
fragments per contestant, so it is marked ``model``. Figures are not checked (timings belong
to the benchmark); what is checked is that both contestants did the same, complete work.

The soak runs a few hundred fragments through a few dozen streams with fake stages. Its
memory figures are checked only against the benchmark's own (generous) target: what matters
here is that it runs, counts what it sent and read, and fails when a stream loses results.
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
    # The short-sentence workload: three eSpeak sentences, the script and stsdub, one stream.
    sentences = results["sentences"]["runs"]
    assert set(sentences) == {"plain x1", "stsdub x1"}
    for name, (run,) in sentences.items():
        assert run["failed"] == 0 and run["wer"] < 0.25, (name, run)
    assert "one stream at most 1.05x the script's time" in done.stdout
    if "--plot" in command:
        assert plot.stat().st_size > 10_000


@pytest.mark.timeout(180)  # its subprocess's limit, and a margin
def test_bench_soak_smoke_runs_and_reports(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    command = [sys.executable, "benchmarks/bench_soak.py", "--smoke", "--json", str(out)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=150, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    run = json.loads(out.read_text(encoding="utf-8"))
    assert run["passed"] and run["short_streams"] == [] and run["failed"] == 0
    # Every stream started, both kinds of them, and some were left half-way.
    assert run["named_streams"] + run["dub_calls"] == run["streams"] == 24
    assert run["named_streams"] > 0 and run["dub_calls"] > 0 and run["abandoned_streams"] > 0
    assert 0.9 * run["planned_fragments"] <= run["fragments"] <= run["planned_fragments"]
    assert run["fragments"] - run["results"] < run["abandoned_streams"] * 20
    # The fakes were asked for every fragment that got in, and kept none of them.
    assert run["asr_calls"] >= run["results"] and run["kept_requests"] == 0
    assert run["rss_warm"] > 0 and run["rss_end"] > 0 and run["rss_peak"] >= run["rss_end"]
    assert len(run["rss_samples"]) >= 5
    assert "| growth after warm-up |" in done.stdout and "PASS: growth" in done.stdout


@pytest.mark.timeout(180)
def test_bench_soak_exits_non_zero_when_the_target_is_missed(tmp_path: Path) -> None:
    # No run can shrink by a terabyte, so this target is missed whatever the machine does.
    command = [sys.executable, "benchmarks/bench_soak.py", "--smoke", "--fragments", "60", "--streams", "6"]
    command.append("--target-mib=-1000000")
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=150, check=False)
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    assert "FAIL: growth" in done.stdout
