"""Which translator to load when none is named: one rule for ``stsdub dub`` and ``stsdub serve``.

DeepL needs a key and an offline translator needs a model the user brings, so neither can
be a silent default on a fresh machine: DeepL is picked only when its key is there, and
otherwise there is no translator (re-voicing in the same language still works). A translator
that is named but cannot load as configured is reported here, before any model loads.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from ._builtin.deepl import AUTH_KEY_ENV as DEEPL_KEY_ENV
from .errors import ConfigurationError

__all__ = [
    "AUTO",
    "DEEPL_KEY_ENV",
    "check_translator",
    "default_translator",
    "has_deepl_key",
    "translator_setup_hint",
]

#: The translator setting that applies :func:`default_translator` (the service's default).
AUTO = "auto"

_OFFLINE = (
    "translate offline with a CTranslate2 model (Opus-MT or NLLB, converted with ct2-transformers-converter)"
)


def has_deepl_key(options: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> bool:
    """Whether a DeepL key is set: the ``auth_key`` option, or ``DEEPL_AUTH_KEY``.

    Args:
        options: The translator's options.
        environ: Where ``DEEPL_AUTH_KEY`` is looked up; ``os.environ`` by default.
    """
    env = os.environ if environ is None else environ
    # The same test as the DeepL stage's, so that this never promises a key the stage refuses.
    return bool(options.get("auth_key") or env.get(DEEPL_KEY_ENV))


def default_translator(options: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> str | None:
    """The translator to load when none is named: ``"deepl"`` when a key is set, else ``None``.

    Args:
        options: The translator's options (an ``auth_key`` there counts as a key).
        environ: Where ``DEEPL_AUTH_KEY`` is looked up; ``os.environ`` by default.
    """
    return "deepl" if has_deepl_key(options, environ) else None


def translator_setup_hint(*, service: bool = False) -> str:
    """How to set up a translator, for error messages.

    Args:
        service: Word it for ``stsdub serve`` (its variables as well as its flags) rather
            than for ``stsdub dub``.
    """
    if not service:
        return (
            f"Set {DEEPL_KEY_ENV}=<your DeepL API key> to use DeepL,"
            f" or {_OFFLINE}: --translator ctranslate2 -O translator.model=PATH"
        )
    return (
        f"Start the service with a translator: set {DEEPL_KEY_ENV}=<your DeepL API key> (DeepL is then"
        " the default; STSDUB_TRANSLATOR=deepl or --translator deepl names it), or"
        f" {_OFFLINE}: STSDUB_TRANSLATOR=ctranslate2 with"
        ' STSDUB_TRANSLATOR_OPTIONS=\'{"model": "PATH"}\''
        " (--translator ctranslate2 -O translator.model=PATH)"
    )


def check_translator(name: str, options: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> None:
    """Refuse a named built-in translator that cannot load as configured.

    Checked before any model loads, so that the user hears about a missing key or model at
    once rather than after the speech recognizer has loaded.

    Args:
        name: The translator's registered name.
        options: Its options.
        environ: Where ``DEEPL_AUTH_KEY`` is looked up; ``os.environ`` by default.

    Raises:
        ConfigurationError: ``deepl`` without a key, or ``ctranslate2`` without a model.
    """
    if name == "deepl" and not has_deepl_key(options, environ):
        raise ConfigurationError(
            f"the deepl translator needs a DeepL API key: set {DEEPL_KEY_ENV}=<your key>"
            f" (or -O translator.auth_key=KEY), or {_OFFLINE}:"
            " --translator ctranslate2 -O translator.model=PATH"
        )
    if name == "ctranslate2" and "model" not in options:
        raise ConfigurationError(
            f"the ctranslate2 translator needs a model: -O translator.model=PATH; {_OFFLINE}"
        )
