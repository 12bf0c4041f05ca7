"""Offline translation with Opus-MT / Marian and NLLB models converted to CTranslate2.

The model is a directory made by ``ct2-transformers-converter`` (or
``ctranslate2.converters.TransformersConverter``) with its tokenizer — SentencePiece models
(Marian's ``source.spm`` / ``target.spm``, NLLB's ``sentencepiece.bpe.model``) or a Hugging
Face ``tokenizer.json`` — or a Hugging Face Hub model id (``Helsinki-NLP/opus-mt-en-de``),
which is downloaded and converted once into the Hugging Face cache (see
:mod:`stsdub._models._cache`) and loaded from there afterwards, offline too.

Requests waiting together (from one or several streams) become one
``ctranslate2.Translator.translate_batch`` call; NLLB's per-example target language goes in
the target prefix, so a batch may mix languages.

Length budgets (``supports_length_budget``): a request with a
:class:`~stsdub.LengthBudget` is decoded with n-best beam search (``num_hypotheses``), and
the best-scored hypothesis that fits ``max_chars`` is chosen, unless it is shorter than
``min_length_ratio`` of the best hypothesis (a sentence cut in half is no translation).
When none fits, the shortest adequate one is chosen; the pipeline stretches what is left.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from .._core._device import threads_per_call
from .._core._values import Translation, TranslationRequest
from .._models import _cache, _downloads
from ..errors import ErrorCode, PluginError, StageError, StageLoadError

__all__ = ["NLLB_LANGUAGE_CODES", "CTranslate2Translator", "nllb_code"]

log = logging.getLogger("stsdub")

_INSTALL_HINT = "pip install 'stsdub[ct2]'"

#: ISO 639-1 codes (and a few regional tags) → FLORES-200 codes used by NLLB-200.
NLLB_LANGUAGE_CODES: Mapping[str, str] = {
    "af": "afr_Latn", "am": "amh_Ethi", "ar": "arb_Arab", "az": "azj_Latn", "be": "bel_Cyrl",
    "bg": "bul_Cyrl", "bn": "ben_Beng", "bs": "bos_Latn", "ca": "cat_Latn", "cs": "ces_Latn",
    "cy": "cym_Latn", "da": "dan_Latn", "de": "deu_Latn", "el": "ell_Grek", "en": "eng_Latn",
    "es": "spa_Latn", "et": "est_Latn", "eu": "eus_Latn", "fa": "pes_Arab", "fi": "fin_Latn",
    "fr": "fra_Latn", "ga": "gle_Latn", "gl": "glg_Latn", "gu": "guj_Gujr", "ha": "hau_Latn",
    "he": "heb_Hebr", "hi": "hin_Deva", "hr": "hrv_Latn", "hu": "hun_Latn", "hy": "hye_Armn",
    "id": "ind_Latn", "ig": "ibo_Latn", "is": "isl_Latn", "it": "ita_Latn", "ja": "jpn_Jpan",
    "ka": "kat_Geor", "kk": "kaz_Cyrl", "km": "khm_Khmr", "kn": "kan_Knda", "ko": "kor_Hang",
    "lo": "lao_Laoo", "lt": "lit_Latn", "lv": "lvs_Latn", "mk": "mkd_Cyrl", "ml": "mal_Mlym",
    "mr": "mar_Deva", "ms": "zsm_Latn", "mt": "mlt_Latn", "my": "mya_Mymr", "nb": "nob_Latn",
    "ne": "npi_Deva", "nl": "nld_Latn", "nn": "nno_Latn", "no": "nob_Latn", "pa": "pan_Guru",
    "pl": "pol_Latn", "pt": "por_Latn", "ro": "ron_Latn", "ru": "rus_Cyrl", "si": "sin_Sinh",
    "sk": "slk_Latn", "sl": "slv_Latn", "so": "som_Latn", "sq": "als_Latn", "sr": "srp_Cyrl",
    "sv": "swe_Latn", "sw": "swh_Latn", "ta": "tam_Taml", "te": "tel_Telu", "th": "tha_Thai",
    "tl": "tgl_Latn", "tr": "tur_Latn", "uk": "ukr_Cyrl", "ur": "urd_Arab", "uz": "uzn_Latn",
    "vi": "vie_Latn", "yo": "yor_Latn", "zh": "zho_Hans", "zh-hans": "zho_Hans",
    "zh-cn": "zho_Hans", "zh-sg": "zho_Hans", "zh-hant": "zho_Hant", "zh-tw": "zho_Hant",
    "zh-hk": "zho_Hant", "zu": "zul_Latn",
}  # fmt: skip

# Tokens the models add around a sentence; never part of the translated text.
_SPECIAL_TOKENS = frozenset({"</s>", "<s>", "<pad>", "<unk>"})


def nllb_code(language: str) -> str | None:
    """The NLLB-200 code for an ISO 639-1 tag (``"en"`` → ``"eng_Latn"``, ``"pt-BR"`` →
    ``"por_Latn"``, ``"zh-TW"`` → ``"zho_Hant"``); an NLLB code is returned as it is.

    Returns ``None`` for a language the table does not know.
    """
    if "_" in language and len(language) == 8:  # already "xxx_Scrp"
        return language
    tag = language.replace("_", "-").lower()
    return NLLB_LANGUAGE_CODES.get(tag) or NLLB_LANGUAGE_CODES.get(tag.split("-")[0])


def _base(language: str) -> str:
    return language.replace("_", "-").split("-")[0].lower()


class _Tokenizer(Protocol):
    def encode(self, text: str) -> list[str]: ...

    def decode(self, tokens: Sequence[str]) -> str: ...


class _SentencePieceTokenizer:
    """Marian / NLLB SentencePiece models: pieces in, pieces out."""

    def __init__(self, source: Path, target: Path) -> None:
        import sentencepiece

        self.source = sentencepiece.SentencePieceProcessor(model_file=str(source))
        self.target = sentencepiece.SentencePieceProcessor(model_file=str(target))

    def encode(self, text: str) -> list[str]:
        return list(self.source.encode(text, out_type=str))

    def decode(self, tokens: Sequence[str]) -> str:
        return str(self.target.decode_pieces(list(tokens)))


class _HuggingFaceTokenizer:
    """A ``tokenizer.json`` read with the ``tokenizers`` library (no transformers needed)."""

    def __init__(self, path: Path) -> None:
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(path))

    def encode(self, text: str) -> list[str]:
        # The stage adds the language and end tokens itself, the same way for both kinds.
        return list(self.tokenizer.encode(text, add_special_tokens=False).tokens)

    def decode(self, tokens: Sequence[str]) -> str:
        ids = [self.tokenizer.token_to_id(t) for t in tokens]
        return str(self.tokenizer.decode([i for i in ids if i is not None], skip_special_tokens=True))


def _load_tokenizer(path: Path) -> _Tokenizer:
    if path.is_file():
        if path.suffix == ".json":
            return _HuggingFaceTokenizer(path)
        return _SentencePieceTokenizer(path, path)
    if not path.is_dir():
        raise StageLoadError(f"ctranslate2 translator: tokenizer {str(path)!r} does not exist")
    source, target = path / "source.spm", path / "target.spm"
    if source.is_file():
        return _SentencePieceTokenizer(source, target if target.is_file() else source)
    for name in ("sentencepiece.bpe.model", "spm.model", "sentencepiece.model"):
        if (path / name).is_file():
            return _SentencePieceTokenizer(path / name, path / name)
    if (path / "tokenizer.json").is_file():
        return _HuggingFaceTokenizer(path / "tokenizer.json")
    raise StageLoadError(
        f"ctranslate2 translator: no tokenizer in {str(path)!r}; expected source.spm/target.spm"
        " (Marian), sentencepiece.bpe.model (NLLB) or tokenizer.json. Pass tokenizer=<path> or"
        " convert the model with copy_files=['source.spm', 'target.spm']"
    )


def _read_vocabulary(model_dir: Path) -> frozenset[str]:
    """The target vocabulary of a converted model (to find NLLB's language tokens)."""
    for stem in ("shared_vocabulary", "target_vocabulary"):
        json_file, txt_file = model_dir / f"{stem}.json", model_dir / f"{stem}.txt"
        if json_file.is_file():
            return frozenset(json.loads(json_file.read_text(encoding="utf-8")))
        if txt_file.is_file():
            return frozenset(txt_file.read_text(encoding="utf-8").splitlines())
    return frozenset()


def _quantization(compute_type: str, device: str) -> str:
    """The weight type to convert a downloaded model to: the compute type when it is one."""
    # "auto", "default" and the like choose at load time; a conversion needs a definite type.
    if compute_type in _cache.QUANTIZATIONS:
        return compute_type
    return _cache.default_quantization(device)


def _split_device(device: str) -> tuple[str, int]:
    if device.startswith("cuda"):
        _, _, index = device.partition(":")
        return "cuda", int(index) if index else 0
    return "cpu", 0


class CTranslate2Translator:
    """Translate with a Marian (Opus-MT) or NLLB model converted to CTranslate2.

    Args:
        device: ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` (the Dubber passes its device).
        model: Directory of the converted model (holding ``model.bin``), or the id of a
            Transformers model on the Hugging Face Hub (``Helsinki-NLP/opus-mt-en-de``,
            ``facebook/nllb-200-distilled-600M``): downloaded and converted with
            ``compute_type`` as its quantization on first use, then reused (offline too).
            An existing directory always wins over an id.
        tokenizer: SentencePiece model file, ``tokenizer.json``, or a directory holding
            ``source.spm``/``target.spm`` (Marian), ``sentencepiece.bpe.model`` (NLLB) or
            ``tokenizer.json``. Default: the model directory.
        model_type: ``"marian"`` or ``"nllb"``; detected from the vocabulary when left out
            (NLLB models carry language tokens such as ``eng_Latn``).
        language_pair: For a Marian model, the ``(source, target)`` it translates, e.g.
            ``("en", "de")``; requests for another pair then fail with
            ``UNSUPPORTED_LANGUAGE``. Not checked when left out.
        compute_type: CTranslate2 compute type; default ``int8`` on CPU, ``float16`` on CUDA.
        cpu_threads: OpenMP threads per translation on CPU. Default: the thread budget (half
            the usable cores, at most 4: 1 on a 2-core machine, where the translation overlaps
            with the ASR and the synthesis of other fragments); 0: CTranslate2's default.
        beam_size: Beam width (1 = greedy, fastest).
        max_input_length: Source tokens kept per sentence (longer input is truncated).
        max_decoding_length: Most target tokens per sentence.
        max_batch_size: Most requests the pipeline hands over in one batch.
        translate_options: Further keyword arguments for ``Translator.translate_batch``
            (e.g. ``{"repetition_penalty": 1.1}``).
        download_root: Where models given by id are downloaded and converted, in place of
            the Hugging Face cache (``HF_HUB_CACHE``), as faster-whisper's option of that name.
        local_files_only: Use a conversion made before; never ask the Hub (as
            ``HF_HUB_OFFLINE=1``).
        num_hypotheses: Hypotheses decoded for a request with a length budget (the beam is
            widened to at least this many).
        min_length_ratio: Shortest hypothesis accepted for a budget, as a fraction of the
            best hypothesis's length.

    Raises:
        StageLoadError: The model directory or tokenizer is missing or cannot be loaded, or
            a model given by id cannot be downloaded or converted (offline and not converted
            yet: the message names the ``stsdub models pull`` command).
    """

    #: One CTranslate2 call at a time; batching across streams is where the speed comes from.
    concurrency = 1
    #: A request with a length budget gets the best n-best hypothesis that fits it.
    supports_length_budget = True

    def __init__(
        self,
        *,
        device: str = "cpu",
        model: str | os.PathLike[str],
        tokenizer: str | os.PathLike[str] | None = None,
        model_type: str | None = None,
        language_pair: Sequence[str] | None = None,
        compute_type: str | None = None,
        cpu_threads: int | None = None,
        beam_size: int = 2,
        max_input_length: int = 512,
        max_decoding_length: int = 256,
        max_batch_size: int = 16,
        translate_options: Mapping[str, Any] | None = None,
        download_root: str | os.PathLike[str] | None = None,
        local_files_only: bool = False,
        num_hypotheses: int = 4,
        min_length_ratio: float = 0.5,
    ) -> None:
        try:
            import ctranslate2
        except ImportError as exc:
            raise PluginError(
                f"the ctranslate2 translator needs ctranslate2; install it with: {_INSTALL_HINT}"
            ) from exc
        try:
            import sentencepiece  # noqa: F401 - checked here so a missing extra fails at load
        except ImportError as exc:
            raise PluginError(
                f"the ctranslate2 translator needs sentencepiece; install it with: {_INSTALL_HINT}"
            ) from exc

        # Checked before a model given by id is downloaded and converted, which takes a while.
        if model_type not in (None, "marian", "nllb"):
            raise StageLoadError(
                f"ctranslate2 translator: model_type must be 'marian' or 'nllb', got {model_type!r}"
            )
        if language_pair is not None and len(language_pair) != 2:
            raise StageLoadError("ctranslate2 translator: language_pair must be (source, target)")
        if beam_size < 1 or max_batch_size < 1 or num_hypotheses < 1:
            raise StageLoadError(
                "ctranslate2 translator: beam_size, max_batch_size and num_hypotheses must be >= 1"
            )
        if not 0 <= min_length_ratio <= 1:
            raise StageLoadError("ctranslate2 translator: min_length_ratio must lie between 0 and 1")
        ct2_device, device_index = _split_device(device)
        compute_type = compute_type or ("float16" if ct2_device == "cuda" else "int8")
        model_dir = Path(model).expanduser()
        if not model_dir.is_dir() and _cache.is_hub_model_id(model):
            model_dir = _downloads.ctranslate2_model(
                str(model),
                quantization=_quantization(compute_type, device),
                download_root=download_root,
                local_files_only=local_files_only,
            )
        if not model_dir.is_dir():
            raise StageLoadError(f"ctranslate2 translator: model directory {str(model_dir)!r} does not exist")
        if not (model_dir / "model.bin").is_file():
            raise StageLoadError(
                f"ctranslate2 translator: {str(model_dir)!r} is not a CTranslate2 model (no model.bin);"
                " convert one with ct2-transformers-converter, or give the model's Hugging Face id"
                " (org/name) to have it converted"
            )

        self.device = device
        self.compute_type = compute_type
        self.model_dir = model_dir
        self.vocabulary = _read_vocabulary(model_dir)
        self.model_type = model_type or ("nllb" if "eng_Latn" in self.vocabulary else "marian")
        self.language_pair = (
            None if language_pair is None else (_base(language_pair[0]), _base(language_pair[1]))
        )
        self.max_batch_size = max_batch_size
        self.num_hypotheses = num_hypotheses
        self.min_length_ratio = min_length_ratio
        self._options: dict[str, Any] = {
            "beam_size": beam_size,
            "max_input_length": max_input_length,
            "max_decoding_length": max_decoding_length,
            **(translate_options or {}),
        }
        tokenizer_path = Path(tokenizer).expanduser() if tokenizer else model_dir
        try:
            self._tokenizer = _load_tokenizer(tokenizer_path)
        except StageLoadError:
            raise
        except Exception as exc:  # sentencepiece and tokenizers raise plain RuntimeError/ValueError
            raise StageLoadError(
                f"ctranslate2 translator: cannot load the tokenizer {str(tokenizer_path)!r}: {exc}"
            ) from exc
        try:
            self._translator: Any = ctranslate2.Translator(
                str(model_dir),
                device=ct2_device,
                device_index=device_index,
                compute_type=self.compute_type,
                intra_threads=threads_per_call(1) if cpu_threads is None else cpu_threads,
            )
        except (RuntimeError, ValueError, OSError) as exc:
            raise StageLoadError(f"ctranslate2 translator: cannot load {str(model_dir)!r}: {exc}") from exc

    def __repr__(self) -> str:
        return (
            f"CTranslate2Translator({self.model_type}, {str(self.model_dir)!r},"
            f" device={self.device!r}, compute_type={self.compute_type!r})"
        )

    # -- requests → tokens ----------------------------------------------------------------

    def _prepare(self, request: TranslationRequest) -> tuple[list[str], list[str] | None]:
        """Source tokens and target prefix of one request; StageError when it cannot go."""
        tokens = self._tokenizer.encode(request.text)
        if self.model_type == "nllb":
            source = self._nllb_language(request.source_language, "source")
            target = self._nllb_language(request.target_language, "target")
            return [source, *tokens, "</s>"], [target]
        if self.language_pair is not None:
            wanted_source, wanted_target = self.language_pair
            source_ok = request.source_language is None or _base(request.source_language) == wanted_source
            if not source_ok or _base(request.target_language) != wanted_target:
                raise StageError(
                    ErrorCode.UNSUPPORTED_LANGUAGE,
                    f"this model translates {wanted_source} → {wanted_target}, not"
                    f" {request.source_language or '?'} → {request.target_language}",
                )
        return [*tokens, "</s>"], None

    def _nllb_language(self, language: str | None, side: str) -> str:
        if language is None:
            raise StageError(
                ErrorCode.UNSUPPORTED_LANGUAGE,
                "NLLB needs the source language; set source_language or use an ASR that detects it",
            )
        code = nllb_code(language)
        if code is None or (self.vocabulary and code not in self.vocabulary):
            raise StageError(
                ErrorCode.UNSUPPORTED_LANGUAGE, f"the NLLB model has no {side} language {language!r}"
            )
        return code

    def _decode(self, tokens: Sequence[str], has_prefix: bool) -> str:
        if has_prefix:
            tokens = tokens[1:]  # NLLB repeats the target language token first
        return self._tokenizer.decode([t for t in tokens if t not in _SPECIAL_TOKENS]).strip()

    # -- the stage ---------------------------------------------------------------------------

    def translate(self, request: TranslationRequest) -> Translation:
        """Translate one request (a batch of one)."""
        result = self.translate_batch([request])[0]
        if isinstance(result, StageError):
            raise result
        return result

    def translate_batch(self, requests: Sequence[TranslationRequest]) -> list[Translation | StageError]:
        """Translate several requests in one CTranslate2 call.

        Empty texts are answered without the model; a request the model cannot serve (an
        unsupported language) gets a StageError in its place and the others go through.
        """
        if self._translator is None:
            raise StageError(ErrorCode.INTERNAL_ERROR, "the ctranslate2 translator is closed")
        results: list[Translation | StageError | None] = [None] * len(requests)
        # Requests with a budget decode n-best, which costs more: they go in a call of their own.
        plain: list[tuple[int, list[str], list[str] | None]] = []
        budgeted: list[tuple[int, list[str], list[str] | None]] = []
        for i, request in enumerate(requests):
            if not request.text.strip():
                results[i] = Translation("")
                continue
            try:
                tokens, prefix = self._prepare(request)
            except StageError as err:
                results[i] = err
                continue
            (budgeted if request.budget is not None else plain).append((i, tokens, prefix))
        if plain:
            outputs = self._run([t for _, t, _ in plain], [p for _, _, p in plain], {})
            for (i, _, prefix), output in zip(plain, outputs, strict=True):
                results[i] = Translation(self._decode(output.hypotheses[0], prefix is not None))
        if budgeted:
            n = self.num_hypotheses
            options = {
                "num_hypotheses": n,
                "beam_size": max(self._options["beam_size"], n),
                "return_scores": True,
            }
            outputs = self._run([t for _, t, _ in budgeted], [p for _, _, p in budgeted], options)
            for (i, _, prefix), output in zip(budgeted, outputs, strict=True):
                budget = requests[i].budget
                assert budget is not None
                texts = [self._decode(h, prefix is not None) for h in output.hypotheses]
                results[i] = Translation(self._fitting(texts, budget.max_chars))
        return [r if r is not None else StageError(ErrorCode.INTERNAL_ERROR, "no result") for r in results]

    def _run(self, batch: list[list[str]], prefixes: list[list[str] | None], options: dict[str, Any]) -> Any:
        has_prefix = any(p is not None for p in prefixes)
        try:
            return self._translator.translate_batch(
                batch,
                target_prefix=prefixes if has_prefix else None,
                max_batch_size=self.max_batch_size,
                **{**self._options, **options},
            )
        except RuntimeError as exc:
            # A full GPU may have room again for the next (smaller) batch.
            code = (
                ErrorCode.TEMPORARY_UNAVAILABLE
                if "out of memory" in str(exc).lower()
                else ErrorCode.INTERNAL_ERROR
            )
            raise StageError(code, f"CTranslate2 failed: {exc}") from exc

    def _fitting(self, texts: Sequence[str], max_chars: int) -> str:
        """The best-scored hypothesis within ``max_chars`` that is not too short.

        ``texts`` come best first. Without one that fits, the shortest adequate one.
        """
        best = texts[0]
        floor = self.min_length_ratio * len(best)
        adequate = [t for t in texts if t and len(t) >= floor] or [best]
        fitting = [t for t in adequate if len(t) <= max_chars]
        return fitting[0] if fitting else min(adequate, key=len)

    def warmup(self) -> None:
        """Translate one short sentence so the first fragment pays no first-call cost."""
        tokens = [*self._tokenizer.encode("Hello."), "</s>"]
        prefix = None
        if self.model_type == "nllb":
            tokens.insert(0, "eng_Latn")
            prefix = [["deu_Latn" if "deu_Latn" in self.vocabulary else "eng_Latn"]]
        self._translator.translate_batch(
            [tokens], target_prefix=prefix, **{**self._options, "max_decoding_length": 4}
        )

    def close(self) -> None:
        """Free the model (and its GPU memory) now rather than at garbage collection."""
        translator, self._translator = self._translator, None
        if translator is not None:
            translator.unload_model()
