"""What a plugin author runs in their own test suite."""

from stsdub_echo import PitchASR, ReverseTranslator

import stsdub.testing


def test_translator_conforms() -> None:
    stsdub.testing.check_stage(ReverseTranslator())


def test_asr_conforms() -> None:
    stsdub.testing.check_stage(PitchASR())


def test_registered_by_name() -> None:
    stsdub.testing.check_plugin("translator", "echo-reverse")
