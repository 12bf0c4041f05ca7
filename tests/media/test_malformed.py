"""Corrupt media files: each is dubbed or refused with a MediaInputError; none crashes or hangs.

Truncated, bit-flipped, zeroed, spliced and otherwise damaged WAV, FLAC, MP3, Opus, M4A, MP4
and WebM files go through ``Dubber.dub_file`` in a child process (tests/media/mutants.py),
so a segfault or a hang in FFmpeg fails this test instead of killing or stalling the run.
The mutants are seeded; ``STSDUB_MUTANT_SEED`` and ``STSDUB_MUTANTS`` change the seed and
the count of a run.
"""

from __future__ import annotations

import io
from collections import Counter
from pathlib import Path

import pytest

from stsdub import MediaInputError
from stsdub._media import probe, read_audio
from tests.media import mutants


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    pytest.importorskip("av")
    return mutants.make_sources(tmp_path_factory.mktemp("sources"))


def _report(mutant: mutants.Mutant, outcome: mutants.Outcome) -> str:
    message = " ".join(outcome.message.split())[:400]
    where = f" [{outcome.where}]" if outcome.where else ""
    return f"  {mutant.describe()}: {outcome.kind}: {outcome.type}: {message}{where}"


# Writing the 1600 mutants and dubbing them take about 20 s on two busy cores; the rest of the
# limit is headroom for a slow machine (each hang costs HANG_SECONDS).
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_corrupt_files_are_dubbed_or_refused_with_a_media_input_error(
    sources: dict[str, bytes], tmp_path: Path
) -> None:
    seed, count = mutants.run_settings()
    made = mutants.make_mutants(sources, tmp_path / "mutants", count, seed)
    outcomes = mutants.run_battery(made, tmp_path / "mutants")
    assert sorted(outcomes) == [m.index for m in made]

    # The untouched sources must dub, or the battery proves nothing about their mutants.
    broken = [
        _report(m, outcomes[m.index])
        for m in made
        if m.mutation == "none" and outcomes[m.index].kind != "dubbed"
    ]
    assert not broken, "valid source files did not dub:\n" + "\n".join(broken)

    bad = [_report(m, outcomes[m.index]) for m in made if not outcomes[m.index].ok]
    assert not bad, (
        f"{len(bad)} of {len(made)} inputs were neither dubbed nor refused with a MediaInputError"
        f" that names the file (seed {seed}: {mutants.SEED_ENV}={seed} {mutants.COUNT_ENV}={count};"
        f" `python -m tests.media.mutants make DIR --seed {seed} --count {count}` writes the files):\n"
        + "\n".join(bad)
    )

    # It tested what it claims: every container and every mutation, each container refused.
    spread = Counter((m.source, outcomes[m.index].kind) for m in made if m.mutation != "none")
    for source in mutants.SOURCES:
        assert spread[source.name, "refused"] > 0, source.name
        assert spread[source.name, "refused"] + spread[source.name, "dubbed"] >= count // 10
    assert {m.mutation for m in made} == {"none", *mutants.MUTATIONS}
    assert sum(m.write for m in made) >= count // 5


@pytest.mark.slow
def test_the_battery_survives_a_crash_and_a_hang(sources: dict[str, bytes], tmp_path: Path) -> None:
    """The harness itself: a segfault and a hang are blamed on their mutant, the rest still run."""
    made = mutants.selftest_mutants(sources, tmp_path / "mutants")
    outcomes = mutants.run_battery(made, tmp_path / "mutants", hang_seconds=5)
    kinds = [outcomes[m.index].kind for m in made]
    assert kinds == ["dubbed", "crash", "dubbed", "hang", "dubbed"]
    crash = outcomes[made[1].index]
    assert crash.type == "killed by SIGSEGV" and "Segmentation fault" in crash.message
    assert "_dub" in crash.message  # the child's traceback, from faulthandler


# What the battery found, one file each.


