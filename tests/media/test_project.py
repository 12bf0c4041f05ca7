"""Projects: stop for review, edit, resume; bring your own subtitles; batches; bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import stsdub
from stsdub import DubProject, ProjectError
from stsdub._cli import main
from stsdub._media._subtitles import Cue, parse_srt, to_srt
from stsdub._recordings._files import dub_file
from stsdub.testing import FakeASR, FakeSynthesizer, FakeTranslator
from tests.media.media import recording, write_recording
from tests.speech import SENTENCES

FAKES = ["--asr", "fake", "--translator", "fake", "--synthesizer", "fake", "-q", "--from", "en", "--to", "de"]


@pytest.fixture(scope="module")
def talk(tmp_path_factory: pytest.TempPathFactory) -> Path:
    samples, rate, _ = recording(SENTENCES[:3], pauses=1.0)
    return write_recording(tmp_path_factory.mktemp("in") / "talk.wav", samples, rate)


@pytest.fixture(scope="module")
def long_talk(tmp_path_factory: pytest.TempPathFactory) -> Path:
    samples, rate, _ = recording(SENTENCES[:8], pauses=0.8)
    return write_recording(tmp_path_factory.mktemp("in") / "long.wav", samples, rate)


def fakes(
    synthesizer: FakeSynthesizer | None = None, **kwargs
) -> tuple[stsdub.Dubber, FakeASR, FakeTranslator]:
    asr, translator = FakeASR(), FakeTranslator()
    dubber = stsdub.Dubber(
        asr,
        translator,
        synthesizer or FakeSynthesizer(),
        source_language="en",
        target_language="de",
        **kwargs,
    )
    return dubber, asr, translator


def cache(folder: Path) -> dict[str, int]:
    """Cached audio files and their modification times."""
    audio = folder / "audio"
    return {p.name: p.stat().st_mtime_ns for p in audio.glob("*.flac")} if audio.is_dir() else {}


def test_stop_edit_in_python_and_in_the_srt_then_resume_only_what_changed(talk: Path, tmp_path: Path) -> None:
    out = tmp_path / "talk.de.wav"
    synth = FakeSynthesizer()
    dubber, asr, translator = fakes(synth)
    # Segment by segment (units="fragments"): each of the fake's lines is its own segment's.
    stopped = dub_file(dubber, talk, out, stop_after="translate", units="fragments")
    project = stopped.project
    assert project is not None and stopped.output is None and not out.exists()
    assert project.phase == "translate" and len(project.segments) == 3
    assert [s.translation for s in project.segments] == [f"[de] speech {n}" for n in range(3)]
    assert synth.requests == [] and len(asr.requests) == 3 and len(translator.requests) == 3
    assert sorted(p.name for p in project.folder.iterdir()) == [
        "project.json",
        "transcript.srt",
        "translation.srt",
    ]
    assert stopped.subtitles == (project.folder / "transcript.srt", project.folder / "translation.srt")

    # Edit one translation in Python; resuming saves it and dubs every segment once.
    dubbed = dubber.dub_file(resume=project.with_translation(1, "Guten Morgen"))
    assert dubbed.output == out and out.exists()
    assert [r.translation.text for r in dubbed.results] == ["[de] speech 0", "Guten Morgen", "[de] speech 2"]
    assert [r.text for r in synth.requests] == ["[de] speech 0", "Guten Morgen", "[de] speech 2"]
    assert len(asr.requests) == 3 and len(translator.requests) == 3  # not asked again
    assert len(cache(project.folder)) == 3

    # Edit another one in translation.srt: only that segment is synthesized again.
    srt = project.folder / "translation.srt"
    srt.write_text(srt.read_text().replace("[de] speech 2", "Auf Wiedersehen"))
    before = cache(project.folder)
    again = dubber.dub_file(resume=project.folder)
    assert [r.text for r in synth.requests[3:]] == ["Auf Wiedersehen"]
    assert again.translation.splitlines() == ["[de] speech 0", "Guten Morgen", "Auf Wiedersehen"]
    assert [r.metadata.get("cached", False) for r in again.results] == [True, True, False]
    after = cache(project.folder)
    assert len(after) == 4 and all(after[k] == v for k, v in before.items())
    saved = json.loads((project.folder / "project.json").read_text())
    assert saved["format_version"] == 1 and saved["phase"] == "dub"
    assert [s["status"] for s in saved["segments"]] == ["success"] * 3
    assert saved["segments"][2]["translation"] == "Auf Wiedersehen"

    # Nothing changed: nothing is synthesized, and the dub is the same.
    third = dubber.dub_file(resume=project.folder)
    assert len(synth.requests) == 4
    # The same up to the cache's 24-bit samples.
    assert np.allclose(third.audio.samples, again.audio.samples, atol=1e-5)


def test_a_new_transcript_is_translated_again(talk: Path, tmp_path: Path) -> None:
    dubber, asr, translator = fakes()
    project = dub_file(dubber, talk, tmp_path / "o.wav", stop_after="transcribe", units="fragments").project
    assert project is not None and project.phase == "transcribe"
    assert all(s.translation is None for s in project.segments) and translator.requests == []
    assert not (project.folder / "translation.srt").exists()
    srt = project.folder / "transcript.srt"
    srt.write_text(srt.read_text().replace("speech 1", "hello there"))
    resumed = dub_file(dubber, resume=project.folder, stop_after="translate", units="fragments").project
    assert resumed is not None
    assert [s.translation for s in resumed.segments] == ["[de] speech 0", "[de] hello there", "[de] speech 2"]
    assert [r.text for r in translator.requests] == ["speech 0", "hello there", "speech 2"]
    assert len(asr.requests) == 3


def test_cli_stop_edit_resume_counts_cache_files(talk: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "talk.de.wav"
    assert main(["dub", str(talk), "-o", str(out), *FAKES, "--stop-after", "translate"]) == 0
    printed = capsys.readouterr().out
    folder = tmp_path / "talk.de.stsdub"
    assert "stopped after translate" in printed and f"stsdub dub --resume {folder}" in printed
    assert cache(folder) == {} and not out.exists()
    # Languages and stages come from the project; -o too.
    assert main(["dub", "--resume", str(folder), "-q"]) == 0
    first = cache(folder)
    assert len(first) == 3 and out.exists()
    data = json.loads((folder / "project.json").read_text())
    data["segments"][0]["translation"] = "Hallo"
    (folder / "project.json").write_text(json.dumps(data))
    time.sleep(0.01)
    assert main(["dub", "--resume", str(folder / "project.json"), "-q"]) == 0
    second = cache(folder)
    assert len(second) == 4 and all(second[k] == v for k, v in first.items())
    assert "Hallo" in (tmp_path / "talk.de.de.srt").read_text()


def test_a_killed_run_resumes_without_redoing_finished_segments(long_talk: Path, tmp_path: Path) -> None:
    out = tmp_path / "long.de.wav"
    folder = tmp_path / "long.de.stsdub"
    argv = ["dub", str(long_talk), "-o", str(out), *FAKES, "--project", "--max-inflight", "1"]
    slow = [*argv, "-O", "synthesizer.latency=0.4"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path.cwd()), os.environ.get("PYTHONPATH", "")])}
    child = subprocess.Popen([sys.executable, "-m", "stsdub", *slow], env=env)
    try:
        deadline = time.monotonic() + 120
        while len(cache(folder)) < 3:
            assert child.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        child.send_signal(signal.SIGKILL)
        child.wait(30)
    finally:
        if child.poll() is None:
            child.kill()
    done = cache(folder)
    assert 3 <= len(done) < 8 and not out.exists()
    project = DubProject.load(folder)
    assert project.phase == "translate" and len(project.segments) == 8
    assert main(["dub", "--resume", str(folder), "-q"]) == 0
    after = cache(folder)
    assert len(after) == 8 and all(after[k] == v for k, v in done.items())
    assert out.exists() and DubProject.load(folder).counts()["success"] == 8


def test_bring_your_own_transcript_and_translation(talk: Path, tmp_path: Path) -> None:
    transcript = tmp_path / "heard.srt"
    transcript.write_text(
        to_srt(
            [Cue(0.4, 2.0, "the weather is nice"), Cue(2.9, 4.3, "open the window"), Cue(5.0, 8.0, "we meet")]
        )
    )
    translation = tmp_path / "said.srt"
    # Other cue times than the transcript's: matched by overlap, two cues may make one segment.
    translation.write_text(
        to_srt(
            [
                Cue(0.5, 1.9, "hace buen tiempo"),
                Cue(3.0, 4.0, "abre"),
                Cue(4.0, 4.2, "la ventana"),
                Cue(5.1, 7.0, "nos vemos"),
            ]
        )
    )
    synth = FakeSynthesizer()
    dubber, asr, translator = fakes(synth)
    dubbed = dub_file(
        dubber,
        talk,
        tmp_path / "o.wav",
        transcript_srt=transcript,
        translation_srt=translation,
        target_language="es",
    )
    assert asr.requests == [] and translator.requests == []
    assert [r.transcript.text for r in dubbed.results] == [
        "the weather is nice",
        "open the window",
        "we meet",
    ]
    assert [r.text for r in synth.requests] == ["hace buen tiempo", "abre la ventana", "nos vemos"]
    # The cues are the segments (to the sample).
    assert [(round(a, 3), round(b, 3)) for a, b in dubbed.spans] == [(0.4, 2.0), (2.9, 4.3), (5.0, 8.0)]
    assert dubbed.project is not None and dubbed.project.folder == tmp_path / "o.stsdub"

    # Only a translation: segments from the speech, the ASR for the transcript, no translator.
    dubber, asr, translator = fakes()
    starts = [c.start for c in parse_srt(translation.read_text())]
    own = tmp_path / "own.srt"
    own.write_text(
        to_srt([Cue(s, s + 0.3, f"línea {n}") for n, s in enumerate([starts[0], starts[1], starts[3]])])
    )
    dubbed = dub_file(dubber, talk, tmp_path / "p.wav", translation_srt=own)
    assert translator.requests == [] and len(asr.requests) == 3
    assert [r.translation.text for r in dubbed.results] == ["línea 0", "línea 1", "línea 2"]


def test_cli_bring_your_own_translation(talk: Path, tmp_path: Path, capsys) -> None:
    own = tmp_path / "own.srt"
    own.write_text(to_srt([Cue(0.5, 1.0, "uno"), Cue(3.0, 3.5, "dos"), Cue(5.5, 6.0, "tres")]))
    out = tmp_path / "o.wav"
    assert main(["dub", str(talk), "-o", str(out), *FAKES, "--translation-srt", str(own)]) == 0
    assert "uno" in (tmp_path / "o.de.srt").read_text() and "tres" in (tmp_path / "o.de.srt").read_text()
    capsys.readouterr()


def test_batch_dubs_a_folder_with_one_summary_and_fails_for_a_bad_file(
    talk: Path, tmp_path: Path, capsys
) -> None:
    inbox = tmp_path / "in"
    inbox.mkdir()
    (inbox / "a.wav").write_bytes(talk.read_bytes())
    samples, rate, _ = recording(SENTENCES[:1])
    write_recording(inbox / "b.flac", samples, rate)
    (inbox / "c.wav").write_bytes(b"RIFF junk" * 50)
    (inbox / "notes.txt").write_text("not media")
    built: list[FakeASR] = []

    class CountingASR(FakeASR):
        def __init__(self, **kwargs):
            built.append(self)
            super().__init__(**kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(stsdub.testing, "FakeASR", CountingASR)
        code = main(["dub", str(inbox), "-o", str(tmp_path / "out"), *FAKES])
    captured = capsys.readouterr()
    assert code == 1
    assert len(built) == 1  # the models are loaded once for the whole batch
    assert "3 files: 2 done, 1 failed" in captured.out
    assert "c.wav" in captured.err and "corrupt" in captured.err
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if p.suffix in (".wav", ".flac")) == [
        "a.wav",
        "b.flac",
    ]
    # A quoted glob is a batch too; all good: exit 0.
    assert main(["dub", str(inbox / "[ab].*"), "-o", str(tmp_path / "out2"), *FAKES]) == 0
    assert "2 files: 2 done, 0 failed" in capsys.readouterr().out


def test_a_project_from_another_input_is_refused(talk: Path, long_talk: Path, tmp_path: Path) -> None:
    dubber, _, _ = fakes()
    project = dub_file(dubber, talk, tmp_path / "o.wav", stop_after="transcribe").project
    assert project is not None
    with pytest.raises(ProjectError, match="another input"):
        dub_file(dubber, long_talk, resume=project.folder)
    with pytest.raises(ProjectError, match="cannot be resumed into"):
        dub_file(dubber, resume=project.folder, target_language="fr")


def test_a_newer_or_broken_project_file_is_refused(talk: Path, tmp_path: Path, capsys) -> None:
    dubber, _, _ = fakes()
    project = dub_file(dubber, talk, tmp_path / "o.wav", stop_after="transcribe").project
    assert project is not None
    data = json.loads(project.path.read_text())
    project.path.write_text(json.dumps({**data, "format_version": 99}))
    with pytest.raises(ProjectError, match="format_version 99 is newer"):
        DubProject.load(project.folder)
    assert main(["dub", "--resume", str(project.folder), "-q"]) == 2
    assert "newer than this stsdub reads" in capsys.readouterr().err
    project.path.write_text("{not json")
    with pytest.raises(ProjectError, match="not a readable project file"):
        DubProject.load(project.path)
    data["segments"][1]["start"] = data["segments"][0]["start"]
    project.path.write_text(json.dumps(data))
    with pytest.raises(ProjectError, match="overlap"):
        DubProject.load(project.folder)
    with pytest.raises(ProjectError, match="no such project file"):
        DubProject.load(tmp_path / "nowhere")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1\n00:00:01,000 -> 00:00:02,000\nhola\n", "expected a timing line"),
        ("1\n00:00:02,000 --> 00:00:01,000\nhola\n", "ends .* before it starts"),
        ("1\n00:00:01,000 --> 00:00:03,000\nuno\n\n2\n00:00:02,000 --> 00:00:04,000\ndos\n", "overlaps"),
        ("", "no subtitle cues"),
    ],
)
def test_subtitles_that_do_not_parse_or_overlap_are_refused(
    talk: Path, tmp_path: Path, text: str, message: str
) -> None:
    srt = tmp_path / "bad.srt"
    srt.write_text(text)
    dubber, asr, _ = fakes()
    with pytest.raises(ProjectError, match=message):
        dub_file(dubber, talk, tmp_path / "o.wav", translation_srt=srt)
    with pytest.raises(ProjectError, match=message):
        dub_file(dubber, talk, tmp_path / "o.wav", transcript_srt=srt)
    assert asr.requests == [] and not (tmp_path / "o.wav").exists()


def test_parse_srt_is_lenient_where_editors_differ() -> None:
    text = (
        "\ufeff00:00:01.5 --> 00:00:02,250\r\nhola\r\nmundo\r\n\r\n\r\n"
        "7\r\n00:00:03,000 --> 00:00:04,000\r\nadiós\r\n"
    )
    assert parse_srt(text) == [Cue(1.5, 2.25, "hola\nmundo"), Cue(3.0, 4.0, "adiós")]


def test_edits_that_leave_a_segment_empty_are_refused(talk: Path, tmp_path: Path) -> None:
    dubber, _, _ = fakes()
    # One cue per segment (units="fragments"), so that a segment's cue can be deleted.
    project = dub_file(dubber, talk, tmp_path / "o.wav", stop_after="translate", units="fragments").project
    assert project is not None
    with pytest.raises(ProjectError, match="translation is empty"):
        dub_file(dubber, resume=project.with_translation(1, "  "))
    project.with_translation(1, "[de] speech 1").save()
    srt = project.folder / "translation.srt"
    cues = parse_srt(srt.read_text())
    srt.write_text(to_srt([cues[0], cues[2]]))  # the cue of segment 1 deleted
    with pytest.raises(ProjectError, match=r"segment 1 .* has no text any more"):
        dub_file(dubber, resume=project.folder)
    with pytest.raises(ProjectError, match="no segment 7"):
        project.with_translation(7, "x")


def test_transcript_cue_outside_the_input_or_too_long_is_refused(talk: Path, tmp_path: Path) -> None:
    srt = tmp_path / "t.srt"
    srt.write_text(to_srt([Cue(100.0, 101.0, "late")]))
    dubber, _, _ = fakes()
    with pytest.raises(ProjectError, match="starts after the input ends"):
        dub_file(dubber, talk, tmp_path / "o.wav", transcript_srt=srt)
    srt.write_text(to_srt([Cue(0.0, 8.0, "long")]))
    dubber, _, _ = fakes(max_fragment_seconds=5.0)
    with pytest.raises(ProjectError, match="max_fragment_seconds"):
        dub_file(dubber, talk, tmp_path / "o.wav", transcript_srt=srt)


def test_project_options_need_an_output_and_a_known_phase(talk: Path) -> None:
    dubber, _, _ = fakes()
    with pytest.raises(stsdub.ConfigurationError, match="beside the output"):
        dub_file(dubber, talk, None, stop_after="translate")
    with pytest.raises(stsdub.ConfigurationError, match="stop_after"):
        dub_file(dubber, talk, None, stop_after="synthesize")


@pytest.mark.model
@pytest.mark.slow
def test_real_stages_transcribe_edit_resume(tmp_path: Path) -> None:
    """faster-whisper (tiny.en) → Apertium → eSpeak NG, offline: review, edit, resume."""
    pytest.importorskip("faster_whisper")
    samples, rate, _ = recording(SENTENCES[:2], pauses=1.0)
    talk = write_recording(tmp_path / "talk.wav", samples, rate)
    out = tmp_path / "talk.es.wav"
    base = ["dub", str(talk), "-o", str(out), "--from", "en", "--to", "es", "-q"]
    # Per fragment: tiny.en leaves these two lines unpunctuated, so as sentences they are one.
    base += ["--translator", "apertium", "--synthesizer", "espeak", "--units", "fragments"]
    assert main([*base, "--stop-after", "translate"]) == 0
    folder = tmp_path / "talk.es.stsdub"
    project = DubProject.load(folder)
    assert len(project.segments) == 2 and "tiempo" in project.segments[0].translation.lower()
    assert "ventana" in project.segments[1].translation.lower()
    assert main(["dub", "--resume", str(folder), "-q"]) == 0
    first = cache(folder)
    assert len(first) == 2 and out.exists()
    srt = folder / "translation.srt"
    srt.write_text(srt.read_text().replace(project.segments[1].translation, "Cierra la puerta, por favor."))
    assert main(["dub", "--resume", str(folder), "-q"]) == 0
    second = cache(folder)
    assert len(second) == 3 and all(second[k] == v for k, v in first.items())
    resumed = DubProject.load(folder)
    assert resumed.segments[1].translation == "Cierra la puerta, por favor."
    assert "Cierra la puerta" in (tmp_path / "talk.es.es.srt").read_text()
