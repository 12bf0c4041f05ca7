"""The test configuration's warning policy: deprecations inside third-party code never fail a
fragment; those our own code triggers stay errors (``filterwarnings`` in pyproject.toml).

The "third-party library" here is a module made at run time under a name that is not ours,
so the policy is tested by the module a warning is attributed to, as Python attributes it.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator

import pytest

import stsdub
from stsdub import ASRRequest, Transcript
from stsdub.testing import FakeSynthesizer, FakeTranslator

from .strategies import fragments

pytestmark = pytest.mark.anyio

_VENDOR_SOURCE = '''
import warnings

def forward(past=None):
    """A deprecated keyword, as transformers marks them: attributed to the caller."""
    if past is not None:
        warnings.warn("`past` is deprecated and will be removed; use `cache`", FutureWarning, stacklevel=2)
    return "hello from the vendor"

def generate():
    """The library's own code still calls its deprecated API."""
    return forward(past=())
'''


@pytest.fixture
def vendor() -> Iterator[types.ModuleType]:
    module = types.ModuleType("vendorlib")
    exec(compile(_VENDOR_SOURCE, "<vendorlib>", "exec"), module.__dict__)
    sys.modules["vendorlib"] = module
    yield module
    del sys.modules["vendorlib"]


class VendorASR:
    """An ASR whose library warns while it works."""

    def __init__(self, call: str, vendor: types.ModuleType) -> None:
        self.call = call
        self.vendor = vendor

    def transcribe(self, request: ASRRequest) -> Transcript:
        # "ours": our own code makes the deprecated call; "theirs": the library does, inside.
        text = self.vendor.forward(past=()) if self.call == "ours" else self.vendor.generate()
        return Transcript(text, "en")


async def dub_one(asr: VendorASR) -> stsdub.DubResult:
    dubber = stsdub.Dubber(asr, FakeTranslator(), FakeSynthesizer(), target_language="de")
    async with dubber:
        (result,) = [r async for r in dubber.dub(fragments(1))]
    return result


async def test_a_stage_whose_library_warns_still_succeeds(vendor: types.ModuleType) -> None:
    result = await dub_one(VendorASR("theirs", vendor))
    assert result.status is stsdub.Status.SUCCESS, result.error
    assert result.transcript is not None and result.transcript.text == "hello from the vendor"


async def test_a_deprecated_call_in_our_own_code_is_an_error(vendor: types.ModuleType) -> None:
    result = await dub_one(VendorASR("ours", vendor))
    assert result.status is stsdub.Status.FAILED
    assert result.error is not None and "deprecated" in result.error.message


def test_a_deprecated_call_from_the_tests_is_an_error(vendor: types.ModuleType) -> None:
    with pytest.raises(FutureWarning, match="deprecated"):
        vendor.forward(past=())
