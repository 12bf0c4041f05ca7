"""Stages as a shared pool on Ray Serve: deploy a stage once, use it from many hosts by name.

Needs the ``ray`` extra (``pip install 'stsdub[ray]'``) where Ray is used; importing this
package does not import Ray (that happens when a name below that needs it is first used).

On the cluster, deploy a stage as a Serve application::

    from ray import serve
    from stsdub.ray import stage_app

    serve.run(stage_app("asr", "faster-whisper", options={"model": "small"}, num_gpus=1,
                        num_replicas=2), name="stsdub-asr", route_prefix=None)

(or ``stsdub ray deploy asr faster-whisper --app-name stsdub-asr --num-gpus 1``), and on a
host use it by name; the host's Dubber keeps order, exactly one result per fragment,
context, duration matching and backpressure::

    Dubber(asr="ray:stsdub-asr", translator="deepl", synthesizer="ray:stsdub-xtts",
           asr_options={"timeout": 3.0})

Requests and results cross the wire as plain data with PCM16 audio (see
:mod:`stsdub.ray._wire`), not as pickles of stsdub's classes. ``docs/scale-out.md`` is the
deployment guide.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._client import DEFAULT_CONCURRENCY as DEFAULT_CONCURRENCY
from ._client import DEFAULT_TIMEOUT as DEFAULT_TIMEOUT
from ._client import LocalTransport as LocalTransport
from ._client import RemoteASR as RemoteASR
from ._client import RemoteDiarizer as RemoteDiarizer
from ._client import RemoteStage as RemoteStage
from ._client import RemoteStats as RemoteStats
from ._client import RemoteSynthesizer as RemoteSynthesizer
from ._client import RemoteTranslator as RemoteTranslator
from ._client import Transport as Transport
from ._client import remote_stage as remote_stage

if TYPE_CHECKING:
    from ._serve import ServeTransport as ServeTransport
    from ._serve import deploy as deploy
    from ._serve import map_ray_error as map_ray_error
    from ._serve import stage_app as stage_app

__all__ = [
    "DEFAULT_CONCURRENCY",
    "DEFAULT_TIMEOUT",
    "LocalTransport",
    "RemoteASR",
    "RemoteDiarizer",
    "RemoteStage",
    "RemoteStats",
    "RemoteSynthesizer",
    "RemoteTranslator",
    "ServeTransport",
    "Transport",
    "deploy",
    "map_ray_error",
    "remote_stage",
    "stage_app",
]

# Names whose module imports Ray: loaded on first use, so that `import stsdub.ray` works
# without the extra (and raises PluginError with the install hint when one is used).
_LAZY = frozenset({"ServeTransport", "deploy", "map_ray_error", "stage_app"})


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from . import _serve

        return getattr(_serve, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
