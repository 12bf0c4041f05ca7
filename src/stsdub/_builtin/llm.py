"""Translation with a large language model behind any OpenAI-compatible chat endpoint.

The official ``openai`` client talks to OpenAI itself or to any server that offers
``POST /v1/chat/completions`` — vLLM, llama.cpp's ``llama-server``, Ollama, LM Studio — so
one stage covers hosted and local models: ``base_url`` names the server, ``model`` the model.

Live fragments have a budget of a few seconds, so the client's own retries (two, with
backoff) and its ten-minute default timeout do not fit: the stage builds its client with
``max_retries=0`` and a short (connect, read) timeout, maps failures to retryable or
permanent :class:`~stsdub.StageError` codes as the DeepL stage does, and the pipeline
retries the retryable ones inside the fragment's budget.

Batching: a chat endpoint translates one conversation per request, and numbering several
lines into one prompt lets a model merge, drop or reorder lines, which would break the one
result per fragment promise. So requests that wait together (from several streams) are sent
as separate chat requests, in parallel, at most ``concurrency`` at the endpoint at once;
servers such as vLLM and llama.cpp batch concurrent requests on the GPU themselves.

Answers are checked before they are used. A model's chatter around the translation ("Sure!
Here is the translation:", a ``Spanish:`` label, quotes, code fences, a ``<think>`` block,
a trailing "Note: ...") is removed. An answer that is then empty, or that repeats the source
unchanged for a target in another language, fails the fragment with ``INVALID_TEXT``: a
permanent error, because asking the same model the same question again at a low temperature
mostly gives the same answer, and the fallback audio is better than spending the
fragment's budget on it.

Length budgets (``supports_length_budget``): given a :class:`~stsdub.LengthBudget`, the
model is asked to rewrite the too-long translation within ``max_chars``, keeping its
meaning; an answer still too long gets one more try with its own length named, and the
shortest answer wins. At most two requests per budget.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import anyio
import anyio.to_thread

from .._core._languages import base_language
from .._core._values import LengthBudget, Translation, TranslationRequest
from ..errors import ErrorCode, PluginError, StageError, StageLoadError

__all__ = ["API_KEY_ENV", "BASE_URL_ENV", "LLMTranslator", "clean_answer", "language_name"]

log = logging.getLogger("stsdub")

#: Where the key and the server are read from when not given (the openai client's own).
API_KEY_ENV = "OPENAI_API_KEY"
BASE_URL_ENV = "OPENAI_BASE_URL"
_INSTALL_HINT = "pip install 'stsdub[llm]'"
# Local servers (llama.cpp, Ollama, vLLM without --api-key) ignore the key, but the client
# insists on one; this is the placeholder llama.cpp's documentation uses.
_NO_KEY = "sk-no-key-required"

# Language names read better in a prompt than codes; unknown codes are used as they are.
_LANGUAGE_NAMES = {
    "ar": "Arabic", "bg": "Bulgarian", "ca": "Catalan", "cs": "Czech", "da": "Danish",
    "de": "German", "el": "Greek", "en": "English", "es": "Spanish", "et": "Estonian",
    "eu": "Basque", "fa": "Persian", "fi": "Finnish", "fr": "French", "gl": "Galician",
    "he": "Hebrew", "hi": "Hindi", "hr": "Croatian", "hu": "Hungarian", "id": "Indonesian",
    "it": "Italian", "ja": "Japanese", "ko": "Korean", "lt": "Lithuanian", "lv": "Latvian",
    "nb": "Norwegian Bokmål", "nl": "Dutch", "no": "Norwegian", "pl": "Polish",
    "pt": "Portuguese", "ro": "Romanian", "ru": "Russian", "sk": "Slovak", "sl": "Slovenian",
    "sr": "Serbian", "sv": "Swedish", "th": "Thai", "tr": "Turkish", "uk": "Ukrainian",
    "vi": "Vietnamese", "zh": "Chinese",
}  # fmt: skip
_REGIONS = {"br": "Brazilian", "pt": "European", "mx": "Mexican", "gb": "British", "us": "American"}


def language_name(tag: str) -> str:
    """An English name for a language tag (``"es"`` → ``"Spanish"``, ``"pt-BR"`` →
    ``"Brazilian Portuguese"``); an unknown tag is returned as it is."""
    parts = tag.replace("_", "-").split("-")
    name = _LANGUAGE_NAMES.get(parts[0].lower())
    if name is None:
        return tag
    region = _REGIONS.get(parts[1].lower()) if len(parts) > 1 else None
    return f"{region} {name}" if region else name


def _import_openai() -> Any:
    try:
        import openai
    except ImportError as exc:
        raise PluginError(
            f"the llm translator needs the openai package; install it with: {_INSTALL_HINT}"
        ) from exc
    return openai


# -- cleaning answers -------------------------------------------------------------------------

_QUOTES = {'"': '"', "'": "'", "“": "”", "„": "“", "«": "»", "»": "«", "‘": "’", "「": "」", "『": "』"}
_THINK = re.compile(r"<think>.*?(?:</think>|\Z)", re.DOTALL | re.IGNORECASE)
_FENCE = re.compile(r"\A```[^\n]*\n(.*?)\n?```\s*\Z", re.DOTALL)
# "Sure! Here is the translation:", "Here's the Spanish translation of the line:",
# "Translation:", "Certainly. The translation is:" — at the start, up to the colon.
_CHATTER = re.compile(
    r"\A(?:(?:sure|certainly|of course|okay|ok|absolutely|great)\b[!,.]?\s*)?"
    r"(?:here(?:'s| is| are)\s+(?:the|your|a|my)?\s*(?:[\w-]+\s+){0,3}?(?:translation|version|line|text)"
    r"|(?:the\s+)?(?:[\w-]+\s+)?translation(?:\s+is)?"
    r"|(?:the\s+)?(?:shorter|shortened|short)\s+(?:version|translation|line)(?:\s+is)?)"
    r"[^:\n]{0,60}:\s*",
    re.IGNORECASE,
)
_NOTE = re.compile(
    r"\n\s*\n\s*(?:\(?(?:note|explanation|translator'?s note)\b).*\Z", re.DOTALL | re.IGNORECASE
)
_WORDS = re.compile(r"\w+", re.UNICODE)


def _strip_quotes(text: str, source: str) -> str:
    # A source line that is itself a quotation keeps its quotes.
    while len(text) >= 2 and _QUOTES.get(text[0]) == text[-1] and source[:1] != text[0]:
        text = text[1:-1].strip()
    return text


def clean_answer(answer: str, source: str, target_language: str = "") -> str:
    """The translation in a model's answer, without the chatter around it.

    Removes ``<think>`` blocks, code fences, an opening such as "Sure! Here is the
    translation:" or a ``Spanish:`` label, a trailing "Note: ..." paragraph and quotes
    around the whole answer. What is left may be empty.
    """
    text = _THINK.sub("", answer).strip()
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1).strip()
    text = _NOTE.sub("", text).strip()
    text = _CHATTER.sub("", text, count=1).strip()
    if target_language:
        names = {target_language, base_language(target_language) or "", language_name(target_language)}
        label = "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True) if n)
        text = re.sub(rf"\A(?:{label})\s*(?:translation)?\s*:\s*", "", text, count=1, flags=re.IGNORECASE)
    text = _strip_quotes(text.strip(), source.strip())
    return text.strip()


def _same_words(a: str, b: str) -> bool:
    return [w.casefold() for w in _WORDS.findall(a)] == [w.casefold() for w in _WORDS.findall(b)]


# -- errors -----------------------------------------------------------------------------------


def _stage_error(exc: Exception, where: str) -> StageError:
    """The StageError for an exception of the openai client."""
    openai = _import_openai()
    message = f"{where}: {type(exc).__name__}: {exc}"
    # APITimeoutError is an APIConnectionError: check it first.
    if isinstance(exc, openai.APITimeoutError):
        return StageError(ErrorCode.TIMEOUT, message)
    if isinstance(exc, openai.APIConnectionError):
        return StageError(ErrorCode.NETWORK_ERROR, message)
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        code = str(getattr(exc, "code", "") or "") + " " + str(getattr(exc, "type", "") or "")
        if status in (401, 403):
            return StageError(ErrorCode.AUTHENTICATION_FAILED, message)
        if status == 429:
            # OpenAI answers a used-up balance with 429 too; waiting does not help then.
            if "insufficient_quota" in code or "exceeded your current quota" in str(exc):
                return StageError(ErrorCode.QUOTA_EXCEEDED, message)
            return StageError(ErrorCode.RATE_LIMIT_EXCEEDED, message)
        if status == 408:
            return StageError(ErrorCode.TIMEOUT, message)
        # 409 (a conflict the client itself would retry), 5xx: try again.
        if status == 409 or status >= 500:
            return StageError(ErrorCode.TEMPORARY_UNAVAILABLE, message)
        if status in (400, 413, 422):
            return StageError(ErrorCode.INVALID_TEXT, message)
        return StageError(ErrorCode.INTERNAL_ERROR, message)
    return StageError(ErrorCode.INTERNAL_ERROR, message)


# -- the stage --------------------------------------------------------------------------------


class LLMTranslator:
    """Translate with a chat model at any OpenAI-compatible endpoint.

    Args:
        device: Ignored (the model runs at the endpoint); accepted because every factory gets it.
        model: The model's name at the endpoint (``"gpt-4o-mini"``, ``"qwen2.5:7b"`` for
            Ollama, the served name for vLLM). Required.
        base_url: The API's base URL, e.g. ``http://localhost:11434/v1`` (Ollama),
            ``http://localhost:8000/v1`` (vLLM, llama.cpp); default ``OPENAI_BASE_URL``, else
            OpenAI's.
        api_key: Default ``OPENAI_API_KEY``; a local server needs none (a placeholder is sent).
        glossary: ``{"source term": "target term"}``; the terms that occur in a line are put
            in its prompt, to be translated as given.
        instructions: Further instructions for the model (tone, register, audience).
        context: Put what was said before in the prompt (as context, not to be translated):
            the speaker's preceding sentences and their translations when the request carries
            them (``TranslationRequest.context``, from a file dub, or a live stream's last three
            fragments: the translator declares ``supports_context``), else the previous line
            and its translation.
        temperature: Sampling temperature (``None``: the server's default).
        max_tokens: Most tokens per answer (``None``: the server's default).
        timeout: Seconds to wait for one answer.
        connect_timeout: Seconds to wait for the connection.
        concurrency: Most requests at the endpoint at once (requests waiting together are
            sent in parallel up to this).
        max_batch_size: Most fragments the pipeline hands over at once.
        budget_tolerance: A shortened answer up to this fraction over the budget's
            ``max_chars`` is accepted without a second try.
        request_options: Further keyword arguments for ``chat.completions.create``, e.g.
            ``{"extra_body": {"options": {"num_ctx": 4096}}}`` for Ollama, or ``{"seed": 1}``.

    Raises:
        StageLoadError: No model, or no key for OpenAI's own API, or bad settings.
    """

    #: The stage rewrites a translation within a :class:`~stsdub.LengthBudget`.
    supports_length_budget = True

    def __init__(
        self,
        *,
        device: str = "cpu",
        model: str | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
        glossary: Mapping[str, str] | None = None,
        instructions: str | None = None,
        context: bool = True,
        temperature: float | None = 0.2,
        max_tokens: int | None = None,
        timeout: float = 5.0,
        connect_timeout: float = 1.0,
        concurrency: int = 8,
        max_batch_size: int = 16,
        budget_tolerance: float = 0.1,
        request_options: Mapping[str, Any] | None = None,
    ) -> None:
        openai = _import_openai()
        if not model:
            raise StageLoadError(
                "the llm translator needs a model: translator_options={'model': 'gpt-4o-mini'} (or the"
                " name your server gives its model)"
            )
        if not timeout > 0 or not connect_timeout > 0:
            raise StageLoadError("the llm translator needs timeout > 0 and connect_timeout > 0")
        if concurrency < 1 or max_batch_size < 1:
            raise StageLoadError("the llm translator needs concurrency >= 1 and max_batch_size >= 1")
        if not budget_tolerance >= 0:
            raise StageLoadError("the llm translator needs budget_tolerance >= 0")
        base_url = base_url or os.environ.get(BASE_URL_ENV) or None
        key = api_key or os.environ.get(API_KEY_ENV) or ""
        if not key:
            if base_url is None:
                raise StageLoadError(
                    f"the llm translator needs an API key for OpenAI: set {API_KEY_ENV} or pass"
                    " translator_options={'api_key': ...}; for a local server pass its base_url"
                )
            key = _NO_KEY
        self.device = device
        self.model = model
        self.glossary = dict(glossary or {})
        self.instructions = instructions
        self.context = context
        #: Reads TranslationRequest.context: a file dub sends the preceding sentences.
        self.supports_context = context
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.timeout = timeout
        self.concurrency = concurrency
        self.max_batch_size = max_batch_size
        self.budget_tolerance = budget_tolerance
        self.request_options = dict(request_options or {})
        # Retries are the pipeline's (inside the fragment's budget), never the client's.
        self._client: Any = openai.OpenAI(
            api_key=key,
            base_url=base_url,
            max_retries=0,
            timeout=openai.Timeout(timeout, connect=connect_timeout),
        )
        self.base_url = str(self._client.base_url)
        # Bounds requests at the endpoint across batch calls; taken in the worker threads.
        self._slots = threading.BoundedSemaphore(concurrency)
        #: Chat requests sent so far (translations and rewrites, failed ones included).
        self.requests_sent = 0
        self._count_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"LLMTranslator(model={self.model!r}, base_url={self.base_url!r})"

    # -- prompts ----------------------------------------------------------------------------

    def _system(self, request: TranslationRequest) -> str:
        source = language_name(request.source_language) if request.source_language else None
        target = language_name(request.target_language)
        lines = [
            f"You translate lines of speech for a dubbed video{f' from {source}' if source else ''}"
            f" into {target}. The translation is spoken by a voice in the time of the original line.",
            f"Answer with the {target} translation of the line only: no quotes, no labels, no"
            " notes, no explanations. Keep names, numbers and the speaker's register.",
        ]
        glossary = request.options.get("glossary", self.glossary) or {}
        found = [(s, t) for s, t in glossary.items() if s.casefold() in request.text.casefold()]
        if found:
            lines.append("Translate these terms exactly as given:")
            lines.extend(f"- {s} → {t}" for s, t in found)
        instructions = request.options.get("instructions", self.instructions)
        if instructions:
            lines.append(str(instructions))
        return "\n".join(lines)

    def _user(self, request: TranslationRequest) -> str:
        target = language_name(request.target_language)
        parts = []
        source = language_name(request.source_language) if request.source_language else "Source"
        if self.context and request.context:
            # The speaker's preceding sentences and how they were translated (a file dub).
            lines = ["Preceding lines, for context only (do not translate them again):"]
            for said, translated in request.context:
                lines += [f"{source}: {said}", f"{target}: {translated}"]
            parts.append("\n".join(lines))
        elif self.context and request.previous_text:
            context = (
                "Previous line, for context only (do not translate it again):"
                f"\n{source}: {request.previous_text}"
            )
            if request.previous_translation:
                context += f"\n{target}: {request.previous_translation}"
            parts.append(context)
        budget = request.budget
        if budget is not None:
            parts.append(
                f"The {target} line is spoken over {budget.seconds:.1f} seconds, so it must have at most"
                f" {budget.max_chars} characters, spaces included. Keep the meaning; say it more"
                " briefly (drop filler words, use shorter words and phrasing)."
            )
            if budget.previous:
                parts.append(
                    f"This translation has {len(budget.previous)} characters, too many to be spoken in"
                    f" time:\n{budget.previous}"
                )
            parts.append(f"Write a shorter {target} translation of this line:\n{request.text}")
        else:
            parts.append(f"Translate this line into {target}:\n{request.text}")
        return "\n\n".join(parts)

    # -- requests ---------------------------------------------------------------------------

    def _complete(self, messages: list[dict[str, str]]) -> str:
        """One chat request (runs in a worker thread); the answer's text."""
        openai = _import_openai()
        options: dict[str, Any] = {**self.request_options}
        if self.temperature is not None:
            options.setdefault("temperature", self.temperature)
        if self.max_tokens is not None:
            options.setdefault("max_tokens", self.max_tokens)
        where = f"LLM {self.model!r} at {self.base_url}"
        with self._slots:
            with self._count_lock:
                self.requests_sent += 1
            try:
                completion = self._client.chat.completions.create(
                    model=self.model, messages=messages, **options
                )
            except openai.OpenAIError as exc:
                raise _stage_error(exc, where) from exc
        choices = getattr(completion, "choices", None) or []
        if not choices:
            raise StageError(ErrorCode.INTERNAL_ERROR, f"{where}: the answer has no choices")
        choice = choices[0]
        if getattr(choice, "finish_reason", None) == "content_filter":
            raise StageError(ErrorCode.INVALID_TEXT, f"{where}: the server's content filter refused the line")
        return str(getattr(choice.message, "content", None) or "")

    def _checked(self, answer: str, request: TranslationRequest) -> str:
        """The cleaned translation; StageError(INVALID_TEXT) when it is none."""
        text = clean_answer(answer, request.text, request.target_language)
        where = f"LLM {self.model!r}"
        if not text:
            raise StageError(ErrorCode.INVALID_TEXT, f"{where} gave no translation (answer: {answer[:80]!r})")
        source, target = request.source_language, request.target_language
        different = source is not None and base_language(source) != base_language(target)
        # A cheap check for "not translated": the same words, in a line long enough that it
        # cannot just be names.
        if different and len(_WORDS.findall(text)) >= 3 and _same_words(text, request.text):
            raise StageError(
                ErrorCode.INVALID_TEXT, f"{where} answered the {source} line untranslated: {text[:80]!r}"
            )
        return text

    def _translate_one(self, request: TranslationRequest) -> Translation:
        messages = [
            {"role": "system", "content": self._system(request)},
            {"role": "user", "content": self._user(request)},
        ]
        answer = self._complete(messages)
        text = self._checked(answer, request)
        if request.budget is None:
            return Translation(text)
        return Translation(self._second_try(messages, answer, text, request, request.budget))

    def _second_try(
        self,
        messages: list[dict[str, str]],
        answer: str,
        text: str,
        request: TranslationRequest,
        budget: LengthBudget,
    ) -> str:
        """One more rewrite when the first was still too long; the shortest answer wins."""
        if len(text) <= budget.max_chars * (1 + self.budget_tolerance):
            return text
        again = [
            *messages,
            {"role": "assistant", "content": answer},
            {
                "role": "user",
                "content": f"That has {len(text)} characters; the limit is {budget.max_chars}. Shorter,"
                " please. Answer with the line only.",
            },
        ]
        try:
            second = self._checked(self._complete(again), request)
        except StageError as err:  # the first rewrite is still a good translation
            log.info("llm translator: second shortening try failed: %s", err)
            return text
        return min((text, second), key=len)

    async def translate_batch(self, requests: Sequence[TranslationRequest]) -> list[Translation | StageError]:
        """Translate several requests, in parallel chat requests (see the module doc).

        Empty texts never reach the endpoint; a request that failed gets a StageError in
        its place and the others go through.
        """
        results: list[Translation | StageError] = [StageError(ErrorCode.INTERNAL_ERROR, "no result")] * len(
            requests
        )

        async def one(i: int, request: TranslationRequest) -> None:
            if not request.text.strip():
                results[i] = Translation("")
                return
            try:
                results[i] = await anyio.to_thread.run_sync(
                    self._translate_one, request, abandon_on_cancel=True
                )
            except StageError as err:
                results[i] = err

        if len(requests) == 1:
            await one(0, requests[0])
        else:
            async with anyio.create_task_group() as tg:
                for i, request in enumerate(requests):
                    tg.start_soon(one, i, request)
        return results

    async def translate(self, request: TranslationRequest) -> Translation:
        """Translate one request."""
        result = (await self.translate_batch([request]))[0]
        if isinstance(result, StageError):
            raise result
        return result

    def close(self) -> None:
        """Close the HTTP connections."""
        self._client.close()
