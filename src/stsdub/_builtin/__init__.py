"""The stages that ship with stsdub, registered through the same hook as any plugin.

Factories are import strings, so listing stages never imports a model library; each
backend module imports its library when the stage is built and says which extra to install
when it is missing.
"""

from __future__ import annotations

from .._plugins import StageSpec
from ..hookspecs import hookimpl


def _hint(extra: str) -> str:
    return f"pip install 'stsdub[{extra}]'"


@hookimpl
def stsdub_register_stages() -> list[StageSpec]:
    return [
        StageSpec(
            kind="asr",
            name="fake",
            factory="stsdub.testing:FakeASR",
            description="test stage: hears 'speech <n>' in any non-silent fragment (no model)",
        ),
        StageSpec(
            kind="translator",
            name="fake",
            factory="stsdub.testing:FakeTranslator",
            description="test stage: prefixes the text with the target language (no model)",
        ),
        StageSpec(
            kind="synthesizer",
            name="fake",
            factory="stsdub.testing:FakeSynthesizer",
            description="test stage: a tone as long as the fragment (no model)",
        ),
    ]
