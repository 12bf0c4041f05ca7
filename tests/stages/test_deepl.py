"""The ``deepl`` translator: the real ``deepl`` client against a DeepL-compatible loopback server."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

import stsdub
from stsdub import ErrorCode, StageError, StageLoadError, Status, Translation, TranslationRequest
from stsdub._builtin.deepl import AUTH_KEY_ENV, DeepLTranslator
from stsdub.testing import FakeASR, FakeSynthesizer, check_plugin, check_stage

from .deepl_server import DeepLServer, deepl_server

MakeStage = Callable[..., DeepLTranslator]


@pytest.fixture
def server() -> Iterator[DeepLServer]:
    with deepl_server() as state:
        yield state


@pytest.fixture
def make(server: DeepLServer) -> Iterator[MakeStage]:
    built: list[DeepLTranslator] = []

    def build(**options: Any) -> DeepLTranslator:
        settings = {"auth_key": server.auth_key, "server_url": server.url, "timeout": 2.0, **options}
        stage = DeepLTranslator(device="cpu", **settings)
        built.append(stage)
        return stage

    yield build
    for stage in built:
        stage.close()


def request(
    text: str = "Hello", target: str = "de", source: str | None = "en", **kwargs: Any
) -> TranslationRequest:
    return TranslationRequest(text=text, source_language=source, target_language=target, **kwargs)


def fragment(seq: int, stream: str | None = None) -> stsdub.Fragment:
    t = np.arange(8_000, dtype=np.float32) / 16_000
    return stsdub.Fragment(
        seq, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 16_000, stream_id=stream
    )


def dubber(server: DeepLServer, **settings: Any) -> stsdub.Dubber:
    options = {
        "server_url": server.url,
        "auth_key": server.auth_key,
        **settings.pop("translator_options", {}),
    }
    return stsdub.Dubber(
        asr=settings.pop("asr", None) or FakeASR(),
        translator="deepl",
        translator_options=options,
        synthesizer=FakeSynthesizer(),
        target_language="de",
        device="cpu",
        **settings,
    )


async def dub_all(d: stsdub.Dubber, fragments: list[stsdub.Fragment]) -> list[stsdub.DubResult]:
    async with d:
        return [r async for r in d.dub(fragments)]


# -- the contract ------------------------------------------------------------------------


def test_check_stage(make: MakeStage, server: DeepLServer) -> None:
    report = check_stage(make())
    assert report.ok
    assert "translate_batch" in report.passed
    contexts = [r.body.get("context") for r in server.translate_requests()]
    assert "Good evening." in contexts  # the conformance check's "with context" request


@pytest.mark.anyio
async def test_preceding_sentences_are_the_context_when_the_request_carries_them(
    make: MakeStage, server: DeepLServer
) -> None:
    stage = make()
    assert stage.supports_context is True and make(context=False).supports_context is False
    pairs = (("Thank you all.", "Danke euch allen."), ("We are here.", "Wir sind hier."))
    await stage.translate(request("Let us begin.", context=pairs, previous_text="We are here."))
    await stage.translate(request("Again.", previous_text="Let us begin."))
    assert [r.body.get("context") for r in server.translate_requests()] == [
        "Thank you all. We are here.",
        "Let us begin.",  # without them, the previous text as before
    ]


def test_check_plugin_by_name(server: DeepLServer) -> None:
    assert check_plugin("translator", "deepl", server_url=server.url, auth_key=server.auth_key).ok


@pytest.mark.anyio
async def test_translates_with_mapped_languages(make: MakeStage, server: DeepLServer) -> None:
    stage = make()
    result = await stage.translate(request("Hello, welcome to the game.", target="en", source="de"))
    assert result == Translation("EN-US: Hello, welcome to the game.", "de")
    (sent,) = server.translate_requests()
    assert sent.body["text"] == ["Hello, welcome to the game."]
    assert sent.body["target_lang"] == "EN-US"
    assert sent.body["source_lang"] == "DE"
    assert sent.headers["Authorization"] == f"DeepL-Auth-Key {server.auth_key}"
    # Construction asked for the languages (source and target) and the usage.
    paths = [(r.path, r.body.get("type")) for r in server.requests[:3]]
    assert paths == [("/v2/languages", None), ("/v2/languages", "target"), ("/v2/usage", None)]


@pytest.mark.parametrize(
    ("tag", "code"),
    [
        ("de", "DE"),
        ("en", "EN-US"),
        ("EN_gb", "EN-GB"),
        ("pt", "PT-BR"),
        ("pt-PT", "PT-PT"),
        ("de-AT", "DE"),
        ("zh", "ZH"),
        ("zh-TW", "ZH-HANT"),
        ("no", "NB"),
    ],
)
def test_target_codes(make: MakeStage, tag: str, code: str) -> None:
    assert make().target_code(tag) == code


def test_target_variants_option_and_source_codes(make: MakeStage) -> None:
    stage = make(target_variants={"en": "en-gb"})
    assert stage.target_code("en") == "EN-GB"
    assert stage.target_code("en-US") == "EN-US"
    assert stage.source_code("en-US") == "EN"
    assert stage.source_code("pt-BR") == "PT"
    assert stage.source_code(None) is None


@pytest.mark.anyio
async def test_unsupported_language_fails_fast_without_a_request(
    make: MakeStage, server: DeepLServer
) -> None:
    stage = make()
    for bad in (request(target="xx"), request(source="tlh"), request(target="en-XX", source="xx")):
        with pytest.raises(StageError) as info:
            await stage.translate(bad)
        assert info.value.code is ErrorCode.UNSUPPORTED_LANGUAGE
        assert not info.value.retryable
    assert server.translate_requests() == []


@pytest.mark.anyio
async def test_unsupported_language_in_the_pipeline(server: DeepLServer) -> None:
    results = await dub_all(dubber(server, asr=FakeASR(language="xx")), [fragment(0), fragment(1)])
    for result in results:
        assert result.status is Status.FAILED
        assert result.error is not None and result.error.code is ErrorCode.UNSUPPORTED_LANGUAGE
        assert result.error.stage == "translation"
        assert not result.warnings  # permanent: not retried
    assert server.translate_requests() == []


@pytest.mark.anyio
async def test_server_without_languages_endpoint() -> None:
    with deepl_server(languages_endpoint=False) as server:
        stage = DeepLTranslator(auth_key=server.auth_key, server_url=server.url)
        try:
            assert stage.target_languages is None
            assert (await stage.translate(request(target="en"))).text == "EN-US: Hello"
            # Unknown here, so DeepL's own answer (400, "not supported") gives the code.
            with pytest.raises(StageError) as info:
                await stage.translate(request(target="xx"))
            assert info.value.code is ErrorCode.UNSUPPORTED_LANGUAGE
            assert len(server.translate_requests()) == 2
        finally:
            stage.close()


@pytest.mark.anyio
async def test_empty_text_never_reaches_the_api(make: MakeStage, server: DeepLServer) -> None:
    stage = make()
    assert await stage.translate(request("   ")) == Translation("")
    results = await stage.translate_batch([request(""), request("Hi"), request("\n")])
    assert results == [Translation(""), Translation("DE: Hi", "en"), Translation("")]
    assert [r.body["text"] for r in server.translate_requests()] == [["Hi"]]


# -- keys and start-up -------------------------------------------------------------------


def test_missing_key_fails_at_construction(server: DeepLServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(AUTH_KEY_ENV, raising=False)
    with pytest.raises(StageLoadError, match=AUTH_KEY_ENV):
        DeepLTranslator(server_url=server.url)
    monkeypatch.setenv(AUTH_KEY_ENV, server.auth_key)
    stage = DeepLTranslator(server_url=server.url)
    stage.close()
    assert all(r.headers["Authorization"] == f"DeepL-Auth-Key {server.auth_key}" for r in server.requests)


@pytest.mark.anyio
async def test_invalid_key_fails_at_dubber_start(server: DeepLServer) -> None:
    d = dubber(server, translator_options={"auth_key": "wrong-key"})
    with pytest.raises(StageLoadError, match="AUTHENTICATION_FAILED"):
        async with d:
            pass
    assert server.translate_requests() == []


def test_used_up_quota_fails_at_construction() -> None:
    with (
        deepl_server(character_count=500, character_limit=500) as server,
        pytest.raises(StageLoadError, match="QUOTA_EXCEEDED"),
    ):
        DeepLTranslator(auth_key=server.auth_key, server_url=server.url)


def test_unreachable_server_fails_at_construction() -> None:
    with deepl_server() as server:
        url, key = server.url, server.auth_key
    budget = 1.0
    started = time.monotonic()
    with pytest.raises(StageLoadError, match="NETWORK_ERROR") as info:
        DeepLTranslator(auth_key=key, server_url=url, connect_timeout=0.5, startup_timeout=budget)
    # Refused connections are retried (the server may be restarting) until the budget is spent.
    assert "kept failing" in str(info.value)
    assert time.monotonic() - started < budget + 3


# -- transient failures at start-up ------------------------------------------------------


@pytest.mark.anyio
async def test_one_503_on_languages_at_start_up_is_retried(
    server: DeepLServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="stsdub")
    server.fail("/v2/languages", 503, times=1)
    (result,) = await dub_all(dubber(server), [fragment(0)])
    assert result.status is Status.SUCCESS
    assert result.translation is not None and result.translation.text == "DE: speech 0"
    # The source languages were asked twice (503, then 200), then the target languages once.
    assert [r.body.get("type") for r in server.requests_to("/v2/languages")] == [None, None, "target"]
    assert len(server.requests_to("/v2/usage")) == 1
    (retry,) = [r for r in caplog.records if "start-up" in r.getMessage()]
    assert retry.levelno == logging.WARNING
    assert "/v2/languages" in retry.getMessage() and "TEMPORARY_UNAVAILABLE" in retry.getMessage()


@pytest.mark.parametrize(
    ("path", "failure", "times"),
    [
        ("/v2/languages", 429, 2),
        ("/v2/usage", 429, 2),
        ("/v2/usage", 529, 1),
        ("/v2/usage", 500, 1),
        ("/v2/usage", 502, 1),
        ("/v2/usage", 504, 1),
        ("/v2/languages", "reset", 2),
        ("/v2/usage", "reset", 1),
    ],
)
def test_transient_failures_at_start_up_are_retried(
    make: MakeStage, server: DeepLServer, path: str, failure: int | str, times: int
) -> None:
    server.fail(path, failure, times=times)
    stage = make()
    assert stage.target_languages is not None and "DE" in stage.target_languages
    expected = {"/v2/languages": 2, "/v2/usage": 1}
    expected[path] += times
    assert {p: len(server.requests_to(p)) for p in expected} == expected


@pytest.mark.parametrize("path", ["/v2/languages", "/v2/usage"])
def test_a_hung_request_at_start_up_times_out_and_is_retried(
    make: MakeStage, server: DeepLServer, path: str
) -> None:
    budget = 3.0
    server.fail(path, "hang", times=1)
    started = time.monotonic()
    stage = make(timeout=0.3, startup_timeout=budget)
    elapsed = time.monotonic() - started
    assert stage.source_languages is not None
    first, second = server.requests_to(path)[:2]
    assert second.at - first.at >= 0.3  # the hung attempt waited for its timeout...
    assert elapsed < budget  # ...and the next one answered inside the budget


@pytest.mark.parametrize(
    ("failure", "code"),
    [
        (503, ErrorCode.TEMPORARY_UNAVAILABLE),
        (429, ErrorCode.RATE_LIMIT_EXCEEDED),
        ("reset", ErrorCode.NETWORK_ERROR),
        ("hang", ErrorCode.TIMEOUT),
    ],
)
def test_start_up_gives_up_when_its_budget_is_spent(
    server: DeepLServer, failure: int | str, code: ErrorCode
) -> None:
    budget = 1.5
    server.fail("/v2/languages", failure)
    started = time.monotonic()
    with pytest.raises(StageLoadError) as info:
        # The request timeout is longer than the budget: each attempt is cut to what is left.
        DeepLTranslator(auth_key=server.auth_key, server_url=server.url, timeout=5.0, startup_timeout=budget)
    elapsed = time.monotonic() - started
    message = str(info.value)
    assert code.value in message and "/v2/languages" in message and "kept failing" in message
    assert budget - 0.2 < elapsed < budget + 3
    attempts = server.requests_to("/v2/languages")
    assert len(attempts) >= 2
    assert attempts[-1].at - attempts[0].at < budget


@pytest.mark.parametrize(
    ("path", "status"), [("/v2/languages", 403), ("/v2/languages", 401), ("/v2/usage", 403)]
)
def test_a_refused_key_at_start_up_is_not_retried(server: DeepLServer, path: str, status: int) -> None:
    server.fail(path, status)
    with pytest.raises(StageLoadError, match="AUTHENTICATION_FAILED"):
        DeepLTranslator(auth_key=server.auth_key, server_url=server.url)
    assert len(server.requests_to(path)) == 1


def test_a_wrong_key_fails_with_one_request(server: DeepLServer) -> None:
    started = time.monotonic()
    with pytest.raises(StageLoadError, match="AUTHENTICATION_FAILED"):
        DeepLTranslator(auth_key="wrong-key", server_url=server.url)
    assert time.monotonic() - started < 1.0
    assert len(server.requests) == 1


@pytest.mark.parametrize("path", ["/v2/languages", "/v2/usage"])
def test_quota_exceeded_at_start_up_is_not_retried(server: DeepLServer, path: str) -> None:
    server.fail(path, 456)
    with pytest.raises(StageLoadError, match="QUOTA_EXCEEDED"):
        DeepLTranslator(auth_key=server.auth_key, server_url=server.url)
    assert len(server.requests_to(path)) == 1


def test_server_without_usage_endpoint(make: MakeStage, server: DeepLServer) -> None:
    server.fail("/v2/usage", 404)
    assert make().target_languages is not None
    assert len(server.requests_to("/v2/usage")) == 1


@pytest.mark.anyio
async def test_client_settings_are_restored_after_start_up_retries(
    make: MakeStage, server: DeepLServer
) -> None:
    server.fail("/v2/usage", 503, times=1)
    stage = make(retries=2, retry_backoff=0.01, timeout=0.5, startup_timeout=5.0)
    assert len(server.requests_to("/v2/usage")) == 2  # the start-up loop retried, not the client
    server.fail_translate(503, times=2)
    assert (await stage.translate(request())).text == "DE: Hello"
    assert len(server.translate_requests()) == 3


@pytest.mark.parametrize("budget", [0, -1.0, float("nan")])
def test_startup_timeout_must_be_positive(server: DeepLServer, budget: float) -> None:
    with pytest.raises(StageLoadError, match="startup_timeout"):
        DeepLTranslator(auth_key=server.auth_key, server_url=server.url, startup_timeout=budget)
    assert server.requests == []


# -- errors ------------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("status", "code"),
    [
        (429, ErrorCode.RATE_LIMIT_EXCEEDED),
        (529, ErrorCode.RATE_LIMIT_EXCEEDED),
        (456, ErrorCode.QUOTA_EXCEEDED),
        (403, ErrorCode.AUTHENTICATION_FAILED),
        (500, ErrorCode.TEMPORARY_UNAVAILABLE),
        (502, ErrorCode.TEMPORARY_UNAVAILABLE),
        (503, ErrorCode.TEMPORARY_UNAVAILABLE),
        (504, ErrorCode.TEMPORARY_UNAVAILABLE),
        ("hang", ErrorCode.TIMEOUT),
    ],
)
async def test_error_codes(make: MakeStage, server: DeepLServer, status: int | str, code: ErrorCode) -> None:
    stage = make(timeout=0.3)
    server.fail_translate(status)
    with pytest.raises(StageError) as info:
        await stage.translate(request())
    assert info.value.code is code
    assert info.value.retryable is code.retryable
    assert code.retryable == (status in (429, 529, "hang") or (isinstance(status, int) and status >= 500))
    # The client does not retry on its own: the pipeline does, within the fragment's budget.
    assert len(server.translate_requests()) == 1


@pytest.mark.anyio
async def test_connection_refused_is_a_network_error() -> None:
    with deepl_server() as server:
        stage = DeepLTranslator(auth_key=server.auth_key, server_url=server.url, connect_timeout=0.5)
    try:
        with pytest.raises(StageError) as info:
            await stage.translate(request())
        assert info.value.code is ErrorCode.NETWORK_ERROR
        assert info.value.retryable
    finally:
        stage.close()


@pytest.mark.anyio
async def test_client_retries_when_asked(make: MakeStage, server: DeepLServer) -> None:
    stage = make(retries=2, retry_backoff=0.01)
    server.fail_translate(503, times=2)
    assert (await stage.translate(request())).text == "DE: Hello"
    assert len(server.translate_requests()) == 3


@pytest.mark.anyio
async def test_client_module_globals_are_left_alone(make: MakeStage) -> None:
    import deepl

    before = (deepl.http_client.max_network_retries, deepl.http_client.min_connection_timeout)
    stage = make(timeout=0.5, retries=0)
    await stage.translate(request())
    assert (deepl.http_client.max_network_retries, deepl.http_client.min_connection_timeout) == before


# -- options -----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_formality_glossary_and_model_type_are_sent(make: MakeStage, server: DeepLServer) -> None:
    stage = make(formality="prefer_less", glossary="glossary-1", model_type="latency_optimized")
    await stage.translate(request())
    await stage.translate(request(options={"formality": "more"}))
    first, second = (r.body for r in server.translate_requests())
    assert (first["formality"], first["glossary_id"], first["model_type"]) == (
        "prefer_less",
        "glossary-1",
        "latency_optimized",
    )
    assert second["formality"] == "more"
    with pytest.raises(StageError) as info:  # a glossary needs the source language
        await stage.translate(request(source=None))
    assert info.value.code is ErrorCode.UNSUPPORTED_LANGUAGE


# -- through the pipeline ----------------------------------------------------------------


@pytest.mark.anyio
async def test_previous_text_is_sent_as_context(server: DeepLServer) -> None:
    results = await dub_all(dubber(server), [fragment(i) for i in range(3)])
    assert [r.status for r in results] == [Status.SUCCESS] * 3
    assert [r.translation.text for r in results if r.translation] == [f"DE: speech {i}" for i in range(3)]
    sent = server.translate_requests()
    assert [r.body["text"] for r in sent] == [["speech 0"], ["speech 1"], ["speech 2"]]
    # The stream's last fragments (up to three), oldest first.
    assert [r.body.get("context") for r in sent] == [None, "speech 0", "speech 0 speech 1"]


@pytest.mark.anyio
async def test_context_can_be_turned_off(server: DeepLServer) -> None:
    await dub_all(dubber(server, translator_options={"context": False}), [fragment(i) for i in range(2)])
    assert all("context" not in r.body for r in server.translate_requests())


def _streams(count: int, per_stream: int) -> list[stsdub.Fragment]:
    return [fragment(seq, f"s{s}") for seq in range(per_stream) for s in range(count)]


@pytest.mark.anyio
async def test_batching_across_streams_sends_fewer_requests(server: DeepLServer) -> None:
    server.latency = 0.1
    streams, per_stream = 8, 3
    d = dubber(server, translator_options={"context": False})
    results = await dub_all(d, _streams(streams, per_stream))
    assert len(results) == streams * per_stream
    assert all(r.status is Status.SUCCESS for r in results)
    assert all(
        r.translation is not None and r.translation.text == f"DE: speech {r.sequence_number}" for r in results
    )
    sent = server.translate_requests()
    assert sum(len(r.body["text"]) for r in sent) == streams * per_stream
    assert len(sent) < streams * per_stream
    assert max(len(r.body["text"]) for r in sent) > 1


@pytest.mark.anyio
async def test_batches_only_share_a_request_when_the_context_is_the_same(server: DeepLServer) -> None:
    server.latency = 0.1
    streams, per_stream = 6, 3
    asr = FakeASR(text=lambda r: f"{r.stream_id} part {r.sequence_number}")
    results = await dub_all(dubber(server, asr=asr), _streams(streams, per_stream))
    assert all(r.status is Status.SUCCESS for r in results)
    sent = server.translate_requests()
    assert sum(len(r.body["text"]) for r in sent) == streams * per_stream
    for r in sent:
        for text in r.body["text"]:
            stream, _, seq = text.partition(" part ")
            # The stream's last fragments (up to three), oldest first.
            before = range(max(0, int(seq) - 3), int(seq))
            expected = " ".join(f"{stream} part {n}" for n in before) or None
            assert r.body.get("context") == expected, (text, r.body)
    # The first fragments of every stream have no context, so they can share requests.
    firsts = [r for r in sent if "context" not in r.body]
    assert len(firsts) < streams


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("status", "code"), [(429, ErrorCode.RATE_LIMIT_EXCEEDED), (503, ErrorCode.TEMPORARY_UNAVAILABLE)]
)
async def test_pipeline_retries_retryable_errors(server: DeepLServer, status: int, code: ErrorCode) -> None:
    server.fail_translate(status, times=1)
    (healed,) = await dub_all(dubber(server, retry_backoff=0.01), [fragment(0)])
    assert healed.status is Status.SUCCESS
    assert len(healed.warnings) == 1 and code.value in healed.warnings[0]
    assert len(server.translate_requests()) == 2

    server.fail_translate(status)
    (failed,) = await dub_all(dubber(server, retries=2, retry_backoff=0.01), [fragment(0)])
    assert failed.status is Status.FAILED
    assert failed.error is not None and failed.error.code is code and failed.error.retryable
    assert len(server.translate_requests()) == 2 + 3  # one attempt and two retries


@pytest.mark.anyio
@pytest.mark.parametrize("status", [456, 403])
async def test_pipeline_does_not_retry_permanent_errors(server: DeepLServer, status: int) -> None:
    server.fail_translate(status)
    (result,) = await dub_all(dubber(server, retry_backoff=0.01), [fragment(0)])
    assert result.status is Status.FAILED
    assert result.error is not None and not result.error.retryable
    assert len(server.translate_requests()) == 1


@pytest.mark.anyio
async def test_hung_server_retries_stay_inside_the_fragment_budget(server: DeepLServer) -> None:
    budget = 2.0
    server.fail_translate("hang")
    d = dubber(
        server,
        translator_options={"timeout": 0.3, "connect_timeout": 0.3},
        fragment_timeout=budget,
        retries=20,
        retry_backoff=0.02,
    )
    results = await dub_all(d, [fragment(0), fragment(1)])
    for result in results:
        assert result.status is Status.FAILED
        assert result.error is not None and result.error.code is ErrorCode.TIMEOUT
    # The first fragment's short request timeouts fired and were retried...
    retried = [w for w in results[0].warnings if "retry" in w]
    assert len(retried) >= 2 and all("TIMEOUT" in w for w in retried)
    sent = server.translate_requests()
    attempts = [r for r in sent if r.body["text"] == ["speech 0"]]
    assert len(attempts) == len(retried) + 1
    # ...and every attempt started inside the fragment's budget. Several attempts fit only
    # because one request's timeout is a fraction of the budget (the client's default is
    # at least 10 s, with 5 retries of its own).
    assert attempts[-1].at - attempts[0].at < budget
