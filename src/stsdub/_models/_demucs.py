"""Demucs models by name: the bag and weights Demucs's own ``get_model(name)`` fetches."""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

from ..errors import StageLoadError
from ._cache import _download_error, _hub, pull_command

__all__ = ["fetch_demucs", "read_bag"]

PathLike = str | os.PathLike[str]


def _demucs_hf() -> Any:
    # Demucs names its Hub repositories; its module is imported only when a model is fetched.
    try:
        return importlib.import_module("demucs.hf")
    except ImportError as exc:
        raise StageLoadError(
            f"fetching a demucs model needs Demucs ({exc}); pip install 'stsdub[separate]'"
        ) from exc


def _hub_repo(name: str) -> tuple[str, str]:
    """``htdemucs_ft`` → (``adefossez/HTDemucs-ft``, ``htdemucs_ft``), as Demucs names them."""
    demucs = _demucs_hf()
    namespace, _, short = name.rpartition("/")
    return f"{namespace or demucs.DEFAULT_NAMESPACE}/{demucs.hf_repo_name(short)}", short


def fetch_demucs(
    name: str,
    *,
    download_root: PathLike | None = None,
    local_files_only: bool = False,
) -> tuple[Path, list[Path]]:
    """The bag ``.yaml`` and the ``.safetensors`` of a named Demucs model, downloaded if need be.

    The files are those Demucs's own ``get_model(name)`` fetches from the Hub, in the same
    repositories, into the Hugging Face cache (or ``download_root``).

    Args:
        name: ``htdemucs``, ``htdemucs_ft`` or another published name, optionally as
            ``namespace/name``.
        download_root: Cache directory instead of the Hugging Face cache.
        local_files_only: Use the cache only; make no request.

    Raises:
        StageLoadError: Not published, or not cached while offline (the message names the
            ``stsdub models pull`` command to run on a connected machine).
    """
    hub = _hub()
    repo_id, short = _hub_repo(name)
    what = f"demucs model {name!r}"
    command = pull_command("demucs", name, download_root=download_root)

    def fetch(filename: str) -> Path:
        try:
            path = hub.hf_hub_download(
                repo_id,
                filename,
                cache_dir=None if download_root is None else os.fspath(download_root),
                local_files_only=local_files_only,
            )
        except Exception as exc:
            raise _download_error(
                hub, exc, what, command, local_files_only, f"no file {filename} in {repo_id}"
            ) from exc
        return Path(path)

    bag_file = fetch(f"{short}.yaml")
    return bag_file, [fetch(f"{sig}.safetensors") for sig in read_bag(bag_file)["models"]]


def read_bag(path: Path) -> Any:
    # PyYAML comes with Demucs; imported by name since it ships no type information.
    yaml = importlib.import_module("yaml")
    return yaml.safe_load(path.read_text(encoding="utf-8"))
