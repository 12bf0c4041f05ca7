"""The ``apertium`` translator with the real Apertium (Debian's apertium, apertium-eng-spa,
apertium-eng-cat and apertium-en-gl)."""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

import stsdub
from stsdub import ErrorCode, StageError, StageLoadError, Translation, TranslationRequest
from stsdub._builtin import _apertium_processes, apertium
from stsdub._builtin.apertium import (
    ApertiumTranslator,
    _speakable,
    apertium_codes,
    null_flush_pipeline,
    parse_mode,
    split_pipeline,
)
from stsdub.testing import FakeASR, FakeSynthesizer, check_plugin, check_stage

pytestmark = [
    pytest.mark.model,
    pytest.mark.skipif(
        shutil.which("apertium") is None,
        reason="Apertium is not installed (apt-get install apertium apertium-eng-spa apertium-eng-cat"
        " apertium-en-gl)",
    ),
]

SENTENCES = (
    "Hello, how are you?",
    "The cat is on the table.",
    "I want to eat an apple.",
    "The weather is very nice today.",
    "Where is the train station?",
    "My brother lives in a big house.",
    "We will meet tomorrow morning.",
    "Please open the window.",
    "The children are playing in the park.",
    "She reads a book every night.",
    "Thank you very much for your help.",
    "The water is cold.",
)


def request(text: str, source: str | None = "en", target: str = "es", seq: int = 0) -> TranslationRequest:
    return TranslationRequest(text=text, source_language=source, target_language=target, sequence_number=seq)


def needs(stage: ApertiumTranslator, *modes: str) -> None:
    missing = [m for m in modes if m not in stage.modes]
    if missing:
        pytest.skip(f"Apertium mode(s) {', '.join(missing)} not installed")


def group_members(pgid: int) -> list[int]:
    """The processes of a process group (Linux /proc), zombies left out."""
    proc = Path("/proc")
    if not proc.is_dir():
        pytest.skip("needs /proc to look at process groups")
    members = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid pgrp …; comm may hold spaces and parentheses.
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def running(pids: Iterable[int]) -> list[int]:
    """Those of ``pids`` that are still processes (a reaped one is gone)."""
    alive = []
    for pid in pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        alive.append(pid)
    return alive


def signal_all(pids: Iterable[int], signum: int) -> None:
    for pid in pids:
        os.kill(pid, signum)


