"""One real local Ray cluster per test session, with Serve, for the ``distributed`` tests."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

#: Names of the test applications (two replicas each).
APPS = {"asr": "stsdub-test-asr", "translator": "stsdub-test-translator", "synthesizer": "stsdub-test-tts"}


# Package scope: still one cluster per test session (only this package uses it), and it is
# shut down as soon as these tests are done, not kept running through the rest of the suite.
@pytest.fixture(scope="package")
def ray_cluster() -> Iterator[None]:
    """A local cluster of this session (2 CPUs), token authentication on, Serve without HTTP.

    Ray turns token authentication on for a new local cluster; the token is this session's,
    given through the environment, so nothing is written to ``~/.ray``.
    """
    mp = pytest.MonkeyPatch()
    mp.setenv("RAY_AUTH_TOKEN", secrets.token_hex(32))
    # Left unset so that ray.init() enables token mode itself (and sets it back afterwards).
    mp.delenv("RAY_AUTH_MODE", raising=False)
    ray = pytest.importorskip("ray")
    serve = pytest.importorskip("ray.serve")  # the module, bound without an import statement
    if ray.is_initialized():
        mp.undo()
        pytest.skip("Ray is already initialised in this process")
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        serve.start(proxy_location="Disabled")
        yield
    finally:
        try:
            if ray.is_initialized():
                serve.shutdown()
        finally:
            ray.shutdown()
            mp.undo()


@pytest.fixture(scope="package")
def stage_apps(ray_cluster: None) -> dict[str, str]:
    """The fake stages deployed as applications of two replicas each; kind → app name."""
    import ray.serve

    from stsdub.ray import stage_app
    from stsdub.ray._cli import add_ray_parser, run_ray

    # Slow enough that a fragment is surely in flight when a replica is killed; four calls at
    # once per replica (the fake sleeps, it does not compute).
    asr = stage_app(
        "asr",
        "fake",
        options={"latency": 0.3, "concurrency": 4, "record": False},
        num_replicas=2,
        num_cpus=0.1,
    )
    ray.serve.run(asr, name=APPS["asr"], route_prefix=None)
    tts = stage_app(
        "synthesizer", "fake", options={"concurrency": 4, "record": False}, num_replicas=2, num_cpus=0.1
    )
    ray.serve.run(tts, name=APPS["synthesizer"], route_prefix=None)
    # The translator goes through the command (and through @serve.batch: the fake batches).
    import argparse

    parser = argparse.ArgumentParser(prog="stsdub")
    add_ray_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(
        [
            "ray",
            "deploy",
            "translator",
            "fake",
            "--app-name",
            APPS["translator"],
            "-O",
            "batch=true",
            "-O",
            "length_budget=true",
            "-O",
            "record=false",
            "--num-replicas",
            "2",
            "--num-cpus",
            "0.1",
        ]
    )
    assert run_ray(args) == 0
    return dict(APPS)
