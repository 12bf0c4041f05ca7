"""The ``apertium`` translator: Apertium's rule-based pairs, as Debian installs them.

Apertium translates one language pair per *mode* (``eng-spa``, ``spa-eng_US``,
``eng-cat_valencia``): a pipeline of a dozen small programs (``lt-proc``,
``apertium-tagger``, ``apertium-transfer``, …) described by ``<datadir>/modes/<mode>.mode``.
Starting one costs most of a second (every program loads its transducers); translating a
sentence through a running one costs a few milliseconds. So the stage keeps pipelines running
and feeds them fragment after fragment in null-flush mode: each program gets ``-z``, reads up
to a NUL byte, writes what it made of it followed by a NUL and flushes, and waits for more.

Why not ``apertium -z``. The ``apertium`` script (3.8) does pass ``-z`` to every program of
the mode (through ``apertium-wblank-mode -z``), but it cannot be kept open with ``-f txt``:
``apertium-destxt`` drops NUL bytes, so nothing is ever flushed. With ``-f none`` the script
wraps the pipeline in two ``gawk`` filters whose record separator is a regex, and gawk holds
each record back until the next one arrives: every answer comes one request late. So the stage
does what the script does minus those parts. It asks ``apertium-wblank-mode -z`` for the mode's
pipeline (the program the script uses, so ``apertium-wblank-attach`` / ``-detach`` and any
newer steps are kept; Apertium before 3.7 lacks it, and ``-z`` is then added to each program
of the mode file), puts in the script's arguments (``$1`` = ``-n``: no unknown-word marks, as
``apertium -u``), and starts the programs itself, chained by pipes, holding only the first
one's input and the last one's output: under a shell, the shell would hold both open, and a
program dying mid-pipeline would look like a hang. (A mode that is more than a plain pipeline
still runs under bash.) It does the deformatting itself too:

- control characters, newlines and NULs become spaces, and runs of spaces one, so nothing in a
  transcript can split a request in two;
- the characters of Apertium's stream format (``\\ [ ] ^ $ / @ < > { } ~``) are escaped as
  ``apertium-destxt`` escapes them;
- the text goes between two superblanks that number the request (``[7]…[/7]``), which
  Apertium passes through untouched: an answer without them is not the request's (when a
  program dies mid-pipeline, the ones after it flush what they hold at end of input, NUL and
  all), and the pipeline is replaced;
- each request ends with a newline before its NUL (``lt-proc -b`` waits for a blank after the
  last word before it flushes; the analyser drops a final full stop with no blank after it).

Unknown words come back unmarked (``-n``); ``#`` (no generation) and ``@`` (no bilingual
entry) marks, which newer ``lt-proc`` also drops with ``-n`` and older ones keep, are
removed from the start of words too, keeping the word. Escapes are undone.

Each mode has a pool of up to ``concurrency`` pipelines, started when first needed (or by
:meth:`ApertiumTranslator.warmup` for the pairs it can foresee), each serving one request at a
time. One that times out is killed and replaced at once; one found dead (a program crashed or
was killed) is replaced, and the request tried once more on the new one; ``close()`` ends them
all, and a translator that is never closed ends them when it is collected or at exit.
"""

from __future__ import annotations

import importlib.resources
import json
import logging
import os
import re
import shutil
import threading
import time
import weakref
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import NamedTuple

from .._core._values import Translation, TranslationRequest
from ..errors import ErrorCode, StageError, StageLoadError
from ._apertium_processes import (
    _CLOSE_GRACE,
    _child_environment,
    _Died,
    _kill_all,
    _launcher_settings,
    _Pipeline,
    _Pool,
    _Spawner,
    _Timeout,
    null_flush_pipeline,
    split_pipeline,
)

__all__ = [
    "ISO639_3",
    "ApertiumMode",
    "ApertiumTranslator",
    "apertium_codes",
    "null_flush_pipeline",
    "parse_mode",
    "split_pipeline",
]

logger = logging.getLogger("stsdub.translation.apertium")

_PROGRAM = "apertium"
_INSTALL_HINT = "apt-get install apertium apertium-eng-spa (one package per language pair)"
_WARMUP_TEXT = "Hello."

#: ISO 639-1 → the codes Apertium uses for the language, best first (ISO 639-3, and the
#: older two-letter names some pairs still have, e.g. ``en-gl``, are tried after these).
#: The table is data (``data/apertium_languages.json``), read once at import.
ISO639_3: Mapping[str, tuple[str, ...]] = {
    tag: tuple(codes)
    for tag, codes in json.loads(
        importlib.resources.files(__package__).joinpath("data/apertium_languages.json").read_text("utf-8")
    )["codes"].items()
}
# Apertium code → our tag, for messages and the list of pairs (the first 639-3 code of each).
_ISO639_1 = {codes[0]: tag for tag, codes in ISO639_3.items()} | {"hbs": "sh", "nob": "nb", "cmn": "zh"}

