"""The ``demucs`` separator: HT-Demucs splits a recording into its speech and everything else.

Models load through Demucs's own code: by name (``htdemucs``, ``htdemucs_ft``, any name Demucs
publishes) from the Hugging Face Hub into its cache, with the conventions of the other stages
(``download_root``, ``local_files_only``, ``HF_HUB_OFFLINE``); or from local files, as Demucs
itself reads them: a checkpoint (``.th`` as ``demucs.states`` saves it, or ``.safetensors``
as published on the Hub), a bag's ``.yaml``, or a directory of them (Demucs's ``--repo``).

Audio is processed in windows of ``window`` seconds that overlap by ``window_overlap`` seconds
and are crossfaded, so memory stays bounded however long the file: Demucs's ``apply_model``
would otherwise hold every source of the whole file at 44.1 kHz stereo (an hour is over 5 GB).
Inside a window, ``apply_model`` runs the model on its own training-length segments with
overlap, as the ``demucs`` command does.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from .._core import _audio
from .._core._separation import Separation, SeparationRequest
from .._core._values import AudioBuffer
from .._models._demucs import fetch_demucs, read_bag
from ..errors import ErrorCode, StageError, StageLoadError

__all__ = ["DEFAULT_MODEL", "DemucsSeparator"]

log = logging.getLogger("stsdub")

#: The model loaded when none is named: HT-Demucs v4, the four-source model Demucs defaults to.
DEFAULT_MODEL = "htdemucs"
#: The source that is speech; every model of Demucs's four- and six-source families has it.
VOICE_SOURCE = "vocals"
_INSTALL_HINT = "pip install 'stsdub[separate]'"
_SUFFIXES = (".th", ".safetensors", ".yaml")

PathLike = str | os.PathLike[str]


def _demucs() -> Any:
    try:
        import demucs.apply
        import demucs.hf
        import demucs.pretrained
        import demucs.states
        import torch  # noqa: F401  (Demucs needs it; fail here with the hint)
    except ImportError as exc:
        raise StageLoadError(
            f"the demucs separator needs Demucs and PyTorch ({exc}); {_INSTALL_HINT}"
        ) from exc
    return demucs


def _load_named(name: str, download_root: PathLike | None, local_files_only: bool) -> Any:
    demucs = _demucs()
    bag_file, weights = fetch_demucs(name, download_root=download_root, local_files_only=local_files_only)
    bag = read_bag(bag_file)
    models = [demucs.hf.load_safetensors_model(path) for path in weights]
    return demucs.apply.BagOfModels(models, bag.get("weights"), bag.get("segment"))


def _repo_models(directory: Path) -> list[str]:
    """Names Demucs's LocalRepo / BagOnlyRepo find in a directory (``sig-checksum.th`` → sig)."""
    names = {p.stem for p in directory.glob("*.yaml")}
    names |= {p.stem.rsplit("-", 1)[0] for p in directory.glob("*.th")}
    return sorted(names)


def _load_local(path: Path, name: str | None) -> Any:
    demucs = _demucs()
    if path.is_dir():
        if name is None:
            found = _repo_models(path)
            if len(found) != 1:
                listed = ", ".join(found) or "none"
                raise StageLoadError(
                    f"demucs: {path} holds the models {listed}; name one with model_name=..."
                )
            name = found[0]
        return demucs.pretrained.get_model(name, repo=path)
    if path.suffix == ".yaml":
        return demucs.pretrained.get_model(path.stem, repo=path.parent)
    if path.suffix == ".safetensors":
        return demucs.hf.load_safetensors_model(path)
    return demucs.states.load_model(path)


def _voice_models_only(demucs: Any, model: Any, voice: int) -> Any:
    """A bag without the models that do not contribute to the voice.

    Only the voice is computed (the background is the mix without it), and a fine-tuned bag
    such as ``htdemucs_ft`` has one model per source with one-hot weights: running the other
    three would quadruple the time for nothing.
    """
    if not isinstance(model, demucs.apply.BagOfModels):
        return model
    kept = [(m, w) for m, w in zip(model.models, model.weights, strict=True) if w[voice] != 0]
    if len(kept) == len(model.models):
        return model
    # The voice keeps its weights; the other sources are never read, so any non-zero weight
    # (which keeps apply_model's normalisation from dividing by zero) will do.
    weights = [[w[voice] if k == voice else 1.0 for k in range(len(w))] for _, w in kept]
    return demucs.apply.BagOfModels([m for m, _ in kept], weights)


