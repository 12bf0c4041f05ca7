"""Errors about media files; they live in :mod:`stsdub.errors` with the rest of the tree."""

from __future__ import annotations

from ..errors import MediaError as MediaError
from ..errors import MediaInputError as MediaInputError
from ..errors import MediaOutputError as MediaOutputError
from ..errors import NoAudioStreamError as NoAudioStreamError

__all__ = ["MediaError", "MediaInputError", "MediaOutputError", "NoAudioStreamError"]