def test_tags_that_are_not_utf8_do_not_make_a_file_unreadable(
    sources: dict[str, bytes], tmp_path: Path
) -> None:
    # PyAV decoded tags as strict UTF-8 while opening: UnicodeDecodeError for a Latin-1 title.
    path = tmp_path / "latin1.wav"
    path.write_bytes(sources["wav"].replace("ë".encode(), b"\xeb!"))  # same length: chunks stay whole
    with mutants.fake_dubber() as dubber:
        dubbed = dubber.dub_file(path, segmentation="fixed", subtitles=())
    assert dubbed.duration == pytest.approx(1.5)


def test_an_audio_codec_ffmpeg_does_not_know_is_an_input_error(
    sources: dict[str, bytes], tmp_path: Path
) -> None:
    # PyAV's codec_context is None then: AttributeError on its sample_rate.
    path = tmp_path / "unknown-audio.webm"
    path.write_bytes(sources["webm-vp8-opus"].replace(b"A_OPUS", b"A_ZZZZ"))
    with pytest.raises(MediaInputError, match="no decoder for its audio stream") as info:
        probe(path)
    assert path.name in str(info.value)


def test_a_picture_codec_ffmpeg_does_not_know_is_an_input_error_for_video_output_only(
    sources: dict[str, bytes], tmp_path: Path
) -> None:
    # The same None codec context, of the picture: AttributeError on its name.
    path = tmp_path / "unknown-picture.webm"
    path.write_bytes(sources["webm-vp8-opus"].replace(b"V_VP8", b"V_ZZZ"))
    assert probe(path).video_codecs == ("unknown",)
    with mutants.fake_dubber() as dubber:
        dubber.dub_file(path, tmp_path / "sound.wav", segmentation="fixed", subtitles=())
        with pytest.raises(MediaInputError, match="no codec for its picture stream") as info:
            dubber.dub_file(path, tmp_path / "film.mkv", segmentation="fixed", subtitles=())
    assert path.name in str(info.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sound.wav", path.name]


def test_audio_whose_sample_rate_changes_midway_is_decoded_whole(tmp_path: Path) -> None:
    # PyAV's resampler raised ValueError at the first frame of the new rate.
    import av

    def mp3(rate: int) -> bytes:
        buffer = io.BytesIO()
        # No ID3 tag or Xing header: two bare MP3 streams joined are one that changes rate.
        options = {"id3v2_version": "0", "write_xing": "0"}
        with av.open(buffer, "w", format="mp3", container_options=options) as out:
            stream = out.add_stream("libmp3lame", rate=rate, layout="mono")
            frame = av.AudioFrame.from_ndarray(
                mutants._tone(rate).reshape(1, -1), format="fltp", layout="mono"
            )
            frame.sample_rate = rate
            frame.pts = 0
            out.mux(stream.encode(frame))
            out.mux(stream.encode(None))
        return buffer.getvalue()

    path = tmp_path / "joined.mp3"
    path.write_bytes(mp3(22_050) + mp3(16_000))
    source = read_audio(path)
    assert source.sample_rate == 22_050
    assert source.duration == pytest.approx(3.0, abs=0.2)


def test_a_picture_whose_timestamps_go_back_is_an_input_error(
    sources: dict[str, bytes], tmp_path: Path
) -> None:
    # The muxer refused the copied packet, and that was reported as an output error naming the
    # hidden temporary file: "cannot write matroska ... a Matroska output (.mkv) carries ...".
    data = sources["webm-vp8-opus"]
    clusters = data.find(bytes.fromhex("1F43B675"))  # the Matroska Cluster element
    path = tmp_path / "twice.webm"
    path.write_bytes(data + data[clusters:])  # every picture again, from time 0
    with mutants.fake_dubber() as dubber, pytest.raises(MediaInputError, match="corrupt") as info:
        dubber.dub_file(path, tmp_path / "film.mkv", segmentation="fixed", subtitles=())
    assert path.name in str(info.value) and ".part" not in str(info.value).split("(")[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]
