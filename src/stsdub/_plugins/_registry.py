"""Plugin discovery: the pluggy manager, stage specs and name resolution."""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
import warnings
from collections.abc import Iterable
from typing import Any

import attrs
import pluggy

from .. import hookspecs
from .._core._spec import STAGE_KINDS, StageSpec
from ..errors import PluginError

__all__ = [
    "AUTOLOAD_ENV",
    "ENTRY_POINT_GROUP",
    "StageRegistry",
    "StageSpec",
    "get_plugin_manager",
]

ENTRY_POINT_GROUP = "stsdub"
#: Set to a non-empty value other than ``0`` to skip third-party plugins.
AUTOLOAD_ENV = "STSDUB_DISABLE_PLUGIN_AUTOLOAD"


#: Stage names with this prefix name a Ray Serve application: ``Dubber(asr="ray:stsdub-asr")``.
REMOTE_PREFIX = "ray:"


def _remote_spec(kind: str, name: str) -> StageSpec:
    app_name = name[len(REMOTE_PREFIX) :]
    if not app_name:
        raise PluginError(f"{name!r} names no application: write 'ray:APP', e.g. 'ray:stsdub-{kind}'")
    return StageSpec(
        kind=kind,
        name=name,
        factory=functools.partial(_remote_factory, kind, app_name),
        description=f"the Ray Serve application {app_name!r} (stsdub.ray)",
        install_hint="pip install 'stsdub[ray]'",
        package="stsdub",
    )


def _remote_factory(kind: str, app_name: str, **options: Any) -> Any:
    # Imported by name, as the built-in factories are: stsdub.ray is only loaded (and Ray only
    # imported) when a ray: name is used, and it sits above the registry (its replicas build
    # stages from one), so the registry names it instead of importing it.
    remote_stage = importlib.import_module("stsdub.ray").remote_stage
    return remote_stage(kind, app_name, **options)


def autoload_disabled() -> bool:
    value = os.environ.get(AUTOLOAD_ENV, "")
    return value not in ("", "0")


def get_plugin_manager(*, autoload: bool | None = None) -> pluggy.PluginManager:
    """A fresh plugin manager with the built-in stages and, unless disabled, entry points.

    Args:
        autoload: Load third-party plugins from the ``stsdub`` entry-point group. ``None``
            means yes unless ``STSDUB_DISABLE_PLUGIN_AUTOLOAD`` is set.
    """
    from . import _builtin_stages

    pm = pluggy.PluginManager("stsdub")
    pm.add_hookspecs(hookspecs)
    pm.register(_builtin_stages, name="stsdub")
    if autoload is None:
        autoload = not autoload_disabled()
    if autoload:
        pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    return pm


class StageRegistry:
    """Every stage the plugins of a manager offer, looked up by kind and name."""

    def __init__(self, specs: Iterable[StageSpec]) -> None:
        self._specs: dict[tuple[str, str], StageSpec] = {}
        for spec in specs:
            key = (spec.kind, spec.name)
            if key in self._specs:
                first = self._specs[key]
                warnings.warn(
                    f"{spec.kind} {spec.name!r} from {spec.package} is ignored:"
                    f" {first.package} registered it first",
                    RuntimeWarning,
                    stacklevel=2,
                )
                continue
            self._specs[key] = spec

    @classmethod
    def from_plugin_manager(cls, pm: pluggy.PluginManager | None = None) -> StageRegistry:
        """Collect the specs of every plugin of ``pm`` (a fresh manager when ``None``)."""
        pm = pm or get_plugin_manager()
        packages = {id(plugin): dist.project_name for plugin, dist in pm.list_plugin_distinfo()}
        specs: list[StageSpec] = []
        for impl in pm.hook.stsdub_register_stages.get_hookimpls():
            package = packages.get(id(impl.plugin), impl.plugin_name)
            offered: Iterable[object] = impl.function() or ()  # type: ignore[assignment]
            for spec in offered:
                if not isinstance(spec, StageSpec):
                    raise PluginError(
                        f"plugin {impl.plugin_name!r}: stsdub_register_stages must return"
                        f" StageSpec objects, got {type(spec).__name__}"
                    )
                specs.append(spec if spec.package else attrs.evolve(spec, package=package))
        return cls(specs)

    def __iter__(self) -> Any:
        return iter(sorted(self._specs.values(), key=lambda s: (STAGE_KINDS.index(s.kind), s.name)))

    def names(self, kind: str) -> list[str]:
        return sorted(name for k, name in self._specs if k == kind)

    def get(self, kind: str, name: str) -> StageSpec:
        """The spec for ``name``, or a PluginError naming the alternatives or the install.

        A name starting with ``ray:`` is the Ray Serve application after the colon
        (:mod:`stsdub.ray`); it is never looked up among the registered stages.
        """
        if name.startswith(REMOTE_PREFIX):
            return _remote_spec(kind, name)
        spec = self._specs.get((kind, name))
        if spec is None:
            known = ", ".join(repr(n) for n in self.names(kind)) or "none"
            raise PluginError(
                f"no {kind} stage named {name!r}; registered {kind} stages: {known}."
                " Run `stsdub plugins` to list every stage."
            )
        missing = spec.missing
        if missing:
            hint = spec.install_hint or f"pip install {' '.join(missing)}"
            raise PluginError(
                f"{kind} {name!r} needs {', '.join(missing)}, which is not installed. Install it with: {hint}"
            )
        return spec
