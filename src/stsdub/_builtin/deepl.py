"""Translation with the DeepL API through the official ``deepl`` client.

Live fragments have a budget of a few seconds, so the client's own network policy (a
request timeout of at least 10 s and up to 5 retries from a 1 s backoff) does not fit. Those
settings are module globals of ``deepl.http_client`` (``min_connection_timeout``,
``max_network_retries``), shared by every ``deepl.Translator`` in the process; changing them
would change them for the host application's own DeepL use too, and the 10 s minimum cannot
be lowered per client anyway. So the stage leaves the globals alone and gives its own
``deepl.Translator`` an HTTP client (a subclass of ``deepl.http_client.HttpClient``) with a
short (connect, read) timeout and no retries of its own: retryable failures come back as
retryable :class:`~stsdub.StageError` codes, and the pipeline retries them inside the
fragment's budget.

Requests that wait together (from several streams) are grouped by what one DeepL request
must share — source and target language, context, formality, glossary — and each group is
one ``/v2/translate`` call with several texts; groups are sent in parallel.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

import anyio
import anyio.to_thread

from .._model import Translation, TranslationRequest
from ..errors import ErrorCode, PluginError, StageError, StageLoadError

__all__ = [
    "AUTH_KEY_ENV",
    "DEFAULT_TARGET_VARIANTS",
    "DeepLTranslator",
    "deepl_source_code",
    "deepl_target_candidates",
]

log = logging.getLogger("stsdub")

#: Where the key is read from when ``auth_key`` is not given.
AUTH_KEY_ENV = "DEEPL_AUTH_KEY"
_INSTALL_HINT = "pip install 'stsdub[deepl]'"

#: Regional variant used when a user names only the language of a target that DeepL offers
#: only with a region (``"en"`` → ``"EN-US"``). Override with ``target_variants``.
DEFAULT_TARGET_VARIANTS: Mapping[str, str] = {"en": "EN-US", "pt": "PT-BR"}
# Tags people use for which DeepL has another name.
_LANGUAGE_ALIASES = {"no": "nb", "nob": "nb"}
_REGION_ALIASES = {"ZH-CN": "ZH-HANS", "ZH-SG": "ZH-HANS", "ZH-TW": "ZH-HANT", "ZH-HK": "ZH-HANT"}
# Regional targets DeepL documents; used when the server's list cannot be asked for.
_KNOWN_TARGET_VARIANTS = frozenset({"EN-GB", "EN-US", "PT-BR", "PT-PT", "ZH-HANS", "ZH-HANT", "ES-419"})
#: Most texts DeepL accepts in one request.
MAX_TEXTS_PER_REQUEST = 50


def _base(language: str) -> str:
    base = language.replace("_", "-").split("-")[0].lower()
    return _LANGUAGE_ALIASES.get(base, base)


def deepl_source_code(language: str) -> str:
    """DeepL's source code for a language tag: the language alone (``"en-US"`` → ``"EN"``)."""
    return _base(language).upper()


def deepl_target_candidates(
    language: str, variants: Mapping[str, str] = DEFAULT_TARGET_VARIANTS
) -> list[str]:
    """DeepL target codes for a tag, best first: the tag itself, the default variant, the
    language alone (``"en"`` → ``["EN-US", "EN"]``, ``"de-AT"`` → ``["DE-AT", "DE"]``,
    ``"zh-TW"`` → ``["ZH-HANT", "ZH"]``)."""
    tag = language.replace("_", "-").upper()
    base = _base(language)
    candidates: list[str] = []
    if "-" in tag:
        candidates.append(_REGION_ALIASES.get(tag, f"{base.upper()}-{tag.split('-', 1)[1]}"))
    default = variants.get(base)
    if default:
        candidates.append(default.upper())
    candidates.append(base.upper())
    return list(dict.fromkeys(candidates))


def _import_deepl() -> Any:
    try:
        import deepl
    except ImportError as exc:
        raise PluginError(
            f"the deepl translator needs the deepl package; install it with: {_INSTALL_HINT}"
        ) from exc
    return deepl


