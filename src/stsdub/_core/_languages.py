"""Language tags as users type them (``en``, ``en-US``, ``pt_BR``)."""

from __future__ import annotations

__all__ = ["base_language", "same_language"]


def base_language(tag: str) -> str:
    """The primary subtag, lower-cased: ``"EN-us"`` → ``"en"``, ``"pt_BR"`` → ``"pt"``."""
    return tag.replace("_", "-").split("-")[0].lower()


def same_language(a: str | None, b: str | None) -> bool:
    """Whether two tags name the same language (``en`` = ``EN-us``); unknown is never equal."""
    if a is None or b is None:
        return False
    return base_language(a) == base_language(b)
