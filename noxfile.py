"""Development sessions: `nox -s tests`, `latest`, `lint`, `typecheck`, `benchmarks`, `demo`."""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "typecheck", "tests"]
nox.options.reuse_existing_virtualenvs = True

#: Every package at the version CI tests (refresh with `make lock`).
LOCK = "requirements.lock"
#: The hand-written pins the lock is compiled with (the torch / torchaudio pair).
PINS = ".ci/constraints.txt"


def install(session: nox.Session, extras: str = "all,test", *, latest: bool = False) -> None:
    """The one way every session installs stsdub: from the lock, or at the newest versions."""
    if latest:
        session.install("--upgrade", "--upgrade-strategy", "eager", "-c", PINS, "-e", f".[{extras}]")
    else:
        session.install("-c", LOCK, "-e", f".[{extras}]")


@nox.session
def tests(session: nox.Session) -> None:
    install(session)
    session.run("pytest", *session.posargs)


@nox.session
def latest(session: nox.Session) -> None:
    """The tests against the newest versions pyproject.toml allows: finds drift before CI does."""
    install(session, latest=True)
    session.run("python", "-m", "pip", "freeze", "--exclude-editable")
    # This environment is not the lock's, on purpose.
    locked = "tests/test_lock.py::test_installed_versions_match_the_lock"
    session.run("pytest", "--deselect", locked, *session.posargs)


@nox.session
def fast(session: nox.Session) -> None:
    """Tests that load no real model."""
    install(session, "test")
    session.run("pytest", "-m", "not model", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff")
    session.run("ruff", "check", "src", "tests", "benchmarks", "examples")


@nox.session
def typecheck(session: nox.Session) -> None:
    install(session, "all,dev")
    session.run("mypy")


@nox.session
def notebook(session: nox.Session) -> None:
    """Execute the quick-start notebook headless."""
    install(session)
    session.run("pytest", "tests/media", "-k", "notebook", *session.posargs)


@nox.session
def benchmarks(session: nox.Session) -> None:
    install(session)
    for script in (
        "bench_pipeline.py",
        "bench_asr.py",
        "bench_translator.py",
        "bench_apertium.py",
        "bench_synthesis.py",
        "bench_espeak.py",
        "bench_server.py",
        "bench_e2e.py",
        "bench_soak.py",
        "bench_fit.py",
        "bench_soundtrack.py",
        "bench_ray.py",
        "bench_diarize.py",
        "bench_sentences.py",
    ):
        session.run("python", f"benchmarks/{script}", *session.posargs)


@nox.session
def demo(session: nox.Session) -> None:
    """Dub the bundled sample with the offline default stages."""
    install(session, "whisper,piper,media")
    session.run(
        "stsdub",
        "dub",
        "examples/sample_en.flac",
        "-o",
        "out/sample_dubbed.wav",
        "--from",
        "en",
        "--to",
        "es",
    )
