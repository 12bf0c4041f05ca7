"""The ``xtts`` synthesizer on a tiny XTTS v2 model built with Coqui's own classes.

Every test runs Coqui's real code path (checkpoint loading, tokenizer, GPT generation, HiFi-GAN
decoding, voice conditioning); only the weights are random and the GPT is small.
"""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import pytest

pytest.importorskip("TTS", reason="needs stsdub[xtts]")
pytest.importorskip("torch", reason="needs stsdub[xtts]")

import soundfile
import torch

import stsdub
from stsdub import AudioBuffer, ErrorCode, Fragment, StageError, StageLoadError, SynthesisRequest
from stsdub._builtin.xtts import XTTSSynthesizer
from stsdub.testing import FakeASR, FakeTranslator, check_stage

from ..speech import SENTENCES, speak
from .tiny_xtts import LANGUAGES, build_tiny_xtts

pytestmark = pytest.mark.model

#: Generation cap for every test: keeps each synthesis well under a second on a CPU.
TOKENS = 24
#: Upper bound on samples for one sentence at speed 1: XTTS codes are 1024 samples at
#: 22.05 kHz, decoded at 24 kHz (one spare code for rounding).
MAX_SAMPLES = (TOKENS + 1) * 1024 * 24_000 // 22_050
TEXT = "Hello, welcome to the game."


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread() -> Iterator[None]:
    # On a small shared machine torch's intra-op threads spin against other processes and
    # make these tests several times slower; the tiny model gains nothing from them.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_xtts(tmp_path_factory.mktemp("tiny-xtts"))


