"""Apertium's pipelines as long-lived processes: a pool per mode, spawned, fed, reaped.

An ``apertium`` mode is a shell pipeline of several programs. The translator runs each mode's
programs directly (no shell), keeps them alive between requests with null-flush, and reads
the answer of one request by the NUL that ends it; a request that hangs or a program that
dies is killed and replaced. The Apertium translator (:mod:`.apertium`) uses this module.
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
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import ErrorCode, StageError

logger = logging.getLogger("stsdub.translation.apertium")

# The launcher script's `$1`: generation without unknown-word marks (`apertium -u`); `$2` is
# the tagger option (`-m` for `apertium -a`), empty.
_GENERATION_OPTION = "-n"
_READ_SIZE = 65536
# Most stderr kept per pipeline for error messages.
_STDERR_TAIL = 2000
# Seconds a closing pipeline gets to exit on end of input before it is killed.
_CLOSE_GRACE = 1.0
# The defaults the `apertium` launcher script carries at its top, e.g.
# APERTIUM_DATADIR="${APERTIUM_DATADIR:-/usr/share/apertium}".
_LAUNCHER_SETTING = re.compile(r'^(APERTIUM_(?:PATH|DATADIR))="\$\{\1:-([^}"]*)\}"', re.MULTILINE)


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
