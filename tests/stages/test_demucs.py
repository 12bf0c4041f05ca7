"""The ``demucs`` separator on a tiny HT-Demucs built with Demucs's own classes.

Every test loads the model through Demucs's real loading code (``demucs.states.load_model``,
``demucs.pretrained.get_model`` with a local repository, ``demucs.hf.load_safetensors_model``
on files from a loopback Hub) and separates with ``demucs.apply.apply_model``; only the
weights are random, so the tests check the contract (rates, lengths, alignment, windows,
loading, errors), not the quality of the separation.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("demucs", reason="needs stsdub[separate]")
pytest.importorskip("torch", reason="needs stsdub[separate]")

import torch

import stsdub
from stsdub import AudioBuffer, SeparationRequest, StageLoadError
from stsdub._builtin.demucs import DemucsSeparator
from stsdub._models._demucs import fetch_demucs
from stsdub.testing import FakeASR, FakeSynthesizer, check_stage

from .hub_server import HubServer
from .test_models import hub  # noqa: F401  (the loopback Hub fixture)
from .tiny_demucs import TINY, build_tiny_htdemucs, hub_files, save_bag, save_checkpoint

pytestmark = pytest.mark.model


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    # On a loaded shared CPU, PyTorch's worker threads spin against each other and a tiny
    # model runs ten times slower than on one thread.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Demucs repository directory: one checkpoint and a bag ``tiny`` over it."""
    directory = tmp_path_factory.mktemp("demucs-repo")
    save_checkpoint(build_tiny_htdemucs(), directory, sig="0123abcd")
    save_bag(directory, "tiny", ["0123abcd"])
    return directory


@pytest.fixture(scope="module")
def checkpoint(repo: Path) -> Path:
    (path,) = repo.glob("0123abcd-*.th")
    return path


@pytest.fixture(scope="module")
def separator(checkpoint: Path) -> DemucsSeparator:
    return DemucsSeparator(model=str(checkpoint), shifts=0)


def _music_and_voice(seconds: float, rate: int) -> AudioBuffer:
    t = np.arange(round(seconds * rate)) / rate
    music = 0.2 * np.sin(2 * np.pi * 110 * t) + 0.1 * np.sin(2 * np.pi * 165 * t)
    voice = 0.3 * np.sin(2 * np.pi * 220 * t) * (np.sin(2 * np.pi * 2 * t) > 0)
    return AudioBuffer((music + voice).astype(np.float32), rate)


@pytest.mark.parametrize("rate", [16_000, 44_100, 48_000])
def test_tracks_keep_the_input_rate_and_length(separator: DemucsSeparator, rate: int) -> None:
    audio = _music_and_voice(1.3, rate)
    result = separator.separate(SeparationRequest(audio=audio))
    assert result.aligned_with(audio)
    for track in (result.voice, result.background):
        assert track.samples.dtype == np.float32
        assert np.all(np.isfinite(track.samples))
        assert np.max(np.abs(track.samples)) <= 1.0
    # The background is the input without the voice: nothing else is lost.
    assert np.allclose(result.voice.samples + result.background.samples, audio.samples, atol=1e-6)
    assert float(np.max(np.abs(result.voice.samples))) > 0


def test_silence_is_all_background(separator: DemucsSeparator) -> None:
    audio = AudioBuffer.silence(0.5, 16_000)
    result = separator.separate(SeparationRequest(audio=audio))
    assert result.aligned_with(audio)
    assert not np.any(result.voice.samples)
    empty = AudioBuffer(np.zeros(0, np.float32), 16_000)
    assert separator.separate(SeparationRequest(audio=empty)).aligned_with(empty)


def test_conformance(separator: DemucsSeparator) -> None:
    report = check_stage(separator)
    assert report.kind == "separator"
    assert len(report.passed) == 3


def test_windows_agree_with_the_whole_file(checkpoint: Path) -> None:
    # Windows of 4 s overlapping by 1 s: the second starts at 3 s, a whole number of
    # Demucs's own segment strides (0.75 s) and of the 16 kHz ↔ 44.1 kHz resampling period,
    # so away from the crossfade both runs see the same segments.
    audio = _music_and_voice(7.0, 16_000)
    whole = DemucsSeparator(model=str(checkpoint), shifts=0, window=60.0)
    windowed = DemucsSeparator(model=str(checkpoint), shifts=0, window=4.0, window_overlap=1.0)
    a = whole.separate(SeparationRequest(audio=audio)).voice.samples
    b = windowed.separate(SeparationRequest(audio=audio)).voice.samples
    rate = audio.sample_rate
    outside = np.r_[0 : round(2.9 * rate), round(4.1 * rate) : a.size]
    scale = float(np.max(np.abs(a)))
    assert np.max(np.abs(a[outside] - b[outside])) <= 1e-3 * scale
    # Across the crossfade they differ (each window saw less context) but stay close.
    assert np.sqrt(np.mean((a - b) ** 2)) <= 0.1 * np.sqrt(np.mean(a**2))


def test_local_models_load_the_ways_demucs_reads_them(repo: Path, checkpoint: Path) -> None:
    audio = _music_and_voice(0.5, 44_100)
    reference = DemucsSeparator(model=checkpoint, shifts=0).separate(SeparationRequest(audio=audio))
    for options in (
        {"model": str(repo / "tiny.yaml")},  # a bag file next to its checkpoints
        {"model": "tiny", "repo": str(repo)},  # demucs --repo DIR -n tiny
        {"model": "0123abcd", "repo": repo},  # a checkpoint by its signature
        {"model": str(repo), "model_name": "tiny"},  # a directory and a name in it
    ):
        stage = DemucsSeparator(shifts=0, **options)  # type: ignore[arg-type]
        assert stage.sources == ("drums", "bass", "other", "vocals")
        assert stage.sample_rate == 44_100
        got = stage.separate(SeparationRequest(audio=audio))
        assert np.allclose(got.voice.samples, reference.voice.samples, atol=1e-6), options