def wait_until(condition: Callable[[], object], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return bool(condition())


def cli(mode: str, text: str, *options: str) -> str:
    """What the ``apertium`` command says (a process per call), for comparison."""
    done = subprocess.run(
        ["apertium", *options, mode], input=text, capture_output=True, text=True, timeout=60, check=True
    )
    return done.stdout


@pytest.fixture(scope="module")
def shared() -> Iterator[ApertiumTranslator]:
    stage = ApertiumTranslator(preload=["en-es"])
    stage.warmup()
    yield stage
    stage.close()


@pytest.fixture
def stage() -> Iterator[ApertiumTranslator]:
    """A translator of its own, for tests that break or close pipelines."""
    built = ApertiumTranslator(timeout=30.0)
    yield built
    built.close()


# -- the stage as the Dubber builds it ---------------------------------------------------------


def test_registered_and_built_through_the_registry() -> None:
    spec = stsdub.StageRegistry.from_plugin_manager().get("translator", "apertium")
    assert spec.available, spec.missing
    built = spec.load_factory()(device="cuda")  # Apertium ignores the device
    try:
        assert isinstance(built, ApertiumTranslator)
        assert built.concurrency == 2
        assert built.pipeline_pids() == {}  # nothing starts before it is needed
    finally:
        built.close()


def test_conformance() -> None:
    # The check asks for en → de, which Debian does not package; `modes` routes it to a pair
    # that is installed (the option exists for exactly this: choosing the mode of a pair).
    stage = ApertiumTranslator(modes={"en-de": "eng-spa"})
    try:
        report = check_stage(stage)
        assert report.ok
        assert "translate(with context)" in report.passed
    finally:
        stage.close()
    assert check_plugin("translator", "apertium", modes={"en-de": "eng-spa"}).ok


# -- translations ------------------------------------------------------------------------------


def test_english_to_spanish_is_real_spanish(shared: ApertiumTranslator) -> None:
    result = shared.translate(request("Hello, how are you?"))
    assert isinstance(result, Translation)
    assert "Hola" in result.text
    assert result.text.endswith("?")  # punctuation survives
    cat = shared.translate(request("The cat is on the table.")).text
    assert "gato" in cat and "mesa" in cat, cat


@pytest.mark.parametrize(
    ("mode", "source", "target", "text", "words"),
    [
        ("eng-cat", "en", "ca", "Hello, how are you?", ("Hola", "com")),
        ("eng-cat", "en", "ca", "The cat is on the table.", ("gat", "taula")),
        ("en-gl", "en", "gl", "The cat is on the table.", ("gato", "mesa")),
        ("spa-eng", "es", "en", "El gato está en la mesa.", ("cat", "table")),
        ("cat-eng", "ca", "en", "El gat és a la taula.", ("cat", "table")),
        ("gl-en", "gl", "en", "O gato está na mesa.", ("cat", "table")),
    ],
)
def test_other_pairs(
    shared: ApertiumTranslator, mode: str, source: str, target: str, text: str, words: tuple[str, ...]
) -> None:
    needs(shared, mode)
    assert shared.mode_for(source, target) == mode
    result = shared.translate(request(text, source, target)).text
    assert all(word in result for word in words), result
    # The same as the apertium command, less its unknown-word marks.
    assert result == " ".join(cli(mode, text, "-u").split())


@pytest.mark.parametrize(
    ("source", "target", "mode"),
    [
        ("en", "es", "eng-spa"),
        ("en-US", "es-MX", "eng-spa"),  # no such variants: the plain pair
        ("EN_gb", "ES", "eng-spa"),
        ("eng", "spa", "eng-spa"),  # Apertium's own codes
        ("es", "en", "spa-eng"),
        ("es", "en-US", "spa-eng_US"),  # a variant when the tag asks for it
        ("es", "en-GB", "spa-eng"),
        ("en", "ca", "eng-cat"),
        ("en", "ca-valencia", "eng-cat_valencia"),
        ("en", "ca-ES-valencia", "eng-cat"),  # region and variant: no such mode, the plain one
        ("en", "cat_valencia", "eng-cat_valencia"),
        ("en", "gl", "en-gl"),  # a pair with the older two-letter codes
        ("gl-ES", "en", "gl-en"),
        (None, "es", "eng-spa"),  # only English translates into Spanish here
        (None, "gl", "en-gl"),
    ],
)
def test_language_tags_map_to_modes(
    shared: ApertiumTranslator, source: str | None, target: str, mode: str
) -> None:
    needs(shared, mode)
    assert shared.mode_for(source, target) == mode


def test_codes_and_mode_names() -> None:
    assert apertium_codes("en-US") == (("eng", "en"), "US")
    assert apertium_codes("pt_BR") == (("por", "pt"), "BR")
    assert apertium_codes("ca-valencia") == (("cat", "ca"), "valencia")
    assert apertium_codes("sr-Latn-RS") == (("srp", "hbs", "sr"), "RS")  # the script is dropped
    assert apertium_codes("nob") == (("nob", "nb"), None)
    assert apertium_codes("xx") == (("xx",), None)
    mode = parse_mode("eng-cat_valencia_uni")
    assert mode is not None and mode.pair == ("en", "ca-valencia-uni")
    assert parse_mode("en-gl") is not None
    assert parse_mode("eng-spa-tagger") is None  # a debug mode, not a translation
    assert parse_mode("README") is None


def test_unsupported_pair_fails_at_once_naming_the_installed_pairs() -> None:
    stage = ApertiumTranslator()
    try:
        needs(stage, "eng-spa", "spa-eng")
        started = time.monotonic()
        with pytest.raises(StageError) as info:
            stage.translate(request("Hello.", "en", "fr"))
        err = info.value
        assert err.code is ErrorCode.UNSUPPORTED_LANGUAGE and not err.retryable
        assert "en → fr" in err.message
        installed = err.message.split("installed:")[1]
        assert "en → es" in installed and "es → en" in installed  # in our tags, not eng-spa
        # Several languages translate into English: Apertium cannot guess which one is spoken.
        if len({m.source for m in stage.modes.values() if m.target in ("eng", "en")}) > 1:
            with pytest.raises(StageError) as info:
                stage.translate(request("Hola.", None, "en"))
            assert info.value.code is ErrorCode.UNSUPPORTED_LANGUAGE
            assert "source_language" in info.value.message
        assert time.monotonic() - started < 1.0
        assert stage.pipeline_pids() == {}  # refused without starting anything
    finally:
        stage.close()


def test_modes_option_overrides_the_mapping() -> None:
    stage = ApertiumTranslator(modes={"en-es": "eng-cat", ("en-US", "ca"): "eng-cat_valencia"})
    try:
        needs(stage, "eng-cat", "eng-cat_valencia")
        assert stage.mode_for("en-GB", "es") == "eng-cat"  # languages alone: any region
        assert stage.mode_for("en-US", "ca") == "eng-cat_valencia"  # exact tags
        assert stage.mode_for("en", "ca") == "eng-cat"
        assert stage.translate(request("The cat is on the table.", "en", "es")).text.startswith("El gat")
    finally:
        stage.close()
    with pytest.raises(StageLoadError, match=r"not installed.*eng-spa"):
        ApertiumTranslator(modes={"en-fr": "eng-fra"})
    with pytest.raises(StageLoadError, match="tuple"):
        ApertiumTranslator(modes={"en-US-es": "eng-spa"})
    with pytest.raises(StageLoadError, match="preload"):
        ApertiumTranslator(preload=["en-fr"])


def test_unknown_words_are_spoken_without_marks(shared: ApertiumTranslator) -> None:
    text = "The blorfity cat sat on the mat."
    marked = cli("eng-spa", text)
    assert "*blorfity" in marked  # what Apertium marks ...
    result = shared.translate(request(text)).text
    assert "blorfity" in result and "*" not in result  # ... the stage speaks without the mark
    # `@` (no bilingual entry) and `#` (no generation) marks go the same way, where this
    # version of the data makes them: the result is the marked output less its marks.
    for sentence in (text, "The stretching of the audio is fine.", "Every Python version and platform."):
        marked = cli("eng-spa", sentence)
        result = shared.translate(request(sentence)).text
        assert result == " ".join(re.sub(r"[*#@](?=\w)", "", marked).split()), (marked, result)
        assert not re.search(r"[*#@]\w", result)


def test_marks_and_escapes_are_undone() -> None:
    assert _speakable("El *blorfity #programa @stretching.\n") == "El blorfity programa stretching."
    assert _speakable(r"\@en \[x\] \^a\$ a\\b \/ \{c\} \<d\>") == r"@en [x] ^a$ a\b / {c} <d>"
    assert _speakable(" [][\n]  Hola  ") == "Hola"


def test_newlines_nuls_and_stream_format_characters_cannot_desync(shared: ApertiumTranslator) -> None:
    expected = shared.translate(request("Hello, how are you?")).text
    awkward = [
        "Line one.\nLine two.\r\nLine\tthree.",
        "A NUL\x00in the middle.\x00",
        "Brackets [open and ^caret$ and back\\slash / and {brace} <lt> ~tilde @at",
        "]",
        "\x00\x00",
        "\u2028\u2029 \x1b[31m",
    ]
    for text in awkward:
        result = shared.translate(request(text))
        assert isinstance(result, Translation)
        assert "\x00" not in result.text and "\n" not in result.text
        # Each request got its own answer: the next one is not thrown off.
        assert shared.translate(request("Hello, how are you?")).text == expected
    # The stream format's own characters come through as text.
    kept = shared.translate(request(awkward[2])).text
    assert all(part in kept for part in ("[", "^caret$", "\\", "/", "{", "}", "<lt>", "@")), kept


def test_null_flush_from_the_mode_file_when_there_is_no_wblank_mode(
    shared: ApertiumTranslator, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert null_flush_pipeline("lt-proc a.bin | cg-proc -z -w b.bin | lt-proc $1 c.bin\n") == (
        "lt-proc -z a.bin | cg-proc -z -w b.bin | lt-proc -z $1 c.bin"
    )
    which = shutil.which
    monkeypatch.setattr(
        apertium.shutil,
        "which",
        lambda name, **kw: None if name == "apertium-wblank-mode" else which(name, **kw),
    )
    old = ApertiumTranslator(concurrency=1)  # as with Apertium before 3.7
    try:
        assert old._spawner.wblank_mode is None
        for text in SENTENCES[:4]:
            assert old.translate(request(text)).text == shared.translate(request(text)).text
    finally:
        old.close()


def test_empty_text_needs_no_pipeline(stage: ApertiumTranslator) -> None:
    assert stage.translate(request("")) == Translation("")
    assert stage.translate(request("  \n\x00 ")) == Translation("")
    assert stage.pipeline_pids() == {}


# -- concurrency and robustness ----------------------------------------------------------------


def test_concurrent_requests_each_get_their_own_translation(stage: ApertiumTranslator) -> None:
    expected = {text: stage.translate(request(text)).text for text in SENTENCES}
    assert len(set(expected.values())) == len(SENTENCES)
    barrier = threading.Barrier(6)

    def worker(seed: int) -> list[tuple[str, str]]:
        order = list(SENTENCES) * 2
        random.Random(seed).shuffle(order)
        barrier.wait()
        return [(text, stage.translate(request(text, seq=i)).text) for i, text in enumerate(order)]

    with ThreadPoolExecutor(6) as pool:
        results = [pair for got in pool.map(worker, range(6)) for pair in got]
    assert len(results) == 6 * 2 * len(SENTENCES)
    mixed = [(text, got) for text, got in results if got != expected[text]]
    assert not mixed
    # Two pipelines of eng-spa served them (concurrency 2), no more.
    assert len(stage.pipeline_pids()["eng-spa"]) == 2


def test_two_requests_run_at_once() -> None:
    stage = ApertiumTranslator(concurrency=2, preload=["en-es"], timeout=30.0)
    try:
        stage.warmup()
        pool = stage._pools["eng-spa"]
        assert len(pool.pipelines()) == 2
        # The pipeline the next request gets (the most recently used) stops: that request
        # hangs, and another one must still go through on the other pipeline.
        stuck = pool._idle[-1]
        signal_all(stuck.pids, signal.SIGSTOP)
        first: list[str] = []
        thread = threading.Thread(target=lambda: first.append(stage.translate(request(SENTENCES[1])).text))
        thread.start()
        assert wait_until(lambda: stuck in pool._busy)
        started = time.monotonic()
        assert "Hola" in stage.translate(request(SENTENCES[0])).text
        assert time.monotonic() - started < 5.0
        assert thread.is_alive() and not first
        signal_all(stuck.pids, signal.SIGCONT)
        thread.join(30)
        assert first and "gato" in first[0]  # its own answer, not the other request's
    finally:
        stage.close()


def test_a_mode_that_is_more_than_a_pipeline_runs_under_bash(
    shared: ApertiumTranslator, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert split_pipeline("lt-proc -z 'a b.bin' | lt-proc -z $1 c.bin | tagger $2 -g d") == [
        ["lt-proc", "-z", "a b.bin"],
        ["lt-proc", "-z", "-n", "c.bin"],
        ["tagger", "-g", "d"],
    ]
    for script in ("a | b 2>/dev/null", "a | b > out", "a; b", "a | $HOME/b", "a && b", "a | 'b"):
        assert split_pipeline(script) is None, script
    # The process pool splits modes into programs; make it see a script it cannot split.
    monkeypatch.setattr(_apertium_processes, "split_pipeline", lambda script: None)
    stage = ApertiumTranslator(concurrency=1, timeout=30.0)
    try:
        expected = shared.translate(request("Hello, how are you?")).text
        assert stage.translate(request("Hello, how are you?")).text == expected
        ((shell,),) = stage.pipeline_pids()["eng-spa"]
        programs = [pid for pid in group_members(shell) if pid != shell]
        assert len(programs) >= 5  # bash's children, in the shell's process group
        os.kill(shell, signal.SIGKILL)  # bash; its programs live on, orphaned, in its group
        assert stage.translate(request("Hello, how are you?")).text == expected
        assert stage.pipeline_pids()["eng-spa"] != [(shell,)]
        assert wait_until(lambda: not group_members(shell)), group_members(shell)  # orphans too
    finally:
        stage.close()


@pytest.mark.parametrize("which", ["first", "middle", "last"])
def test_a_pipeline_with_a_killed_program_is_replaced(stage: ApertiumTranslator, which: str) -> None:
    expected = stage.translate(request("Hello, how are you?")).text
    (old,) = stage.pipeline_pids()["eng-spa"]
    assert len(old) >= 5  # lt-proc, the tagger, transfer, …: one process each, in order
    victim = {"first": old[0], "middle": old[len(old) // 2], "last": old[-1]}[which]
    os.kill(victim, signal.SIGKILL)
    # The programs after a killed one flush what they hold at end of input, NUL included:
    # that must not pass for this request's answer.
    assert stage.translate(request("Hello, how are you?")).text == expected
    (new,) = stage.pipeline_pids()["eng-spa"]
    assert not set(new) & set(old)
    assert running(old) == []  # every program of the old one ended and reaped
    assert stage.translate(request("The cat is on the table.")).text == "El gato es en la mesa."


def test_a_hung_pipeline_times_out_and_is_replaced() -> None:
    stage = ApertiumTranslator(timeout=1.0, preload=["en-es"], concurrency=1)
    try:
        stage.warmup()
        expected = stage.translate(request("Hello, how are you?")).text
        (old,) = stage.pipeline_pids()["eng-spa"]
        signal_all(old, signal.SIGSTOP)  # every program stops: no answer will come
        started = time.monotonic()
        with pytest.raises(StageError) as info:
            stage.translate(request("Hello, how are you?"))
        elapsed = time.monotonic() - started
        assert info.value.code is ErrorCode.TIMEOUT and info.value.retryable
        assert 0.9 <= elapsed < 3.0, elapsed
        assert running(old) == []  # killed, stopped or not
        (new,) = stage.pipeline_pids()["eng-spa"]  # and replaced at once
        assert not set(new) & set(old)
        assert stage.translate(request("Hello, how are you?")).text == expected
    finally:
        stage.close()


def test_close_ends_every_process(stage: ApertiumTranslator) -> None:
    needs(stage, "eng-spa", "eng-cat", "en-gl")
    for target in ("es", "ca", "gl"):
        if stage.translate(request("Good morning.", "en", target)).text == "":
            pytest.fail(f"no translation into {target}")
    with ThreadPoolExecutor(2) as pool:  # a second pipeline of one mode
        list(pool.map(lambda t: stage.translate(request(t)), SENTENCES[:6]))
    pipelines = [pids for per_mode in stage.pipeline_pids().values() for pids in per_mode]
    assert len(pipelines) >= 4  # es (two), ca, gl
    programs = [pid for pids in pipelines for pid in pids]
    assert running(programs) == programs
    stage.close()
    assert stage.pipeline_pids() == {}
    assert running(programs) == []
    with pytest.raises(StageError) as info:
        stage.translate(request("Hello."))
    assert info.value.code is ErrorCode.INTERNAL_ERROR
    stage.close()  # twice is fine


def test_close_ends_a_request_in_flight() -> None:
    stage = ApertiumTranslator(timeout=60.0, preload=["en-es"], concurrency=1)
    try:
        stage.warmup()
        (programs,) = stage.pipeline_pids()["eng-spa"]
        signal_all(programs, signal.SIGSTOP)  # the request will wait for an answer
        outcome: list[BaseException | Translation] = []

        def call() -> None:
            try:
                outcome.append(stage.translate(request("Hello, how are you?")))
            except BaseException as exc:
                outcome.append(exc)

        thread = threading.Thread(target=call)
        thread.start()
        assert wait_until(lambda: stage._pools["eng-spa"]._busy)
        started = time.monotonic()
        stage.close()
        thread.join(10)
        assert not thread.is_alive()
        assert time.monotonic() - started < 5.0
        (err,) = outcome
        assert isinstance(err, StageError) and err.code is ErrorCode.INTERNAL_ERROR
        assert "closed" in err.message
        assert running(programs) == []
    finally:
        stage.close()


def test_a_translator_never_closed_leaves_no_process() -> None:
    import gc

    forgotten = ApertiumTranslator()
    assert forgotten.translate(request("Good night.")).text
    programs = [pid for per_mode in forgotten.pipeline_pids().values() for pids in per_mode for pid in pids]
    assert programs and running(programs) == programs
    del forgotten
    gc.collect()
    assert running(programs) == []


def test_warmup_starts_the_foreseen_pairs() -> None:
    stage = ApertiumTranslator(preload=["en-es", ("en", "gl")], modes={"en-ca": "eng-cat"}, concurrency=2)
    try:
        needs(stage, "eng-spa", "en-gl", "eng-cat")
        assert stage.pipeline_pids() == {}
        stage.warmup()
        pids = stage.pipeline_pids()
        assert {mode: len(p) for mode, p in pids.items()} == {"eng-spa": 2, "en-gl": 2, "eng-cat": 2}
        assert "Hola" in stage.translate(request("Hello, how are you?")).text
        assert stage.pipeline_pids() == pids  # served by a warm one
    finally:
        stage.close()


def test_missing_apertium_is_a_load_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(StageLoadError, match=r"apt-get install apertium apertium-eng-spa"):
        ApertiumTranslator()


def test_no_installed_pair_is_a_load_error(tmp_path: Path) -> None:
    (tmp_path / "modes").mkdir()
    (tmp_path / "modes" / "eng-spa-tagger.mode").write_text("lt-proc x\n")  # not a translation
    with pytest.raises(StageLoadError, match="no language pair"):
        ApertiumTranslator(data_dir=tmp_path)
    with pytest.raises(StageLoadError, match="concurrency"):
        ApertiumTranslator(concurrency=0)
    with pytest.raises(StageLoadError, match="timeout"):
        ApertiumTranslator(timeout=float("nan"))


# -- with the rest of stsdub -------------------------------------------------------------------


@pytest.mark.anyio
async def test_end_to_end_through_the_dubber_english_to_spanish() -> None:
    texts = ["Hello, how are you?", "The cat is on the table.", "Thank you very much for your help."]
    rate = 16_000
    t = np.arange(rate, dtype=np.float32) / rate
    loud = (0.3 * np.sin(2 * np.pi * 200 * t)).astype(np.float32)
    fragments = [stsdub.Fragment(i, loud, rate) for i in range(len(texts))]
    async with stsdub.Dubber(
        asr=FakeASR(text=lambda r: texts[r.sequence_number]),
        translator="apertium",
        translator_options={"preload": ["en-es"]},
        synthesizer=FakeSynthesizer(),
        source_language="en",
        target_language="es",
        device="cpu",
        fragment_timeout=30.0,
    ) as dubber:
        stage = dubber.stages["translator"]
        assert isinstance(stage, ApertiumTranslator)
        assert len(stage.pipeline_pids()["eng-spa"]) == 2  # warmed up by the Dubber
        programs = [pid for pids in stage.pipeline_pids()["eng-spa"] for pid in pids]
        results = [r async for r in dubber.dub(fragments)]
    assert [r.sequence_number for r in results] == [0, 1, 2]
    assert all(r.ok for r in results), results
    spoken = [r.translation.text if r.translation else "" for r in results]
    assert "Hola" in spoken[0]
    assert "gato" in spoken[1] and "mesa" in spoken[1]
    assert "gracias" in spoken[2].lower()
    # The Dubber closed the stage, and with it every pipeline.
    assert running(programs) == []