def _budgeted_http_client(deepl: Any, *, timeout: tuple[float, float], retries: int, backoff: float) -> Any:
    """An instance of deepl's HttpClient with our timeout and retry policy (see module doc)."""
    import requests.adapters

    base = deepl.http_client.HttpClient
    connection_exception = deepl.ConnectionException

    class BudgetedHttpClient(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            super().__init__()
            # Groups of a batch go out in parallel; keep their connections for reuse.
            session = getattr(self, "_session", None)
            if session is not None:
                adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=64, max_retries=0)
                session.mount("https://", adapter)
                session.mount("http://", adapter)

        def request_with_backoff(
            self,
            method: str,
            url: str,
            data: dict[str, Any] | None,
            json: dict[str, Any] | None,
            headers: dict[str, str],
            stream: bool = False,
            **kwargs: Any,
        ) -> Any:
            request = self._prepare_request(method, url, data, json, headers, **kwargs)
            attempt = 0
            while True:
                try:
                    response = self._internal_request(request, stream=stream, timeout=timeout)
                except connection_exception as exc:
                    if not exc.should_retry or attempt >= retries:
                        raise
                else:
                    status = response[0]
                    if not (status == 429 or status >= 500) or attempt >= retries:
                        return response
                time.sleep(backoff * 2**attempt)
                attempt += 1

    return BudgetedHttpClient()


def _stage_error(exc: Exception) -> StageError:
    """The StageError for an exception of the deepl client."""
    import requests

    deepl = _import_deepl()
    status = getattr(exc, "http_status_code", None)
    message = f"DeepL: {exc}"
    if isinstance(exc, deepl.ConnectionException):
        timed_out = isinstance(exc.__cause__, requests.exceptions.Timeout)
        return StageError(ErrorCode.TIMEOUT if timed_out else ErrorCode.NETWORK_ERROR, message)
    if isinstance(exc, deepl.AuthorizationException) or status in (401, 403):
        return StageError(ErrorCode.AUTHENTICATION_FAILED, message)
    if isinstance(exc, deepl.QuotaExceededException) or status == 456:
        return StageError(ErrorCode.QUOTA_EXCEEDED, message)
    # 529 is DeepL's "too many requests" under high load.
    if isinstance(exc, deepl.TooManyRequestsException) or status in (429, 529):
        return StageError(ErrorCode.RATE_LIMIT_EXCEEDED, message)
    if status is not None and status >= 500:
        return StageError(ErrorCode.TEMPORARY_UNAVAILABLE, message)
    if status == 400 and "lang" in str(exc).lower():
        return StageError(ErrorCode.UNSUPPORTED_LANGUAGE, message)
    if status in (400, 413, 414):
        return StageError(ErrorCode.INVALID_TEXT, message)
    return StageError(ErrorCode.INTERNAL_ERROR, message)


