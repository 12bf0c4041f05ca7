"""Tools for testing code that uses stsdub, and for testing stage plugins.

- :class:`FakeASR`, :class:`FakeTranslator`, :class:`FakeSynthesizer`: stages without
  models, with configurable latency, failures (by error code) and hangs, sync or async,
  with or without batch methods. They record every request they get, unless built with
  ``record=False`` (for long runs).
- :class:`FakeSeparator`: a separator without a model (the speech band is the voice).
- :class:`FakeDiarizer`: a diarizer without a model (speakers told apart by their spectrum).
- :func:`check_stage` / :func:`check_plugin`: a conformance check a plugin author can call
  from any test suite (or a plain script); it raises :class:`ConformanceError` listing
  every way the stage breaks the contract.
"""

# Re-exported from private modules so that the public path is stsdub.testing.X.
from ._conformance import ConformanceError as ConformanceError
from ._conformance import ConformanceReport as ConformanceReport
from ._conformance import check_plugin as check_plugin
from ._conformance import check_stage as check_stage
from ._diarizer import FakeDiarizer as FakeDiarizer
from ._fakes import FakeASR as FakeASR
from ._fakes import FakeSynthesizer as FakeSynthesizer
from ._fakes import FakeTranslator as FakeTranslator
from ._separator import FakeSeparator as FakeSeparator

__all__ = [
    "ConformanceError",
    "ConformanceReport",
    "FakeASR",
    "FakeDiarizer",
    "FakeSeparator",
    "FakeSynthesizer",
    "FakeTranslator",
    "check_plugin",
    "check_stage",
]
