"""The ``ctranslate2`` translator on tiny models built and converted in the test session."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

import stsdub
from stsdub import ErrorCode, StageError, StageLoadError, Translation, TranslationRequest
from stsdub._builtin.ctranslate2 import CTranslate2Translator, nllb_code
from stsdub.testing import FakeASR, FakeSynthesizer, check_plugin, check_stage

from .tiny_marian import build_tiny_marian

pytestmark = pytest.mark.model

# The tiny model knows 64 positions; short outputs also keep the tests fast.
OPTIONS = {"max_decoding_length": 12, "beam_size": 2}


@pytest.fixture(scope="session")
def marian_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_marian(tmp_path_factory.mktemp("tiny-marian"))


@pytest.fixture(scope="session")
def nllb_like_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Language tokens in the vocabulary are what marks an NLLB model for the stage.
    return build_tiny_marian(
        tmp_path_factory.mktemp("tiny-nllb"), extra_tokens=("eng_Latn", "deu_Latn", "fra_Latn"), seed=1
    )


@pytest.fixture
def marian(marian_dir: Path) -> CTranslate2Translator:
    stage = CTranslate2Translator(device="cpu", model=marian_dir, **OPTIONS)
    yield stage
    stage.close()


def request(text: str, target: str = "de", source: str | None = "en", seq: int = 0) -> TranslationRequest:
    return TranslationRequest(text=text, source_language=source, target_language=target, sequence_number=seq)


def reference(
    model_dir: Path, texts: Sequence[str], prefix: Sequence[str] = (), first: Sequence[str] = ()
) -> list[str]:
    """What the model says when driven by hand, the way the CTranslate2 docs show for Opus-MT."""
    import ctranslate2
    import sentencepiece as spm

    source = spm.SentencePieceProcessor(model_file=str(model_dir / "source.spm"))
    target = spm.SentencePieceProcessor(model_file=str(model_dir / "target.spm"))
    translator = ctranslate2.Translator(str(model_dir), device="cpu", compute_type="int8")
    out = []
    for text in texts:
        tokens = [*first, *source.encode(text, out_type=str), "</s>"]
        result = translator.translate_batch(
            [tokens], target_prefix=[list(prefix)] if prefix else None, beam_size=2, max_decoding_length=12
        )[0]
        hyp = result.hypotheses[0][len(prefix) :]
        out.append(target.decode_pieces([t for t in hyp if t not in ("</s>", "<unk>")]).strip())
    return out


def test_translates_through_the_real_model_path(marian: CTranslate2Translator, marian_dir: Path) -> None:
    assert marian.model_type == "marian"
    assert marian.compute_type == "int8"  # the CPU default
    result = marian.translate(request("Hello, welcome to the game."))
    assert isinstance(result, Translation)
    assert result.text
    assert result.text == reference(marian_dir, ["Hello, welcome to the game."])[0]


def test_batch_matches_single_requests_and_skips_empty_text(marian: CTranslate2Translator) -> None:
    texts = ["Good evening.", "", "The weather is nice today.", "Please open the window."]
    batch = marian.translate_batch([request(t, seq=i) for i, t in enumerate(texts)])
    singles = [marian.translate(request(t, seq=i)) for i, t in enumerate(texts)]
    assert batch == singles
    assert batch[1] == Translation("")


def test_unsupported_pair_fails_only_its_own_request(marian_dir: Path) -> None:
    stage = CTranslate2Translator(device="cpu", model=marian_dir, language_pair=("en", "de"), **OPTIONS)
    try:
        results = stage.translate_batch(
            [request("Good evening."), request("Good evening.", target="fr"), request("Hi", source="es-MX")]
        )
        assert isinstance(results[0], Translation) and results[0].text
        for err in results[1:]:
            assert isinstance(err, StageError)
            assert err.code is ErrorCode.UNSUPPORTED_LANGUAGE
            assert not err.retryable
        # A regional tag of the right language is the same language.
        assert isinstance(
            stage.translate(request("Good evening.", target="de-AT", source="en-GB")), Translation
        )
        with pytest.raises(StageError) as info:
            stage.translate(request("Good evening.", target="fr"))
        assert info.value.code is ErrorCode.UNSUPPORTED_LANGUAGE
    finally:
        stage.close()


def test_nllb_path_uses_language_tokens(nllb_like_dir: Path) -> None:
    stage = CTranslate2Translator(device="cpu", model=nllb_like_dir, **OPTIONS)
    try:
        assert stage.model_type == "nllb"
        got = stage.translate_batch([request("Good evening."), request("Good evening.", target="fr")])
        want_de = reference(nllb_like_dir, ["Good evening."], prefix=["deu_Latn"], first=["eng_Latn"])[0]
        want_fr = reference(nllb_like_dir, ["Good evening."], prefix=["fra_Latn"], first=["eng_Latn"])[0]
        assert got == [Translation(want_de), Translation(want_fr)]
        # Not in the model's vocabulary, unknown to the table, or no source language at all.
        for bad in (request("Hi", target="es"), request("Hi", target="xx"), request("Hi", source=None)):
            with pytest.raises(StageError) as info:
                stage.translate(bad)
            assert info.value.code is ErrorCode.UNSUPPORTED_LANGUAGE
    finally:
        stage.close()


@pytest.mark.parametrize(
    ("tag", "code"),
    [
        ("en", "eng_Latn"),
        ("de", "deu_Latn"),
        ("pt-BR", "por_Latn"),
        ("zh", "zho_Hans"),
        ("zh-TW", "zho_Hant"),
        ("zh_Hant", "zho_Hant"),
        ("no", "nob_Latn"),
        ("fra_Latn", "fra_Latn"),
        ("xx", None),
    ],
)
def test_nllb_codes(tag: str, code: str | None) -> None:
    assert nllb_code(tag) == code


def test_missing_model_directory_fails_at_construction(tmp_path: Path) -> None:
    with pytest.raises(StageLoadError, match="does not exist"):
        CTranslate2Translator(device="cpu", model=tmp_path / "nowhere")
    with pytest.raises(StageLoadError, match=r"no model\.bin"):
        CTranslate2Translator(device="cpu", model=tmp_path)


def test_missing_tokenizer_fails_at_construction(marian_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(StageLoadError, match="no tokenizer"):
        CTranslate2Translator(device="cpu", model=marian_dir, tokenizer=tmp_path)
    # An explicit SentencePiece file works for both sides.
    stage = CTranslate2Translator(
        device="cpu", model=marian_dir, tokenizer=marian_dir / "source.spm", **OPTIONS
    )
    try:
        assert stage.translate(request("Good evening.")).text
    finally:
        stage.close()


def test_broken_model_fails_at_construction(tmp_path: Path) -> None:
    (tmp_path / "model.bin").write_bytes(b"not a model")
    (tmp_path / "source.spm").write_bytes(b"")
    with pytest.raises(StageLoadError):
        CTranslate2Translator(device="cpu", model=tmp_path)


@pytest.mark.anyio
async def test_missing_model_fails_at_dubber_start(tmp_path: Path) -> None:
    dubber = stsdub.Dubber(
        asr=FakeASR(),
        translator="ctranslate2",
        translator_options={"model": str(tmp_path / "nowhere")},
        synthesizer=FakeSynthesizer(),
        target_language="de",
        device="cpu",
    )
    with pytest.raises(StageLoadError, match="does not exist"):
        async with dubber:
            pass


class RecordingTranslator(CTranslate2Translator):
    """The real stage, noting the size of every batch the pipeline hands it."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.batch_sizes: list[int] = []

    def translate_batch(self, requests: Sequence[TranslationRequest]) -> list[Translation | StageError]:
        self.batch_sizes.append(len(requests))
        return super().translate_batch(requests)


