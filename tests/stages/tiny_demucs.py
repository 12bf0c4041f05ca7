"""A tiny HT-Demucs with random weights, built with Demucs's own classes and saved its ways.

``save_checkpoint`` writes what ``demucs.states.save_with_checksum`` writes (``<sig>-<sha>.th``,
the package ``demucs.states.load_model`` reads, as ``demucs --repo DIR -n SIG`` finds it) and a
bag ``.yaml`` next to it; ``hub_files`` gives the files of a Hub repository in the layout
``demucs.hf.get_hf_model`` downloads (a bag ``.yaml`` and one ``.safetensors`` per model, the
model's class and arguments in the safetensors metadata).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from demucs.htdemucs import HTDemucs
from demucs.states import get_state, save_with_checksum
from safetensors.torch import save as save_safetensors

SOURCES = ["drums", "bass", "other", "vocals"]
#: Small enough to run a second of audio in a fraction of a second on one CPU core.
TINY = {
    "channels": 8,
    "depth": 2,
    "nfft": 512,
    "t_layers": 1,
    "t_heads": 1,
    "dconv_depth": 1,
    "dconv_comp": 4,
    "segment": 1,
}


def build_tiny_htdemucs(seed: int = 0, samplerate: int = 44_100, **sizes: Any) -> HTDemucs:
    """HT-Demucs with the four usual sources, tiny sizes (or ``sizes``) and random weights."""
    torch.manual_seed(seed)
    model = HTDemucs(sources=SOURCES, samplerate=samplerate, **{**TINY, **sizes})
    return model.eval()


def _package(model: HTDemucs) -> dict[str, Any]:
    # What demucs.states.serialize_model stores, without the training arguments (which need
    # omegaconf and are not read when loading).
    args, kwargs = model._init_args_kwargs
    return {"klass": type(model), "args": args, "kwargs": kwargs, "state": get_state(model, None)}


def save_checkpoint(model: HTDemucs, directory: Path, sig: str = "0123abcd") -> Path:
    """Save ``model`` as Demucs saves checkpoints; returns the ``.th`` file it wrote."""
    directory.mkdir(parents=True, exist_ok=True)
    save_with_checksum(_package(model), directory / f"{sig}.th")
    (written,) = directory.glob(f"{sig}-*.th")
    return written


def save_bag(directory: Path, name: str, sigs: list[str], weights: list[list[float]] | None = None) -> Path:
    """A bag of models ``name.yaml`` over checkpoints in ``directory``, as Demucs's remote bags."""
    path = directory / f"{name}.yaml"
    text = "models: [" + ", ".join(repr(s) for s in sigs) + "]\n"
    if weights is not None:
        text += "weights: " + json.dumps(weights) + "\n"
    path.write_text(text, encoding="utf-8")
    return path


def hub_files(model: HTDemucs, name: str, sig: str = "0123abcd") -> dict[str, bytes]:
    """The files of a Demucs model repository on the Hub: ``name.yaml`` and ``sig.safetensors``."""
    args, kwargs = model._init_args_kwargs
    state = {k: v.contiguous() for k, v in get_state(model, None).items()}
    metadata = {
        "klass": f"{type(model).__module__}.{type(model).__name__}",
        "args": json.dumps(list(args)),
        "kwargs": json.dumps(kwargs),
    }
    return {
        f"{name}.yaml": f"models: ['{sig}']\n".encode(),
        f"{sig}.safetensors": save_safetensors(state, metadata=metadata),
    }
