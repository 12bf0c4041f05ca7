"""The ``llm`` translator: the real ``openai`` client against an OpenAI-compatible loopback server."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

import stsdub
from stsdub import ErrorCode, StageError, StageLoadError, Status, TranslationRequest
from stsdub._builtin.llm import LLMTranslator, clean_answer, language_name
from stsdub.stages import LengthBudget
from stsdub.testing import FakeASR, FakeSynthesizer, check_stage

from .openai_server import OpenAIServer, openai_server

MakeStage = Callable[..., LLMTranslator]


@pytest.fixture
def server() -> Iterator[OpenAIServer]:
    with openai_server() as state:
        yield state


@pytest.fixture
def make(server: OpenAIServer) -> Iterator[MakeStage]:
    built: list[LLMTranslator] = []

    def build(**options: Any) -> LLMTranslator:
        settings = {
            "model": "test-model",
            "base_url": server.url,
            "api_key": server.api_key,
            "timeout": 2.0,
            **options,
        }
        stage = LLMTranslator(device="cpu", **settings)
        built.append(stage)
        return stage

    yield build
    for stage in built:
        stage.close()


def request(text: str = "Hello there, my friend.", target: str = "es", **kwargs: Any) -> TranslationRequest:
    kwargs.setdefault("source_language", "en")
    return TranslationRequest(text=text, target_language=target, **kwargs)


def fragment(seq: int) -> stsdub.Fragment:
    t = np.arange(8_000, dtype=np.float32) / 16_000
    return stsdub.Fragment(seq, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 16_000)


# -- the contract and the prompt -----------------------------------------------------------


def test_check_stage(make: MakeStage) -> None:
    report = check_stage(make())
    assert report.ok and "translate_batch" in report.passed


@pytest.mark.anyio
async def test_translates_through_the_chat_endpoint(make: MakeStage, server: OpenAIServer) -> None:
    stage = make(temperature=0.0)
    result = await stage.translate(request("Good evening."))
    assert result.text == "<translated> Good evening."
    (sent,) = server.chat_requests()
    assert sent.body["model"] == "test-model" and sent.body["temperature"] == 0.0
    assert sent.headers["authorization"] == "Bearer test-key"
    assert "from English into Spanish" in sent.system
    assert sent.user.endswith("Translate this line into Spanish:\nGood evening.")


@pytest.mark.anyio
async def test_context_glossary_and_instructions_are_in_the_prompt(
    make: MakeStage, server: OpenAIServer
) -> None:
    stage = make(glossary={"Bayern": "el Bayern", "pitch": "cancha"}, instructions="Use the informal tú.")
    await stage.translate(
        request("Bayern scores again!", previous_text="What a pass.", previous_translation="¡Qué pase!")
    )
    (sent,) = server.chat_requests()
    assert "- Bayern → el Bayern" in sent.system
    assert "pitch" not in sent.system  # only the terms that occur in the line
    assert "Use the informal tú." in sent.system
    assert "English: What a pass.\nSpanish: ¡Qué pase!" in sent.user
    assert "do not translate it again" in sent.user
    # Without context, the previous line stays out.
    await make(context=False).translate(request("Again.", previous_text="What a pass."))
    assert "What a pass." not in server.chat_requests()[-1].user


@pytest.mark.anyio
async def test_preceding_sentences_and_their_translations_are_in_the_prompt(
    make: MakeStage, server: OpenAIServer
) -> None:
    stage = make()
    assert stage.supports_context is True
    pairs = (("Thank you all.", "Gracias a todos."), ("We are here.", "Estamos aquí."))
    await stage.translate(request("Let us begin.", context=pairs, previous_text="We are here."))
    user = server.chat_requests()[-1].user
    assert "English: Thank you all.\nSpanish: Gracias a todos.\nEnglish: We are here." in user
    assert "do not translate them again" in user and user.endswith("Spanish:\nLet us begin.")


def test_environment_variables_name_the_server_and_key(
    server: OpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", server.url)
    monkeypatch.setenv("OPENAI_API_KEY", server.api_key)
    stage = LLMTranslator(model="test-model")
    try:
        assert stage.base_url.startswith(server.url)
        report = check_stage(stage)
        assert report.ok
    finally:
        stage.close()


def test_refuses_bad_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(StageLoadError, match="needs a model"):
        LLMTranslator(base_url="http://127.0.0.1:9/v1")
    with pytest.raises(StageLoadError, match="API key"):
        LLMTranslator(model="gpt-4o-mini")  # OpenAI itself, no key
    with pytest.raises(StageLoadError, match="concurrency"):
        LLMTranslator(model="m", base_url="http://127.0.0.1:9/v1", concurrency=0)
    # A local server needs no key.
    LLMTranslator(model="m", base_url="http://127.0.0.1:9/v1").close()


# -- cleaning answers ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("Buenas noches.", "Buenas noches."),
        ('"Buenas noches."', "Buenas noches."),
        ("«Buenas noches.»", "Buenas noches."),
        ("Sure! Here is the translation:\n\nBuenas noches.", "Buenas noches."),
        ("Here's the Spanish translation: Buenas noches.", "Buenas noches."),
        ("Translation: Buenas noches.", "Buenas noches."),
        ("Spanish: Buenas noches.", "Buenas noches."),
        ("Certainly. The translation is: “Buenas noches.”", "Buenas noches."),
        ("<think>The user wants Spanish.</think>\nBuenas noches.", "Buenas noches."),
        ("```\nBuenas noches.\n```", "Buenas noches."),
        ("Buenas noches.\n\nNote: 'noches' is plural in Spanish.", "Buenas noches."),
        ("Traducción: lista", "Traducción: lista"),  # a colon inside the line stays
    ],
)
def test_chatter_around_the_translation_is_removed(answer: str, expected: str) -> None:
    assert clean_answer(answer, "Good evening.", "es") == expected


def test_language_names() -> None:
    assert language_name("es") == "Spanish" and language_name("pt-BR") == "Brazilian Portuguese"
    assert language_name("xx") == "xx"


@pytest.mark.anyio
async def test_chatter_is_cleaned_end_to_end(make: MakeStage, server: OpenAIServer) -> None:
    server.answer('Sure! Here is the translation:\n"Buenas noches."')
    assert (await make().translate(request("Good evening."))).text == "Buenas noches."


@pytest.mark.anyio
@pytest.mark.parametrize("answer", ["", "   ", '""', "Sure! Here is the translation:"])
async def test_an_empty_answer_is_invalid_text(make: MakeStage, server: OpenAIServer, answer: str) -> None:
    server.answer(answer)
    with pytest.raises(StageError) as caught:
        await make().translate(request())
    assert caught.value.code is ErrorCode.INVALID_TEXT and not caught.value.retryable


@pytest.mark.anyio
async def test_an_untranslated_answer_is_invalid_text(make: MakeStage, server: OpenAIServer) -> None:
    server.answer("Hello there, my friend!")
    with pytest.raises(StageError) as caught:
        await make().translate(request("Hello there, my friend."))
    assert caught.value.code is ErrorCode.INVALID_TEXT
    # Short lines (names) may stay as they are.
    server.answer("Bayern München.")
    assert (await make().translate(request("Bayern München."))).text == "Bayern München."


# -- errors ------------------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("failure", "code", "retryable"),
    [
        (429, ErrorCode.RATE_LIMIT_EXCEEDED, True),
        (500, ErrorCode.TEMPORARY_UNAVAILABLE, True),
        (503, ErrorCode.TEMPORARY_UNAVAILABLE, True),
        (401, ErrorCode.AUTHENTICATION_FAILED, False),
        (403, ErrorCode.AUTHENTICATION_FAILED, False),
        (400, ErrorCode.INVALID_TEXT, False),
        ("reset", ErrorCode.NETWORK_ERROR, True),
    ],
)
async def test_failures_map_to_error_codes(
    make: MakeStage, server: OpenAIServer, failure: int | str, code: ErrorCode, retryable: bool
) -> None:
    server.fail(failure)
    stage = make()
    with pytest.raises(StageError) as caught:
        await stage.translate(request())
    assert caught.value.code is code and caught.value.retryable is retryable
    assert len(server.chat_requests()) == 1  # the client itself never retries


@pytest.mark.anyio
async def test_a_hung_server_is_a_timeout_within_the_stage_timeout(
    make: MakeStage, server: OpenAIServer
) -> None:
    server.fail("hang")
    stage = make(timeout=0.3)
    started = time.monotonic()
    with pytest.raises(StageError) as caught:
        await stage.translate(request())
    assert caught.value.code is ErrorCode.TIMEOUT and caught.value.retryable
    assert time.monotonic() - started < 2.0


@pytest.mark.anyio
async def test_a_wrong_key_or_model_fails_permanently(make: MakeStage, server: OpenAIServer) -> None:
    with pytest.raises(StageError) as caught:
        await make(api_key="wrong").translate(request())
    assert caught.value.code is ErrorCode.AUTHENTICATION_FAILED
    with pytest.raises(StageError) as caught:
        await make(model="no-such-model").translate(request())
    assert not caught.value.retryable and "does not exist" in caught.value.message


@pytest.mark.anyio
async def test_a_connection_refused_is_a_network_error(make: MakeStage) -> None:
    stage = make(base_url="http://127.0.0.1:9/v1", connect_timeout=0.5)
    with pytest.raises(StageError) as caught:
        await stage.translate(request())
    assert caught.value.code in (ErrorCode.NETWORK_ERROR, ErrorCode.TIMEOUT) and caught.value.retryable


@pytest.mark.anyio
async def test_retryable_failures_are_retried_inside_the_fragment_budget(server: OpenAIServer) -> None:
    server.fail(429, times=1)
    server.fail(500, times=1)
    translator = LLMTranslator(model="test-model", base_url=server.url, api_key=server.api_key, timeout=1.0)
    dubber = stsdub.Dubber(
        FakeASR(text="Hello there."),
        translator,
        FakeSynthesizer(),
        source_language="en",
        target_language="es",
        fragment_timeout=5.0,
        retries=3,
        retry_backoff=0.01,
    )
    async with dubber:
        results = [r async for r in dubber.dub([fragment(0)])]
    (result,) = results
    assert result.status is Status.SUCCESS, result
    assert result.translation.text == "<translated> Hello there."
    assert len(server.chat_requests()) == 3
    assert [w.split(":")[0] for w in result.warnings if "retry" in w] == ["translation"] * 2


@pytest.mark.anyio
async def test_a_permanent_failure_fails_the_fragment_at_once(server: OpenAIServer) -> None:
    server.fail(401)
    translator = LLMTranslator(model="test-model", base_url=server.url, api_key=server.api_key)
    dubber = stsdub.Dubber(
        FakeASR(), translator, FakeSynthesizer(), source_language="en", target_language="es", retries=3
    )
    async with dubber:
        (result,) = [r async for r in dubber.dub([fragment(0)])]
    assert result.status is Status.FAILED and result.error.code is ErrorCode.AUTHENTICATION_FAILED
    assert result.error.stage == "translation"
    assert len(server.chat_requests()) == 1


# -- batching ------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_batch_goes_out_in_parallel_and_keeps_its_order(
    make: MakeStage, server: OpenAIServer
) -> None:
    server.latency = 0.3
    stage = make(concurrency=4)
    texts = [f"Line number {i}." for i in range(4)]
    started = time.monotonic()
    results = await stage.translate_batch([request(t) for t in [*texts[:2], "", *texts[2:]]])
    elapsed = time.monotonic() - started
    assert [r.text for r in results] == [f"<translated> {t}" for t in texts[:2]] + [""] + [
        f"<translated> {t}" for t in texts[2:]
    ]
    assert len(server.chat_requests()) == 4  # the empty text never went out
    assert elapsed < 0.3 * 3  # not one after the other


@pytest.mark.anyio
async def test_one_failure_in_a_batch_leaves_the_others(make: MakeStage, server: OpenAIServer) -> None:
    server.answer(lambda body: "", lambda body: "Dos.")
    stage = make(concurrency=1)  # in order, so the scripted answers meet their requests
    results = await stage.translate_batch([request("One."), request("Two.")])
    assert isinstance(results[0], StageError) and results[0].code is ErrorCode.INVALID_TEXT
    assert results[1].text == "Dos."


# -- length budgets --------------------------------------------------------------------------


def budgeted(text: str, long: str, max_chars: int) -> TranslationRequest:
    return request(text, budget=LengthBudget(max_chars=max_chars, seconds=2.0, previous=long))


@pytest.mark.anyio
async def test_a_budget_asks_for_a_rewrite_within_it(make: MakeStage, server: OpenAIServer) -> None:
    stage = make()
    assert stage.supports_length_budget is True
    server.answer("Hola, amigo.")
    long = "Hola a todos, mi querido amigo de siempre."
    result = await stage.translate(budgeted("Hello there, my dear old friend.", long, 20))
    assert result.text == "Hola, amigo."
    (sent,) = server.chat_requests()
    assert "at most 20 characters" in sent.user and long in sent.user
    assert "2.0 seconds" in sent.user


@pytest.mark.anyio
async def test_a_rewrite_still_too_long_gets_one_more_try_at_most(
    make: MakeStage, server: OpenAIServer
) -> None:
    stage = make()
    server.answer("Hola a todos, querido amigo mío.", "Hola, amigo mío.")
    result = await stage.translate(budgeted("Hello there, my dear old friend.", "x" * 40, 20))
    assert result.text == "Hola, amigo mío."
    _first, second = server.chat_requests()
    assert second.messages[-2] == {"role": "assistant", "content": "Hola a todos, querido amigo mío."}
    assert "the limit is 20" in second.user
    # Both too long: two tries, and the shorter answer wins.
    server.answer("Hola a todos, querido amigo mío.", "Hola a todos, amigo mío, sí.")
    result = await stage.translate(budgeted("Hello there, my dear old friend.", "x" * 40, 10))
    assert result.text == "Hola a todos, amigo mío, sí."
    assert len(server.chat_requests()) == 4


@pytest.mark.anyio
async def test_a_failed_second_try_keeps_the_first_rewrite(make: MakeStage, server: OpenAIServer) -> None:
    stage = make()

    def answer_then_fail(body: dict[str, Any]) -> str:
        server.fail(500, times=1)  # the next request, the second try, fails
        return "Hola a todos, querido amigo mío."

    server.answer(answer_then_fail)
    result = await stage.translate(budgeted("Hello there, my dear old friend.", "x" * 40, 10))
    assert result.text == "Hola a todos, querido amigo mío."
    assert len(server.chat_requests()) == 2


@pytest.mark.anyio
async def test_the_pipeline_shortens_with_the_llm(server: OpenAIServer) -> None:
    """A long first answer, then a short one: the second request carries the budget."""
    long = "Esta es una traducción realmente muy larga que no cabe en el tiempo disponible."
    server.answer(long, "Corta.")
    translator = LLMTranslator(model="test-model", base_url=server.url, api_key=server.api_key)
    # 0.06 s per character: the long answer lasts 4.7 s for a 0.5-s fragment.
    synthesizer = FakeSynthesizer(seconds_per_char=0.06)
    synthesizer_no_target = _NoTarget(synthesizer)
    dubber = stsdub.Dubber(
        FakeASR(text="This is a short line."),
        translator,
        synthesizer_no_target,
        source_language="en",
        target_language="es",
    )
    async with dubber:
        (result,) = [r async for r in dubber.dub([fragment(0)])]
    assert result.fit is not None and result.fit.shortened
    assert result.fit.long_text == long
    assert result.translation.text == "Corta."
    _first, second = server.chat_requests()
    assert "at most" in second.user and long in second.user
    assert any("shortened" in w for w in result.warnings)


class _NoTarget:
    """A synthesizer that speaks at its own rate (seconds per character), whatever the target."""

    def __init__(self, inner: FakeSynthesizer) -> None:
        self.inner = inner

    def synthesize(self, request: stsdub.SynthesisRequest) -> stsdub.AudioBuffer:
        import attrs

        return self.inner._produce(attrs.evolve(request, target_duration=None))