class DeepLTranslator:
    """Translate with the DeepL API (or a DeepL-compatible server).

    Construction checks the key and, where the server offers ``/v2/languages``, learns the
    supported languages, so a bad key fails at ``async with Dubber`` and an unsupported
    pair fails each fragment at once with ``UNSUPPORTED_LANGUAGE``, without a request.

    Args:
        device: Ignored (the work happens at DeepL); accepted because every factory gets it.
        auth_key: DeepL API key; default: the ``DEEPL_AUTH_KEY`` environment variable.
        server_url: Base URL of a DeepL-compatible API; default: DeepL's (Free or Pro,
            chosen from the key as the client does).
        formality: ``"less"``, ``"more"``, ``"prefer_less"``, ``"prefer_more"`` or
            ``"default"``. The ``prefer_`` forms also work for languages without formality.
        glossary: Glossary id (or ``deepl.GlossaryInfo``); needs a known source language.
        context: Send the stream's previous source text as DeepL's ``context`` (not billed,
            not translated). Fragments with different context cannot share a request, so
            with context on, requests batch only across fragments that share it.
        model_type: DeepL's ``model_type``, e.g. ``"latency_optimized"``.
        timeout: Seconds to wait for DeepL's answer to one request.
        connect_timeout: Seconds to wait for the connection.
        retries: Retries by the client itself after 429 / 5xx / network errors (default 0:
            the pipeline retries retryable errors within the fragment's budget).
        retry_backoff: Seconds before the client's first retry; doubles each time.
        target_variants: Regional variant for a bare language, merged over
            ``{"en": "EN-US", "pt": "PT-BR"}``, e.g. ``{"en": "EN-GB"}``.
        check_account: At construction, ask ``/v2/languages`` and ``/v2/usage`` (fails on a
            bad key or a used-up quota). Servers without those endpoints are tolerated.
        concurrency: Batches the pipeline may have at DeepL at once; the groups of one
            batch (different languages or context) go out in parallel.
        max_batch_size: Most fragments the pipeline hands over at once.

    Raises:
        StageLoadError: No key, a key DeepL refuses, a quota already used up, or a server
            that cannot be reached.
    """

    def __init__(
        self,
        *,
        device: str = "cpu",
        auth_key: str | None = None,
        server_url: str | None = None,
        formality: str | None = None,
        glossary: Any = None,
        context: bool = True,
        model_type: str | None = None,
        timeout: float = 3.0,
        connect_timeout: float = 1.0,
        retries: int = 0,
        retry_backoff: float = 0.1,
        target_variants: Mapping[str, str] | None = None,
        check_account: bool = True,
        concurrency: int = 2,
        max_batch_size: int = MAX_TEXTS_PER_REQUEST,
    ) -> None:
        deepl = _import_deepl()
        key = auth_key or os.environ.get(AUTH_KEY_ENV, "")
        if not key:
            raise StageLoadError(
                f"the deepl translator needs an API key: set {AUTH_KEY_ENV} or pass"
                " translator_options={'auth_key': ...}"
            )
        if timeout <= 0 or connect_timeout <= 0 or retries < 0 or retry_backoff < 0:
            raise StageLoadError("the deepl translator needs timeout, connect_timeout > 0 and retries >= 0")
        if concurrency < 1 or max_batch_size < 1:
            raise StageLoadError("the deepl translator needs concurrency >= 1 and max_batch_size >= 1")
        self.device = device
        self.formality = formality
        self.glossary = glossary
        self.context = context
        self.model_type = model_type
        self.timeout = timeout
        self.concurrency = concurrency
        self.max_batch_size = max_batch_size
        self.target_variants = {
            **DEFAULT_TARGET_VARIANTS,
            **{_base(k): v.upper() for k, v in (target_variants or {}).items()},
        }
        self._deepl: Any = deepl.Translator(key, server_url=server_url)
        original = getattr(self._deepl, "_client", None)
        if isinstance(original, deepl.http_client.HttpClient):
            original.close()
            self._deepl._client = _budgeted_http_client(
                deepl, timeout=(connect_timeout, timeout), retries=retries, backoff=retry_backoff
            )
        else:  # a future client without this attribute: keep its defaults, but say so
            log.warning("deepl %s: cannot set timeouts; using the client's defaults", deepl.__version__)
        self.server_url: str = self._deepl.server_url
        #: DeepL codes the server supports, or None when it did not say.
        self.source_languages: frozenset[str] | None = None
        self.target_languages: frozenset[str] | None = None
        if check_account:
            try:
                self._check_account(deepl)
            except BaseException:
                self._deepl.close()
                raise

    def __repr__(self) -> str:
        return f"DeepLTranslator(server_url={self.server_url!r})"

    def _check_account(self, deepl: Any) -> None:
        where = f"DeepL at {self.server_url}"
        try:
            sources = self._deepl.get_source_languages()
            targets = self._deepl.get_target_languages()
        except deepl.DeepLException as exc:
            if getattr(exc, "http_status_code", None) != 404:
                raise StageLoadError(f"{where}: {_stage_error(exc)}") from exc
            log.info("%s has no /v2/languages; languages are checked by each request", where)
        else:
            self.source_languages = frozenset(lang.code.upper() for lang in sources)
            self.target_languages = frozenset(lang.code.upper() for lang in targets)
        try:
            usage = self._deepl.get_usage()
        except deepl.DeepLException as exc:
            if getattr(exc, "http_status_code", None) != 404:
                raise StageLoadError(f"{where}: {_stage_error(exc)}") from exc
            return
        if usage.any_limit_reached:
            raise StageLoadError(
                f"{where}: {ErrorCode.QUOTA_EXCEEDED.value}: the quota of this billing period is used up"
                f" ({usage.character})"
            )

    # -- languages --------------------------------------------------------------------------

    def source_code(self, language: str | None) -> str | None:
        """DeepL's source code for ``language`` (None: let DeepL detect it).

        Raises:
            StageError: ``UNSUPPORTED_LANGUAGE`` when the server does not offer it.
        """
        if language is None:
            return None
        code = deepl_source_code(language)
        if self.source_languages is not None and code not in self.source_languages:
            raise StageError(ErrorCode.UNSUPPORTED_LANGUAGE, f"DeepL cannot translate from {language!r}")
        return code

    def target_code(self, language: str) -> str:
        """DeepL's target code for ``language`` (``"en"`` → ``"EN-US"``, ``"pt"`` → ``"PT-BR"``).

        Raises:
            StageError: ``UNSUPPORTED_LANGUAGE`` when the server does not offer it.
        """
        for code in deepl_target_candidates(language, self.target_variants):
            known = self.target_languages
            if (code in known) if known is not None else ("-" not in code or code in _KNOWN_TARGET_VARIANTS):
                return code
        raise StageError(ErrorCode.UNSUPPORTED_LANGUAGE, f"DeepL cannot translate into {language!r}")

    # -- the stage ---------------------------------------------------------------------------

    def _group_key(self, request: TranslationRequest) -> tuple[Any, ...]:
        """What must be equal for requests to share one DeepL request."""
        options = request.options
        formality = options.get("formality", self.formality)
        glossary = options.get("glossary", self.glossary)
        source = self.source_code(request.source_language)
        target = self.target_code(request.target_language)
        if glossary is not None and source is None:
            raise StageError(
                ErrorCode.UNSUPPORTED_LANGUAGE,
                "a DeepL glossary needs the source language; set source_language",
            )
        context = request.previous_text if self.context and request.previous_text else None
        return (source, target, context, formality, glossary)

    def _send(self, key: tuple[Any, ...], texts: list[str]) -> list[Translation]:
        """One ``/v2/translate`` request (runs in a worker thread)."""
        deepl = _import_deepl()
        source, target, context, formality, glossary = key
        try:
            results = self._deepl.translate_text(
                texts,
                source_lang=source,
                target_lang=target,
                context=context,
                formality=formality,
                glossary=glossary,
                model_type=self.model_type,
            )
        except deepl.DeepLException as exc:
            raise _stage_error(exc) from exc
        except (ValueError, TypeError, KeyError) as exc:  # a malformed answer or option
            raise StageError(ErrorCode.INTERNAL_ERROR, f"DeepL: {type(exc).__name__}: {exc}") from exc
        if len(results) != len(texts):
            raise StageError(
                ErrorCode.INTERNAL_ERROR, f"DeepL answered {len(results)} translations for {len(texts)} texts"
            )
        return [Translation(r.text, (r.detected_source_lang or "").lower() or None) for r in results]

    async def translate_batch(self, requests: Sequence[TranslationRequest]) -> list[Translation | StageError]:
        """Translate several requests with as few DeepL requests as their options allow.

        Empty texts never reach the API; a request that cannot go (an unsupported language)
        or whose DeepL request failed gets a StageError in its place.
        """
        results: list[Translation | StageError | None] = [None] * len(requests)
        groups: dict[tuple[Any, ...], list[int]] = {}
        for i, request in enumerate(requests):
            if not request.text.strip():
                results[i] = Translation("")
                continue
            try:
                groups.setdefault(self._group_key(request), []).append(i)
            except StageError as err:
                results[i] = err
        chunks = [
            (key, members[start : start + MAX_TEXTS_PER_REQUEST])
            for key, members in groups.items()
            for start in range(0, len(members), MAX_TEXTS_PER_REQUEST)
        ]

        async def send(key: tuple[Any, ...], members: list[int]) -> None:
            texts = [requests[i].text for i in members]
            try:
                translations = await anyio.to_thread.run_sync(self._send, key, texts, abandon_on_cancel=True)
            except StageError as err:
                for i in members:
                    results[i] = err
                return
            for i, translation in zip(members, translations, strict=True):
                results[i] = translation

        if len(chunks) == 1:
            await send(*chunks[0])
        elif chunks:
            async with anyio.create_task_group() as tg:
                for key, members in chunks:
                    tg.start_soon(send, key, members)
        return [r if r is not None else StageError(ErrorCode.INTERNAL_ERROR, "no result") for r in results]

    async def translate(self, request: TranslationRequest) -> Translation:
        """Translate one request."""
        result = (await self.translate_batch([request]))[0]
        if isinstance(result, StageError):
            raise result
        return result

    def close(self) -> None:
        """Close the HTTP session."""
        self._deepl.close()
