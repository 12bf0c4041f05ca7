"""The dubbing service: the reference Socket.IO protocol on top of :class:`stsdub.Dubber`.

Needs the ``server`` extra (``pip install 'stsdub[server]'``). Run it with ``stsdub serve``
or embed the ASGI application in your own server::

    from stsdub.server import ServerSettings, create_app

    app = create_app(ServerSettings.from_env())   # serve with uvicorn, hypercorn…

``docs/protocol.md`` describes the events and payloads, ``docs/service.md`` the settings,
endpoints, metrics and deployment.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import PluginError
from ._settings import ServerSettings as ServerSettings

if TYPE_CHECKING:
    from collections.abc import Callable

    from .._dubber import Dubber
    from ._app import ServiceApp

__all__ = ["ServerSettings", "create_app"]

_HINT = "the service needs the server extra: pip install 'stsdub[server]'"


def create_app(
    settings: ServerSettings | None = None,
    *,
    dubber: Dubber | None = None,
    on_fatal: Callable[[BaseException], None] | None = None,
) -> ServiceApp:
    """Build the service's ASGI application (Socket.IO, ``/health``, ``/ready``, ``/metrics``).

    Args:
        settings: Limits, security and defaults; :meth:`ServerSettings.from_env` when left out.
        dubber: The :class:`~stsdub.Dubber` to serve, not yet opened: the application opens
            it (loads the models) in the background at startup and closes it at shutdown.
            Default: one built from ``settings``.
        on_fatal: Called with the exception when the models fail to load.

    Raises:
        PluginError: The ``server`` extra is not installed.
    """
    try:
        from ._app import create_app as _create_app
    except ImportError as exc:
        raise PluginError(f"{_HINT} ({exc})") from exc
    return _create_app(settings, dubber=dubber, on_fatal=on_fatal)


def __getattr__(name: str) -> Any:
    # The heavier names load with the extra, on first use.
    if name in ("DubbingService", "ServiceApp"):
        from . import _app

        return getattr(_app, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