def _fragment(seq: int) -> stsdub.Fragment:
    t = np.arange(16_000, dtype=np.float32) / 16_000
    return stsdub.Fragment(seq, (0.3 * np.sin(2 * np.pi * 200 * t)).astype(np.float32), 16_000)


@pytest.mark.anyio
async def test_pipeline_batches_across_streams(marian_dir: Path) -> None:
    import anyio

    stage = RecordingTranslator(device="cpu", model=marian_dir, **OPTIONS)
    streams, per_stream = 6, 3
    dubber = stsdub.Dubber(
        asr=FakeASR(text=lambda r: "Good evening."),
        translator=stage,
        synthesizer=FakeSynthesizer(),
        target_language="de",
        device="cpu",
        fragment_timeout=60.0,
    )
    expected = stage.translate(request("Good evening.")).text
    stage.batch_sizes.clear()
    results: dict[str, list[stsdub.DubResult]] = {}
    async with dubber:

        async def run(name: str) -> None:
            async with dubber.open_stream(name) as stream:
                for seq in range(per_stream):
                    await stream.send(_fragment(seq))
                await stream.end()
                results[name] = [r async for r in stream]

        async with anyio.create_task_group() as tg:
            for i in range(streams):
                tg.start_soon(run, f"s{i}")
    stage.close()
    for got in results.values():
        assert [r.sequence_number for r in got] == list(range(per_stream))
        assert all(r.status is stsdub.Status.SUCCESS for r in got), got
        assert all(r.translation is not None and r.translation.text == expected for r in got)
    assert sum(stage.batch_sizes) == streams * per_stream
    assert max(stage.batch_sizes) > 1, stage.batch_sizes
    assert len(stage.batch_sizes) < streams * per_stream