@pytest.fixture(scope="session")
def voices_json(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A voices.json with two profiles whose clips lie next to it (relative paths)."""
    root = tmp_path_factory.mktemp("voices")
    (root / "clips").mkdir()
    for name, text in [
        ("a", "The weather is nice today."),
        ("b", "Please open the window."),
        ("guest", "Thank you very much for your help."),
    ]:
        samples, rate = speak(text)
        soundfile.write(root / "clips" / f"{name}.wav", samples, rate)
    profiles = {
        "narrator": {"reference_audio": ["clips/a.wav", "clips/b.wav"], "language": "en"},
        "guest": {"reference_audio": "clips/guest.wav", "language": "de"},
    }
    path = root / "voices.json"
    path.write_text(json.dumps(profiles), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def xtts(model_dir: Path, voices_json: Path) -> Iterator[XTTSSynthesizer]:
    stage = XTTSSynthesizer(model_dir=model_dir, voices=voices_json, max_audio_tokens=TOKENS)
    yield stage
    stage.close()


def _count_calls(monkeypatch: pytest.MonkeyPatch, obj: object, name: str) -> list[int]:
    """Wrap ``obj.name`` so every real call is counted (the call still runs)."""
    calls: list[int] = []
    original: Callable[..., Any] = getattr(obj, name)

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(obj, name, counted)
    return calls


def _request(text: str = TEXT, **kwargs: Any) -> SynthesisRequest:
    kwargs.setdefault("language", "en")
    return SynthesisRequest(text=text, **kwargs)


# -- loading ----------------------------------------------------------------------------------


def test_loads_the_model_directory(xtts: XTTSSynthesizer) -> None:
    assert xtts.languages == LANGUAGES
    assert xtts.sample_rate == 24_000
    assert xtts.voices[:2] == ("narrator", "guest")  # other tests add voices to this stage
    assert xtts.default_voice == "narrator"
    assert xtts.max_audio_tokens == TOKENS
    assert xtts.supports_speed is True
    assert xtts.concurrency == 1


def test_missing_model_dir_fails_at_construction(tmp_path: Path, voices_json: Path) -> None:
    with pytest.raises(StageLoadError, match="does not exist"):
        XTTSSynthesizer(model_dir=tmp_path / "nowhere", voices=voices_json)


def test_incomplete_model_dir_names_the_missing_files(
    tmp_path: Path, model_dir: Path, voices_json: Path
) -> None:
    shutil.copy(model_dir / "config.json", tmp_path / "config.json")
    with pytest.raises(StageLoadError, match=r"lacks model\.pth, vocab\.json"):
        XTTSSynthesizer(model_dir=tmp_path, voices=voices_json)


def test_model_by_name_offline_asks_for_a_local_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, voices_json: Path
) -> None:
    import huggingface_hub.constants

    # A fresh, empty cache and the Hub switched off: exactly a machine that cannot download.
    monkeypatch.setenv("TTS_HOME", str(tmp_path / "tts"))
    monkeypatch.setenv("COQUI_TOS_AGREED", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(StageLoadError, match="pass model_dir= with a local XTTS model directory"):
        XTTSSynthesizer(voices=voices_json)


def test_model_by_name_never_prompts_for_the_licence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, voices_json: Path
) -> None:
    monkeypatch.setenv("TTS_HOME", str(tmp_path / "tts"))
    monkeypatch.delenv("COQUI_TOS_AGREED", raising=False)
    with pytest.raises(StageLoadError, match="COQUI_TOS_AGREED=1"):
        XTTSSynthesizer(model="tts_models/multilingual/multi-dataset/xtts_v2", voices=voices_json)


def test_unknown_model_name(voices_json: Path) -> None:
    with pytest.raises(StageLoadError, match="not a Coqui model name"):
        XTTSSynthesizer(model="xtts-v9", voices=voices_json)


def test_voice_profile_errors_surface_at_construction(model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(StageLoadError, match="does not exist"):
        XTTSSynthesizer(model_dir=model_dir, voices={"x": {"reference_audio": [str(tmp_path / "no.wav")]}})
    (tmp_path / "bad.json").write_text('{"x": {"language": "en"}}', encoding="utf-8")
    with pytest.raises(StageLoadError, match="needs reference_audio"):
        XTTSSynthesizer(model_dir=model_dir, voices=tmp_path / "bad.json")
    samples, rate = speak("Turn left at the next corner.")
    soundfile.write(tmp_path / "c.wav", samples, rate)
    with pytest.raises(StageLoadError, match="language 'ja' is not one the model speaks"):
        XTTSSynthesizer(
            model_dir=model_dir, voices={"x": {"reference_audio": str(tmp_path / "c.wav"), "language": "ja"}}
        )
    with pytest.raises(StageLoadError, match="default_voice 'nobody'"):
        XTTSSynthesizer(model_dir=model_dir, reference_audio=tmp_path / "c.wav", default_voice="nobody")
    with pytest.raises(StageLoadError, match="pass voices="):
        XTTSSynthesizer(model_dir=model_dir)


# -- synthesis --------------------------------------------------------------------------------


def test_synthesizes_with_a_voice_profile(xtts: XTTSSynthesizer) -> None:
    audio = xtts.synthesize(_request(voice="narrator"))
    assert isinstance(audio, AudioBuffer)
    assert audio.sample_rate == 24_000
    assert audio.samples.dtype == np.float32 and audio.samples.ndim == 1
    assert 0 < audio.samples.size <= MAX_SAMPLES
    assert float(np.max(np.abs(audio.samples))) > 0


def test_speed_changes_the_length(xtts: XTTSSynthesizer) -> None:
    import torch

    # XTTS samples its audio codes: the same seed before each call gives the same codes, so
    # only the speed-scaled decoding differs.
    torch.manual_seed(7)
    normal = xtts.synthesize(_request())
    torch.manual_seed(7)
    slow = xtts.synthesize(_request(speed=0.5))
    torch.manual_seed(7)
    fast = xtts.synthesize(_request(speed=2.0))
    assert slow.samples.size <= 2 * MAX_SAMPLES
    assert slow.samples.size > 1.5 * normal.samples.size
    assert fast.samples.size < 0.75 * normal.samples.size


def test_regional_language_codes_map_to_the_model(xtts: XTTSSynthesizer) -> None:
    assert xtts.synthesize(_request(language="en-US")).samples.size > 0


def test_empty_text_is_invalid(xtts: XTTSSynthesizer) -> None:
    with pytest.raises(StageError) as info:
        xtts.synthesize(_request(text="  \n"))
    assert info.value.code is ErrorCode.INVALID_TEXT


def test_unsupported_language(xtts: XTTSSynthesizer) -> None:
    with pytest.raises(StageError) as info:
        xtts.synthesize(_request(language="ja"))
    assert info.value.code is ErrorCode.UNSUPPORTED_LANGUAGE
    assert "en, de, es, fr" in info.value.message


def test_unknown_voice(xtts: XTTSSynthesizer) -> None:
    with pytest.raises(StageError) as info:
        xtts.synthesize(_request(voice="villain"))
    assert info.value.code is ErrorCode.SYNTHESIS_FAILED
    assert "villain" in info.value.message and "narrator" in info.value.message


def test_inference_failure_is_synthesis_failed(model_dir: Path, voices_json: Path) -> None:
    # Without sentence splitting, text longer than the GPT's text positions is refused by Coqui.
    stage = XTTSSynthesizer(
        model_dir=model_dir, voices=voices_json, max_audio_tokens=TOKENS, enable_text_splitting=False
    )
    with pytest.raises(StageError) as info:
        stage.synthesize(_request(text="hello " * 300))
    assert info.value.code is ErrorCode.SYNTHESIS_FAILED
    assert "inference failed" in info.value.message


# -- conditioning latents ---------------------------------------------------------------------


def test_latents_are_computed_once_per_voice(
    xtts: XTTSSynthesizer, voices_json: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clips = voices_json.parent / "clips"
    xtts.add_voice("two-clips", [clips / "a.wav", clips / "b.wav"], language="en")
    xtts.add_voice("one-clip", [clips / "guest.wav"])
    gpt_calls = _count_calls(monkeypatch, xtts.model, "get_gpt_cond_latents")
    embedding_calls = _count_calls(monkeypatch, xtts.model, "get_speaker_embedding")
    before = xtts.cache_info()
    for voice in ["two-clips", "one-clip", "two-clips", "one-clip", "two-clips"]:
        xtts.synthesize(_request(voice=voice))
    assert len(gpt_calls) == 2  # one per voice
    assert len(embedding_calls) == 3  # one per reference clip: a.wav, b.wav, guest.wav
    after = xtts.cache_info()
    assert (after.hits - before.hits, after.misses - before.misses, after.size - before.size) == (3, 2, 2)


def test_latents_cache_is_thread_safe(
    xtts: XTTSSynthesizer, voices_json: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    xtts.add_voice("raced", [voices_json.parent / "clips" / "guest.wav"])
    gpt_calls = _count_calls(monkeypatch, xtts.model, "get_gpt_cond_latents")
    start = threading.Barrier(4)
    results: list[tuple[torch.Tensor, torch.Tensor]] = []

    def ask() -> None:
        start.wait()
        results.append(xtts._conditioning("raced"))

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(gpt_calls) == 1
    assert len(results) == 4 and all(r[0] is results[0][0] for r in results)


def test_add_voice_from_memory_replaces_cached_latents(xtts: XTTSSynthesizer) -> None:
    samples, rate = speak("The children are playing in the garden.")
    xtts.add_voice("speaker-1", [AudioBuffer(samples, rate)], language="en")
    first = xtts._conditioning("speaker-1")[1]
    xtts.add_voice("speaker-1", [AudioBuffer(np.ascontiguousarray(samples[::-1]), rate)])
    second = xtts._conditioning("speaker-1")[1]
    assert not torch.equal(first, second)
    assert xtts.synthesize(_request(voice="speaker-1")).samples.size > 0


def test_builtin_speakers_need_no_reference_audio(
    model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A model directory with a speakers_xtts.pth, as the released XTTS v2 ships.
    for name in ["config.json", "model.pth", "vocab.json"]:
        (tmp_path / name).symlink_to(model_dir / name)
    torch.manual_seed(1)
    speakers = {
        "Tiny Speaker": {
            "gpt_cond_latent": torch.randn(1, 32, 64),
            "speaker_embedding": torch.randn(1, 512, 1),
        }
    }
    torch.save(speakers, tmp_path / "speakers_xtts.pth")
    stage = XTTSSynthesizer(model_dir=tmp_path, max_audio_tokens=TOKENS)
    gpt_calls = _count_calls(monkeypatch, stage.model, "get_gpt_cond_latents")
    assert stage.voices == ("Tiny Speaker",) and stage.default_voice == "Tiny Speaker"
    assert stage.synthesize(_request()).samples.size > 0
    assert not gpt_calls
    assert torch.equal(stage._conditioning("Tiny Speaker")[0], speakers["Tiny Speaker"]["gpt_cond_latent"])


def test_warmup_caches_the_default_voice(model_dir: Path, voices_json: Path) -> None:
    stage = XTTSSynthesizer(
        model_dir=model_dir, voices=voices_json, default_voice="guest", max_audio_tokens=TOKENS
    )
    stage.warmup()
    assert stage.cache_info() == (0, 1, 1)
    stage.synthesize(_request(language="de"))
    assert stage.cache_info() == (1, 1, 1)


# -- contract and pipeline --------------------------------------------------------------------


def test_conforms_to_the_synthesizer_contract(xtts: XTTSSynthesizer) -> None:
    report = check_stage(xtts)
    assert report.ok and "synthesize(speed, no target)" in report.passed


@pytest.mark.anyio
async def test_dubber_end_to_end(model_dir: Path, voices_json: Path) -> None:
    samples, rate = speak("We will meet at the station tomorrow morning.")
    fragments = [Fragment(i, samples, rate) for i in range(2)]
    dubber = stsdub.Dubber(
        asr=FakeASR(),
        translator=None,
        synthesizer="xtts",
        synthesizer_options={
            "model_dir": str(model_dir),
            "voices": str(voices_json),
            "max_audio_tokens": TOKENS,
        },
        source_language="en",
        target_language="en",
        voice="guest",
        device="cpu",
        fragment_timeout=60.0,
    )
    async with dubber:
        stage = dubber.stages["synthesizer"]
        assert isinstance(stage, XTTSSynthesizer)
        results = [r async for r in dubber.dub(fragments)]
    assert [r.sequence_number for r in results] == [0, 1]
    for result in results:
        assert result.error is None, result.error
        assert (
            result.translation is not None and result.translation.text == f"speech {result.sequence_number}"
        )
        assert result.audio is not None and float(np.max(np.abs(result.audio.samples))) > 0
    # warmup computed the default voice (narrator); the stream's voice was computed once.
    assert stage.cache_info().misses == 2 and stage.cache_info().hits >= 1


# -- speakers cloned from their own speech ----------------------------------------------------


def _source(speaker: str, index: int) -> AudioBuffer:
    """Speaker ``A`` is the Piper voice; ``B`` the same speech played 20 % faster and higher,
    with a little noise: a different voice from a different recording."""
    samples, rate = speak(SENTENCES[index % len(SENTENCES)])
    if speaker == "A":
        return AudioBuffer(samples, rate)
    noisy = samples + np.random.default_rng(index).normal(0, 0.003, samples.size).astype(np.float32)
    return AudioBuffer(np.clip(noisy, -1.0, 1.0), int(rate * 1.2))


def _clone_request(speaker: str, index: int, **kwargs: Any) -> SynthesisRequest:
    # Distinct sequence numbers per speaker, so a reference tells whose fragments it holds.
    sequence = index if speaker == "A" else 100 + index
    return _request(
        speaker=speaker,
        source_audio=_source(speaker, index),
        stream_id="s1",
        sequence_number=sequence,
        fragment_id=f"{speaker}{index}",
        **kwargs,
    )


@pytest.fixture(scope="module")
def cloner(model_dir: Path, voices_json: Path) -> Iterator[XTTSSynthesizer]:
    stage = XTTSSynthesizer(
        model_dir=model_dir, voices=voices_json, max_audio_tokens=TOKENS, clone_speakers=True
    )
    yield stage
    stage.close()


def _inference_latents(monkeypatch: pytest.MonkeyPatch, stage: XTTSSynthesizer) -> list[torch.Tensor]:
    """Record the GPT latent every synthesis is conditioned on."""
    seen: list[torch.Tensor] = []
    original = stage.model.inference

    def inference(text: str, language: str, gpt_latent: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        seen.append(gpt_latent)
        return original(text, language, gpt_latent, *args, **kwargs)

    monkeypatch.setattr(stage.model, "inference", inference)
    return seen


def test_each_speaker_is_cloned_once_from_their_own_speech(
    model_dir: Path, voices_json: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from stsdub._builtin.xtts import CLONE_THRESHOLDS, _speech_clip

    stage = XTTSSynthesizer(
        model_dir=model_dir, voices=voices_json, max_audio_tokens=TOKENS, clone_speakers=True
    )
    assert stage.clones_speakers is True
    default = stage._conditioning(stage.default_voice)[0]
    gpt_calls = _count_calls(monkeypatch, stage.model, "get_gpt_cond_latents")
    embedded: list[torch.Tensor] = []
    original_embedding = stage.model.get_speaker_embedding

    def embedding(audio: torch.Tensor, rate: int) -> Any:
        embedded.append(audio)
        return original_embedding(audio, rate)

    monkeypatch.setattr(stage.model, "get_speaker_embedding", embedding)
    used = _inference_latents(monkeypatch, stage)

    # Where the builds must happen: the speech seconds each speaker has accumulated.
    heard = {"A": 0.0, "B": 0.0}
    expected_builds: list[tuple[str, int]] = []
    builds = {"A": 0, "B": 0}
    lines = [("A", i) for i in range(11)] + [("B", i) for i in range(7)]
    lines.sort(key=lambda line: line[1])  # interleaved: A0 B0 A1 B1 ...
    for speaker, index in lines:
        clip = _speech_clip(_source(speaker, index), 0)
        assert clip is not None
        heard[speaker] += clip.seconds
        if builds[speaker] < len(CLONE_THRESHOLDS) and heard[speaker] >= CLONE_THRESHOLDS[builds[speaker]]:
            expected_builds.append((speaker, index))
            builds[speaker] += 1
    assert heard["A"] >= 12.0 > heard["B"] >= 6.0, heard  # A is refreshed once, B built once

    actual_builds: list[tuple[str, int]] = []
    for speaker, index in lines:
        before = len(gpt_calls)
        request = _clone_request(speaker, index)
        stage.synthesize(request)
        stage.synthesize(attrs.evolve(request, speed=1.5))  # the same fragment again: not counted
        if len(gpt_calls) > before:
            assert len(gpt_calls) == before + 1
            actual_builds.append((speaker, index))
    assert actual_builds == expected_builds
    assert [s for s, _ in actual_builds].count("A") == 2 and [s for s, _ in actual_builds].count("B") == 1

    clone_a = stage._clones["s1"]["A"]
    clone_b = stage._clones["s1"]["B"]
    assert clone_a.reference_fragments and all(n < 100 for n in clone_a.reference_fragments)
    assert clone_b.reference_fragments and all(n >= 100 for n in clone_b.reference_fragments)
    # The clips A's last reference was embedded from are A's own speech, trimmed.
    a_clips = [_speech_clip(_source("A", n), n) for n in clone_a.reference_fragments]
    last_a = embedded[-len(a_clips) :] if actual_builds[-1][0] == "A" else None
    if last_a is None:  # B built last: A's clips are the ones before B's
        b_count = len(clone_b.reference_fragments)
        last_a = embedded[-b_count - len(a_clips) : -b_count]
    for tensor, clip in zip(last_a, a_clips, strict=True):
        assert clip is not None
        assert torch.allclose(tensor[0].cpu(), torch.from_numpy(clip.samples), atol=1e-6)

    # Lines before a speaker's first 6 s are spoken in the default voice, later ones cloned.
    assert clone_a.latents is not None and clone_b.latents is not None
    first = lines.index(expected_builds[0])
    assert first > 0 and all(latent is default for latent in used[: 2 * first])
    assert used[-2] is clone_a.latents[0] or used[-2] is clone_b.latents[0]

    # A voice the request names is kept.
    guest = stage._conditioning("guest")[0]
    used.clear()
    calls = len(gpt_calls)
    stage.synthesize(_clone_request("A", 11, voice="guest"))
    assert used == [guest] and len(gpt_calls) == calls


def test_clone_state_is_bounded(cloner: XTTSSynthesizer) -> None:
    from stsdub._builtin import xtts as module

    silent = AudioBuffer(np.zeros(2205, dtype=np.float32), 22_050)
    with cloner._lock:
        for stream in range(module._CLONE_MAX_STREAMS + 3):
            for speaker in range(module._CLONE_MAX_SPEAKERS + 2):
                clone = cloner._clone_state(f"stream-{stream}", f"S{speaker}")
                cloner._observe(clone, silent, _request(stream_id=f"stream-{stream}"))
    assert len(cloner._clones) == module._CLONE_MAX_STREAMS
    assert next(iter(cloner._clones)) == "stream-3"  # the least recently used went first
    assert all(len(speakers) == module._CLONE_MAX_SPEAKERS for speakers in cloner._clones.values())
    assert all(not c.clips and c.seconds == 0 for s in cloner._clones.values() for c in s.values())


def test_without_clone_speakers_nothing_changes(
    xtts: XTTSSynthesizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert xtts.clones_speakers is False
    xtts._conditioning(xtts.default_voice)
    gpt_calls = _count_calls(monkeypatch, xtts.model, "get_gpt_cond_latents")
    used = _inference_latents(monkeypatch, xtts)
    for index in range(5):
        xtts.synthesize(_clone_request("A", index))
    assert not gpt_calls and not xtts._clones
    assert all(latent is xtts._conditioning(xtts.default_voice)[0] for latent in used)


@pytest.mark.anyio
async def test_dubber_sends_speaker_and_source_audio(
    model_dir: Path, voices_json: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fragments = [Fragment(i, *speak(SENTENCES[i]), speaker="S1" if i % 2 == 0 else "S2") for i in range(4)]
    dubber = stsdub.Dubber(
        asr=FakeASR(),
        translator=FakeTranslator(),
        synthesizer="xtts",
        synthesizer_options={
            "model_dir": str(model_dir),
            "voices": str(voices_json),
            "max_audio_tokens": TOKENS,
            "clone_speakers": True,
        },
        source_language="en",
        target_language="de",
        device="cpu",
        fragment_timeout=60.0,
    )
    seen: list[SynthesisRequest] = []
    async with dubber:
        stage = dubber.stages["synthesizer"]
        assert isinstance(stage, XTTSSynthesizer) and stage.clones_speakers is True
        original = stage._speaker_latents

        def recording(request: SynthesisRequest) -> Any:
            seen.append(request)
            return original(request)

        monkeypatch.setattr(stage, "_speaker_latents", recording)
        results = [r async for r in dubber.dub(fragments)]
    assert [r.error for r in results] == [None] * 4
    assert [r.speaker for r in results] == ["S1", "S2", "S1", "S2"]
    by_fragment = {r.sequence_number: r for r in seen}
    assert sorted(by_fragment) == [0, 1, 2, 3]
    for number, request in by_fragment.items():
        fragment = fragments[number]
        assert request.speaker == fragment.speaker and request.voice is None
        assert request.source_audio is not None
        assert request.source_audio.sample_rate == fragment.sample_rate
        assert np.array_equal(request.source_audio.samples, fragment.audio)
