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

import contextlib
import logging
import os
import re
import selectors
import shlex
import shutil
import signal
import subprocess
import threading
import time
import weakref
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from .._model import Translation, TranslationRequest
from ..errors import ErrorCode, StageError, StageLoadError

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
# The launcher script's `$1`: generation without unknown-word marks (`apertium -u`); `$2` is
# the tagger option (`-m` for `apertium -a`), empty.
_GENERATION_OPTION = "-n"
_READ_SIZE = 65536
# Most stderr kept per pipeline for error messages.
_STDERR_TAIL = 2000
# Seconds a closing pipeline gets to exit on end of input before it is killed.
_CLOSE_GRACE = 1.0

#: ISO 639-1 → the codes Apertium uses for the language, best first (ISO 639-3, and the
#: older two-letter names some pairs still have, e.g. ``en-gl``, are tried after these).
ISO639_3: Mapping[str, tuple[str, ...]] = {
    "af": ("afr",),
    "an": ("arg",),
    "ar": ("ara",),
    "az": ("aze",),
    "be": ("bel",),
    "bg": ("bul",),
    "bn": ("ben",),
    "br": ("bre",),
    "bs": ("bos", "hbs"),
    "ca": ("cat",),
    "cs": ("ces",),
    "cy": ("cym",),
    "da": ("dan",),
    "de": ("deu",),
    "el": ("ell",),
    "en": ("eng",),
    "eo": ("epo",),
    "es": ("spa",),
    "et": ("est",),
    "eu": ("eus",),
    "fa": ("fas",),
    "fi": ("fin",),
    "fo": ("fao",),
    "fr": ("fra",),
    "ga": ("gle",),
    "gd": ("gla",),
    "gl": ("glg",),
    "gn": ("grn",),
    "he": ("heb",),
    "hi": ("hin",),
    "hr": ("hrv", "hbs"),
    "hu": ("hun",),
    "hy": ("hye",),
    "id": ("ind",),
    "is": ("isl",),
    "it": ("ita",),
    "ja": ("jpn",),
    "ka": ("kat",),
    "kk": ("kaz",),
    "ko": ("kor",),
    "ky": ("kir",),
    "la": ("lat",),
    "lb": ("ltz",),
    "lt": ("lit",),
    "lv": ("lav",),
    "mk": ("mkd",),
    "ml": ("mal",),
    "mr": ("mar",),
    "ms": ("zlm", "msa"),
    "mt": ("mlt",),
    "nb": ("nob", "nor"),
    "nl": ("nld",),
    "nn": ("nno",),
    "no": ("nor", "nob"),
    "oc": ("oci",),
    "pa": ("pan",),
    "pl": ("pol",),
    "pt": ("por",),
    "ro": ("ron",),
    "ru": ("rus",),
    "sc": ("srd",),
    "se": ("sme",),
    "sh": ("hbs",),
    "sk": ("slk",),
    "sl": ("slv",),
    "sq": ("sqi",),
    "sr": ("srp", "hbs"),
    "sv": ("swe",),
    "sw": ("swa",),
    "ta": ("tam",),
    "tg": ("tgk",),
    "th": ("tha",),
    "tk": ("tuk",),
    "tr": ("tur",),
    "tt": ("tat",),
    "uk": ("ukr",),
    "ur": ("urd",),
    "uz": ("uzb",),
    "vi": ("vie",),
    "zh": ("zho", "cmn"),
}
# Apertium code → our tag, for messages and the list of pairs (the first 639-3 code of each).
_ISO639_1 = {codes[0]: tag for tag, codes in ISO639_3.items()} | {"hbs": "sh", "nob": "nb", "cmn": "zh"}

# A translation mode: `src[_variant]-tgt[_variant]`. Debug modes of a pair (`eng-spa-tagger`)
# have a third part and are not translations.
_MODE_NAME = re.compile(r"^([a-z]{2,3})(?:_([A-Za-z0-9_]+))?-([a-z]{2,3})(?:_([A-Za-z0-9_]+))?$")
# The defaults the `apertium` launcher script carries at its top, e.g.
# APERTIUM_DATADIR="${APERTIUM_DATADIR:-/usr/share/apertium}".
_LAUNCHER_SETTING = re.compile(r'^(APERTIUM_(?:PATH|DATADIR))="\$\{\1:-([^}"]*)\}"', re.MULTILINE)
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