# A translation mode: `src[_variant]-tgt[_variant]`. Debug modes of a pair (`eng-spa-tagger`)
# have a third part and are not translations.
_MODE_NAME = re.compile(r"^([a-z]{2,3})(?:_([A-Za-z0-9_]+))?-([a-z]{2,3})(?:_([A-Za-z0-9_]+))?$")
# Input: what must not reach the pipeline as it is. Control characters (NUL ends a request)
# and Unicode line breaks become spaces; whitespace runs are then collapsed.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# The stream format's reserved characters, escaped with a backslash as apertium-destxt does;
# `~` marks post-generation and would be dropped.
_RESERVED = re.compile(r"[\\\[\]^$/@<>{}~]")
# Output: an escape (kept character), a mark at the start of a word (`*` unknown, `#` no
# generation, `@` no transfer; dropped), or a superblank bracket (dropped, as apertium-retxt).
_OUTPUT_TOKEN = re.compile(r"\\(.)|[*#@](?=\w)|[\[\]]", re.DOTALL)


class ApertiumMode(NamedTuple):
    """An installed Apertium translation mode, e.g. ``eng-cat_valencia``."""

    name: str
    source: str
    source_variant: str | None
    target: str
    target_variant: str | None

    @property
    def pair(self) -> tuple[str, str]:
        """The mode's languages as our tags: ``("en", "ca-valencia")``."""
        return _tag(self.source, self.source_variant), _tag(self.target, self.target_variant)


def parse_mode(name: str) -> ApertiumMode | None:
    """The languages of a mode name (``"spa-eng_US"``); None for a debug or unknown mode."""
    match = _MODE_NAME.match(name)
    if match is None:
        return None
    source, source_variant, target, target_variant = match.groups()
    return ApertiumMode(name, source, source_variant, target, target_variant)


def _tag(code: str, variant: str | None) -> str:
    language = _ISO639_1.get(code, code)
    return f"{language}-{variant.replace('_', '-')}" if variant else language


def apertium_codes(language: str) -> tuple[tuple[str, ...], str | None]:
    """Apertium's codes for a language tag, best first, and the variant the tag asks for.

    ``"en-US"`` → ``(("eng", "en"), "US")``, ``"ca-valencia"`` → ``(("cat", "ca"),
    "valencia")``, ``"pt"`` → ``(("por", "pt"), None)``; an Apertium code is taken as it is
    (``"cat_valencia"`` → ``(("cat", "ca"), "valencia")``). Script subtags (``Latn``) are
    ignored.
    """
    parts = [p for p in language.strip().replace("_", "-").split("-") if p]
    if not parts:
        return (), None
    base = parts[0].lower()
    variant = "_".join(p for p in parts[1:] if not (len(p) == 4 and p.isalpha())) or None
    if base in ISO639_3:
        codes = (*ISO639_3[base], base)
    elif base in _ISO639_1:
        codes = (base, _ISO639_1[base])
    else:
        codes = (base,)
    return codes, variant


def _pick_variant(modes: list[ApertiumMode], variant: str | None, side: str) -> list[ApertiumMode]:
    """The modes whose ``side`` variant the tag asks for; else the plain ones; else all."""
    attribute = f"{side}_variant"
    if variant is not None:
        asked = [m for m in modes if (getattr(m, attribute) or "").lower() == variant.lower()]
        if asked:
            return asked
    plain = [m for m in modes if getattr(m, attribute) is None]
    return plain or modes


def _pair_key(source: str, target: str) -> tuple[str, str]:
    return (source.strip().replace("_", "-").lower(), target.strip().replace("_", "-").lower())


def _base(language: str) -> str:
    return language.strip().replace("_", "-").split("-")[0].lower()


def _clean(text: str) -> str:
    """One line of text: control characters and line breaks are spaces, runs of spaces one."""
    return " ".join(_CONTROL.sub(" ", text).split())


def _escape(text: str) -> str:
    return _RESERVED.sub(lambda m: "\\" + m.group(0), text)


def _speakable(output: str) -> str:
    """The pipeline's output as text to speak: escapes undone, marks removed, spaces tidied."""
    return " ".join(_OUTPUT_TOKEN.sub(lambda m: m.group(1) or "", output).split())


