"""Media files in and out: decoding with PyAV, segmentation, subtitles, audio and video writing."""

from __future__ import annotations

from ._errors import MediaError as MediaError
from ._errors import MediaInputError as MediaInputError
from ._errors import MediaOutputError as MediaOutputError
from ._errors import NoAudioStreamError as NoAudioStreamError
from ._input import MediaInfo as MediaInfo
from ._input import SourceAudio as SourceAudio
from ._input import probe as probe
from ._input import read_audio as read_audio
from ._output import OutputPlan as OutputPlan
from ._output import plan_output as plan_output
from ._output import staged as staged
from ._output import write_audio as write_audio
from ._output import write_text as write_text
from ._output import write_video as write_video
from ._segment import ANALYSIS_RATE as ANALYSIS_RATE
from ._segment import Piece as Piece
from ._segment import Segmentation as Segmentation
from ._segment import plan as plan
from ._subtitles import SUBTITLE_FORMATS as SUBTITLE_FORMATS
from ._subtitles import Cue as Cue
from ._subtitles import render as render

__all__ = [
    "ANALYSIS_RATE",
    "SUBTITLE_FORMATS",
    "Cue",
    "MediaError",
    "MediaInfo",
    "MediaInputError",
    "MediaOutputError",
    "NoAudioStreamError",
    "OutputPlan",
    "Piece",
    "Segmentation",
    "SourceAudio",
    "plan",
    "plan_output",
    "probe",
    "read_audio",
    "render",
    "staged",
    "write_audio",
    "write_text",
    "write_video",
]
