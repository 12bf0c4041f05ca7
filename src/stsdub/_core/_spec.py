"""What a plugin offers: a stage of one of the five kinds, its factory and what it needs."""

from __future__ import annotations

import importlib
import importlib.util
import shutil
from collections.abc import Callable, Iterable
from typing import Any

import attrs

from ..errors import ConfigurationError, StageLoadError

__all__ = ["STAGE_KINDS", "StageSpec"]

#: The stage kinds, in pipeline order: the three of a fragment, then the two of a recording.
STAGE_KINDS = ("asr", "translator", "synthesizer", "separator", "diarizer")


def _names(value: Iterable[str]) -> tuple[str, ...]:
    return tuple(value)


def _check_kind(_inst: StageSpec, _attr: object, value: str) -> None:
    if value not in STAGE_KINDS:
        raise ConfigurationError(f"StageSpec kind must be one of {STAGE_KINDS}, got {value!r}")


@attrs.frozen
class StageSpec:
    """A stage a plugin offers.

    Args:
        kind: ``"asr"``, ``"translator"``, ``"synthesizer"`` or ``"separator"``.
        name: What users type, e.g. ``Dubber(asr="my-asr")``.
        factory: Called as ``factory(device=..., **options)`` once per Dubber. Either a
            callable, or an import string ``"package.module:Name"`` resolved only when used,
            so listing plugins never imports heavy libraries.
        description: One line for ``stsdub plugins``.
        requires: Modules the factory needs; when one is missing the stage is listed as
            unavailable and choosing it raises an error with ``install_hint``.
        requires_commands: Programs the stage runs (looked up on ``PATH``), as ``requires``.
        install_hint: What to run to get the requirements, e.g. ``pip install 'stsdub[piper]'``.
        package: The distribution that provides the stage; filled in at discovery.
    """

    kind: str = attrs.field(validator=_check_kind)
    name: str
    factory: Callable[..., Any] | str
    description: str = ""
    requires: tuple[str, ...] = attrs.field(default=(), converter=_names)
    install_hint: str | None = None
    requires_commands: tuple[str, ...] = attrs.field(default=(), converter=_names)
    package: str | None = None

    @property
    def missing(self) -> tuple[str, ...]:
        """Required modules that cannot be imported here, and required programs not on ``PATH``."""
        modules = tuple(m for m in self.requires if not _module_available(m))
        return modules + tuple(c for c in self.requires_commands if shutil.which(c) is None)

    @property
    def available(self) -> bool:
        return not self.missing

    def load_factory(self) -> Callable[..., Any]:
        """The factory callable, importing it if it was given as a string."""
        if callable(self.factory):
            return self.factory
        module_name, _, attr = self.factory.partition(":")
        try:
            module = importlib.import_module(module_name)
            return getattr(module, attr)  # type: ignore[no-any-return]
        except (ImportError, AttributeError) as exc:
            raise StageLoadError(
                f"{self.kind} {self.name!r}: cannot import its factory {self.factory!r}: {exc}"
            ) from exc


def _module_available(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False
