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

Start-up is different: nothing retries the account check (``/v2/languages``, ``/v2/usage``)
for the stage, and a failed check keeps the Dubber from starting. So the stage retries the
check's transient failures itself (429, 529, 5xx, network errors, timeouts) with backoff, for
up to ``startup_timeout`` seconds; a refused key or a used-up quota still fails at once.

Requests that wait together (from several streams) are grouped by what one DeepL request
must share — source and target language, context, formality, glossary — and each group is
one ``/v2/translate`` call with several texts; groups are sent in parallel.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import anyio
import anyio.to_thread

from .._core._values import Translation, TranslationRequest
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
# Start-up retries wait this long first, doubling up to the cap; jitter keeps several
# services restarted together from asking DeepL in step.
_STARTUP_BACKOFF = 0.2
_STARTUP_BACKOFF_MAX = 2.0
# An attempt with less time than this left in the start-up budget is not worth starting.
_MIN_ATTEMPT = 0.05


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
    """An instance of deepl's HttpClient with our timeout and retry policy (see module doc).

    Its ``timeout`` and ``retries`` attributes may be changed between requests (start-up
    does, to keep each attempt inside its budget).
    """
    import requests.adapters

    base = deepl.http_client.HttpClient
    connection_exception = deepl.ConnectionException

    class BudgetedHttpClient(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            super().__init__()
            self.timeout = timeout
            self.retries = retries
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
                    response = self._internal_request(request, stream=stream, timeout=self.timeout)
                except connection_exception as exc:
                    if not exc.should_retry or attempt >= self.retries:
                        raise
                else:
                    status = response[0]
                    if not (status == 429 or status >= 500) or attempt >= self.retries:
                        return response
                time.sleep(backoff * 2**attempt)
                attempt += 1

    return BudgetedHttpClient()


class _NotFound(Exception):
    """The server lacks an endpoint of the account check (some DeepL-compatible ones do)."""


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
        context: Send what was said before as DeepL's ``context`` (not billed, not
            translated): what the request carries as ``TranslationRequest.context`` (the
            translator declares ``supports_context``): a file dub's preceding sentences of the
            speaker, a live stream's last three fragments; else the previous source text.
            Fragments with different context cannot share a request, so with context on,
            requests batch only across those that share it.
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
        startup_timeout: Seconds the account check may take in all. Transient failures
            (429, 529, 5xx, network errors, timeouts) are retried with backoff until then, each
            attempt's timeouts cut to what is left, so one hiccup at DeepL during a restart
            does not keep the Dubber from starting; a refused key (401, 403) or a used-up
            quota (456) fails at once.
        concurrency: Batches the pipeline may have at DeepL at once; the groups of one
            batch (different languages or context) go out in parallel.
        max_batch_size: Most fragments the pipeline hands over at once.

    Raises:
        StageLoadError: No key, a key DeepL refuses, a quota already used up, or a server
            that kept failing (unreachable, 429, 5xx, no answer) for ``startup_timeout``.
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
        startup_timeout: float = 10.0,
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
        if not startup_timeout > 0:  # also refuses NaN
            raise StageLoadError("the deepl translator needs startup_timeout > 0")
        if concurrency < 1 or max_batch_size < 1:
            raise StageLoadError("the deepl translator needs concurrency >= 1 and max_batch_size >= 1")
        self.device = device
        self.formality = formality
        self.glossary = glossary
        self.context = context
        #: Reads TranslationRequest.context: a file dub sends the preceding sentences.
        self.supports_context = context
        self.model_type = model_type
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.startup_timeout = startup_timeout
        self.concurrency = concurrency
        self.max_batch_size = max_batch_size
        self.target_variants = {
            **DEFAULT_TARGET_VARIANTS,
            **{_base(k): v.upper() for k, v in (target_variants or {}).items()},
        }
        self._deepl: Any = deepl.Translator(key, server_url=server_url)
        original = getattr(self._deepl, "_client", None)
        #: Our HTTP client, or None when the deepl client offers no seam for it.
        self._http: Any = None
        if isinstance(original, deepl.http_client.HttpClient):
            original.close()
            self._http = _budgeted_http_client(
                deepl, timeout=(connect_timeout, timeout), retries=retries, backoff=retry_backoff
            )
            self._deepl._client = self._http
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
        deadline = time.monotonic() + self.startup_timeout
        try:
            sources = self._startup_call(deepl, "/v2/languages", self._deepl.get_source_languages, deadline)
            targets = self._startup_call(deepl, "/v2/languages", self._deepl.get_target_languages, deadline)
        except _NotFound:
            log.info("%s has no /v2/languages; languages are checked by each request", where)
        else:
            self.source_languages = frozenset(lang.code.upper() for lang in sources)
            self.target_languages = frozenset(lang.code.upper() for lang in targets)
        try:
            usage = self._startup_call(deepl, "/v2/usage", self._deepl.get_usage, deadline)
        except _NotFound:
            return
        if usage.any_limit_reached:
            raise StageLoadError(
                f"{where}: {ErrorCode.QUOTA_EXCEEDED.value}: the quota of this billing period is used up"
                f" ({usage.character})"
            )

    def _startup_call(self, deepl: Any, path: str, call: Callable[[], Any], deadline: float) -> Any:
        """``call()``, retrying transient failures with backoff until ``deadline``.

        Raises:
            _NotFound: The server has no ``path`` (404).
            StageLoadError: A permanent failure (at once), or transient ones until the deadline.
        """
        where = f"DeepL at {self.server_url}"
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            try:
                with self._attempt_timeouts(deadline - time.monotonic()):
                    return call()
            except deepl.DeepLException as exc:
                if getattr(exc, "http_status_code", None) == 404:
                    raise _NotFound from exc
                error = _stage_error(exc)
                if not error.retryable:  # a refused key, a used-up quota: no point waiting
                    raise StageLoadError(f"{where}: {error}") from exc
                backoff = min(_STARTUP_BACKOFF * 2 ** (attempt - 1), _STARTUP_BACKOFF_MAX)
                # Up to half the backoff is jitter; never sleep into the last attempt's time.
                wait = backoff * random.uniform(0.5, 1.0)
                left = deadline - time.monotonic()
                wait = min(wait, left - _MIN_ATTEMPT)
                if wait < 0:
                    elapsed = time.monotonic() - started
                    raise StageLoadError(
                        f"{where}: {path} kept failing ({attempt} attempts over {elapsed:.1f} s) until"
                        f" startup_timeout={self.startup_timeout:g} s ran out; last error: {error}"
                    ) from exc
                log.warning(
                    "%s: %s failed at start-up (attempt %d): %s; retrying in %.2f s (%.1f s of"
                    " startup_timeout left)",
                    where,
                    path,
                    attempt,
                    error,
                    wait,
                    left,
                )
                time.sleep(wait)

    @contextlib.contextmanager
    def _attempt_timeouts(self, left: float) -> Iterator[None]:
        """Cut our client's (connect, read) timeouts so that one attempt ends within ``left``
        seconds, and turn off the client's own retries (the start-up loop retries)."""
        http = self._http
        if http is None:  # a client without our seam: its own timeouts apply
            yield
            return
        saved = (http.timeout, http.retries)
        # Each call gets one attempt even when an earlier, slow call spent the budget.
        left = max(left, _MIN_ATTEMPT)
        connect, read = min(self.connect_timeout, left), min(self.timeout, left)
        if connect + read > left:  # both may run in one attempt: share what is left
            scale = left / (connect + read)
            connect, read = connect * scale, read * scale
        http.timeout, http.retries = (connect, read), 0
        try:
            yield
        finally:
            http.timeout, http.retries = saved

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
        context = None
        if self.context:
            context = " ".join(source for source, _ in request.context) or request.previous_text or None
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
