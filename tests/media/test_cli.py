"""The `stsdub dub` command, with the fake stages (registered names) unless a test says otherwise."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import stsdub.testing
from stsdub._cli import _build_parser, _choose_translator, main
from stsdub.server import ServerSettings
from tests.media.media import make_clip, recording, streams, write_recording
from tests.speech import SENTENCES

FAKES = ["--asr", "fake", "--translator", "fake", "--synthesizer", "fake", "-q"]


@pytest.fixture(scope="module")
def talk(tmp_path_factory: pytest.TempPathFactory) -> Path:
    samples, rate, _ = recording(SENTENCES[:3], pauses=1.0)
    return write_recording(tmp_path_factory.mktemp("in") / "talk.wav", samples, rate)


@pytest.fixture
def no_deepl_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DEEPL_AUTH_KEY", raising=False)


def test_dub_writes_audio_subtitles_and_a_summary(talk: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out" / "talk.de.wav"
    assert main(["dub", str(talk), "-o", str(out), "--from", "en", "--to", "de", *FAKES]) == 0
    printed = capsys.readouterr().out
    assert "3 fragments — 3 success, 0 partial, 0 failed" in printed
    assert "real-time factor" in printed and str(out) in printed
    assert sorted(p.name for p in out.parent.iterdir()) == [
        "talk.de.de.srt",
        "talk.de.de.vtt",
        "talk.de.en.srt",
        "talk.de.en.vtt",
        "talk.de.wav",
    ]


def test_background_separate_loads_the_separator_by_name(talk: Path, tmp_path: Path, capsys) -> None:
    argv = ["dub", str(talk), "-o", str(tmp_path / "o.wav"), "--from", "en", "--to", "de", *FAKES]
    assert main([*argv, "--background", "separate", "--separator", "fake"]) == 0
    assert (tmp_path / "o.wav").exists()
    # Without a separator installed under that name, nothing loads and the error says so.
    assert main([*argv, "--background", "separate", "--separator", "nonesuch"]) == 2
    assert "no separator stage named 'nonesuch'" in capsys.readouterr().err


def test_report_says_how_each_segment_was_fitted(talk: Path, tmp_path: Path, capsys) -> None:
    report = tmp_path / "report.json"
    argv = ["dub", str(talk), "-o", str(tmp_path / "o.wav"), "--from", "en", "--to", "de", *FAKES]
    assert main([*argv, "--report", str(report)]) == 0
    printed = capsys.readouterr().out
    assert "fit: " in printed and str(report) in printed
    written = json.loads(report.read_text(encoding="utf-8"))
    assert [s["sequence_number"] for s in written["segments"]] == [0, 1, 2]
    for segment in written["segments"]:
        assert segment["start"] < segment["end"] and segment["speed"] > 0 and segment["stretch"] > 0
        assert segment["shortened"] is False and segment["borrowed"] >= 0
    assert written["summary"]["dubbed"] == 3


def test_failed_fragments_exit_non_zero_unless_allowed(talk: Path, tmp_path: Path, capsys) -> None:
    slow = [*FAKES, "-O", "synthesizer.latency=2", "--fragment-timeout", "0.2"]
    argv = ["dub", str(talk), "-o", str(tmp_path / "o.wav"), "--from", "en", "--to", "de", *slow]
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert "3 failed" in captured.out and "TIMEOUT" in captured.err and "--allow-failures" in captured.err
    assert (tmp_path / "o.wav").exists()  # the file is still whole, with silence where it failed
    assert main([*argv, "--allow-failures"]) == 0


def test_a_missing_translator_is_explained_before_any_model_loads(
    talk: Path, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch, no_deepl_key: None
) -> None:
    built = []

    class RecordingASR(stsdub.testing.FakeASR):
        def __init__(self, **kwargs):
            built.append(self)
            super().__init__(**kwargs)

    monkeypatch.setattr(stsdub.testing, "FakeASR", RecordingASR)
    out = tmp_path / "o.wav"
    assert main(["dub", str(talk), "-o", str(out), "--from", "en", "--to", "de", "--asr", "fake"]) == 2
    err = capsys.readouterr().err
    assert "DEEPL_AUTH_KEY" in err and "--translator ctranslate2 -O translator.model=" in err
    assert (
        main(["dub", str(talk), "-o", str(out), "--to", "de", "--translator", "deepl", "--asr", "fake"]) == 2
    )
    assert "DEEPL_AUTH_KEY" in capsys.readouterr().err
    assert main(["dub", str(talk), "-o", str(out), "--to", "de", "--translator", "ctranslate2"]) == 2
    assert "translator.model=PATH" in capsys.readouterr().err
    assert built == [] and not out.exists()


@pytest.mark.parametrize(
    ("argv", "environ", "expected"),
    [
        ((), {"DEEPL_AUTH_KEY": "k"}, "deepl"),
        (("-O", "translator.auth_key=k"), {}, "deepl"),
        (("--translator", "auto"), {"DEEPL_AUTH_KEY": "k"}, "deepl"),
        (("--translator", "fake"), {"DEEPL_AUTH_KEY": "k"}, "fake"),
        (("--from", "en", "--to", "EN-gb"), {"DEEPL_AUTH_KEY": "k"}, None),  # re-voicing
    ],
)
def test_translator_choice_follows_the_rule_the_service_shares(
    argv: tuple[str, ...], environ: dict[str, str], expected: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DEEPL_AUTH_KEY", raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    args = _build_parser().parse_args(["dub", "in.wav", "-o", "out.wav", "--to", "de", *argv])
    options = {name: value for kind, name, value in args.option if kind == "translator"}
    assert _choose_translator(args, options) == expected
    if not argv:
        # The service, with no translator named, picks the same one from the same environment.
        assert ServerSettings().chosen_translator() == expected


def test_no_translator_for_another_language_says_how_to_set_one_up(
    capsys, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DEEPL_AUTH_KEY", "k")
    argv = ["dub", str(tmp_path / "in.wav"), "-o", str(tmp_path / "o.wav"), "--from", "en", "--to", "de"]
    assert main([*argv, "--translator", "none"]) == 2
    err = capsys.readouterr().err
    assert "dubbing en into de needs a translator" in err and "DEEPL_AUTH_KEY" in err


def test_same_language_revoices_without_a_translator(talk: Path, tmp_path: Path, no_deepl_key: None) -> None:
    argv = [
        "dub",
        str(talk),
        "-o",
        str(tmp_path / "o.flac"),
        "--from",
        "en",
        "--to",
        "en-US",
        "--asr",
        "fake",
        "--synthesizer",
        "fake",
        "-q",
        "--subtitles",
        "vtt",
    ]
    assert main(argv) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.en.vtt", "o.flac"]


def missing(folder: Path) -> Path:
    return folder / "missing.wav"


def empty(folder: Path) -> Path:
    (folder / "empty.mp4").write_bytes(b"")
    return folder / "empty.mp4"


def junk(folder: Path) -> Path:
    (folder / "junk.wav").write_bytes(b"RIFF\x00\x00junk" * 99)
    return folder / "junk.wav"


@pytest.mark.parametrize(
    ("make", "message"), [(missing, "no such file"), (empty, "empty"), (junk, "corrupt")]
)
def test_bad_inputs_print_a_clear_error(make, message: str, tmp_path: Path, capsys) -> None:
    src = make(tmp_path)
    out = tmp_path / "out" / "o.wav"
    assert main(["dub", str(src), "-o", str(out), "--from", "en", "--to", "de", *FAKES]) == 2
    err = capsys.readouterr().err
    assert err.startswith("stsdub: error:") and message in err
    assert not out.parent.exists() or list(out.parent.iterdir()) == []


def test_video_without_sound_and_unwritable_outputs(talk: Path, tmp_path: Path, capsys) -> None:
    make_clip(tmp_path / "mute.mp4", None, 16000, seconds=1.0)
    assert (
        main(
            [
                "dub",
                str(tmp_path / "mute.mp4"),
                "-o",
                str(tmp_path / "o.mp4"),
                "--from",
                "en",
                "--to",
                "de",
                *FAKES,
            ]
        )
        == 2
    )
    assert "no audio stream" in capsys.readouterr().err
    (tmp_path / "blocker").write_text("")
    assert (
        main(
            [
                "dub",
                str(talk),
                "-o",
                str(tmp_path / "blocker" / "o.wav"),
                "--from",
                "en",
                "--to",
                "de",
                *FAKES,
            ]
        )
        == 2
    )
    assert "cannot write there" in capsys.readouterr().err
    assert main(["dub", str(talk), "-o", str(tmp_path / "o.mp3"), "--from", "en", "--to", "de", *FAKES]) == 2
    assert "unknown output format" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocker", "mute.mp4"]


def test_video_with_original_mixed_under(tmp_path: Path) -> None:
    samples, rate, _ = recording(SENTENCES[:2], pauses=0.8)
    make_clip(tmp_path / "clip.mp4", samples, rate)
    out = tmp_path / "dubbed.mkv"
    argv = [
        "dub",
        str(tmp_path / "clip.mp4"),
        "-o",
        str(out),
        "--from",
        "en",
        "--to",
        "de",
        *FAKES,
        "--original",
        "mix",
        "--segment",
        "fixed",
        "--subtitles",
        "none",
    ]
    assert main(argv) == 0
    assert streams(out) == [("video", "mpeg4"), ("audio", "aac")]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4", "dubbed.mkv"]
