"""Settings of the dubbing service, from the environment and from command-line flags.

The environment variables keep the reference service's names where it has one
(``STS_PORT``, ``MAX_INFLIGHT``, ``FRAGMENT_TIMEOUT_MS``, ``BACKPRESSURE_THRESHOLD_*``,
``ENABLE_ARTIFACT_LOGGING``…); the service's own settings are prefixed ``STSDUB_``.
``.env.example`` at the root of the repository documents every one of them.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from .._plugins._defaults import AUTO, default_translator
from ..errors import ConfigurationError

__all__ = ["ENV_VARIABLES", "ServerSettings", "parse_optional_stage", "parse_translator", "read_env_file"]

#: Sample rates a client may declare for its audio.
ALLOWED_SAMPLE_RATES = (8000, 11025, 16000, 22050, 24000, 32000, 44100, 48000)


# Setting → the variables that set it, the service's own name first (it wins).
_TEXT = {
    "host": ("STSDUB_HOST", "STS_HOST"),
    "asr": ("STSDUB_ASR",),
    "synthesizer": ("STSDUB_SYNTHESIZER",),
    "device": ("STSDUB_DEVICE", "ASR_DEVICE"),
    "log_level": ("STSDUB_LOG_LEVEL", "LOG_LEVEL"),
    "log_format": ("STSDUB_LOG_FORMAT",),
    "fallback": ("STSDUB_FALLBACK", "FALLBACK_MODE"),
    "artifacts_path": ("STSDUB_ARTIFACTS_PATH", "ARTIFACTS_PATH"),
}
_OPTIONAL_TEXT = {
    "source_language": ("STSDUB_SOURCE_LANGUAGE",),
    "target_language": ("STSDUB_TARGET_LANGUAGE",),
    "voice": ("STSDUB_VOICE",),
    "auth_token": ("STSDUB_AUTH_TOKEN",),
}
# Stages the service may do without: a name, or "none".
_OPTIONAL_STAGES = {
    "separator": ("STSDUB_SEPARATOR",),
    "diarizer": ("STSDUB_DIARIZER",),
}
_TRANSLATOR = ("STSDUB_TRANSLATOR", "TRANSLATION_PROVIDER")
_INT = {
    "port": ("STSDUB_PORT", "STS_PORT"),
    "max_payload_bytes": ("STSDUB_MAX_PAYLOAD_BYTES",),
    "max_concurrent_streams": ("STSDUB_MAX_CONCURRENT_STREAMS", "MAX_CONCURRENT_STREAMS"),
    "max_inflight": ("STSDUB_MAX_INFLIGHT", "MAX_INFLIGHT"),
    "output_sample_rate": ("STSDUB_OUTPUT_SAMPLE_RATE",),
    "artifact_max_count": ("STSDUB_ARTIFACT_MAX_COUNT", "ARTIFACT_MAX_COUNT"),
    **{
        f"backpressure_{level}": (
            f"STSDUB_BACKPRESSURE_{level.upper()}",
            f"BACKPRESSURE_THRESHOLD_{level.upper()}",
        )
        for level in ("low", "medium", "high", "critical")
    },
}
_TIMEOUT_MS = ("STSDUB_FRAGMENT_TIMEOUT_MS", "FRAGMENT_TIMEOUT_MS")
_FLOAT = {
    "max_fragment_seconds": ("STSDUB_MAX_FRAGMENT_SECONDS",),
    "duration_success_max": ("STSDUB_DURATION_SUCCESS_MAX", "DURATION_VARIANCE_SUCCESS_MAX"),
    "duration_partial_max": ("STSDUB_DURATION_PARTIAL_MAX", "DURATION_VARIANCE_PARTIAL_MAX"),
    "artifact_retention_hours": ("STSDUB_ARTIFACT_RETENTION_HOURS", "ARTIFACT_RETENTION_HOURS"),
}
_BOOL = {
    "duration_strict": ("STSDUB_DURATION_STRICT",),
    "artifacts_enabled": ("STSDUB_ARTIFACTS", "ENABLE_ARTIFACT_LOGGING"),
}
_CORS = ("STSDUB_CORS_ORIGINS",)
_OPTIONS = {
    f"{kind}_options": (f"STSDUB_{kind.upper()}_OPTIONS",)
    for kind in ("asr", "translator", "synthesizer", "separator", "diarizer")
}
# The reference's model-size knob, mapped onto the ASR stage's "model" option.
_MODEL_SIZE = ("ASR_MODEL_SIZE",)

#: Every environment variable :meth:`ServerSettings.from_env` reads.
ENV_VARIABLES = frozenset(
    name
    for table in (_TEXT, _OPTIONAL_TEXT, _OPTIONAL_STAGES, _INT, _FLOAT, _BOOL, _OPTIONS)
    for names in table.values()
    for name in names
) | frozenset((*_TRANSLATOR, *_TIMEOUT_MS, *_CORS, *_MODEL_SIZE))


def _to_bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ConfigurationError(f"{name} must be true or false, got {raw!r}")


def _to_int(name: str, raw: str, *, minimum: int = 1) -> int:
    try:
        value = int(raw.strip())
    except ValueError:
        raise ConfigurationError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise ConfigurationError(f"{name} must be >= {minimum}, got {value}")
    return value


def _to_float(name: str, raw: str) -> float:
    try:
        value = float(raw.strip())
    except ValueError:
        raise ConfigurationError(f"{name} must be a number, got {raw!r}") from None
    if not 0 <= value < math.inf:
        raise ConfigurationError(f"{name} must be a finite number >= 0, got {raw!r}")
    return value


def _to_options(name: str, raw: str) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConfigurationError(f"{name} must be a JSON object: {exc}") from None
    if not isinstance(value, dict):
        raise ConfigurationError(f"{name} must be a JSON object, got {raw!r}")
    return value


def _optional_str(raw: str) -> str | None:
    value = raw.strip()
    return value or None


def _check_positive(_inst: object, attr: attrs.Attribute[Any], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        raise ConfigurationError(f"{attr.name} must be a positive number, got {value!r}")


def _check_optional_threshold(_inst: object, attr: attrs.Attribute[Any], value: object) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise ConfigurationError(f"{attr.name} must be an int >= 0 or None, got {value!r}")


@attrs.frozen(kw_only=True)
class ServerSettings:
    """Everything the service can be configured with.

    Build one with :meth:`from_env` (environment variables) and adjust it with
    :func:`attrs.evolve`; the ``stsdub serve`` flags do exactly that.
    """

    # -- network ----------------------------------------------------------------------------
    host: str = "127.0.0.1"
    port: int = attrs.field(default=8000, validator=_check_positive)
    #: Origins allowed to open a Socket.IO connection or read the HTTP endpoints from a
    #: browser. Empty: same origin only (CORS closed). ``("*",)``: any origin.
    cors_origins: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    #: Shared secret a client must present on connect; ``None`` disables the check.
    auth_token: str | None = attrs.field(default=None, repr=False)
    #: Largest ``audio.data_base64`` accepted, in characters of base64 text.
    max_payload_bytes: int = attrs.field(default=4_000_000, validator=_check_positive)
    max_concurrent_streams: int = attrs.field(default=5, validator=_check_positive)

    # -- pipeline ---------------------------------------------------------------------------
    asr: str = "faster-whisper"
    #: A translator name; ``None`` for none (every stream must keep its language); or
    #: ``"auto"``, the default: DeepL when a DeepL key is set, else none (see
    #: :meth:`chosen_translator`), as ``stsdub dub`` chooses.
    translator: str | None = AUTO
    synthesizer: str = "piper"
    asr_options: Mapping[str, Any] = attrs.field(factory=dict)
    translator_options: Mapping[str, Any] = attrs.field(factory=dict)
    synthesizer_options: Mapping[str, Any] = attrs.field(factory=dict)
    #: A separator name, for streams that ask for ``background: "separate"``; ``None``: none
    #: (such streams are refused, ``"duck"`` needs nothing).
    separator: str | None = None
    separator_options: Mapping[str, Any] = attrs.field(factory=dict)
    #: A diarizer name: each fragment is labelled with its speaker, who keeps a voice of their
    #: own for the whole stream; ``None``: one voice for everybody.
    diarizer: str | None = None
    diarizer_options: Mapping[str, Any] = attrs.field(factory=dict)
    device: str = "auto"
    source_language: str | None = None
    #: Default target language of streams whose ``stream:init`` names none.
    target_language: str | None = None
    voice: str | None = None
    #: Fragments of one stream inside the pipeline at once; also the most a client may ask for.
    max_inflight: int = attrs.field(default=3, validator=_check_positive)
    fragment_timeout: float = attrs.field(default=8.0, validator=_check_positive)
    fallback: str = attrs.field(default="silence", validator=attrs.validators.in_(("silence", "original")))
    max_fragment_seconds: float = attrs.field(default=30.0, validator=_check_positive)
    output_sample_rate: int | None = None
    duration_success_max: float = 0.10
    duration_partial_max: float = 0.20
    #: Beyond ``duration_partial_max``: FAILED (``DURATION_MISMATCH_EXCEEDED``) when True, as
    #: in the reference service; PARTIAL with a warning when False.
    duration_strict: bool = True

    # -- backpressure (fragments received and not yet answered, per stream) -----------------
    #: At or below: level LOW again. Default ``max_inflight - 1``.
    backpressure_low: int | None = attrs.field(default=None, validator=_check_optional_threshold)
    #: At or above: MEDIUM (slow down). Default ``max_inflight + 1``.
    backpressure_medium: int | None = attrs.field(default=None, validator=_check_optional_threshold)
    #: At or above: HIGH (pause). Default ``2 * max_inflight + 1``.
    backpressure_high: int | None = attrs.field(default=None, validator=_check_optional_threshold)
    #: At or above: further fragments are rejected. Default ``3 * max_inflight + 1``.
    backpressure_critical: int | None = attrs.field(default=None, validator=_check_optional_threshold)

    # -- observability ----------------------------------------------------------------------
    log_level: str = "INFO"
    #: ``"json"`` (one object per line) or ``"text"``.
    log_format: str = attrs.field(default="json", validator=attrs.validators.in_(("json", "text")))
    artifacts_enabled: bool = False
    artifacts_path: Path = attrs.field(
        factory=lambda: Path(tempfile.gettempdir()) / "stsdub-artifacts", converter=Path
    )
    artifact_retention_hours: float = attrs.field(default=24.0, validator=_check_positive)
    artifact_max_count: int = attrs.field(default=1000, validator=_check_positive)

    def chosen_translator(self, environ: Mapping[str, str] | None = None) -> str | None:
        """The translator to load: :attr:`translator`, with ``"auto"`` resolved.

        Args:
            environ: Where ``DEEPL_AUTH_KEY`` is looked up; ``os.environ`` by default.
        """
        if self.translator == AUTO:
            return default_translator(
                self.translator_options, environ, source=self.source_language, target=self.target_language
            )
        return self.translator

    def critical_threshold(self, max_inflight: int) -> int:
        """Fragments outstanding on a stream at which further ones are rejected."""
        if self.backpressure_critical is not None:
            return max(1, self.backpressure_critical)
        return 3 * max_inflight + 1

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ServerSettings:
        """Settings from environment variables (``os.environ`` by default).

        Raises:
            ConfigurationError: A variable is set to a value that cannot work.
        """
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}

        def get(*names: str) -> tuple[str, str] | None:
            for name in names:
                raw = env.get(name)
                if raw is not None and raw.strip() != "":
                    return name, raw
            return None

        for key, names in _TEXT.items():
            found = get(*names)
            if found:
                values[key] = found[1].strip()
        for key, names in _OPTIONAL_TEXT.items():
            found = get(*names)
            if found:
                values[key] = _optional_str(found[1])
        found = get(*_TRANSLATOR)
        if found:
            values["translator"] = parse_translator(found[1])
        for key, names in _OPTIONAL_STAGES.items():
            found = get(*names)
            if found:
                values[key] = parse_optional_stage(found[1])
        for key, names in _INT.items():
            found = get(*names)
            if found:
                values[key] = _to_int(found[0], found[1], minimum=0 if key.startswith("backpressure") else 1)
        found = get(*_TIMEOUT_MS)
        if found:
            values["fragment_timeout"] = _to_int(found[0], found[1]) / 1000
        for key, names in _FLOAT.items():
            found = get(*names)
            if found:
                values[key] = _to_float(found[0], found[1])
        for key, names in _BOOL.items():
            found = get(*names)
            if found:
                values[key] = _to_bool(found[0], found[1])
        found = get(*_CORS)
        if found:
            values["cors_origins"] = tuple(o.strip() for o in found[1].split(",") if o.strip())
        for key, names in _OPTIONS.items():
            found = get(*names)
            if found:
                values[key] = _to_options(found[0], found[1])
        # The reference's model-size knob maps onto the ASR stage's "model" option.
        found = get(*_MODEL_SIZE)
        if found and "model" not in values.get("asr_options", {}):
            values["asr_options"] = {**values.get("asr_options", {}), "model": found[1].strip()}
        try:
            return cls(**values)
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(f"invalid service settings: {exc}") from exc


def parse_translator(text: str) -> str | None:
    """A translator setting as typed: ``"none"`` is no translator, ``"auto"`` the default rule."""
    value = text.strip()
    if value.lower() == "none":
        return None  # re-voicing in the source language only
    if value.lower() == AUTO:
        return AUTO
    return value


def parse_optional_stage(text: str) -> str | None:
    """A separator or diarizer setting as typed: a stage name, or ``"none"`` for none."""
    value = text.strip()
    return None if value.lower() == "none" else value


def read_env_file(path: str | os.PathLike[str]) -> dict[str, str]:
    """Read ``KEY=VALUE`` lines (``#`` comments, optional quotes), as in ``.env.example``."""
    values: dict[str, str] = {}
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigurationError(f"cannot read {path}: {exc}") from exc
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export ") :].lstrip()
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not key.replace("_", "").isalnum():
            raise ConfigurationError(f"{path}:{number}: expected KEY=VALUE, got {line!r}")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        elif " #" in value:  # trailing comment after an unquoted value
            value = value.split(" #", 1)[0].rstrip()
        values[key] = value
    return values