def test_of_a_fine_tuned_bag_only_the_voice_model_runs(tmp_path: Path) -> None:
    # As htdemucs_ft: one model per source, one-hot weights.
    save_checkpoint(build_tiny_htdemucs(seed=2), tmp_path, sig="aaaa0000")
    voice_model = save_checkpoint(build_tiny_htdemucs(seed=3), tmp_path, sig="bbbb1111")
    bag = save_bag(tmp_path, "ft", ["aaaa0000", "bbbb1111"], weights=[[1, 1, 1, 0], [0, 0, 0, 1]])
    stage = DemucsSeparator(model=str(bag), shifts=0)
    assert len(stage.model.models) == 1
    audio = _music_and_voice(0.5, 44_100)
    alone = DemucsSeparator(model=str(voice_model), shifts=0).separate(SeparationRequest(audio=audio))
    got = stage.separate(SeparationRequest(audio=audio))
    assert np.allclose(got.voice.samples, alone.voice.samples, atol=1e-6)


def test_a_directory_of_several_models_needs_a_name(repo: Path) -> None:
    with pytest.raises(StageLoadError, match="0123abcd, tiny"):
        DemucsSeparator(model=str(repo))


def test_bad_paths_and_options_fail_at_load(tmp_path: Path, checkpoint: Path) -> None:
    with pytest.raises(StageLoadError, match="no model file"):
        DemucsSeparator(model=str(tmp_path / "missing.th"))
    with pytest.raises(StageLoadError, match="not a directory"):
        DemucsSeparator(model="htdemucs", repo=tmp_path / "nowhere")
    with pytest.raises(StageLoadError, match="htdemucs"):
        DemucsSeparator(model="htdemucs", repo=tmp_path)  # an empty repository
    with pytest.raises(StageLoadError, match="window_overlap"):
        DemucsSeparator(model=str(checkpoint), window=2.0, window_overlap=1.0)
    with pytest.raises(StageLoadError, match="shifts"):
        DemucsSeparator(model=str(checkpoint), shifts=-1)


def test_a_model_without_vocals_is_refused(tmp_path: Path) -> None:
    from demucs.htdemucs import HTDemucs

    torch.manual_seed(0)
    model = HTDemucs(sources=["drums", "bass", "other"], **TINY)
    path = save_checkpoint(model, tmp_path)
    with pytest.raises(StageLoadError, match="no 'vocals' source"):
        DemucsSeparator(model=str(path))


def test_offline_and_not_cached_says_to_download_on_a_connected_machine(tmp_path: Path) -> None:
    with pytest.raises(StageLoadError) as caught:
        DemucsSeparator(model="htdemucs_ft", download_root=tmp_path, local_files_only=True)
    message = str(caught.value)
    assert "demucs model 'htdemucs_ft'" in message
    assert "not cached" in message
    assert "stsdub models pull demucs htdemucs_ft" in message
    assert "on a machine that can reach the Hugging Face Hub" in message


def test_a_named_model_comes_from_the_hub_once_then_from_the_cache(
    hub: HubServer,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = build_tiny_htdemucs(seed=1)
    hub.add_repo("adefossez/HTDemucs", hub_files(model, "htdemucs", sig="955717e8"))
    audio = _music_and_voice(0.5, 16_000)
    stage = DemucsSeparator(shifts=0)  # model="htdemucs", Demucs's default
    first = stage.separate(SeparationRequest(audio=audio))
    downloads = hub.downloads()
    assert any(p.endswith("/htdemucs.yaml") for p in downloads)
    assert len(downloads) >= 2  # the bag and its weights (through the LFS address)

    # Offline now: the cached files load, without a single request.
    hub.clear_requests()
    from huggingface_hub import constants as hf_constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    again = DemucsSeparator(shifts=0).separate(SeparationRequest(audio=audio))
    assert hub.recorded() == []
    assert np.allclose(first.voice.samples, again.voice.samples, atol=1e-6)
    yaml_file, weights = fetch_demucs("htdemucs", local_files_only=True)
    assert yaml_file.name == "htdemucs.yaml"
    assert [w.name for w in weights] == ["955717e8.safetensors"]


@pytest.mark.anyio
async def test_the_dubber_loads_demucs_by_name(checkpoint: Path) -> None:
    dubber = stsdub.Dubber(
        asr=FakeASR(),
        translator=None,
        synthesizer=FakeSynthesizer(),
        target_language="en",
        device="cpu",
        separator="demucs",
        separator_options={"model": str(checkpoint), "shifts": 0},
    )
    audio = _music_and_voice(0.8, 22_050)
    async with dubber:
        assert isinstance(dubber.separator, DemucsSeparator)
        result = await dubber.separate(audio)
    assert result.aligned_with(audio)
    assert dubber.separator is None  # closed with the Dubber


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_agrees_with_cpu(checkpoint: Path) -> None:
    audio = _music_and_voice(1.0, 44_100)
    cpu = DemucsSeparator(model=str(checkpoint), shifts=0).separate(SeparationRequest(audio=audio))
    gpu = DemucsSeparator(model=str(checkpoint), shifts=0, device="cuda").separate(
        SeparationRequest(audio=audio)
    )
    assert np.allclose(cpu.voice.samples, gpu.voice.samples, atol=1e-3)
