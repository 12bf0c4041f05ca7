"""Live captions while they speak: a recording played as a live source, captioned and dubbed.

The recording is handed to a stream as a live source would: 100 ms of audio every 100 ms
(``Stream.send_audio``), cut into utterances where the speaker pauses (silero-vad's streaming
iterator) and sent as fragments. The stream yields, in order, interim captions of the
utterance still being spoken (its stable part in bold), the final transcript and its
translation as soon as they are ready, and the dubbed fragment last.

    python examples/live_captions.py                         # the bundled sample, into Spanish
    python examples/live_captions.py talk.wav --to ca --fast # no waiting: as fast as it goes
    python examples/live_captions.py --sentence-wait 3       # whole sentences, 3 s later

Offline: Whisper (base when installed, else tiny.en), Apertium and eSpeak NG.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import anyio
import numpy as np
import soundfile

import stsdub
from stsdub._core._audio import resample

RATE = 16_000
CHUNK = 1600  # 100 ms: silero-vad reads 512 samples at a time, so any multiple of that works
SAMPLE = Path(__file__).with_name("sample_en.flac")


def utterances(audio: np.ndarray) -> list[tuple[int, int]]:
    """(start, end) samples of each utterance, as a live endpointer would find them."""
    from silero_vad import VADIterator, load_silero_vad

    vad = VADIterator(load_silero_vad(), sampling_rate=RATE, min_silence_duration_ms=400, speech_pad_ms=100)
    spans, start = [], None
    for at in range(0, audio.size - 511, 512):
        event = vad(audio[at : at + 512])
        if event and "start" in event:
            start = event["start"]
        elif event and "end" in event and start is not None:
            spans.append((start, event["end"]))
            start = None
    if start is not None:
        spans.append((start, audio.size))
    return spans


def show(event: stsdub.Caption | stsdub.DubResult) -> None:
    if isinstance(event, stsdub.DubResult):
        print(
            f"\r\033[K  [{event.sequence_number}] dubbed: {event.status.value}, {event.audio.duration:.1f} s"
        )
    elif event.kind == "interim":
        stable, rest = event.text[: event.stable_chars], event.text[event.stable_chars :]
        print(f"\r\033[K  … \033[1m{stable}\033[0m{rest}  ({event.latency_ms:.0f} ms)", end="", flush=True)
    elif event.kind == "final":
        print(
            f"\r\033[K[{event.sequence_number}] {event.text}  ({event.language}, {event.latency_ms:.0f} ms)"
        )
    else:
        print(f"\r\033[K  → {event.text}")


async def main(path: Path, target: str, realtime: bool, sentence_wait: float) -> None:
    samples, rate = soundfile.read(path, dtype="float32", always_2d=True)
    audio = np.clip(resample(samples.mean(axis=1), rate, RATE), -1, 1).astype(np.float32)
    spans = utterances(audio)
    dubber = stsdub.Dubber(
        "faster-whisper",
        "apertium",
        "espeak",
        source_language=None,
        target_language=target,
        fragment_timeout=60,
    )
    options = {"captions": "interim", "caption_interval": 0.3, "sentence_wait": sentence_wait}
    async with dubber, dubber.open_stream("live", **options) as stream:

        async def speak() -> None:
            seq, started = 0, time.perf_counter()
            for at in range(0, audio.size, CHUNK):
                if realtime:  # the audio arrives as it is spoken
                    await anyio.sleep(max(0.0, at / RATE - (time.perf_counter() - started)))
                if seq < len(spans) and spans[seq][0] <= at + CHUNK and at < spans[seq][1]:
                    stream.send_audio(audio[at : at + CHUNK], RATE)
                if seq < len(spans) and at + CHUNK >= spans[seq][1]:
                    start, end = spans[seq]
                    await stream.send(stsdub.Fragment(seq, audio[start:end], RATE))
                    seq += 1
            await stream.end()

        async with anyio.create_task_group() as tg:
            tg.start_soon(speak)
            async for event in stream.events():
                show(event)
        status = stream.caption_status
    assert status is not None
    print(
        f"{status.interims} interims ({status.interims_dropped} dropped), {status.finals} finals,"
        f" {status.translations} translations"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("input", nargs="?", type=Path, default=SAMPLE)
    parser.add_argument("--to", default="es", help="language to dub into (default es)")
    parser.add_argument("--fast", action="store_true", help="do not wait: feed the audio as fast as it goes")
    parser.add_argument(
        "--sentence-wait",
        type=float,
        default=0.0,
        metavar="S",
        help="let an utterance that ends mid-sentence wait up to S seconds for the rest (default 0)",
    )
    args = parser.parse_args()
    try:
        anyio.run(main, args.input, args.to, not args.fast, args.sentence_wait)
    except stsdub.StsdubError as exc:
        sys.exit(f"live_captions: {exc}")