class ApertiumTranslator:
    """Translate with the Apertium language pairs installed on this machine.

    Languages are mapped to Apertium's modes (``en`` → ``eng``, ``en-US`` as a target →
    ``spa-eng_US`` where installed, ``ca-valencia`` → ``eng-cat_valencia``); a pair that is not
    installed fails its fragment at once with ``UNSUPPORTED_LANGUAGE``, naming the installed
    pairs. Without a source language (``None``) the stage uses the only installed language
    that translates into the target, and fails with ``UNSUPPORTED_LANGUAGE`` when there are
    several, since Apertium cannot detect the language.

    Args:
        device: Ignored (Apertium runs on the CPU); accepted because every factory gets it.
        modes: Modes to use instead of the mapping, by language pair: ``{"en-es": "eng-spa"}``
            (languages alone, any region) or ``{("en", "ca-ES"): "eng-cat_valencia"}`` (exact
            tags). Each must be installed.
        concurrency: Pipelines per mode, so this many requests of one pair run at once; also
            the requests the Dubber makes at once.
        timeout: Seconds one request may take, waiting for a free pipeline included. A
            pipeline that does not answer in time is killed and replaced, and the request
            fails with ``TIMEOUT`` (retryable).
        preload: Pairs whose pipelines :meth:`warmup` starts (``["en-es", ("en", "ca")]`` or
            mode names such as ``"eng-spa"``). The values of ``modes`` are started too, and so
            is the only installed mode when there is just one. Other pairs start on first use
            (most of a second, once).
        data_dir: Apertium's data directory (``apertium -d``, holding ``modes/``); default:
            ``$APERTIUM_DATADIR``, else the one the ``apertium`` script was installed with.

    Raises:
        StageLoadError: ``apertium`` is not on ``PATH``, no pair is installed,
            or ``modes`` / ``preload`` name something that is not installed.
    """

    def __init__(
        self,
        *,
        device: str = "cpu",
        modes: Mapping[str | tuple[str, str], str] | None = None,
        concurrency: int = 2,
        timeout: float = 5.0,
        preload: Iterable[str | tuple[str, str]] = (),
        data_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        if not isinstance(concurrency, int) or concurrency < 1:
            raise StageLoadError(f"the apertium translator needs concurrency >= 1, got {concurrency!r}")
        if not timeout > 0:  # also refuses NaN
            raise StageLoadError(f"the apertium translator needs timeout > 0, got {timeout!r}")
        launcher = shutil.which(_PROGRAM)
        if launcher is None:
            raise StageLoadError(f"the apertium translator needs Apertium; install it with: {_INSTALL_HINT}")
        self.device = device
        self.concurrency = concurrency
        self.timeout = float(timeout)
        settings = _launcher_settings(launcher)
        bin_dir = (
            os.environ.get("APERTIUM_PATH") or settings.get("APERTIUM_PATH") or str(Path(launcher).parent)
        )
        if data_dir is None:
            data_dir = (
                os.environ.get("APERTIUM_DATADIR")
                or settings.get("APERTIUM_DATADIR")
                or Path(launcher).resolve().parent.parent / "share" / "apertium"
            )
        self.data_dir = Path(data_dir)
        modes_dir = self.data_dir / "modes"
        names = sorted(p.stem for p in modes_dir.glob("*.mode")) if modes_dir.is_dir() else []
        #: The installed translation modes, by name.
        self.modes: dict[str, ApertiumMode] = {
            mode.name: mode for mode in map(parse_mode, names) if mode is not None
        }
        if not self.modes:
            raise StageLoadError(
                f"the apertium translator found no language pair in {str(modes_dir)!r}; install one,"
                f" e.g.: {_INSTALL_HINT}"
            )
        self._overrides: dict[tuple[str, str], str] = {}
        for key, name in (modes or {}).items():
            self._overrides[self._override_key(key)] = self._installed(name, "modes")
        self._chosen: dict[tuple[str | None, str], str] = {}
        self._preload = [self._preload_mode(item) for item in preload]
        self._spawner = _Spawner(modes_dir, _child_environment(bin_dir))
        self._pools: dict[str, _Pool] = {}
        self._lock = threading.Lock()
        self._closed = False
        # No pipeline outlives a translator that is never closed (collected, or at exit).
        self._finalizer = weakref.finalize(self, _kill_all, self._spawner, True)

    def __repr__(self) -> str:
        return f"ApertiumTranslator({len(self.modes)} modes in {str(self.data_dir)!r})"

    # -- languages ---------------------------------------------------------------------------

    @property
    def pairs(self) -> list[tuple[str, str]]:
        """The installed pairs as our tags, variants included: ``[("en", "es"), ("es", "en-US"), …]``."""
        return sorted({mode.pair for mode in self.modes.values()})

    def _installed_pairs(self) -> str:
        plain = sorted({(_tag(m.source, None), _tag(m.target, None)) for m in self.modes.values()})
        return ", ".join(f"{source} → {target}" for source, target in plain)

    def _installed(self, name: str, option: str) -> str:
        if name not in self.modes:
            raise StageLoadError(
                f"apertium translator: {option} names the mode {name!r}, which is not installed;"
                f" installed: {', '.join(sorted(self.modes))}"
            )
        return name

    @staticmethod
    def _override_key(key: str | tuple[str, str]) -> tuple[str, str]:
        if isinstance(key, tuple):
            if len(key) != 2:
                raise StageLoadError(f"apertium translator: modes key {key!r} is not (source, target)")
            return _pair_key(*key)
        parts = key.replace("_", "-").split("-")
        if len(parts) != 2 or not all(parts):
            raise StageLoadError(
                f"apertium translator: modes key {key!r} is not 'source-target' (e.g. 'en-es');"
                " use a (source, target) tuple for tags with a region"
            )
        return ("*" + parts[0].lower(), "*" + parts[1].lower())

    def _preload_mode(self, item: str | tuple[str, str]) -> str:
        if isinstance(item, str) and item in self.modes:
            return item
        try:
            key = self._override_key(item)
            source, target = (k.lstrip("*") for k in key)
            return self.mode_for(source, target)
        except (StageError, StageLoadError) as exc:
            message = exc.message if isinstance(exc, StageError) else str(exc)
            raise StageLoadError(f"apertium translator: cannot preload {item!r}: {message}") from exc

    def mode_for(self, source: str | None, target: str) -> str:
        """The installed mode that translates ``source`` into ``target``.

        Raises:
            StageError: ``UNSUPPORTED_LANGUAGE`` when no installed mode does (the message names
                the installed pairs), or when ``source`` is None and several could.
        """
        key = (source, target)
        chosen = self._chosen.get(key)
        if chosen is None:
            chosen = self._choose(source, target)
            self._chosen[key] = chosen  # the same answer every time: no lock needed
        return chosen

    def _choose(self, source: str | None, target: str) -> str:
        target_codes, target_variant = apertium_codes(target)
        if source is None:
            into = [m for m in self.modes.values() if m.target in target_codes]
            sources = sorted({_tag(m.source, None) for m in into})
            if len(sources) != 1:
                raise StageError(
                    ErrorCode.UNSUPPORTED_LANGUAGE,
                    "Apertium cannot detect the source language; set source_language (installed"
                    f" into {target}: {', '.join(f'{s} → {target}' for s in sources) or 'none'})",
                )
            source = sources[0]
        override = self._overrides.get(_pair_key(source, target)) or self._overrides.get(
            ("*" + _base(source), "*" + _base(target))
        )
        if override is not None:
            return override
        source_codes, source_variant = apertium_codes(source)
        for source_code in source_codes:
            for target_code in target_codes:
                found = [m for m in self.modes.values() if (m.source, m.target) == (source_code, target_code)]
                if not found:
                    continue
                found = _pick_variant(
                    _pick_variant(found, source_variant, "source"), target_variant, "target"
                )
                if len(found) == 1:
                    return found[0].name
                raise StageError(
                    ErrorCode.UNSUPPORTED_LANGUAGE,
                    f"Apertium has only variants for {source} → {target}:"
                    f" {', '.join(sorted(m.pair[1] for m in found))}; ask for one (e.g. target"
                    f" {found[0].pair[1]!r}) or choose with translator_options={{'modes': ...}}",
                )
        raise StageError(
            ErrorCode.UNSUPPORTED_LANGUAGE,
            f"Apertium has no {source} → {target} pair installed; installed: {self._installed_pairs()}"
            " (more with apt-get install apertium-<pair>, e.g. apertium-eng-spa)",
        )

    # -- pipelines ---------------------------------------------------------------------------

    def _pool(self, mode: str) -> _Pool:
        with self._lock:
            if self._closed:
                raise StageError(ErrorCode.INTERNAL_ERROR, "the apertium translator is closed")
            pool = self._pools.get(mode)
            if pool is None:
                pool = self._pools[mode] = _Pool(mode, self.concurrency, self._spawner)
            return pool

    def pipeline_pids(self) -> dict[str, list[tuple[int, ...]]]:
        """The process ids of every running pipeline's programs (in pipeline order), by mode."""
        with self._lock:
            pools = dict(self._pools)
        running = {
            mode: sorted(p.pids for p in pool.pipelines() if not p.closed) for mode, pool in pools.items()
        }
        return {mode: pids for mode, pids in running.items() if pids}

    # -- the stage ---------------------------------------------------------------------------

    def translate(self, request: TranslationRequest) -> Translation:
        """Translate one request through a running pipeline of its pair.

        Raises:
            StageError: ``UNSUPPORTED_LANGUAGE`` (no such pair), ``TIMEOUT`` (no answer within
                ``timeout``; the pipeline was replaced), ``INTERNAL_ERROR`` (the pipeline
                died on this text twice, or the stage is closed).
        """
        if self._closed:
            raise StageError(ErrorCode.INTERNAL_ERROR, "the apertium translator is closed")
        text = _clean(request.text)
        if not text:
            return Translation("")
        mode = self.mode_for(request.source_language or None, request.target_language)
        pool = self._pool(mode)
        deadline = time.monotonic() + self.timeout
        escaped = _escape(text)
        for attempt in (1, 2):
            pipeline = pool.acquire(deadline)
            try:
                answer = pipeline.ask(escaped, deadline)
            except _Timeout:
                pool.release(pipeline, healthy=False)
                logger.warning("apertium %s: no answer within %g s; pipeline replaced", mode, self.timeout)
                raise StageError(
                    ErrorCode.TIMEOUT,
                    f"Apertium {mode} gave no answer within {self.timeout:g} s; its pipeline was replaced",
                ) from None
            except _Died as exc:
                reason = f"{exc}; stderr: {pipeline.stderr_tail() or '(nothing)'}"
                pool.release(pipeline, healthy=False)
                if self._closed:
                    raise StageError(ErrorCode.INTERNAL_ERROR, "the apertium translator is closed") from None
                if attempt == 1:
                    # Killed or crashed earlier, most likely: a fresh pipeline gets one try.
                    logger.warning("apertium %s pipeline %s died: %s; retrying", mode, pipeline.pids, reason)
                    continue
                raise StageError(
                    ErrorCode.INTERNAL_ERROR, f"Apertium {mode} died on this text twice: {reason}"
                ) from None
            except BaseException:
                pool.release(pipeline, healthy=False)
                raise
            pool.release(pipeline, healthy=True)
            return Translation(_speakable(answer))
        raise AssertionError("unreachable")  # pragma: no cover

    def warmup(self) -> None:
        """Start ``concurrency`` pipelines of every pair it can foresee and wait until each
        has answered, so the first fragment pays no start-up.

        Foreseen: ``preload``, the values of ``modes``, and the only installed mode when
        there is one. Other pairs start on their first request.

        Raises:
            StageLoadError: A pipeline did not start or answer.
        """
        foreseen = list(dict.fromkeys([*self._preload, *self._overrides.values()]))
        if not foreseen and len(self.modes) == 1:
            foreseen = list(self.modes)
        deadline = time.monotonic() + max(self.timeout, 30.0)
        lent: list[tuple[_Pool, _Pipeline]] = []
        try:
            # All started first, so they load side by side; then each answers once.
            for mode in foreseen:
                pool = self._pool(mode)
                lent += [(pool, pool.acquire(deadline)) for _ in range(self.concurrency)]
            for _, pipeline in lent:
                try:
                    pipeline.ask(_WARMUP_TEXT, deadline)
                except (_Timeout, _Died) as exc:
                    detail = "no answer" if isinstance(exc, _Timeout) else str(exc)
                    raise StageLoadError(
                        f"apertium translator: the {pipeline.mode} pipeline failed to warm up ({detail});"
                        f" stderr: {pipeline.stderr_tail() or '(nothing)'}"
                    ) from exc
        except StageError as exc:
            raise StageLoadError(f"apertium translator: {exc.message}") from exc
        finally:
            for pool, pipeline in lent:
                pool.release(pipeline, healthy=pipeline.served > 0)

    def close(self) -> None:
        """End every pipeline; requests in flight fail, later ones raise ``INTERNAL_ERROR``."""
        with self._lock:
            self._closed = True
            pools = list(self._pools.values())
        for pool in pools:
            pool.close()
        for pool in pools:
            pool.wait_idle(_CLOSE_GRACE + 5.0)
        # Only a thread stuck past the wait still holds a pipeline: a signal ends its programs.
        _kill_all(self._spawner, False)
        self._finalizer.detach()
