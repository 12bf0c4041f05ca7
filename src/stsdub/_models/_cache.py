"""Models by name: what each name means, where it is kept, and what the cache holds.

The one place that knows where a named model comes from and where it is kept. It follows
faster-whisper's conventions, since that is what users of ``model="small"`` already know:
files go through ``huggingface_hub`` into the Hugging Face cache (``HF_HOME`` /
``HF_HUB_CACHE``, or ``download_root``), ``HF_ENDPOINT`` picks a mirror, and
``HF_HUB_OFFLINE=1`` or ``local_files_only=True`` uses the cache without a single request.

Two kinds of model:

``piper``
    A voice of the Piper voice collection (``rhasspy/piper-voices``) by its name, such as
    ``de_DE-thorsten-medium``: its ``.onnx`` file and ``.onnx.json`` config, fetched with
    ``hf_hub_download`` (so a cached voice is checked against the Hub when it is reachable,
    and used as it is when it is not).
``ctranslate2``
    A Transformers translation model by its Hub id (``Helsinki-NLP/opus-mt-en-de``,
    ``facebook/nllb-200-distilled-600M``), converted once with CTranslate2's own converter
    into ``<cache>/stsdub-ct2/<org>--<name>-<quantization>``. The conversion is what the
    stage loads, so once it exists no request is made at all.

``huggingface_hub`` (and for a conversion, ``transformers`` and ``torch``) are imported only
when a model is fetched by name, so stages given local paths never need them.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs

from ..errors import ConfigurationError, PluginError, StageLoadError

__all__ = [
    "CT2_DIRECTORY",
    "KINDS",
    "PIPER_REPO",
    "QUANTIZATIONS",
    "CachedModel",
    "cache_root",
    "default_quantization",
    "is_hub_model_id",
    "is_piper_voice_name",
    "list_cached",
    "piper_voice_files",
    "pull_command",
]

logger = logging.getLogger("stsdub.models")

#: The kinds of model :func:`pull` fetches, named after the stages that use them.
KINDS = ("piper", "ctranslate2", "demucs", "whisper")
#: The Hub repository of the Piper voice collection.
PIPER_REPO = "rhasspy/piper-voices"
#: Directory of the CTranslate2 conversions, inside the cache (or ``download_root``).
CT2_DIRECTORY = "stsdub-ct2"
# Written last into a conversion: what it was made from, and proof that it is complete.
_CT2_METADATA = "stsdub-model.json"
_HUB_HINT = "pip install 'stsdub[ct2]' (or [piper])"
_CONVERTER_HINT = "pip install 'stsdub[ct2-convert]'"

# <lang>_<REGION>-<name>-<quality>: the layout of every voice in the collection.
_PIPER_NAME = re.compile(
    r"^(?P<lang>[a-z]{2,3})_(?P<region>[A-Z]{2})-(?P<name>[A-Za-z0-9_]+)-(?P<quality>x_low|low|medium|high)$"
)
# A Hub model id as the Hub allows them (no leading dot or dash, one slash).
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9_][A-Za-z0-9_.-]*$")
#: The weight types CTranslate2's converter writes.
QUANTIZATIONS = frozenset(
    {"int8", "int8_float32", "int8_float16", "int8_bfloat16", "int16", "float16", "bfloat16", "float32"}
)
# What the converter reads besides the weights: configs, vocabularies and tokenizer models.
# TensorFlow, Flax and Rust weights, ONNX exports and READMEs are left on the Hub.
_CONFIG_PATTERNS = ("*.json", "*.spm", "*.model", "*.txt")
# Tokenizer files copied into the conversion, by family; the first family found is copied
# (the ctranslate2 stage reads the same files in the same order).
_TOKENIZER_FAMILIES = (
    ("source.spm", "target.spm"),
    ("sentencepiece.bpe.model",),
    ("spm.model",),
    ("sentencepiece.model",),
    ("tokenizer.json",),
)


@attrs.frozen
class CachedModel:
    """A model :func:`list_cached` found.

    Attributes:
        kind: ``"piper"`` or ``"ctranslate2"``.
        name: The name to pass to the stage (``de_DE-thorsten-medium``,
            ``Helsinki-NLP/opus-mt-en-de``).
        path: The voice's ``.onnx`` file, or the converted model's directory.
        size: Bytes on disk (a voice's model and config; every file of a conversion).
        quantization: The conversion's weight type; ``None`` for a voice.
    """

    kind: str
    name: str
    path: Path
    size: int
    quantization: str | None = None


# -- names ------------------------------------------------------------------------------------


def is_piper_voice_name(name: object) -> bool:
    """Whether ``name`` reads as a voice of the collection (``de_DE-thorsten-medium``)."""
    return isinstance(name, str) and _PIPER_NAME.match(name) is not None


def piper_voice_files(name: str) -> tuple[str, str]:
    """The voice's model and config paths inside :data:`PIPER_REPO`.

    ``de_DE-thorsten-medium`` → ``de/de_DE/thorsten/medium/de_DE-thorsten-medium.onnx`` and
    the same with ``.onnx.json``.

    Raises:
        ConfigurationError: ``name`` is not ``<lang>_<REGION>-<name>-<quality>``.
    """
    match = _PIPER_NAME.match(name)
    if match is None:
        raise ConfigurationError(
            f"{name!r} is not a Piper voice name: expected <lang>_<REGION>-<name>-<quality>,"
            " such as de_DE-thorsten-medium (quality x_low, low, medium or high)"
        )
    lang, region = match["lang"], match["region"]
    folder = f"{lang}/{lang}_{region}/{match['name']}/{match['quality']}"
    return f"{folder}/{name}.onnx", f"{folder}/{name}.onnx.json"


def is_hub_model_id(name: object) -> bool:
    """Whether ``name`` reads as a Hub model id (``org/name``) rather than a path.

    Anything starting with ``.``, ``~`` or a separator, or holding more than one slash, is a
    path; the caller checks first whether the name is an existing directory.
    """
    return isinstance(name, str) and _REPO_ID.match(name) is not None


def default_quantization(device: str = "cpu") -> str:
    """``int8`` on CPU (small and fast), ``float16`` on CUDA."""
    return "float16" if device.startswith("cuda") else "int8"


# -- where things are -------------------------------------------------------------------------


def _hub() -> Any:
    try:
        import huggingface_hub
        import huggingface_hub.constants
        import huggingface_hub.errors
    except ImportError as exc:
        raise PluginError(f"fetching models by name needs huggingface_hub: {_HUB_HINT}") from exc
    return huggingface_hub


def cache_root(download_root: str | os.PathLike[str] | None = None) -> Path:
    """``download_root`` if given, else the Hugging Face hub cache (``HF_HUB_CACHE``).

    The cache location is huggingface_hub's own (read when it was imported), so
    ``HF_HOME`` and ``HF_HUB_CACHE`` mean here what they mean to every Hugging Face library.
    """
    if download_root is not None:
        return Path(download_root).expanduser()
    return Path(_hub().constants.HF_HUB_CACHE)


def _ct2_directory(root: Path, model_id: str, quantization: str) -> Path:
    return root / CT2_DIRECTORY / f"{model_id.replace('/', '--')}-{quantization}"


def pull_command(
    kind: str,
    name: str,
    *,
    download_root: str | os.PathLike[str] | None = None,
    quantization: str | None = None,
) -> str:
    """The ``stsdub models pull`` command line that fetches this model."""
    words = ["stsdub", "models", "pull", kind, name]
    if download_root is not None:
        words += ["--download-root", os.fspath(download_root)]
    if quantization is not None and quantization != default_quantization():
        words += ["--quantization", quantization]
    return shlex.join(words)


def _offline_reason(hub: Any, local_files_only: bool) -> str | None:
    if local_files_only:
        return "local_files_only=True"
    if hub.constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set"
    return None


def _not_cached(what: str, command: str, reason: str, cause: BaseException | None = None) -> StageLoadError:
    detail = f": {type(cause).__name__}: {cause}" if cause is not None and str(cause) else ""
    return StageLoadError(
        f"{what} is not cached and cannot be downloaded ({reason}{detail}). Fetch it once on a"
        f" machine that can reach the Hugging Face Hub with: {command}"
    )


def _is_connection_error(exc: BaseException) -> bool:
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    # Matched by name: which HTTP client huggingface_hub uses depends on its version.
    names = {cls.__name__ for cls in type(exc).__mro__}
    return bool(names & {"ConnectError", "ConnectTimeout", "TimeoutException", "Timeout"})


def _download_error(
    hub: Any, exc: Exception, what: str, command: str, local_files_only: bool, missing: str
) -> StageLoadError:
    """One StageLoadError for whatever huggingface_hub raised while fetching ``what``."""
    errors = hub.errors
    if isinstance(exc, (errors.LocalEntryNotFoundError, errors.OfflineModeIsEnabled)):
        # The Hub was not asked (offline) or could not be reached, and nothing is cached.
        reason = _offline_reason(hub, local_files_only)
        if reason is not None:
            return _not_cached(what, command, reason)
        # huggingface_hub chains the connection error it gave up on.
        unreachable = f"the Hub at {hub.constants.ENDPOINT} cannot be reached"
        return _not_cached(what, command, unreachable, exc.__cause__ or exc)
    if _is_connection_error(exc):
        # HfApi calls raise the HTTP client's own error (requests' or httpx's) when the Hub
        # cannot be reached, where hf_hub_download wraps it as above.
        return _not_cached(what, command, f"the Hub at {hub.constants.ENDPOINT} cannot be reached", exc)
    if isinstance(
        exc, (errors.RepositoryNotFoundError, errors.EntryNotFoundError, errors.RevisionNotFoundError)
    ):
        return StageLoadError(f"{what}: {missing} ({type(exc).__name__})")
    return StageLoadError(f"{what} cannot be downloaded: {type(exc).__name__}: {exc}")


# -- Piper voices -----------------------------------------------------------------------------


def _read_metadata(directory: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((directory / _CT2_METADATA).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and (directory / "model.bin").is_file() else None


def _size(path: Path) -> int:
    """Bytes of a file (through the cache's symlinks), or of every file under a directory."""
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return path.stat().st_size


def _cached_voices(root: Path) -> Iterator[CachedModel]:
    snapshots = root / f"models--{PIPER_REPO.replace('/', '--')}" / "snapshots"
    seen: set[str] = set()
    # Newest snapshot first, so a voice cached at several revisions is listed once, current.
    revisions = sorted(
        (p for p in snapshots.glob("*") if p.is_dir()), key=lambda p: p.stat().st_mtime, reverse=True
    )
    for revision in revisions:
        for model in sorted(revision.glob("*/*/*/*/*.onnx")):
            config = model.with_name(f"{model.name}.json")
            if model.stem in seen or not (model.is_file() and config.is_file()):
                continue
            seen.add(model.stem)
            yield CachedModel("piper", model.stem, model, _size(model) + _size(config))


def _cached_conversions(root: Path) -> Iterator[CachedModel]:
    for directory in sorted((root / CT2_DIRECTORY).glob("*")):
        if directory.name.startswith("."):
            continue  # a conversion in progress, or one interrupted
        metadata = _read_metadata(directory)
        if metadata is None:
            continue
        yield CachedModel(
            "ctranslate2",
            str(metadata.get("name", directory.name)),
            directory,
            _size(directory),
            metadata.get("quantization"),
        )


def list_cached(download_root: str | os.PathLike[str] | None = None) -> list[CachedModel]:
    """The voices and converted translators in the cache (or in ``download_root``).

    Reads the directories only: no request, and nothing is imported but huggingface_hub's
    constants (when no ``download_root`` is given).
    """
    root = cache_root(download_root)
    return [*_cached_voices(root), *_cached_conversions(root)]
