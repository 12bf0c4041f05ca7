"""Hook specifications for stsdub plugins.

A plugin is a module (or object) with functions marked ``@stsdub.hookimpl`` whose names match
the specifications below. Third-party plugins are found through the ``stsdub`` entry-point
group; set ``STSDUB_DISABLE_PLUGIN_AUTOLOAD=1`` to load only the built-in stages.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from ._core._spec import StageSpec

__all__ = ["hookimpl", "hookspec", "stsdub_register_stages"]

hookspec = pluggy.HookspecMarker("stsdub")
hookimpl = pluggy.HookimplMarker("stsdub")


@hookspec
def stsdub_register_stages() -> list[StageSpec]:  # type: ignore[empty-body]
    """Return the stages this plugin provides.

    Called once per plugin manager. Factories should import heavy libraries lazily (inside
    the factory), so that listing plugins stays fast and works without optional extras.

    Example::

        @stsdub.hookimpl
        def stsdub_register_stages():
            return [stsdub.StageSpec(kind="asr", name="my-asr", factory=MyASR)]
    """