def _looks_like_path(model: str) -> bool:
    return (
        model.endswith(_SUFFIXES)
        or model.startswith((".", "~", os.sep))
        or (os.altsep is not None and os.altsep in model)
        or Path(model).expanduser().exists()
    )


class DemucsSeparator:
    """Voice and background of a recording with HT-Demucs.

    The voice is Demucs's ``vocals`` source; the background is the input minus the voice, so
    the two add up to the input (up to clipping to [-1, 1]) and nothing but the voice is lost.

    Args:
        device: ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` (given by the Dubber).
        model: A Demucs model name (``"htdemucs"``, ``"htdemucs_ft"``, ``"namespace/name"``)
            fetched from the Hub and cached; or a path to a ``.th`` / ``.safetensors``
            checkpoint, a bag ``.yaml`` next to its checkpoints, or a directory of them.
        model_name: With a directory (``model`` or ``repo``), which model in it to load;
            optional when it holds one.
        repo: A local Demucs repository (as ``demucs --repo``): ``model`` is looked up in it.
        download_root: Cache directory for models fetched by name (default: the Hugging
            Face cache).
        local_files_only: Use cached models only; make no request (``HF_HUB_OFFLINE=1``
            does the same).
        shifts: Demucs's shift trick: average this many randomly shifted passes (better
            separation, proportionally slower; 0 for deterministic output).
        overlap: Overlap of Demucs's own segments inside a window (0-1).
        segment: Length of Demucs's segments in seconds (default: the model's own).
        window: Seconds of audio processed at once; bounds memory on long files.
        window_overlap: Seconds by which consecutive windows overlap; they are crossfaded
            linearly across it.

    Raises:
        StageLoadError: Demucs is missing, the model cannot be found or loaded, it has no
            ``vocals`` source, or an option is out of range.
    """

    #: One model object is not safe to share between threads.
    concurrency = 1

    def __init__(
        self,
        *,
        device: str = "cpu",
        model: str | os.PathLike[str] = DEFAULT_MODEL,
        model_name: str | None = None,
        repo: PathLike | None = None,
        download_root: PathLike | None = None,
        local_files_only: bool = False,
        shifts: int = 1,
        overlap: float = 0.25,
        segment: float | None = None,
        window: float = 60.0,
        window_overlap: float = 2.0,
    ) -> None:
        demucs = _demucs()
        import torch

        self._torch = torch
        self._apply_model = demucs.apply.apply_model
        if isinstance(shifts, bool) or not isinstance(shifts, int) or shifts < 0:
            raise StageLoadError(f"demucs: shifts must be an int >= 0, got {shifts!r}")
        if not 0 <= overlap < 1:
            raise StageLoadError(f"demucs: overlap must lie in [0, 1), got {overlap!r}")
        if not 0 <= window_overlap < window / 2:
            raise StageLoadError(
                f"demucs: window_overlap must lie in [0, window / 2), got {window_overlap!r}"
                f" for window {window!r}"
            )
        self.device = device
        self.shifts = shifts
        self.overlap = float(overlap)
        self.segment = segment
        self.window = float(window)
        self.window_overlap = float(window_overlap)

        label = os.fspath(model)
        try:
            if repo is not None:
                directory = Path(repo).expanduser()
                if not directory.is_dir():
                    raise StageLoadError(f"demucs: repo {directory} is not a directory")
                loaded = demucs.pretrained.get_model(os.fspath(model), repo=directory)
            elif isinstance(model, os.PathLike) or _looks_like_path(label):
                path = Path(model).expanduser()
                if not path.exists():
                    raise StageLoadError(f"demucs: no model file or directory {path}")
                loaded = _load_local(path, model_name)
            else:
                loaded = _load_named(label, download_root, local_files_only)
        except StageLoadError:
            raise
        except Exception as exc:
            raise StageLoadError(
                f"could not load the demucs model {label!r}: {type(exc).__name__}: {exc}"
            ) from exc
        sources = list(loaded.sources)
        if VOICE_SOURCE not in sources:
            raise StageLoadError(f"demucs model {label!r} has no {VOICE_SOURCE!r} source (it has {sources})")
        loaded = _voice_models_only(demucs, loaded, sources.index(VOICE_SOURCE))
        self.model: Any = loaded.to(torch.device(device)).eval()
        self.model_label = label
        #: Sources the model separates, e.g. ``("drums", "bass", "other", "vocals")``.
        self.sources: tuple[str, ...] = tuple(sources)
        #: The rate the model works at (44.1 kHz for every published model).
        self.sample_rate = int(loaded.samplerate)
        self._channels = int(loaded.audio_channels)
        self._voice_index = sources.index(VOICE_SOURCE)

    def separate(self, request: SeparationRequest) -> Separation:
        """Split ``request.audio`` into the ``vocals`` source and the rest, window by window."""
        audio = request.audio
        x = audio.samples
        rate = audio.sample_rate
        # As the demucs command does: the model sees the mix at unit variance.
        std = float(np.std(x)) if x.size else 0.0
        if std < 1e-6:  # silence (or nearly): nothing to separate, nothing for the model to amplify
            return Separation(AudioBuffer(np.zeros_like(x), rate), audio)
        try:
            voice = self._voices(x, rate, std)
        except StageError:
            raise
        except Exception as exc:
            raise StageError(
                ErrorCode.INTERNAL_ERROR, f"demucs failed: {type(exc).__name__}: {exc}", "separation"
            ) from exc
        background = np.clip(x - voice, -1.0, 1.0).astype(np.float32)
        return Separation(AudioBuffer(voice, rate), AudioBuffer(background, rate))

    def _voices(self, x: np.ndarray[Any, Any], rate: int, std: float) -> np.ndarray[Any, Any]:
        n = x.size
        window = max(1, round(self.window * rate))
        fade = round(self.window_overlap * rate)
        voice = np.zeros(n, dtype=np.float32)
        # Crossfade weights: the tail of one window and the head of the next add up to 1.
        head = ((np.arange(fade, dtype=np.float32) + 0.5) / fade) if fade else np.ones(0, np.float32)
        start = 0
        while True:
            end = min(start + window, n)
            part = self._vocals(x[start:end], rate, std)
            if start > 0:
                part[:fade] *= head
            if end < n and fade:
                part[-fade:] *= 1.0 - head
            voice[start:end] += part
            if end == n:
                break
            start = end - fade
        np.clip(voice, -1.0, 1.0, out=voice)
        return voice

    def _vocals(self, chunk: np.ndarray[Any, Any], rate: int, std: float) -> np.ndarray[Any, Any]:
        """The voice of one window, at its rate and length, in the input's scale."""
        torch = self._torch
        model_rate = self.sample_rate
        mix = _audio.resample(chunk, rate, model_rate)
        tensor = torch.from_numpy(np.ascontiguousarray(mix) / np.float32(std))
        # The published models are stereo: a mono recording is both channels.
        tensor = tensor[None, None, :].expand(1, self._channels, -1).contiguous()
        with torch.inference_mode():
            sources = self._apply_model(
                self.model,
                tensor,
                shifts=self.shifts,
                split=True,
                overlap=self.overlap,
                segment=self.segment,
                device=self.device,
                progress=False,
            )
            vocals = sources[0, self._voice_index].mean(dim=0).cpu().numpy().astype(np.float32)
        vocals *= np.float32(std)
        return _audio.fit_length(_audio.resample(np.clip(vocals, -1.0, 1.0), model_rate, rate), chunk.size)

    def close(self) -> None:
        """Release the model (and the GPU memory it held)."""
        self.model = None
        if self.device.startswith("cuda"):
            self._torch.cuda.empty_cache()

    def __repr__(self) -> str:
        return f"<DemucsSeparator {self.model_label} on {self.device}, {len(self.sources)} sources>"