def null_flush_pipeline(mode: str) -> str:
    """A mode file's pipeline with ``-z`` after every program that lacks it.

    What the ``apertium`` script of Apertium 3.6 and older did for ``-z``; newer ones ask
    ``apertium-wblank-mode -z``, which also adds the word-bound blank steps.
    """
    steps = []
    for step in mode.strip().split("|"):
        program, _, rest = step.strip().partition(" ")
        options = rest.split()
        steps.append(step.strip() if "-z" in options else f"{program} -z {rest}".strip())
    return " | ".join(steps)


def split_pipeline(script: str) -> list[list[str]] | None:
    """The programs of a mode's pipeline, each as an argument list, with the arguments the
    ``apertium`` script gives a mode put in (``$1``: ``-n``, generation without unknown-word
    marks; ``$2``: nothing, the tagger's default).

    None when the script is more than programs joined by ``|`` (a redirection, a variable, a
    subshell): such a mode runs under bash instead.
    """
    try:
        lexer = shlex.shlex(script, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        tokens = list(lexer)
    except ValueError:  # unbalanced quotes
        return None
    programs: list[list[str]] = [[]]
    for token in tokens:
        if token == "|":
            programs.append([])
        elif token == "$1":
            programs[-1].append(_GENERATION_OPTION)
        elif token == "$2":
            continue
        elif set(token) <= set("();<>|&") or "$" in token or "`" in token:
            return None
        else:
            programs[-1].append(token)
    return programs if all(programs) else None


def _launcher_settings(launcher: str) -> dict[str, str]:
    """``APERTIUM_PATH`` and ``APERTIUM_DATADIR`` as the ``apertium`` script sets them."""
    try:
        with open(launcher, "rb") as file:
            head = file.read(4096).decode("utf-8", "replace")
    except OSError:
        return {}
    return dict(_LAUNCHER_SETTING.findall(head))


def _child_environment(bin_dir: str) -> dict[str, str]:
    """The environment for a pipeline: Apertium's programs first on PATH, a UTF-8 locale."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join(p for p in (bin_dir, env.get("PATH", "")) if p)
    # The apertium script insists on a UTF-8 LC_CTYPE; older lttoolbox read bytes through it.
    locale = env.get("LC_ALL") or env.get("LC_CTYPE") or env.get("LANG") or ""
    if "utf-8" not in locale.lower() and "utf8" not in locale.lower():
        env.pop("LC_ALL", None)
        env["LC_CTYPE"] = "C.UTF-8"
    return env


class _Timeout(Exception):
    """No answer before the deadline."""


class _Died(Exception):
    """The pipeline ended (or broke the protocol) while serving a request."""


class _Pipeline:
    """One running pipeline of one mode: its programs, chained by pipes.

    Only the first program's input and the last one's output are held here, so the death of
    any program shows: the programs after it get end of input and exit, and the answer ends.
    (Run under a shell, the shell would hold both ends open until every program had exited.)
    Not thread-safe: its pool hands it to one thread at a time.
    """

    def __init__(
        self, mode: str, commands: Sequence[Sequence[str]], env: Mapping[str, str], *, shell: bool = False
    ) -> None:
        self.mode = mode
        self.shell = shell
        self.served = 0
        self._serial = 0
        self._stderr = bytearray()
        self.processes: list[subprocess.Popen[bytes]] = []
        # One pipe takes every program's stderr, for error messages.
        stderr_read, stderr_write = os.pipe()
        try:
            upstream: Any = subprocess.PIPE
            for argv in commands:
                # A session of its own: a signal to a terminal's foreground group (Ctrl-C)
                # does not reach the programs, close() ends them; under a shell (the fallback
                # for a mode that is not a plain pipeline), the group holds the shell's children.
                process = subprocess.Popen(
                    list(argv),
                    stdin=upstream,
                    stdout=subprocess.PIPE,
                    stderr=stderr_write,
                    bufsize=0,
                    env=dict(env),
                    start_new_session=True,
                )
                if self.processes:
                    upstream.close()  # the next program holds it now
                self.processes.append(process)
                upstream = process.stdout
        except BaseException:
            os.close(stderr_read)
            self.signal_kill()
            self._wait_all(5.0)
            raise
        finally:
            os.close(stderr_write)
        first, last = self.processes[0], self.processes[-1]
        assert first.stdin is not None and last.stdout is not None
        self._stdin, self._stdout = first.stdin, last.stdout
        self._stderr_pipe = open(stderr_read, "rb", buffering=0)  # noqa: SIM115 - closed in _reap
        for pipe in (self._stdin, self._stdout, self._stderr_pipe):
            os.set_blocking(pipe.fileno(), False)
        # A selector, not select(): a server may have more than 1024 descriptors open.
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._stdout.fileno(), selectors.EVENT_READ)
        self._selector.register(self._stderr_pipe.fileno(), selectors.EVENT_READ)
        self._stderr_open = True
        self.closed = False

    def __repr__(self) -> str:
        return f"<apertium {self.mode} pipeline, pids {self.pids}>"

    @property
    def pids(self) -> tuple[int, ...]:
        """The programs' process ids, in pipeline order."""
        return tuple(process.pid for process in self.processes)

    @property
    def alive(self) -> bool:
        return not self.closed and all(process.poll() is None for process in self.processes)

    def stderr_tail(self) -> str:
        self._drain_stderr()
        text = self._stderr.decode("utf-8", "replace").strip()
        return " | ".join(line.strip() for line in text.splitlines() if line.strip())

    def _drain_stderr(self) -> None:
        while self._stderr_open and not self.closed:
            try:
                chunk = os.read(self._stderr_pipe.fileno(), _READ_SIZE)
            except BlockingIOError:
                return
            except OSError:
                chunk = b""
            if not chunk:
                self._stderr_open = False
                self._selector.unregister(self._stderr_pipe.fileno())
                return
            self._stderr += chunk
            del self._stderr[:-_STDERR_TAIL]

    def ask(self, text: str, deadline: float) -> str:
        """Translate one escaped text; the raw answer, its request markers taken off.

        The text goes between two superblanks carrying this pipeline's request number,
        ``[7]text[/7]``, which Apertium passes through untouched. An answer without them is
        not this request's: when a program in the middle of the pipeline dies, the ones
        after it may flush an empty or partial answer at end of input, NUL included.

        Raises:
            _Timeout: No whole answer before ``deadline``.
            _Died: The pipeline ended, or its answer was not this request's.
        """
        self._serial += 1
        head, tail = f"[{self._serial}]", f"[/{self._serial}]"
        answer = self.run(f"{head}{text}{tail}\n".encode() + b"\0", deadline).decode("utf-8", "replace")
        body = answer.lstrip()
        end = body.rfind(tail)
        if not body.startswith(head) or end < 0:
            raise _Died(f"its answer is not the request's: {answer[:200]!r}")
        return body[len(head) : end] + body[end + len(tail) :]

    def run(self, payload: bytes, deadline: float) -> bytes:
        """Send one NUL-terminated request; its answer, without the NUL.

        Raises:
            _Timeout: No whole answer before ``deadline``.
            _Died: The pipeline ended, or answered more than was asked.
        """
        stdin = self._stdin.fileno()
        pending = memoryview(payload)
        answer = bytearray()
        self._selector.register(stdin, selectors.EVENT_WRITE)
        writing = True
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise _Timeout
                for key, _ in self._selector.select(left):
                    if key.fd == stdin:
                        try:
                            pending = pending[os.write(stdin, pending[:_READ_SIZE]) :]
                        except BlockingIOError:
                            continue
                        except OSError as exc:  # EPIPE: the first program is gone
                            raise _Died(f"its input closed ({exc.strerror})") from exc
                        if not pending:
                            self._selector.unregister(stdin)
                            writing = False
                    elif key.fd == self._stdout.fileno():
                        try:
                            chunk = os.read(key.fd, _READ_SIZE)
                        except BlockingIOError:
                            continue
                        if not chunk:
                            raise _Died("it exited")
                        answer += chunk
                        end = answer.find(0)
                        if end >= 0:
                            # One request in flight, so nothing may follow its NUL: a second
                            # NUL would mean the pipeline and we no longer agree.
                            if end != len(answer) - 1 or writing:
                                raise _Died("it answered more than it was asked")
                            self.served += 1
                            return bytes(answer[:end])
                    else:
                        self._drain_stderr()
        finally:
            if writing:
                with contextlib.suppress(KeyError, ValueError):
                    self._selector.unregister(stdin)

    def kill(self) -> None:
        """End every program of the pipeline now and free its pipes."""
        self.signal_kill()
        self._reap(5.0)

    def close(self, grace: float = _CLOSE_GRACE) -> None:
        """End of input first (the programs exit on their own), then kill what is left."""
        if self.closed:
            return
        with contextlib.suppress(OSError):
            self._stdin.close()
        self._wait_all(grace)
        self.kill()

    def signal_kill(self) -> None:
        """SIGKILL to every program (only a signal: the pipes stay to their user)."""
        for process in self.processes:
            self._kill_process(process)

    def _kill_process(self, process: subprocess.Popen[bytes]) -> None:
        if process.returncode is not None and not self.shell:
            return  # reaped: its pid may be another process's by now
        # The group, not the process: a shell (the fallback) leaves its programs in it, and
        # the group outlives the shell while one of them runs (its id is not reused meanwhile).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)

    def _wait_all(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for process in self.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(max(deadline - time.monotonic(), 0.001))

    def _reap(self, timeout: float) -> None:
        if self.closed:
            return
        self._wait_all(timeout)
        if any(process.returncode is None for process in self.processes):  # pragma: no cover
            logger.warning("apertium %s pipeline %s did not exit after SIGKILL", self.mode, self.pids)
        self.closed = True
        self._selector.close()
        for pipe in (self._stdin, self._stdout, self._stderr_pipe):
            with contextlib.suppress(OSError):
                pipe.close()


class _Pool:
    """Up to ``size`` pipelines of one mode, each lent to one request at a time."""

    def __init__(self, mode: str, size: int, spawn: _Spawner) -> None:
        self.mode = mode
        self.size = size
        self._spawn = spawn
        self._cond = threading.Condition()
        self._idle: list[_Pipeline] = []
        self._busy: set[_Pipeline] = set()
        self._starting = 0
        self._closed = False

    def pipelines(self) -> list[_Pipeline]:
        with self._cond:
            return [*self._idle, *self._busy]

    def _put(self, pipeline: _Pipeline) -> bool:
        with self._cond:
            if not self._closed:
                self._idle.append(pipeline)
                self._cond.notify()
                return True
        pipeline.kill()
        return False

    def acquire(self, deadline: float) -> _Pipeline:
        """A running pipeline for one request, started if there is room.

        Raises:
            StageError: ``TIMEOUT`` when all are busy until ``deadline``.
        """
        dead: list[_Pipeline] = []
        try:
            with self._cond:
                while True:
                    if self._closed:
                        raise StageError(ErrorCode.INTERNAL_ERROR, "the apertium translator is closed")
                    while self._idle:
                        # The most recently used first: its pages are the warmest.
                        pipeline = self._idle.pop()
                        if pipeline.alive:
                            self._busy.add(pipeline)
                            return pipeline
                        dead.append(pipeline)
                    if len(self._busy) + self._starting < self.size:
                        self._starting += 1
                        break
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise StageError(
                            ErrorCode.TIMEOUT,
                            f"all {self.size} Apertium {self.mode} pipelines stayed busy (raise concurrency)",
                        )
                    self._cond.wait(left)
        finally:
            for pipeline in dead:
                logger.warning(
                    "apertium %s pipeline %s had exited; starting another", self.mode, pipeline.pids
                )
                pipeline.kill()
        try:
            pipeline = self._spawn(self.mode)
        except BaseException:
            with self._cond:
                self._starting -= 1
                self._cond.notify()
            raise
        with self._cond:
            self._starting -= 1
            if not self._closed:
                self._busy.add(pipeline)
                return pipeline
        pipeline.kill()
        raise StageError(ErrorCode.INTERNAL_ERROR, "the apertium translator is closed")

    def release(self, pipeline: _Pipeline, *, healthy: bool) -> None:
        """Take a pipeline back; a broken one is killed and replaced by a fresh one."""
        with self._cond:
            self._busy.discard(pipeline)
            if healthy and not self._closed and pipeline.alive:
                self._idle.append(pipeline)
                self._cond.notify()
                return
            closed = self._closed
            # The replacement below takes this pipeline's place in the count.
            self._starting += 0 if closed else 1
            self._cond.notify()
        pipeline.kill()
        if closed:
            return
        try:
            replacement = self._spawn(self.mode)
        except Exception as exc:  # the next request starts one, or reports why it cannot
            logger.warning("apertium %s: cannot start a replacement pipeline: %s", self.mode, exc)
            return
        finally:
            with self._cond:
                self._starting -= 1
                self._cond.notify()
        self._put(replacement)

    def close(self) -> None:
        """Close the idle pipelines and kill the busy ones (their requests fail)."""
        with self._cond:
            self._closed = True
            idle, self._idle = self._idle, []
            busy = list(self._busy)
            self._cond.notify_all()
        for pipeline in busy:
            # Only a signal: the thread using it owns its pipes, and closes them on release.
            pipeline.signal_kill()
        for pipeline in idle:
            pipeline.close()

    def wait_idle(self, timeout: float) -> None:
        """Wait until no request holds a pipeline (after :meth:`close`)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._busy or self._starting:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                self._cond.wait(left)


class _Spawner:
    """Starts pipelines of a mode (their commands asked of ``apertium-wblank-mode`` once)."""

    def __init__(self, modes_dir: Path, env: Mapping[str, str]) -> None:
        self.modes_dir = modes_dir
        self.env = env
        self.wblank_mode = shutil.which("apertium-wblank-mode", path=env.get("PATH"))
        self._commands: dict[str, tuple[list[list[str]], bool]] = {}
        self._lock = threading.Lock()
        #: The pipelines started and not yet reaped (pruned at each start), for the finalizer.
        self.all: list[_Pipeline] = []

    def script(self, mode: str) -> str:
        """The mode's pipeline with ``-z`` for every program, as ``apertium -z`` runs it."""
        mode_file = self.modes_dir / f"{mode}.mode"
        if self.wblank_mode is not None:
            try:
                done = subprocess.run(
                    [self.wblank_mode, "-z", str(mode_file)],
                    capture_output=True,
                    text=True,
                    timeout=30,
                    check=False,
                    env=dict(self.env),
                )
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise StageError(ErrorCode.INTERNAL_ERROR, f"apertium-wblank-mode failed: {exc}") from exc
            if done.returncode != 0 or not done.stdout.strip():
                raise StageError(
                    ErrorCode.INTERNAL_ERROR,
                    f"apertium-wblank-mode -z {mode_file} failed: {done.stderr.strip() or done.returncode}",
                )
            return done.stdout.strip()
        # Apertium before 3.7 has no apertium-wblank-mode; its script added -z after each
        # program of the mode file, as here.
        try:
            return null_flush_pipeline(mode_file.read_text(encoding="utf-8"))
        except OSError as exc:
            raise StageError(ErrorCode.INTERNAL_ERROR, f"cannot read {mode_file}: {exc}") from exc

    def commands(self, mode: str) -> tuple[list[list[str]], bool]:
        """The programs of the mode's pipeline, and whether they need a shell to run."""
        with self._lock:
            cached = self._commands.get(mode)
        if cached is not None:
            return cached
        script = self.script(mode)
        programs = split_pipeline(script)
        if programs is not None:
            found: tuple[list[list[str]], bool] = (programs, False)
        else:
            # More than a plain pipeline (a redirection, a variable): bash runs it, with the
            # arguments the apertium script gives a mode.
            bash = shutil.which("bash", path=self.env.get("PATH"))
            if bash is None:
                raise StageError(ErrorCode.INTERNAL_ERROR, f"the Apertium mode {mode} needs bash: {script}")
            found = ([[bash, "-c", script, f"apertium-{mode}", _GENERATION_OPTION, ""]], True)
        with self._lock:
            self._commands[mode] = found
        return found

    def __call__(self, mode: str) -> _Pipeline:
        commands, shell = self.commands(mode)
        try:
            pipeline = _Pipeline(mode, commands, self.env, shell=shell)
        except OSError as exc:
            raise StageError(ErrorCode.INTERNAL_ERROR, f"cannot start Apertium {mode}: {exc}") from exc
        logger.debug("started apertium %s pipeline %s", mode, pipeline.pids)
        with self._lock:
            self.all = [p for p in self.all if not p.closed]
            self.all.append(pipeline)
        return pipeline


def _kill_all(spawner: _Spawner, reap: bool) -> None:
    """End every pipeline the spawner started that is still running.

    ``reap``: also wait for them and close their pipes, which only the thread using a
    pipeline may do: true for the finalizer (nothing uses a collected translator's
    pipelines), false in :meth:`ApertiumTranslator.close` (a stuck request may).
    """
    with spawner._lock:
        pipelines = list(spawner.all)
    for pipeline in pipelines:
        if not pipeline.closed:
            if reap:
                pipeline.kill()
            else:
                pipeline.signal_kill()


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
