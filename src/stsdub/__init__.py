"""stsdub: dub speech in-process — ASR → translation → speech synthesis → duration matching.

Quick use::

    import stsdub

    async with stsdub.Dubber(target_language="de") as dubber:
        async for result in dubber.dub(fragments):
            print(result.status, result.translation.text)
"""

import importlib.metadata as _metadata

from ._core._audio import base64_to_float as base64_to_float
from ._core._audio import float_to_base64 as float_to_base64
from ._core._audio import float_to_pcm16 as float_to_pcm16
from ._core._audio import pcm16_to_float as pcm16_to_float
from ._core._captions import Caption as Caption
from ._core._captions import CaptionStatus as CaptionStatus
from ._core._diarization import Diarization as Diarization
from ._core._diarization import DiarizationRequest as DiarizationRequest
from ._core._separation import Separation as Separation
from ._core._separation import SeparationRequest as SeparationRequest
from ._core._values import Action as Action
from ._core._values import ASRRequest as ASRRequest
from ._core._values import AudioAsset as AudioAsset
from ._core._values import AudioBuffer as AudioBuffer
from ._core._values import BackpressureEvent as BackpressureEvent
from ._core._values import DubResult as DubResult
from ._core._values import Fit as Fit
from ._core._values import Fragment as Fragment
from ._core._values import LengthBudget as LengthBudget
from ._core._values import Segment as Segment
from ._core._values import Severity as Severity
from ._core._values import Status as Status
from ._core._values import SynthesisRequest as SynthesisRequest
from ._core._values import Transcript as Transcript
from ._core._values import TranscriptAsset as TranscriptAsset
from ._core._values import Translation as Translation
from ._core._values import TranslationAsset as TranslationAsset
from ._core._values import TranslationRequest as TranslationRequest
from ._core._values import Word as Word
from ._dubber import Dubber as Dubber
from ._dubber import DubIterator as DubIterator
from ._media import Segmentation as Segmentation
from ._pipeline._backpressure import BackpressureLevels as BackpressureLevels
from ._pipeline._duration import DurationPolicy as DurationPolicy
from ._pipeline._stream import Stream as Stream
from ._plugins._registry import StageRegistry as StageRegistry
from ._plugins._registry import StageSpec as StageSpec
from ._plugins._registry import get_plugin_manager as get_plugin_manager
from ._recordings._files import DubbedFile as DubbedFile
from ._recordings._files import FileProgress as FileProgress
from ._recordings._project import DubProject as DubProject
from ._recordings._project import ProjectSegment as ProjectSegment
from .errors import ConfigurationError as ConfigurationError
from .errors import ErrorCode as ErrorCode
from .errors import InvalidAudioError as InvalidAudioError
from .errors import InvalidFragmentError as InvalidFragmentError
from .errors import MediaError as MediaError
from .errors import MediaInputError as MediaInputError
from .errors import MediaOutputError as MediaOutputError
from .errors import NoAudioStreamError as NoAudioStreamError
from .errors import PluginError as PluginError
from .errors import ProjectError as ProjectError
from .errors import SequenceError as SequenceError
from .errors import StageError as StageError
from .errors import StageLoadError as StageLoadError
from .errors import StreamClosedError as StreamClosedError
from .errors import StsdubError as StsdubError
from .hookspecs import hookimpl as hookimpl
from .hookspecs import hookspec as hookspec

try:
    __version__ = _metadata.version("stsdub")
except _metadata.PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

__all__ = [
    "ASRRequest",
    "Action",
    "AudioAsset",
    "AudioBuffer",
    "BackpressureEvent",
    "BackpressureLevels",
    "Caption",
    "CaptionStatus",
    "ConfigurationError",
    "Diarization",
    "DiarizationRequest",
    "DubIterator",
    "DubProject",
    "DubResult",
    "DubbedFile",
    "Dubber",
    "DurationPolicy",
    "ErrorCode",
    "FileProgress",
    "Fit",
    "Fragment",
    "InvalidAudioError",
    "InvalidFragmentError",
    "LengthBudget",
    "MediaError",
    "MediaInputError",
    "MediaOutputError",
    "NoAudioStreamError",
    "PluginError",
    "ProjectError",
    "ProjectSegment",
    "Segment",
    "Segmentation",
    "Separation",
    "SeparationRequest",
    "SequenceError",
    "Severity",
    "StageError",
    "StageLoadError",
    "StageRegistry",
    "StageSpec",
    "Status",
    "Stream",
    "StreamClosedError",
    "StsdubError",
    "SynthesisRequest",
    "Transcript",
    "TranscriptAsset",
    "Translation",
    "TranslationAsset",
    "TranslationRequest",
    "Word",
    "__version__",
    "base64_to_float",
    "float_to_base64",
    "float_to_pcm16",
    "get_plugin_manager",
    "hookimpl",
    "hookspec",
    "pcm16_to_float",
]
