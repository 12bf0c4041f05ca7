from __future__ import annotations

from stsdub._media import Cue, render
from stsdub._media._subtitles import to_srt, to_vtt


def test_srt_numbers_cues_and_uses_commas() -> None:
    text = to_srt([Cue(0.0, 1.5, "Hello."), Cue(3661.25, 3663.0, "Bye.")])
    assert text == "1\n00:00:00,000 --> 00:00:01,500\nHello.\n\n2\n01:01:01,250 --> 01:01:03,000\nBye.\n"


def test_vtt_has_a_header_and_uses_dots() -> None:
    text = to_vtt([Cue(0.0016, 2.0, "Hi")])
    assert text == "WEBVTT\n\n00:00:00.002 --> 00:00:02.000\nHi\n"


def test_text_that_would_break_the_format_is_cleaned() -> None:
    text = render([Cue(0, 1, "one\n\n  two --> three ")], "srt")
    # A blank line would end the cue early; an arrow would read as a timing line.
    assert "one\ntwo → three\n" in text
    assert text.count("-->") == 1


def test_empty_list_gives_empty_files() -> None:
    assert to_srt([]) == ""
    assert to_vtt([]) == "WEBVTT\n\n"