def test_check_stage(marian: CTranslate2Translator) -> None:
    report = check_stage(marian)
    assert report.ok
    assert "translate_batch" in report.passed


def test_check_plugin_by_name(marian_dir: Path) -> None:
    report = check_plugin("translator", "ctranslate2", model=str(marian_dir), **OPTIONS)
    assert report.ok


# -- length budgets: n-best hypotheses ---------------------------------------------------------


def n_best(model_dir: Path, text: str, n: int = 4) -> list[str]:
    """The model's n best hypotheses, driven by hand as the CTranslate2 docs show."""
    import ctranslate2
    import sentencepiece as spm

    source = spm.SentencePieceProcessor(model_file=str(model_dir / "source.spm"))
    target = spm.SentencePieceProcessor(model_file=str(model_dir / "target.spm"))
    translator = ctranslate2.Translator(str(model_dir), device="cpu", compute_type="int8")
    result = translator.translate_batch(
        [[*source.encode(text, out_type=str), "</s>"]],
        beam_size=n,
        num_hypotheses=n,
        max_decoding_length=12,
        return_scores=True,
    )[0]
    return [
        target.decode_pieces([t for t in h if t not in ("</s>", "<unk>")]).strip() for h in result.hypotheses
    ]


def test_a_length_budget_picks_the_best_hypothesis_that_fits(
    marian: CTranslate2Translator, marian_dir: Path
) -> None:
    assert marian.supports_length_budget is True
    text = "We will meet at the station tomorrow morning."
    hypotheses = n_best(marian_dir, text)
    assert len(hypotheses) == 4
    plain = marian.translate(request(text)).text
    floor = marian.min_length_ratio * len(hypotheses[0])
    adequate = [h for h in hypotheses if h and len(h) >= floor]
    for max_chars in sorted({len(h) for h in adequate}):
        budget = stsdub.stages.LengthBudget(max_chars=max_chars, seconds=1.0)
        chosen = marian.translate(
            TranslationRequest(text=text, source_language="en", target_language="de", budget=budget)
        ).text
        fitting = [h for h in adequate if len(h) <= max_chars]
        assert chosen == fitting[0]  # the best-scored of those that fit
    # A budget nothing meets: the shortest adequate hypothesis, never a fragment of one.
    budget = stsdub.stages.LengthBudget(max_chars=1, seconds=0.1)
    chosen = marian.translate(
        TranslationRequest(text=text, source_language="en", target_language="de", budget=budget)
    ).text
    assert chosen == min(adequate, key=len) and len(chosen) >= floor
    # Without a budget, nothing changes.
    assert marian.translate(request(text)).text == plain


def test_budgeted_and_plain_requests_share_a_batch(marian: CTranslate2Translator) -> None:
    budget = stsdub.stages.LengthBudget(max_chars=5, seconds=0.5)
    requests = [
        request("Good evening.", seq=0),
        TranslationRequest(
            text="The children are playing in the garden.",
            source_language="en",
            target_language="de",
            sequence_number=1,
            budget=budget,
        ),
        request("", seq=2),
        request("Please open the window.", seq=3),
    ]
    results = marian.translate_batch(requests)
    assert [isinstance(r, Translation) for r in results] == [True] * 4
    assert results[0].text == marian.translate(request("Good evening.")).text
    assert results[2].text == ""
    assert results[3].text == marian.translate(request("Please open the window.")).text
