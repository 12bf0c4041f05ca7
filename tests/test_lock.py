"""requirements.lock agrees with pyproject.toml, and this environment was installed from it.

A dependency added to pyproject.toml without `make lock`, or a range changed so that the
locked version falls outside it, fails here instead of installing whatever is newest on the
day CI runs.
"""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path

from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements.lock"
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)\s*(?:;\s*(.+))?$")


def locked() -> dict[str, Version]:
    """The pins of the lock that apply to this interpreter and platform."""
    pins: dict[str, Version] = {}
    for line in LOCK.read_text(encoding="utf-8").splitlines():
        match = _PIN.match(line.strip())
        if match is None:
            continue
        name, version, marker = match.groups()
        if marker is None or Marker(marker).evaluate():
            pins[canonicalize_name(name)] = Version(version)
    return pins


def project_requirements() -> list[Requirement]:
    """Every requirement of the project and of all its extras (self-references expanded)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    requirements = [Requirement(r) for r in project["dependencies"]]
    for extra in project["optional-dependencies"].values():
        requirements += [Requirement(r) for r in extra if canonicalize_name(Requirement(r).name) != "stsdub"]
    return requirements


def test_the_lock_pins_every_requirement_within_its_range() -> None:
    pins = locked()
    problems = []
    for requirement in project_requirements():
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue
        name = canonicalize_name(requirement.name)
        if name not in pins:
            problems.append(f"{requirement}: not in requirements.lock")
        elif not requirement.specifier.contains(pins[name], prereleases=True):
            problems.append(f"{requirement}: the lock has {pins[name]}")
    assert not problems, "run `make lock`:\n" + "\n".join(problems)


def test_the_lock_keeps_the_hand_written_pins() -> None:
    pins = locked()
    for line in (ROOT / ".ci" / "constraints.txt").read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            requirement = Requirement(line)
            assert requirement.specifier.contains(pins[canonicalize_name(requirement.name)])


def test_installed_versions_match_the_lock() -> None:
    """CI installs from the lock (deselected by `nox -s latest`, which installs the newest)."""
    differ = {}
    for name, pin in locked().items():
        # The first distribution on sys.path, as imports see it (setuptools puts copies of
        # packages it vendors further down the path once pkg_resources is imported).
        try:
            installed = Version(importlib.metadata.version(name))
        except importlib.metadata.PackageNotFoundError:
            continue  # an extra that was not chosen
        if installed != pin:
            differ[name] = (str(installed), str(pin))
    assert not differ, f"installed (left) is not what requirements.lock pins (right): {differ}"
