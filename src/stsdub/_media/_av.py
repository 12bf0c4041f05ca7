"""Lazy import of PyAV with the install hint."""

from __future__ import annotations

from types import ModuleType

from ._errors import MediaError


def import_av() -> ModuleType:
    """``import av``, or a MediaError that says how to install it."""
    try:
        import av
    except ImportError as exc:
        raise MediaError(
            "reading and writing media files needs PyAV, which is not installed."
            " Install it with: pip install 'stsdub[media]'"
        ) from exc
    return av
